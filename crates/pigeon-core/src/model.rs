//! A push in Pigeon's own terms: what each platform shows, what the app gets, and how it is
//! delivered. Every front door translates its dialect into these types; nothing here is named
//! after one dialect's fields.

use crate::{Audience, Platform, PlatformSet, DEFAULT_TIME_TO_LIVE_S};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Free-form JSON fields, as an app or a dialect gave them.
pub type Fields = Map<String, Value>;

/// One accepted push, as every layer below the front doors sees it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Push {
    /// Unique per server; the id every dialect answers with (in its own form) and every
    /// device sees.
    pub msg_id: u64,
    /// When the push was accepted, in ms since the epoch.
    pub sent_ms: u64,
    pub platforms: PlatformSet,
    pub audience: Audience,
    #[serde(default)]
    pub content: Content,
    #[serde(default)]
    pub policy: DeliveryPolicy,
    /// Receipts of this push to an endpoint of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<PushCallback>,
    /// Names the caller gave the push, echoed in answers and callbacks.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// A retry carrying the same key within a day pushes once and answers the first push's
    /// msg_id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency: Option<IdempotencyKey>,
    /// Set when a schedule fires this push: storing the push also records the firing, in
    /// the same transaction, so a schedule fires exactly once whatever crashes.
    #[serde(skip)]
    pub schedule: Option<ScheduleFiring>,
    /// A push to an A/B test: which content each variant's devices get.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub split: Option<Box<crate::abtest::Split>>,
}

/// A caller's idempotency key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdempotencyKey {
    pub key: String,
    /// The key must have been handed out by the server first (JPush's cid pool); otherwise
    /// any new key is taken (Getui's `request_id`).
    #[serde(default)]
    pub issued_only: bool,
}

/// One firing of a schedule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleFiring {
    pub schedule_id: String,
    /// The firing time this push is for.
    pub due_ms: u64,
    /// When the schedule fires next, if ever.
    pub next_ms: Option<u64>,
}

/// The notification of each platform, in platform order, serialized as a JSON object. A
/// sorted vector sized to its entries rather than a `BTreeMap`: a B-tree node has room for 11
/// entries, ~4.6 KB with notifications this size, for the one to five a push has, and a
/// pending push is held in memory until it expires.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Notifications(Vec<(Platform, Notification)>);

impl Notifications {
    pub fn new() -> Notifications {
        Notifications(Vec::new())
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    fn find(&self, platform: &Platform) -> Result<usize, usize> {
        self.0.binary_search_by(|(p, _)| p.cmp(platform))
    }
    pub fn get(&self, platform: &Platform) -> Option<&Notification> {
        self.find(platform).ok().map(|i| &self.0[i].1)
    }
    pub fn contains_key(&self, platform: &Platform) -> bool {
        self.find(platform).is_ok()
    }
    /// Sets `platform`'s notification; the one it replaces, if any.
    pub fn insert(&mut self, platform: Platform, n: Notification) -> Option<Notification> {
        match self.find(&platform) {
            Ok(i) => Some(std::mem::replace(&mut self.0[i].1, n)),
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (platform, n));
                None
            }
        }
    }
    pub fn remove(&mut self, platform: &Platform) -> Option<Notification> {
        self.find(platform).ok().map(|i| self.0.remove(i).1)
    }
    /// Keeps the platforms `keep` says yes to.
    pub fn retain(&mut self, mut keep: impl FnMut(&Platform, &mut Notification) -> bool) {
        self.0.retain_mut(|(p, n)| keep(p, n));
    }
    pub fn iter(&self) -> impl Iterator<Item = (&Platform, &Notification)> {
        self.0.iter().map(|(p, n)| (p, n))
    }
    pub fn keys(&self) -> impl Iterator<Item = &Platform> {
        self.0.iter().map(|(p, _)| p)
    }
}

impl std::ops::Index<&Platform> for Notifications {
    type Output = Notification;
    fn index(&self, platform: &Platform) -> &Notification {
        match self.get(platform) {
            Some(n) => n,
            None => panic!("no notification for {platform:?}"),
        }
    }
}

impl FromIterator<(Platform, Notification)> for Notifications {
    /// As a map: a platform given twice keeps its last notification.
    fn from_iter<I: IntoIterator<Item = (Platform, Notification)>>(iter: I) -> Notifications {
        // Gathered and sorted once: inserting one by one grew the vector and moved its
        // ~260-byte entries at every step. Reversed first, so that the stable sort puts a
        // platform's last notification first among its own, and dedup keeps that one.
        let mut all: Vec<(Platform, Notification)> = iter.into_iter().collect();
        all.reverse();
        all.sort_by_key(|(p, _)| *p);
        all.dedup_by_key(|(p, _)| *p);
        if all.capacity() == all.len() {
            return Notifications(all);
        }
        // Moved into a new vector of the exact size: `shrink_to_fit` asks the allocator to
        // shrink in place, and mimalloc keeps a block that is still half used, so six
        // notifications kept room for eight (~77 MB over 100k pending pushes).
        let mut exact = Vec::with_capacity(all.len());
        exact.extend(all);
        Notifications(exact)
    }
}

