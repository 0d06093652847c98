//! Segments and A/B tests (segments-abtests.md): audiences saved under an id that a push
//! names (`segment`, `abtest`). Each app keeps them in memory; each test also keeps its
//! devices by variant beside the audience index (`Devices::abtests`), so splitting a push is
//! a few bitmap intersections. A test's report is counted from its pushes' delivery and
//! click state, which Pigeon keeps anyway.

use crate::app::AppState;
use crate::{now_ms, Engine, EngineError};
use pigeon_core::abtest::two_proportion_p_value;
use pigeon_core::{
    Audience, Content, PlatformSet, Push, Resolved, SavedAudiences, Split, VariantBuckets,
};
use pigeon_store::{AbTestRecord, SavedKind, SegmentRecord};
use roaring::RoaringBitmap;
use std::collections::HashMap;
use std::sync::Arc;

/// Most segments an app may keep.
pub const MAX_SEGMENTS_PER_APP: usize = 1_000;
/// Most A/B tests an app may keep (each costs a bitmap per variant over all its devices).
pub const MAX_ABTESTS_PER_APP: usize = 100;

/// An app's segments and A/B tests.
#[derive(Default)]
pub(crate) struct Saved {
    segments: HashMap<String, Arc<SegmentRecord>>,
    abtests: HashMap<String, Arc<AbTestRecord>>,
}

/// One variant's figures in a test's report, over all the test's pushes.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantReport {
    pub name: String,
    pub targeted: u64,
    /// Devices a push was written to (Pigeon's connection) or handed to a vendor.
    pub sent: u64,
    pub delivered: u64,
    pub clicked: u64,
}

impl VariantReport {
    /// Clicked over delivered (0 while nothing is delivered).
    pub fn click_rate(&self) -> f64 {
        if self.delivered == 0 {
            0.0
        } else {
            self.clicked as f64 / self.delivered as f64
        }
    }
}

/// The report of an A/B test.
#[derive(Debug, Clone, PartialEq)]
pub struct AbTestReport {
    pub abtest_id: String,
    pub variants: Vec<VariantReport>,
    /// Devices the test's pushes left out as its control group.
    pub control_targeted: u64,
    /// The variant with the highest click rate (the first of equals), among those with
    /// something delivered.
    pub leader: Option<usize>,
    /// The two-proportion z-test between the leader and the runner-up.
    pub p_value: Option<f64>,
}

/// The leader and the p-value between it and the runner-up: variants with nothing delivered
/// rank last, equals in their order.
fn leader_and_p_value(variants: &[VariantReport]) -> (Option<usize>, Option<f64>) {
    let mut ranked: Vec<usize> = (0..variants.len()).collect();
    ranked.sort_by(|&a, &b| {
        let (va, vb) = (&variants[a], &variants[b]);
        (vb.delivered > 0)
            .cmp(&(va.delivered > 0))
            .then(vb.click_rate().total_cmp(&va.click_rate()))
    });
    let leader = ranked
        .first()
        .copied()
        .filter(|&i| variants[i].delivered > 0);
    let p_value = match (leader, ranked.get(1)) {
        (Some(l), Some(&r)) => two_proportion_p_value(
            (variants[l].clicked, variants[l].delivered),
            (variants[r].clicked, variants[r].delivered),
        ),
        _ => None,
    };
    (leader, p_value)
}

/// A variant's content in a push: the variant's notification and message where it has
/// them (its notifications only on the push's platforms), the push's otherwise.
fn variant_content(push: &Push, variant: &Content) -> Content {
    let notifications = if variant.notifications.is_empty() {
        push.content.notifications.clone()
    } else {
        variant
            .notifications
            .iter()
            .filter(|(p, _)| push.platforms.contains(**p))
            .map(|(p, n)| (*p, n.clone()))
            .collect()
    };
    Content {
        notifications,
        message: variant
            .message
            .clone()
            .or_else(|| push.content.message.clone()),
        vendor_notification: push.content.vendor_notification.clone(),
    }
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}{:016x}", rand::random::<u64>())
}

