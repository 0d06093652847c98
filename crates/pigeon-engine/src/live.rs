//! Pushes that devices may still receive: the offline store in memory.

use bytes::Bytes;
use parking_lot::Mutex;
use pigeon_core::{BadgeOp, Ordinal, Platform, Push};
use pigeon_store::Checkpoint;
use roaring::RoaringBitmap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

/// A push that is still deliverable, with its resolved audience and who has acked it.
/// Stored once for all its devices: O(bitmap), not O(devices).
pub struct LivePush {
    pub push: Push,
    pub audience: RoaringBitmap,
    /// Devices it was written to over Pigeon's own connection.
    sent: Mutex<RoaringBitmap>,
    delivered: Mutex<RoaringBitmap>,
    /// Sends or acks happened since the last checkpoint.
    dirty: AtomicBool,
    /// Recalled: no device gets it any more.
    recalled: AtomicBool,
    /// The frame each platform's devices get, encoded once by whoever sends it.
    frames: [OnceLock<Bytes>; Platform::ALL.len()],
    /// How it changes the badge of each platform's devices.
    badge_ops: [Option<BadgeOp>; Platform::ALL.len()],
    /// A paced push: how many of its targets (in ordinal order) were offered to connected
    /// devices so far.
    paced_offered: AtomicU64,
    /// Devices a vendor is carrying it to whether or not they are connected (`ospush`,
    /// `first_ospush`, iOS notifications through APNs): Pigeon's connection skips them
    /// unless the vendor fails and the policy lets the connection take over.
    held: Mutex<RoaringBitmap>,
    /// Whether `held` was ever set: most pushes never take its lock.
    any_held: AtomicBool,
    /// A push to an A/B test: each variant's devices and what they get.
    variants: Option<Box<LiveVariants>>,
    /// Devices each vendor took it for (the rest of `sent` went over Pigeon's connection).
    /// Kept in memory only, while the push is live.
    by_vendor: Mutex<Vec<(Box<str>, RoaringBitmap)>>,
}

/// The variants of a push to an A/B test, as its devices get them.
struct LiveVariants {
    /// Each variant's targets (together, the push's audience).
    members: Vec<RoaringBitmap>,
    /// The push as each variant's devices get it: its own content, the push's policy.
    pushes: Vec<Push>,
    frames: Vec<[OnceLock<Bytes>; Platform::ALL.len()]>,
    badge_ops: Vec<[Option<BadgeOp>; Platform::ALL.len()]>,
}

impl LivePush {
    pub fn new(
        push: Push,
        audience: RoaringBitmap,
        sent: RoaringBitmap,
        delivered: RoaringBitmap,
    ) -> LivePush {
        let now = crate::now_ms();
        let released = released(&push, audience.len(), now);
        LivePush {
            badge_ops: Platform::ALL.map(|p| push.badge_op(p)),
            paced_offered: AtomicU64::new(released),
            push,
            audience,
            sent: Mutex::new(sent),
            delivered: Mutex::new(delivered),
            dirty: AtomicBool::new(false),
            recalled: AtomicBool::new(false),
            frames: Default::default(),
            held: Mutex::new(RoaringBitmap::new()),
            any_held: AtomicBool::new(false),
            variants: None,
            by_vendor: Mutex::new(Vec::new()),
        }
    }

    /// Gives a push to an A/B test its variants' targets (`members`, in the order of its
    /// split's variants); a push without a split is returned as it is.
    pub(crate) fn with_variants(mut self, members: Vec<RoaringBitmap>) -> LivePush {
        let Some(split) = &self.push.split else {
            return self;
        };
        let pushes: Vec<Push> = split
            .variants
            .iter()
            .map(|v| Push {
                content: v.content.clone(),
                split: None,
                ..self.push.clone()
            })
            .collect();
        self.variants = Some(Box::new(LiveVariants {
            badge_ops: pushes
                .iter()
                .map(|p| Platform::ALL.map(|pl| p.badge_op(pl)))
                .collect(),
            frames: pushes.iter().map(|_| Default::default()).collect(),
            members,
            pushes,
        }));
        self
    }

    /// The variant of an A/B push `ordinal` is in (`None` for any other push). A target its
    /// bitmaps miss (a device this node learnt of after it placed the push's targets) is
    /// placed by its registration id, which `registration_id` gives.
    pub fn variant_with(
        &self,
        ordinal: Ordinal,
        registration_id: impl FnOnce() -> Option<String>,
    ) -> Option<usize> {
        let v = self.variants.as_ref()?;
        if let Some(i) = v.members.iter().position(|m| m.contains(ordinal)) {
            return Some(i);
        }
        if !self.audience.contains(ordinal) {
            return None;
        }
        self.push.split.as_ref()?.variant_of(&registration_id()?)
    }