impl IntoIterator for Notifications {
    type Item = (Platform, Notification);
    type IntoIter = std::vec::IntoIter<(Platform, Notification)>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.into_iter()
    }
}

impl Serialize for Notifications {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.iter())
    }
}

impl<'de> Deserialize<'de> for Notifications {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Notifications, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = Notifications;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object of notifications by platform")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Notifications, A::Error> {
                let mut all = Vec::with_capacity(map.size_hint().unwrap_or(0).min(8));
                while let Some(entry) = map.next_entry::<Platform, Notification>()? {
                    all.push(entry);
                }
                Ok(all.into_iter().collect())
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// What a push carries.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Content {
    /// The notification each platform shows; a platform missing here shows none.
    #[serde(default, skip_serializing_if = "Notifications::is_empty")]
    pub notifications: Notifications,
    /// A pass-through message handed to the app, not shown by the system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<Message>,
    /// What vendor channels show for a push that carries only a message (they cannot carry
    /// a pass-through message to a closed app). Boxed, as the rarer parts of a notification
    /// are: a pending push is held in memory until it expires, and most have none of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vendor_notification: Option<Box<Notification>>,
}

/// A notification as one platform shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The text (JPush's `alert`, Getui's `body`).
    #[serde(default)]
    pub body: String,
    /// The app's own key/values, delivered with the notification.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extras: Fields,
    /// What a tap does.
    #[serde(default, skip_serializing_if = "Click::is_open_app")]
    pub click: Click,
    /// The Android activity a tap opens, for vendors that open activities rather than
    /// intents (beside `click`, which the others follow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activity: Option<Box<Activity>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<String>,
    /// The Android notification channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// −2 (lowest) to 2 (highest); `None` is the platform's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i8>,
    /// How it changes the app icon's badge number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge: Option<BadgeOp>,
    /// The launcher class some vendors need to set a badge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub badge_class: Option<String>,
    /// APNs' own richer fields (iOS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apns: Option<Box<ApnsFields>>,
    /// Display fields no part of Pigeon interprets, shown to the device as given (large
    /// icon, styles, buttons…), under the device protocol's names.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub display: Fields,
}

/// What tapping a notification does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Click {
    /// Open the app.
    #[default]
    OpenApp,
    /// Open an Android intent URI or deep link.
    Intent(String),
    /// Open a web page.
    Url(String),
    /// Open the app and hand it this payload.
    Payload(String),
}

impl Click {
    pub fn is_open_app(&self) -> bool {
        *self == Click::OpenApp
    }
}

/// An Android activity, by class name and/or intent action.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

/// The fields of an APNs `aps` dictionary beyond title, body, sound and badge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ApnsFields {
    /// The whole alert dictionary when one was given (subtitle, loc keys…).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Fields>,
    /// A critical-alert sound dictionary (`name`, `critical`, `volume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sound: Option<Fields>,
    #[serde(default)]
    pub content_available: bool,
    #[serde(default)]
    pub mutable_content: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interruption_level: Option<String>,
}

/// A pass-through message: delivered to the app, which decides what to do with it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Message {
    pub content: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extras: Fields,
}

/// The highest badge number Pigeon keeps for a device.
pub const MAX_BADGE: u32 = 99_999;

/// A change to a device's app-icon badge, which the server keeps per device.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadgeOp {
    Set(u32),
    Add(i64),
}

impl BadgeOp {
    /// `N`, `"N"`, `"+N"`, `"-N"`; `""` clears the badge and `"auto"` adds one (what the
    /// SDKs send by default).
    pub fn parse(v: &Value) -> Option<BadgeOp> {
        match v {
            Value::Number(n) => n
                .as_u64()
                .map(|n| BadgeOp::Set(n.min(u64::from(MAX_BADGE)) as u32)),
            Value::String(s) => BadgeOp::parse_text(s),
            _ => None,
        }
    }

    /// The text forms of [`BadgeOp::parse`].
    pub fn parse_text(s: &str) -> Option<BadgeOp> {
        if s.is_empty() {
            return Some(BadgeOp::Set(0));
        }
        if s == "auto" {
            return Some(BadgeOp::Add(1));
        }
        let n = |digits: &str| -> Option<i64> {
            (!digits.is_empty() && digits.len() <= 5 && digits.bytes().all(|b| b.is_ascii_digit()))
                .then(|| digits.parse().ok())
                .flatten()
        };
        if let Some(d) = s.strip_prefix('+') {
            n(d).map(BadgeOp::Add)
        } else if let Some(d) = s.strip_prefix('-') {
            n(d).map(|n| BadgeOp::Add(-n))
        } else {
            n(s).map(|n| BadgeOp::Set(n.min(i64::from(MAX_BADGE)) as u32))
        }
    }