/// A test's devices by variant, over every device of the app: placed under the index's read
/// lock, then, under its write lock, the devices that registered meanwhile.
fn install_buckets(app: &AppState, test: &AbTestRecord) {
    let weights = test.variants.iter().map(|v| v.weight).collect();
    let mut buckets = VariantBuckets::new(&test.abtest_id, weights);
    {
        let devices = app.devices.read();
        for (ordinal, record) in devices.records.iter().enumerate() {
            if let Some(r) = record {
                buckets.add(ordinal as u32, &r.registration_id);
            }
        }
    }
    let mut devices = app.devices.write();
    let mut placed = buckets.control.clone();
    for v in &buckets.variants {
        placed |= v;
    }
    let late: Vec<(u32, String)> = (devices.index.all() - &placed)
        .iter()
        .filter_map(|o| devices.record(o).map(|r| (o, r.registration_id.clone())))
        .collect();
    for (ordinal, rid) in late {
        buckets.add(ordinal, &rid);
    }
    devices.abtests.insert(test.abtest_id.clone(), buckets);
}

/// [`install_buckets`] off the runtime's threads: hashing every device of a big app takes a
/// while (about 40 ns a device).
async fn install_buckets_blocking(
    app: Arc<AppState>,
    test: AbTestRecord,
) -> Result<(), EngineError> {
    tokio::task::spawn_blocking(move || install_buckets(&app, &test))
        .await
        .map_err(|e| EngineError::Invalid(format!("placing the test's devices failed: {e}")))
}

impl Saved {
    fn put_segment(&mut self, s: SegmentRecord) {
        self.segments.insert(s.segment_id.clone(), Arc::new(s));
    }
}

impl Engine {
    /// Loads an app's segments and tests, with each test's devices by variant (after the
    /// app's devices).
    pub(crate) async fn load_saved(&self, app: &AppState) -> Result<(), EngineError> {
        let segments = self.store.list_segments(&app.app_key).await?;
        let tests = self.store.list_abtests(&app.app_key).await?;
        // At start, before the app serves anything: no runtime work waits on this.
        for test in &tests {
            install_buckets(app, test);
        }
        let mut saved = app.saved.write();
        for s in segments {
            saved.put_segment(s);
        }
        for t in tests {
            saved.abtests.insert(t.abtest_id.clone(), Arc::new(t));
        }
        Ok(())
    }

    /// Reads a segment or a test another node changed (the change feed).
    pub(crate) async fn reload_saved(
        &self,
        app_key: &str,
        kind: SavedKind,
        id: &str,
    ) -> Result<(), EngineError> {
        let Some(app) = self.apps.read().get(app_key).cloned() else {
            return Ok(()); // loaded with the app when first used
        };
        match kind {
            SavedKind::Segment => match self.store.get_segment(app_key, id).await? {
                Some(s) => app.saved.write().put_segment(s),
                None => {
                    app.saved.write().segments.remove(id);
                }
            },
            SavedKind::AbTest => match self.store.get_abtest(app_key, id).await? {
                Some(t) if !app.saved.read().abtests.contains_key(id) => {
                    install_buckets_blocking(app.clone(), t.clone()).await?;
                    app.saved
                        .write()
                        .abtests
                        .insert(id.to_string(), Arc::new(t));
                }
                Some(_) => {} // a test never changes
                None => {
                    app.saved.write().abtests.remove(id);
                    app.devices.write().abtests.remove(id);
                }
            },
        }
        Ok(())
    }

    /// An app's segments, oldest first.
    pub fn segments(&self, app: &AppState) -> Vec<SegmentRecord> {
        let mut all: Vec<SegmentRecord> = app
            .saved
            .read()
            .segments
            .values()
            .map(|s| SegmentRecord::clone(s))
            .collect();
        all.sort_by(|a, b| (a.created_ms, &a.segment_id).cmp(&(b.created_ms, &b.segment_id)));
        all
    }

