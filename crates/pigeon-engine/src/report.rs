//! What happened to a push, counted from what devices actually did: whom it targeted, whom
//! Pigeon's own connection sent it to, who acked it and who clicked it.

use crate::app::AppState;
use crate::{Engine, EngineError};
use pigeon_core::{Platform, PlatformSet};
use roaring::RoaringBitmap;

pub use pigeon_store::PushCounts;

/// Counts for one platform (or all of them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub targets: u64,
    pub sent: u64,
    pub delivered: u64,
    pub clicked: u64,
}

/// The report of one push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushReport {
    pub msg_id: u64,
    pub has_notification: bool,
    pub has_message: bool,
    pub total: Counts,
    /// Counts per platform, for the platforms the push had targets on.
    pub by_platform: Vec<(Platform, Counts)>,
    /// The push that replaced it (`options.override_msg_id`): it went no further after.
    pub overridden_by: Option<u64>,
}

/// Where one device stands with one push (`POST /v3/status/message`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Delivered = 0,
    NotDelivered = 1,
    NotThisApp = 2,
    NotTargeted = 3,
}

pub(crate) struct Sets {
    pub audience: RoaringBitmap,
    pub sent: RoaringBitmap,
    pub delivered: RoaringBitmap,
    pub clicked: RoaringBitmap,
    has_notification: bool,
    has_message: bool,
    /// For a push to an A/B test: how many of its audience were left out as control.
    pub control_targeted: u64,
}

impl Engine {
    /// Who a push targeted, was sent to, and acked it: from memory while it is live (fresher
    /// than the last checkpoint), else from storage. `None` if it is not a push of this app.
    pub(crate) async fn push_sets(
        &self,
        app: &AppState,
        msg_id: u64,
    ) -> Result<Option<Sets>, EngineError> {
        let control = |p: &pigeon_core::Push| p.split.as_ref().map_or(0, |s| s.control_targeted);
        let (audience, sent, delivered, has_notification, has_message, control_targeted) =
            match app.live_push(msg_id) {
                Some(live) => {
                    let (mut sent, mut delivered) = live.sets();
                    // In a cluster the other nodes' devices are in the store (as of their last
                    // checkpoint): both together are the whole.
                    if self.cluster().is_some() {
                        if let Some(stored) = self.store.load_push(&app.app_key, msg_id).await? {
                            sent |= stored.sent;
                            delivered |= stored.delivered;
                        }
                    }
                    (
                        live.audience.clone(),
                        sent,
                        delivered,
                        !live.push.content.notifications.is_empty(),
                        live.push.content.message.is_some(),
                        control(&live.push),
                    )
                }
                None => match self.store.load_push(&app.app_key, msg_id).await? {
                    Some(p) => (
                        p.audience,
                        p.sent,
                        p.delivered,
                        !p.push.content.notifications.is_empty(),
                        p.push.content.message.is_some(),
                        control(&p.push),
                    ),
                    None => return Ok(None),
                },
            };
        let clicked = self
            .store
            .clicked(&app.app_key, msg_id)
            .await?
            .into_iter()
            .collect();
        Ok(Some(Sets {
            audience,
            sent,
            delivered,
            clicked,
            has_notification,
            has_message,
            control_targeted,
        }))
    }

    /// The report of a push of this app; `None` if there is no such push.
    pub async fn push_report(
        &self,
        app: &AppState,
        msg_id: u64,
    ) -> Result<Option<PushReport>, EngineError> {
        let Some(sets) = self.push_sets(app, msg_id).await? else {
            return Ok(None);
        };
        let count = |within: &RoaringBitmap| Counts {
            targets: sets.audience.intersection_len(within),
            sent: sets.sent.intersection_len(within),
            delivered: sets.delivered.intersection_len(within),
            clicked: (&sets.clicked & &sets.audience).intersection_len(within),
        };
        let by_platform = {
            let devices = app.devices.read();
            Platform::ALL
                .iter()
                .filter_map(|&p| {
                    let mut one = PlatformSet::empty();
                    one.insert(p);
                    let c = count(&devices.index.on_platforms(one));
                    (c.targets > 0).then_some((p, c))
                })
                .collect()
        };
        let everyone = sets.audience.clone();
        Ok(Some(PushReport {
            msg_id,
            has_notification: sets.has_notification,
            has_message: sets.has_message,
            total: count(&everyone),
            by_platform,
            overridden_by: self.store.overridden_by(msg_id).await?,
        }))
    }