    /// The badge after this change to `current`: never below 0 nor above [`MAX_BADGE`].
    pub fn apply(self, current: u32) -> u32 {
        match self {
            BadgeOp::Set(n) => n.min(MAX_BADGE),
            BadgeOp::Add(d) => (i64::from(current) + d).clamp(0, i64::from(MAX_BADGE)) as u32,
        }
    }
}

/// How a push travels.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeliveryPolicy {
    /// Seconds an offline device may still receive the push; 0 = online devices only.
    pub ttl_s: u64,
    /// How every channel is chosen unless a vendor has its own; `None`: each platform's
    /// default (Pigeon's connection first, vendor when offline; APNs first for iOS
    /// notifications).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ChannelStrategy>,
    /// Per vendor channel (`apns`, `fcm`, `huawei`, `honor`, `xiaomi`, `oppo`, `vivo`,
    /// `meizu`, `webpush`, and `hmos` for HarmonyOS's channel): routing and attributes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub vendors: BTreeMap<String, VendorPolicy>,
    /// APNs production (true) or sandbox.
    #[serde(default = "yes")]
    pub apns_production: bool,
    /// Replaces the notification shown with the same id: set by the door, or by the engine
    /// to that of the push this one overrides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify_id: Option<String>,
    /// iOS collapse id (notifications with the same one replace each other).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collapse_id: Option<String>,
    /// The push this one overrides: it stops going out and this one takes its place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overrides: Option<u64>,
    #[serde(default, skip_serializing_if = "Pace::is_none")]
    pub pace: Pace,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sms: Option<SmsFallback>,
    #[serde(default, skip_serializing_if = "NetworkType::is_any")]
    pub network: NetworkType,
    /// Show the notification only between these times (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_window: Option<(u64, u64)>,
}

fn yes() -> bool {
    true
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            ttl_s: DEFAULT_TIME_TO_LIVE_S,
            strategy: None,
            vendors: BTreeMap::new(),
            apns_production: true,
            notify_id: None,
            collapse_id: None,
            overrides: None,
            pace: Pace::default(),
            sms: None,
            network: NetworkType::Any,
            display_window: None,
        }
    }
}

/// Which channel carries a push to a device that has a vendor token (Getui's `strategy`
/// values, which JPush's `distribution` values map onto).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelStrategy {
    /// 1: Pigeon's connection when the device is connected, its vendor when not.
    OwnFirst,
    /// 2: the vendor only; if it fails the device does not get the push.
    VendorOnly,
    /// 3: Pigeon's connection only.
    OwnOnly,
    /// 4: the vendor, connected or not; Pigeon's connection if the vendor fails.
    VendorFirst,
}

/// One vendor channel's part of a push's delivery.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VendorPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<ChannelStrategy>,
    /// For a phone maker's channel, on a device that also has an FCM token: which of the
    /// two carries the push, and how.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub with_fcm: Option<FcmChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_id: Option<String>,
    /// `LOW`, `NORMAL`, `HIGH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub importance: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// vivo's message classification (0 operations, 1 system).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub classification: Option<i64>,
    /// Other vendor fields, passed to that vendor as given.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub fields: Fields,
}

/// For a device with both a phone maker's token and an FCM token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FcmChoice {
    /// FCM, with this strategy.
    Fcm(ChannelStrategy),
    /// The maker's own channel, with this strategy.
    Maker(ChannelStrategy),
}

/// Spreading a push's delivery over time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pace {
    /// Spread over this many minutes (as asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minutes: Option<u64>,
    /// At most this many devices per second (as asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_second: Option<u64>,
    /// How long its paced delivery lasts in ms, as the engine resolved it when it accepted
    /// the push (kept, so a restart resumes the same pace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

impl Pace {
    pub fn is_none(&self) -> bool {
        *self == Pace::default()
    }
}

/// An SMS sent to devices the push has not reached in time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SmsFallback {
    /// Seconds after the push to wait for delivery; 0 sends at once.
    pub delay_s: u64,
    /// The SMS text, for providers that take text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// A provider's template id, for providers that use templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// The template's parameters.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub params: Fields,
    /// The provider's signature id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sign_id: Option<i64>,
}

/// Which networks a device must be on to be sent the push.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkType {
    #[default]
    Any,
    Wifi,
    Mobile,
}

impl NetworkType {
    pub fn is_any(&self) -> bool {
        *self == NetworkType::Any
    }
}

/// Where a push's receipts go besides the app's endpoints.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PushCallback {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Echoed in every receipt (`Params`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<Fields>,
    /// Which receipts (bits: delivered 1, clicked 2, not delivered 4, sent 8); `None`: all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kinds: Option<u8>,
}