    /// The push as a variant's devices get it (`None`: the push itself).
    pub fn variant_push(&self, variant: Option<usize>) -> &Push {
        match (&self.variants, variant) {
            (Some(v), Some(i)) => v.pushes.get(i).unwrap_or(&self.push),
            _ => &self.push,
        }
    }

    /// Keeps Pigeon's connection off these devices: a vendor carries the push to them.
    pub(crate) fn hold(&self, ordinals: &RoaringBitmap) {
        if ordinals.is_empty() {
            return;
        }
        *self.held.lock() |= ordinals;
        self.any_held.store(true, Ordering::Release);
    }

    /// Lets Pigeon's connection deliver to `ordinal` again; whether it was held.
    pub(crate) fn release(&self, ordinal: Ordinal) -> bool {
        self.any_held.load(Ordering::Acquire) && self.held.lock().remove(ordinal)
    }

    /// Whether a vendor, not Pigeon's connection, is to deliver it to `ordinal`.
    pub fn is_held_for(&self, ordinal: Ordinal) -> bool {
        self.any_held.load(Ordering::Acquire) && self.held.lock().contains(ordinal)
    }

    pub fn msg_id(&self) -> u64 {
        self.push.msg_id
    }

    /// Whether its devices get different content by A/B variant.
    pub fn has_variants(&self) -> bool {
        self.variants.is_some()
    }

    pub fn expires_ms(&self) -> u64 {
        self.push.expires_ms()
    }

    /// How it changes the badge of a device of `variant` (`None` for a push without
    /// variants) on `platform`, if it does.
    pub fn badge_op(&self, variant: Option<usize>, platform: Platform) -> Option<BadgeOp> {
        if let (Some(v), Some(i)) = (&self.variants, variant) {
            return v.badge_ops.get(i).and_then(|ops| ops[platform as usize]);
        }
        self.badge_ops[platform as usize]
    }

    /// Whether it was written to `ordinal` over Pigeon's own connection.
    pub fn was_sent_to(&self, ordinal: Ordinal) -> bool {
        self.sent.lock().contains(ordinal)
    }

    /// Whether `ordinal` acked this push.
    pub fn is_delivered_to(&self, ordinal: Ordinal) -> bool {
        self.delivered.lock().contains(ordinal)
    }

    /// Whether `ordinal`, connecting at `now_ms`, should still get this push from the
    /// offline store.
    pub fn is_pending_for(&self, ordinal: Ordinal, now_ms: u64) -> bool {
        self.expires_ms() > now_ms
            && !self.is_recalled()
            && self.audience.contains(ordinal)
            && self.is_released_for(ordinal, now_ms)
            && !self.is_delivered_to(ordinal)
            && !self.is_held_for(ordinal)
    }

    /// Whether it is paced (`big_push_duration`).
    pub fn is_paced(&self) -> bool {
        self.push.policy.pace.duration_ms.is_some_and(|d| d > 0)
    }

    /// How many of its targets its pace lets it reach by `now_ms` (all if not paced).
    pub fn released(&self, now_ms: u64) -> u64 {
        released(&self.push, self.audience.len(), now_ms)
    }

    /// Whether its pace has reached `ordinal` by `now_ms`: targets are released in ordinal
    /// order, evenly over the pace, so this follows from the push alone (also after a
    /// restart).
    pub fn is_released_for(&self, ordinal: Ordinal, now_ms: u64) -> bool {
        !self.is_paced() || self.audience.rank(ordinal) <= self.released(now_ms)
    }

    /// The targets released since the last call, which connected devices should be offered;
    /// empty for a push that is not paced.
    pub(crate) fn newly_released(&self, now_ms: u64) -> RoaringBitmap {
        let upto = self.released(now_ms);
        let from = self.paced_offered.swap(upto, Ordering::AcqRel);
        let mut out = RoaringBitmap::new();
        if upto > from {
            if let (Some(first), Some(last)) = (
                self.audience.select(from as u32),
                self.audience.select((upto - 1) as u32),
            ) {
                out.extend(self.audience.range(first..=last));
            }
        }
        out
    }

    /// Marks `ordinal` delivered. Returns (newly delivered, first change since the last
    /// checkpoint), so the caller can list the push for the next checkpoint once.
    pub fn mark_delivered(&self, ordinal: Ordinal) -> (bool, bool) {
        let newly = self.audience.contains(ordinal) && self.delivered.lock().insert(ordinal);
        let first = newly && !self.dirty.swap(true, Ordering::AcqRel);
        (newly, first)
    }

    /// Records that the push was written to `ordinal`. Returns (newly sent, first change
    /// since the last checkpoint), like [`LivePush::mark_delivered`].
    pub fn mark_sent(&self, ordinal: Ordinal) -> (bool, bool) {
        let newly = self.sent.lock().insert(ordinal);
        (newly, newly && !self.dirty.swap(true, Ordering::AcqRel))
    }