    /// A segment of the app; in a cluster, one made through another node a moment ago too.
    pub async fn segment(&self, app: &AppState, id: &str) -> Option<SegmentRecord> {
        let found = |app: &AppState| app.saved.read().segments.get(id).map(|s| (**s).clone());
        if let Some(s) = found(app) {
            return Some(s);
        }
        if self.cluster().is_some() {
            self.catch_up().await;
        }
        found(app)
    }

    /// How many devices a segment resolves to now (on every platform, blocked ones left out).
    pub fn segment_size(&self, app: &AppState, segment: &SegmentRecord) -> u64 {
        let mut devices = app
            .devices
            .read()
            .resolve(&segment.audience, PlatformSet::all());
        devices -= &*app.blocked.read();
        devices.len()
    }

    /// Saves a new segment (its id, app and creation time are given here).
    pub async fn create_segment(
        &self,
        app: &AppState,
        name: String,
        audience: Audience,
    ) -> Result<SegmentRecord, EngineError> {
        if app.saved.read().segments.len() >= MAX_SEGMENTS_PER_APP {
            return Err(EngineError::TooMany("segments", MAX_SEGMENTS_PER_APP));
        }
        let segment = SegmentRecord {
            app_key: app.app_key.clone(),
            segment_id: new_id("seg"),
            name,
            audience,
            created_ms: now_ms(),
        };
        self.store.put_segment(segment.clone()).await?;
        app.saved.write().put_segment(segment.clone());
        self.announce_change();
        Ok(segment)
    }

    /// Replaces a segment's name and audience; the next push that names it follows them.
    pub async fn replace_segment(
        &self,
        app: &AppState,
        id: &str,
        name: String,
        audience: Audience,
    ) -> Result<SegmentRecord, EngineError> {
        let old = self
            .segment(app, id)
            .await
            .ok_or_else(|| EngineError::UnknownSegment(id.to_string()))?;
        let segment = SegmentRecord {
            name,
            audience,
            ..old
        };
        self.store.put_segment(segment.clone()).await?;
        app.saved.write().put_segment(segment.clone());
        self.announce_change();
        Ok(segment)
    }

    pub async fn delete_segment(&self, app: &AppState, id: &str) -> Result<(), EngineError> {
        self.segment(app, id)
            .await
            .ok_or_else(|| EngineError::UnknownSegment(id.to_string()))?;
        if !self
            .store
            .delete_saved(&app.app_key, SavedKind::Segment, id)
            .await?
        {
            return Err(EngineError::UnknownSegment(id.to_string()));
        }
        app.saved.write().segments.remove(id);
        self.announce_change();
        Ok(())
    }

    /// An app's A/B tests, oldest first.
    pub fn abtests(&self, app: &AppState) -> Vec<AbTestRecord> {
        let mut all: Vec<AbTestRecord> = app
            .saved
            .read()
            .abtests
            .values()
            .map(|t| AbTestRecord::clone(t))
            .collect();
        all.sort_by(|a, b| (a.created_ms, &a.abtest_id).cmp(&(b.created_ms, &b.abtest_id)));
        all
    }

    /// A test of the app; in a cluster, one made through another node a moment ago too.
    pub async fn abtest(&self, app: &AppState, id: &str) -> Option<AbTestRecord> {
        let found = |app: &AppState| app.saved.read().abtests.get(id).map(|t| (**t).clone());
        if let Some(t) = found(app) {
            return Some(t);
        }
        if self.cluster().is_some() {
            self.catch_up().await;
        }
        found(app)
    }