    /// Where each registration id stands with a push; `None` if there is no such push.
    pub async fn delivery_status(
        &self,
        app: &AppState,
        msg_id: u64,
        registration_ids: &[String],
    ) -> Result<Option<Vec<DeliveryStatus>>, EngineError> {
        let Some(sets) = self.push_sets(app, msg_id).await? else {
            return Ok(None);
        };
        let devices = app.devices.read();
        Ok(Some(
            registration_ids
                .iter()
                .map(|rid| match devices.ordinal_of(rid) {
                    None => DeliveryStatus::NotThisApp,
                    Some(o) if !sets.audience.contains(o) => DeliveryStatus::NotTargeted,
                    Some(o) if sets.delivered.contains(o) => DeliveryStatus::Delivered,
                    Some(_) => DeliveryStatus::NotDelivered,
                })
                .collect(),
        ))
    }
}

/// What an app's devices did over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceActivity {
    /// Devices registered before the period ended.
    pub registered: u64,
    /// Devices registered within the period.
    pub new: u64,
    /// Devices connected within the period, as far as Pigeon keeps it: those connected now
    /// (if the period includes now) and those whose latest time online falls within it.
    pub active: u64,
    /// Devices connected now.
    pub online: u64,
}

impl Engine {
    /// The app's pushes sent in `[from_ms, to_ms)`, oldest first, counted; those still live
    /// from memory (fresher than the last checkpoint).
    pub async fn push_counts_between(
        &self,
        app: &AppState,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<Vec<PushCounts>, EngineError> {
        let mut all = self
            .store
            .push_counts_between(&app.app_key, from_ms, to_ms)
            .await?;
        for c in &mut all {
            if app.live_push(c.msg_id).is_none() {
                continue;
            }
            if let Some(r) = self.push_report(app, c.msg_id).await? {
                c.targets = r.total.targets;
                c.sent = r.total.sent;
                c.delivered = r.total.delivered;
                c.clicked = r.total.clicked;
            }
        }
        Ok(all)
    }

    /// How many of the app's devices registered and were connected in `[from_ms, to_ms)`.
    pub async fn device_activity(
        &self,
        app: &AppState,
        from_ms: u64,
        to_ms: u64,
    ) -> Result<DeviceActivity, EngineError> {
        let (registered, new) = {
            let devices = app.devices.read();
            devices
                .records
                .iter()
                .flatten()
                .filter(|d| d.created_ms < to_ms)
                .fold((0, 0), |(all, new), d| {
                    (all + 1, new + u64::from(d.created_ms >= from_ms))
                })
        };
        let seen: RoaringBitmap = self
            .store
            .seen_between(&app.app_key, from_ms, to_ms)
            .await?
            .into_iter()
            .collect();
        let online = app.presence.lock().online.clone();
        let now = crate::now_ms();
        let active = if (from_ms..to_ms).contains(&now) {
            (&seen | &online).len()
        } else {
            seen.len()
        };
        Ok(DeviceActivity {
            registered,
            new,
            active,
            online: online.len(),
        })
    }
}

/// What one channel carried of a push: Pigeon's own connection (`"pigeon"`) or a vendor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelCounts {
    pub channel: String,
    pub sent: u64,
    pub delivered: u64,
}

/// One of an app's latest pushes, counted, for a list of pushes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSummary {
    pub counts: PushCounts,
    /// By channel, kept in memory on this node until the push expires; `None`: not recorded.
    pub channels: Option<Vec<ChannelCounts>>,
}

/// Everything known of one push, for a page about it.
#[derive(Debug, Clone, PartialEq)]
pub struct PushDetail {
    pub push: pigeon_core::Push,
    pub report: PushReport,
    /// By channel, kept in memory on this node until the push expires; `None`: not recorded.
    pub channels: Option<Vec<ChannelCounts>>,
    /// Targets that have not acked it, by reason, largest first.
    pub undelivered: Vec<(String, u64)>,
    pub recalled_ms: Option<u64>,
    pub expires_ms: u64,
}

/// Per channel: each vendor's devices, and the rest of `sent` as Pigeon's connection.
fn counts_by_channel(
    sent: &RoaringBitmap,
    delivered: &RoaringBitmap,
    vendors: Vec<(String, RoaringBitmap)>,
) -> Vec<ChannelCounts> {
    let mut by_vendor = RoaringBitmap::new();
    let mut out = Vec::new();
    for (vendor, devices) in vendors {
        by_vendor |= &devices;
        out.push(ChannelCounts {
            channel: vendor,
            sent: devices.len(),
            delivered: devices.intersection_len(delivered),
        });
    }
    let own = sent - &by_vendor;
    out.insert(
        0,
        ChannelCounts {
            channel: "pigeon".into(),
            sent: own.len(),
            delivered: own.intersection_len(delivered),
        },
    );
    out
}