/// Names the caller gave a push.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// A caller's number for the request (JPush's `sendno`), echoed in answers and receipts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sendno: Option<i64>,
    /// A task name (Getui's `task_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// A group the push is reported under (Getui's `group_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

impl Labels {
    pub fn is_empty(&self) -> bool {
        *self == Labels::default()
    }
}

impl Push {
    /// A push of nothing to nobody, for doors and tests to fill in.
    pub fn new(platforms: PlatformSet, audience: Audience) -> Push {
        Push {
            msg_id: 0,
            sent_ms: 0,
            platforms,
            audience,
            content: Content::default(),
            policy: DeliveryPolicy::default(),
            callback: None,
            labels: Labels::default(),
            idempotency: None,
            schedule: None,
            split: None,
        }
    }

    /// When the push stops being delivered to devices that were offline, in ms since the epoch.
    pub fn expires_ms(&self) -> u64 {
        self.sent_ms
            .saturating_add(self.policy.ttl_s.saturating_mul(1000))
    }

    /// When its SMS fallback is due, if it has one.
    pub fn sms_due_ms(&self) -> Option<u64> {
        let delay_s = self.policy.sms.as_ref()?.delay_s;
        Some(self.sent_ms.saturating_add(delay_s.saturating_mul(1000)))
    }

    /// The id under which devices show its notification: notifications with the same one
    /// replace each other.
    pub fn notify_id(&self) -> String {
        match &self.policy.notify_id {
            Some(id) => id.clone(),
            None => self.msg_id.to_string(),
        }
    }

    /// The notification a device on `platform` shows, if any.
    pub fn notification_for(&self, platform: Platform) -> Option<&Notification> {
        self.content.notifications.get(&platform)
    }

    /// What a vendor channel shows on a device on `platform`: its notification, else the
    /// push's notification for vendor channels.
    pub fn vendor_notification_for(&self, platform: Platform) -> Option<&Notification> {
        self.notification_for(platform)
            .or(self.content.vendor_notification.as_deref())
    }

    /// Whether vendor channels have anything to show for this push.
    pub fn has_vendor_content(&self) -> bool {
        !self.content.notifications.is_empty() || self.content.vendor_notification.is_some()
    }

    /// How this push changes the app-icon badge of a device on `platform`.
    pub fn badge_op(&self, platform: Platform) -> Option<BadgeOp> {
        self.notification_for(platform)?.badge
    }

    /// Whether a device on `platform` gets anything from this push.
    pub fn has_content_for(&self, platform: Platform) -> bool {
        self.content.message.is_some() || self.notification_for(platform).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(body: &str) -> Notification {
        Notification {
            body: body.into(),
            ..Notification::default()
        }
    }

    /// The same JSON as the `BTreeMap` it replaced: an object in platform order, a platform
    /// given twice keeping its last notification; read back equal, exactly sized.
    #[test]
    fn notifications_are_a_map_in_platform_order() {
        let n: Notifications = [
            (Platform::Ios, shown("a")),
            (Platform::Android, shown("b")),
            (Platform::Ios, shown("c")),
        ]
        .into_iter()
        .collect();
        assert_eq!(n.len(), 2);
        assert_eq!(n.0.capacity(), 2);
        assert_eq!(n[&Platform::Ios].body, "c");
        assert!(!n.contains_key(&Platform::Hmos));
        let old: BTreeMap<Platform, Notification> =
            [(Platform::Android, shown("b")), (Platform::Ios, shown("c"))].into();
        let text = serde_json::to_string(&n).unwrap_or_default();
        assert_eq!(text, serde_json::to_string(&old).unwrap_or_default());
        let back: Notifications = serde_json::from_str(&text).unwrap_or_default();
        assert_eq!(back, n);
        assert_eq!(back.0.capacity(), 2);

        let mut n = back;
        n.retain(|p, _| *p == Platform::Android);
        assert_eq!(n.keys().collect::<Vec<_>>(), [&Platform::Android]);
        assert_eq!(
            n.insert(Platform::Android, shown("d")).map(|o| o.body),
            Some("b".into())
        );
        assert_eq!(
            n.remove(&Platform::Android).map(|o| o.body),
            Some("d".into())
        );
        assert!(n.is_empty());
        assert!(serde_json::from_str::<Notifications>("[]").is_err());
        let twice: Notifications = serde_json::from_str(
            r#"{"ios":{"body":"x"},"android":{"body":"y"},"ios":{"body":"z"}}"#,
        )
        .unwrap_or_default();
        assert_eq!(
            twice.keys().collect::<Vec<_>>(),
            [&Platform::Android, &Platform::Ios]
        );
        assert_eq!(twice[&Platform::Ios].body, "z");
    }
}