    /// Records that `vendor` took it for `ordinal`.
    pub(crate) fn mark_vendor_sent(&self, ordinal: Ordinal, vendor: &str) {
        let mut all = self.by_vendor.lock();
        match all.iter_mut().find(|(v, _)| &**v == vendor) {
            Some((_, devices)) => {
                devices.insert(ordinal);
            }
            None => all.push((vendor.into(), std::iter::once(ordinal).collect())),
        }
    }

    /// Gives a push read from storage the devices each vendor took it for (by this node's
    /// last checkpoint, and the other nodes' in a cluster).
    pub(crate) fn with_vendor_sets(self, sets: Option<pigeon_store::VendorSets>) -> LivePush {
        if let Some(sets) = sets {
            *self.by_vendor.lock() = sets.into_iter().map(|(v, d)| (v.into(), d)).collect();
        }
        self
    }

    /// The devices each vendor took it for, as far as this node saw.
    pub fn vendor_sent_sets(&self) -> Vec<(String, RoaringBitmap)> {
        self.by_vendor
            .lock()
            .iter()
            .map(|(v, d)| (v.to_string(), d.clone()))
            .collect()
    }

    /// Stops (or, if the recall could not be recorded, resumes) every further delivery.
    pub(crate) fn set_recalled(&self, recalled: bool) {
        self.recalled.store(recalled, Ordering::Release);
    }

    pub fn is_recalled(&self) -> bool {
        self.recalled.load(Ordering::Acquire)
    }

    /// Whether every target acked it: nothing is left to deliver.
    pub fn is_complete(&self) -> bool {
        self.delivered.lock().len() >= self.audience.len()
    }

    /// Who it was written to, and who acked it.
    pub fn sets(&self) -> (RoaringBitmap, RoaringBitmap) {
        (self.sent.lock().clone(), self.delivered.lock().clone())
    }

    /// Who was sent it and who acked it, if that changed since the last call.
    pub(crate) fn take_checkpoint(&self) -> Option<Checkpoint> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            Some(Checkpoint {
                msg_id: self.msg_id(),
                sent: self.sent.lock().clone(),
                delivered: self.delivered.lock().clone(),
                vendors: self.vendor_sent_sets(),
            })
        } else {
            None
        }
    }

    /// The encoded frame a device of `variant` (`None` for a push without variants) on
    /// `platform` gets, encoding it with `encode` the first time: once per platform, and per
    /// variant for a push to an A/B test.
    pub fn frame(
        &self,
        variant: Option<usize>,
        platform: Platform,
        encode: impl FnOnce(&Push) -> Bytes,
    ) -> Bytes {
        if let (Some(v), Some(i)) = (&self.variants, variant) {
            if let (Some(frames), Some(push)) = (v.frames.get(i), v.pushes.get(i)) {
                return frames[platform as usize]
                    .get_or_init(|| encode(push))
                    .clone();
            }
        }
        self.frames[platform as usize]
            .get_or_init(|| encode(&self.push))
            .clone()
    }
}

/// How many of a push's `targets` its pace lets it reach by `now_ms`.
fn released(push: &Push, targets: u64, now_ms: u64) -> u64 {
    match push.policy.pace.duration_ms {
        Some(pace) if pace > 0 => {
            let elapsed = now_ms.saturating_sub(push.sent_ms);
            if elapsed >= pace {
                targets
            } else {
                (u128::from(targets) * u128::from(elapsed) / u128::from(pace)) as u64
            }
        }
        _ => targets,
    }
}

impl LivePush {
    /// Whether a push that just arrived live should go to `ordinal` now: pending, or
    /// online-only (time_to_live 0, which never waits in the offline store) and not acked.
    pub fn is_live_for(&self, ordinal: Ordinal, now_ms: u64) -> bool {
        if self.push.policy.ttl_s == 0 {
            self.audience.contains(ordinal)
                && self.is_released_for(ordinal, now_ms)
                && !self.is_delivered_to(ordinal)
                && !self.is_recalled()
                && !self.is_held_for(ordinal)
        } else {
            self.is_pending_for(ordinal, now_ms)
        }
    }
}

#[cfg(test)]
mod size {
    /// A pending push stays in memory until it expires (100,000 of them in the restart
    /// benchmark), with one notification per platform: the rare parts of both are boxed.
    #[test]
    fn a_pending_push_stays_small() {
        use std::mem::size_of;
        assert!(size_of::<pigeon_core::Notification>() <= 264);
        assert!(size_of::<pigeon_core::Push>() <= 856);
        assert!(size_of::<super::LivePush>() <= 1368);
    }
}