    /// Saves a new test and places every device of the app in its variants.
    pub async fn create_abtest(
        &self,
        app: &AppState,
        mut test: AbTestRecord,
    ) -> Result<AbTestRecord, EngineError> {
        let total: u32 = test
            .variants
            .iter()
            .map(|v| u32::from(v.weight))
            .sum::<u32>()
            + u32::from(test.control_weight);
        if !(2..=5).contains(&test.variants.len()) || total != 100 {
            return Err(EngineError::Invalid(
                "an A/B test has 2 to 5 variants whose weights and control_weight add up to 100"
                    .into(),
            ));
        }
        if app.saved.read().abtests.len() >= MAX_ABTESTS_PER_APP {
            return Err(EngineError::TooMany("A/B tests", MAX_ABTESTS_PER_APP));
        }
        test.app_key = app.app_key.clone();
        test.abtest_id = new_id("ab");
        test.created_ms = now_ms();
        self.store.put_abtest(test.clone()).await?;
        let shared = self.apps.read().get(&app.app_key).cloned();
        match shared {
            Some(shared) => install_buckets_blocking(shared, test.clone()).await?,
            None => install_buckets(app, &test),
        }
        app.saved
            .write()
            .abtests
            .insert(test.abtest_id.clone(), Arc::new(test.clone()));
        self.announce_change();
        Ok(test)
    }

    /// Deletes a test: later pushes cannot name it; pushes already made go on as they were.
    pub async fn delete_abtest(&self, app: &AppState, id: &str) -> Result<(), EngineError> {
        self.abtest(app, id)
            .await
            .ok_or_else(|| EngineError::UnknownAbTest(id.to_string()))?;
        if !self
            .store
            .delete_saved(&app.app_key, SavedKind::AbTest, id)
            .await?
        {
            return Err(EngineError::UnknownAbTest(id.to_string()));
        }
        app.saved.write().abtests.remove(id);
        app.devices.write().abtests.remove(id);
        self.announce_change();
        Ok(())
    }

    /// Resolves a push's audience with the segment and the test it names, splitting it by
    /// the test's variants.
    pub(crate) fn resolve_push(
        &self,
        app: &AppState,
        push: &Push,
    ) -> Result<Resolved, EngineError> {
        let platforms: PlatformSet = push
            .platforms
            .iter()
            .filter(|p| push.has_content_for(*p))
            .collect();
        let (segment, test) = match &push.audience {
            Audience::Expr(e) => {
                let saved = app.saved.read();
                let segment = match &e.segment {
                    Some(id) => Some(
                        saved
                            .segments
                            .get(id)
                            .cloned()
                            .ok_or_else(|| EngineError::UnknownSegment(id.clone()))?,
                    ),
                    None => None,
                };
                let test = match &e.abtest {
                    Some(id) => Some(
                        saved
                            .abtests
                            .get(id)
                            .cloned()
                            .ok_or_else(|| EngineError::UnknownAbTest(id.clone()))?,
                    ),
                    None => None,
                };
                (segment, test)
            }
            Audience::All => (None, None),
        };
        let mut resolved = {
            let devices = app.devices.read();
            let abtest = match &test {
                Some(t) => Some((
                    &t.audience,
                    devices
                        .abtests
                        .get(&t.abtest_id)
                        .ok_or_else(|| EngineError::UnknownAbTest(t.abtest_id.clone()))?,
                )),
                None => None,
            };
            let saved = SavedAudiences {
                segment: segment.as_ref().map(|s| &s.audience),
                abtest,
            };
            devices.resolve_saved(&push.audience, platforms, saved)
        };
        let blocked = app.blocked.read();
        if !blocked.is_empty() {
            resolved.targets -= &*blocked;
            if let Some((variants, _)) = &mut resolved.variants {
                for v in variants {
                    *v -= &*blocked;
                }
            }
        }
        Ok(resolved)
    }

    /// The split of a push to a test: each variant's content in this push, and how many of
    /// its audience fell in control.
    pub(crate) fn split_of(
        &self,
        app: &AppState,
        push: &Push,
        control_targeted: u64,
    ) -> Result<Split, EngineError> {
        let id = match &push.audience {
            Audience::Expr(e) => e.abtest.clone(),
            Audience::All => None,
        }
        .unwrap_or_default();
        let test = app
            .saved
            .read()
            .abtests
            .get(&id)
            .cloned()
            .ok_or_else(|| EngineError::UnknownAbTest(id.clone()))?;
        Ok(Split {
            abtest_id: id,
            variants: test
                .variants
                .iter()
                .map(|v| pigeon_core::Variant {
                    name: v.name.clone(),
                    weight: v.weight,
                    content: variant_content(push, &v.content),
                })
                .collect(),
            control_targeted,
        })
    }