/// Per channel from a live push's sets.
pub(crate) fn channel_counts(live: &crate::LivePush) -> Vec<ChannelCounts> {
    let (sent, delivered) = live.sets();
    counts_by_channel(&sent, &delivered, live.vendor_sent_sets())
}

/// Per channel from a stored push; `None` if it was checkpointed before channels were kept.
fn stored_channel_counts(p: pigeon_store::StoredPush) -> Option<Vec<ChannelCounts>> {
    let vendors = p.vendors?;
    Some(counts_by_channel(&p.sent, &p.delivered, vendors))
}

/// A push's channels: from the live push, else as it was when retired.
fn channels_of(
    app: &AppState,
    live: Option<&crate::LivePush>,
    msg_id: u64,
) -> Option<Vec<ChannelCounts>> {
    match live {
        Some(l) => Some(channel_counts(l)),
        None => app
            .retired_channels
            .lock()
            .get(&msg_id)
            .map(|(_, c)| c.clone()),
    }
}

impl Engine {
    /// The app's latest pushes, newest first, at most `limit`; those still live counted from
    /// memory (fresher than the last checkpoint) and split by channel.
    pub async fn recent_pushes(
        &self,
        app: &AppState,
        limit: u32,
    ) -> Result<Vec<PushSummary>, EngineError> {
        let all = self.store.recent_push_counts(&app.app_key, limit).await?;
        let mut out = Vec::with_capacity(all.len());
        for mut counts in all {
            let live = app.live_push(counts.msg_id);
            if live.is_some() {
                if let Some(r) = self.push_report(app, counts.msg_id).await? {
                    counts.targets = r.total.targets;
                    counts.sent = r.total.sent;
                    counts.delivered = r.total.delivered;
                    counts.clicked = r.total.clicked;
                }
            }
            let channels = match channels_of(app, live.as_deref(), counts.msg_id) {
                Some(c) => Some(c),
                // Neither live nor retired here: as stored (a restart, another node's push).
                None => self
                    .store
                    .load_push(&app.app_key, counts.msg_id)
                    .await?
                    .and_then(stored_channel_counts),
            };
            out.push(PushSummary { channels, counts });
        }
        Ok(out)
    }

    /// A push of this app with its report, its channels and why its other targets have not
    /// got it; `None` if there is no such push.
    pub async fn push_detail(
        &self,
        app: &AppState,
        msg_id: u64,
    ) -> Result<Option<PushDetail>, EngineError> {
        let Some(report) = self.push_report(app, msg_id).await? else {
            return Ok(None);
        };
        let live = app.live_push(msg_id);
        let mut channels = channels_of(app, live.as_deref(), msg_id);
        let (push, audience, delivered) = match &live {
            Some(l) => (l.push.clone(), l.audience.clone(), l.sets().1),
            None => match self.store.load_push(&app.app_key, msg_id).await? {
                Some(p) => {
                    let (push, audience, delivered) =
                        (p.push.clone(), p.audience.clone(), p.delivered.clone());
                    if channels.is_none() {
                        channels = stored_channel_counts(p);
                    }
                    (push, audience, delivered)
                }
                None => return Ok(None),
            },
        };
        let recalled_ms = self.store.recalled_at(msg_id).await?;
        let expires_ms = push.expires_ms();
        let mut missed = &audience - &delivered;
        let mut undelivered = Vec::new();
        let mut take = |reason: String, devices: &RoaringBitmap, missed: &mut RoaringBitmap| {
            let n = missed.intersection_len(devices);
            if n > 0 {
                *missed -= devices;
                undelivered.push((reason, n));
            }
        };
        if let Some(failures) = app.vendor_failures.lock().get(&msg_id) {
            take(
                "vendor said the device's token is dead".into(),
                &failures.dead,
                &mut missed,
            );
            for (reason, devices) in &failures.refused {
                take(format!("vendor rejected: {reason}"), devices, &mut missed);
            }
        }
        let rest = missed.clone();
        let why = if recalled_ms.is_some() {
            "recalled"
        } else if report.overridden_by.is_some() {
            "overridden by a newer push"
        } else if expires_ms <= crate::now_ms() {
            "expired before the device connected"
        } else {
            "waiting: not connected, no vendor channel took it"
        };
        take(why.into(), &rest, &mut missed);
        undelivered.sort_by_key(|u| std::cmp::Reverse(u.1));
        Ok(Some(PushDetail {
            channels,
            push,
            report,
            undelivered,
            recalled_ms,
            expires_ms,
        }))
    }
}