    /// The report of a test over all its pushes (segments-abtests.md §2).
    pub async fn abtest_report(
        &self,
        app: &AppState,
        id: &str,
    ) -> Result<AbTestReport, EngineError> {
        let test = self
            .abtest(app, id)
            .await
            .ok_or_else(|| EngineError::UnknownAbTest(id.to_string()))?;
        let buckets: Vec<RoaringBitmap> = app
            .devices
            .read()
            .abtests
            .get(id)
            .map(|b| b.variants.clone())
            .unwrap_or_default();
        let mut variants: Vec<VariantReport> = test
            .variants
            .iter()
            .map(|v| VariantReport {
                name: v.name.clone(),
                targeted: 0,
                sent: 0,
                delivered: 0,
                clicked: 0,
            })
            .collect();
        let mut control_targeted = 0;
        for msg_id in self.store.abtest_pushes(&app.app_key, id).await? {
            let Some(sets) = self.push_sets(app, msg_id).await? else {
                continue;
            };
            control_targeted += sets.control_targeted;
            let reached = &sets.sent | &sets.delivered;
            for (report, bucket) in variants.iter_mut().zip(&buckets) {
                let targets = &sets.audience & bucket;
                report.targeted += targets.len();
                report.sent += reached.intersection_len(&targets);
                report.delivered += sets.delivered.intersection_len(&targets);
                report.clicked += sets.clicked.intersection_len(&targets);
            }
        }
        let (leader, p_value) = leader_and_p_value(&variants);
        Ok(AbTestReport {
            abtest_id: test.abtest_id,
            variants,
            control_targeted,
            leader,
            p_value,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(name: &str, delivered: u64, clicked: u64) -> VariantReport {
        VariantReport {
            name: name.into(),
            targeted: delivered,
            sent: delivered,
            delivered,
            clicked,
        }
    }

    #[test]
    fn the_leader_has_the_best_click_rate_among_variants_with_deliveries() {
        assert_eq!(
            leader_and_p_value(&[v("A", 0, 0), v("B", 0, 0)]),
            (None, None)
        );
        // Only B has deliveries: it leads, and the runner-up has nothing to compare.
        assert_eq!(
            leader_and_p_value(&[v("A", 0, 0), v("B", 10, 0)]),
            (Some(1), None)
        );
        let (leader, p) = leader_and_p_value(&[v("A", 1000, 90), v("B", 1000, 120), v("C", 5, 0)]);
        assert_eq!(leader, Some(1));
        let p = p.unwrap_or(f64::NAN);
        assert!((p - 0.028_646).abs() < 1e-5, "{p}");
        // Equal rates: the first leads, and nothing tells them apart.
        assert_eq!(
            leader_and_p_value(&[v("A", 10, 5), v("B", 20, 10)]).0,
            Some(0)
        );
    }

    #[test]
    fn a_variant_takes_what_it_lacks_from_the_push() {
        use pigeon_core::{Message, Notification, Platform};
        let mut push = Push::new([Platform::Android].into_iter().collect(), Audience::All);
        push.content.message = Some(Message {
            content: "body message".into(),
            ..Default::default()
        });
        push.content.notifications.insert(
            Platform::Android,
            Notification {
                body: "body alert".into(),
                ..Default::default()
            },
        );
        let mut only_alert = Content::default();
        for p in [Platform::Android, Platform::Ios] {
            only_alert.notifications.insert(
                p,
                Notification {
                    body: "variant alert".into(),
                    ..Default::default()
                },
            );
        }
        let c = variant_content(&push, &only_alert);
        assert_eq!(c.notifications.len(), 1, "only the push's platforms");
        assert_eq!(c.notifications[&Platform::Android].body, "variant alert");
        assert_eq!(
            c.message.map(|m| m.content).as_deref(),
            Some("body message")
        );
        let c = variant_content(&push, &Content::default());
        assert_eq!(c.notifications[&Platform::Android].body, "body alert");
    }
}
