//! The records storage holds.

use pigeon_core::{Platform, Push};
use roaring::RoaringBitmap;
use serde_json::{Map, Value};
use std::sync::Arc;

/// An app (tenant): its credentials and name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppRecord {
    pub app_key: String,
    pub master_secret: String,
    pub name: String,
    pub created_ms: u64,
}

/// One registered device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceRecord {
    /// Shared by all of an app's device records in memory.
    pub app_key: Arc<str>,
    pub ordinal: u32,
    pub registration_id: String,
    pub install_id: Option<String>,
    /// SHA-256 of the device secret; the secret itself is never stored.
    pub secret_hash: [u8; 32],
    pub platform: Platform,
    pub alias: Option<String>,
    pub tags: Vec<String>,
    pub mobile: Option<String>,
    /// Where the device is (a province or region code, as the app registered it), for
    /// audiences by region.
    pub region: Option<String>,
    /// Vendor tokens as the device gave them (apns, fcm, ..., webpush).
    pub push_tokens: Map<String, Value>,
    pub apns_production: bool,
    /// model, os_version, app_version, sdk.
    pub info: Map<String, Value>,
    pub created_ms: u64,
    pub updated_ms: u64,
}

/// A push loaded back from storage.
#[derive(Clone, Debug)]
pub struct StoredPush {
    pub push: Push,
    pub audience: RoaringBitmap,
    /// Devices the push was written to over Pigeon's own connection or handed to a vendor.
    pub sent: RoaringBitmap,
    pub delivered: RoaringBitmap,
    /// Of `sent`, the devices each vendor was handed the push for (the rest went over
    /// Pigeon's connection); `None` for a push checkpointed before this was kept.
    pub vendors: Option<VendorSets>,
}

/// Devices by the vendor (`apns`, `fcm`, `huawei`, …) that carried a push to them.
pub type VendorSets = Vec<(String, RoaringBitmap)>;

/// Adds `more` into `sets`, vendor by vendor (a push's checkpoints from several nodes).
pub fn merge_vendor_sets(sets: &mut VendorSets, more: VendorSets) {
    for (vendor, devices) in more {
        match sets.iter_mut().find(|(v, _)| *v == vendor) {
            Some((_, mine)) => *mine |= devices,
            None => sets.push((vendor, devices)),
        }
    }
}

/// [`VendorSets`] as stored: per vendor, its name's length (one byte), the name, the
/// bitmap's serialized length (four bytes, little-endian) and the bitmap.
pub fn encode_vendor_sets(sets: &VendorSets) -> Vec<u8> {
    let mut out = Vec::new();
    for (vendor, devices) in sets {
        let name = &vendor.as_bytes()[..vendor.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        let mut bitmap = Vec::with_capacity(devices.serialized_size());
        // Writing into a Vec cannot fail.
        let _ = devices.serialize_into(&mut bitmap);
        out.extend_from_slice(&(bitmap.len() as u32).to_le_bytes());
        out.extend_from_slice(&bitmap);
    }
    out
}

/// Reads what [`encode_vendor_sets`] wrote; `None` if it is not that.
pub fn decode_vendor_sets(mut bytes: &[u8]) -> Option<VendorSets> {
    let mut sets = Vec::new();
    while let Some((&n, rest)) = bytes.split_first() {
        let (name, rest) = rest.split_at_checked(usize::from(n))?;
        let (len, rest) = rest.split_at_checked(4)?;
        let len = u32::from_le_bytes(len.try_into().ok()?) as usize;
        let (bitmap, rest) = rest.split_at_checked(len)?;
        let devices = RoaringBitmap::deserialize_from(bitmap).ok()?;
        sets.push((String::from_utf8(name.to_vec()).ok()?, devices));
        bytes = rest;
    }
    Some(sets)
}

/// What became of one push, counted: for reports over a period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushCounts {
    pub msg_id: u64,
    pub sent_ms: u64,
    /// The group the push was made under (`labels.group`).
    pub group: Option<String>,
    pub targets: u64,
    pub sent: u64,
    pub delivered: u64,
    pub clicked: u64,
}

/// Who has been sent a push and who acked it, as of a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub msg_id: u64,
    pub sent: RoaringBitmap,
    pub delivered: RoaringBitmap,
    /// Of `sent`, the devices each vendor carried it to.
    pub vendors: VendorSets,
}

/// A click a device reported, which reports and callbacks count.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceEvent {
    pub app_key: String,
    pub ordinal: u32,
    /// `click` (locations are kept as one [`Location`] per device instead).
    pub kind: String,
    pub msg_id: Option<u64>,
    pub data: Value,
    pub at_ms: u64,
}

/// Where a device last said it was (`location` frame): only the latest is kept.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Location {
    pub lat: f64,
    pub lon: f64,
    pub accuracy_m: Option<f64>,
    pub at_ms: u64,
}

/// A schedule (JPush's Schedule API): a push object fired by a trigger. Its trigger and push
/// are kept as the dialect gave them; the front door that owns the dialect reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduleRecord {
    pub schedule_id: String,
    pub app_key: String,
    pub name: String,
    pub enabled: bool,
    pub trigger: Value,
    pub push: Value,
    pub created_ms: u64,
    /// When it fires next; `None` once it never will again.
    pub next_ms: Option<u64>,
    /// The front door that made it, which reads its `trigger` and `push` (`jpush`, ...).
    pub door: String,
}

/// One firing of a schedule, as `GET /v3/schedules/{id}/msg_ids` lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleRun {
    pub msg_id: Option<u64>,
    /// The error code when the firing produced no push (0 when it did).
    pub error_code: u32,
    pub error_message: String,
    pub at_ms: u64,
}

/// What an operator sets per app: whether it may call the APIs, from where, and how often.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AppSettings {
    pub enabled: bool,
    /// API calls per minute; `None` means the server's default.
    pub rate_limit_per_minute: Option<u64>,
    /// Addresses or CIDR ranges the APIs accept calls from; empty means anywhere.
    pub ip_allowlist: Vec<String>,
}

impl Default for AppSettings {
    fn default() -> Self {
        AppSettings {
            enabled: true,
            rate_limit_per_minute: None,
            ip_allowlist: Vec::new(),
        }
    }
}

/// An app group: one set of credentials that pushes to several apps at once
/// (`POST /v3/grouppush`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupRecord {
    pub group_key: String,
    pub master_secret: String,
    pub name: String,
    pub app_keys: Vec<String>,
    pub created_ms: u64,
}

/// An uploaded target file for file push: aliases or registration ids, one a line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileRecord {
    pub file_id: String,
    pub app_key: String,
    /// `alias` or `registration_id`.
    pub kind: String,
    pub file_name: String,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// The values, in file order (empty when listed without them).
    pub values: Vec<String>,
}

/// How an endpoint's requests are encoded (callbacks.md §5): Pigeon's own events, or Tencent
/// Cloud IM's `Push.OfflinePush`. The outbox, batching, signing and retries are the same.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CallbackFormat {
    /// The events of callbacks.md §3, as written to the outbox.
    #[default]
    Pigeon,
    /// Tencent Cloud IM's push callback, `Push.OfflinePush`.
    Tencent,
}

impl CallbackFormat {
    /// Every format, the default first.
    pub const ALL: [CallbackFormat; 2] = [CallbackFormat::Pigeon, CallbackFormat::Tencent];

    /// Its name, as stored and as given over the API and the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            CallbackFormat::Pigeon => "pigeon",
            CallbackFormat::Tencent => "tencent",
        }
    }

    /// The format of a name, exactly as [`CallbackFormat::as_str`] spells it.
    pub fn parse(name: &str) -> Option<CallbackFormat> {
        CallbackFormat::ALL.into_iter().find(|f| f.as_str() == name)
    }
}

/// A URL an app's events are posted to (callbacks.md §1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackEndpoint {
    pub id: u64,
    pub app_key: String,
    pub url: String,
    /// Commands it wants; empty means all.
    pub commands: Vec<String>,
    /// Whether requests carry JPush-style `Authorization: Basic app_key:master_secret`.
    pub basic_auth: bool,
    pub signing_secret: String,
    pub created_ms: u64,
    /// Events up to this id happened before it existed and are not sent to it.
    pub start_event_id: u64,
    /// Made for a push's own `callback.url`: it gets only the events addressed to it.
    pub push_level: bool,
    /// Since when every request to it has failed (none if its last one was taken).
    pub failing_since_ms: Option<u64>,
    /// When it was disabled for failing too long; nothing is sent to it or kept for it.
    pub disabled_ms: Option<u64>,
    /// How its requests are encoded (push-level endpoints: always Pigeon's).
    pub format: CallbackFormat,
}

impl CallbackEndpoint {
    /// Whether `other` is the same endpoint configured the same way (its health aside).
    pub fn same_config(&self, other: &CallbackEndpoint) -> bool {
        (
            self.id,
            &self.url,
            &self.commands,
            self.basic_auth,
            &self.signing_secret,
            self.format,
        ) == (
            other.id,
            &other.url,
            &other.commands,
            other.basic_auth,
            &other.signing_secret,
            other.format,
        ) && self.disabled_ms.is_some() == other.disabled_ms.is_some()
    }
}

/// One SMS of a push's fallback, to one device's mobile number, waiting to be sent.
#[derive(Clone, Debug, PartialEq)]
pub struct SmsSend {
    pub msg_id: u64,
    pub ordinal: u32,
    pub app_key: String,
    pub registration_id: String,
    pub mobile: String,
    /// The push's SMS fallback (`SmsFallback`) as JSON text.
    pub sms: String,
    /// Tries so far.
    pub attempts: u32,
    /// When it is due (again).
    pub next_ms: u64,
}

/// An event waiting in the outbox, as the engine records it.
#[derive(Clone, Debug, PartialEq)]
pub struct NewEvent {
    pub app_key: String,
    pub command: String,
    /// The event's fields as a JSON object (everything but `EventId`, which is its outbox
    /// id).
    pub body: String,
    pub at_ms: u64,
    /// The push-level endpoint it is addressed to; `None`: the app's endpoints that want it.
    pub endpoint_id: Option<u64>,
}

/// An event read back from the outbox.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredEvent {
    pub id: u64,
    pub command: String,
    /// The event's fields as the engine wrote them: a JSON object, kept as text so that
    /// batching them costs no parsing.
    pub body: String,
    pub at_ms: u64,
}

/// A batch of one command's events for one endpoint, sent and retried as a unit.
#[derive(Clone, Debug, PartialEq)]
pub struct CallbackBatch {
    pub delivery_id: String,
    pub endpoint_id: u64,
    pub command: String,
    /// The events as sent, `EventId` included: a JSON array, as text.
    pub events: String,
    /// The outbox ids of its first and last event. While the batch waits, its events stay
    /// in the outbox and the stored batch refers to them instead of holding a copy (0, 0: it
    /// holds them, as a dead batch does).
    pub first_event_id: u64,
    pub last_event_id: u64,
    pub attempts: u32,
    pub next_ms: u64,
    pub first_ms: u64,
    pub dead: bool,
    pub last_error: String,
}

/// The JSON array of a batch's events, each with its `EventId` first: spliced as text (the
/// outbox holds each event as the JSON object the engine wrote; parsing and writing every
/// event again was most of what the dispatcher spent).
pub fn batch_events_json(events: &[StoredEvent]) -> String {
    use std::fmt::Write as _;
    let mut out =
        String::with_capacity(events.iter().map(|e| e.body.len() + 24).sum::<usize>() + 2);
    out.push('[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let rest = e.body.trim().strip_prefix('{').map(str::trim_start);
        let _ = match rest {
            Some(rest) if rest != "}" => write!(out, r#"{{"EventId":"{}",{rest}"#, e.id),
            _ => write!(out, r#"{{"EventId":"{}"}}"#, e.id),
        };
    }
    out.push(']');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_sets_read_back_as_written_and_garbage_is_refused() {
        let sets: VendorSets = vec![
            ("apns".into(), [1u32, 5].into_iter().collect()),
            ("webpush".into(), (0u32..100_000).step_by(7).collect()),
            ("fcm".into(), RoaringBitmap::new()),
        ];
        assert_eq!(
            decode_vendor_sets(&encode_vendor_sets(&sets)),
            Some(sets.clone())
        );
        assert_eq!(decode_vendor_sets(&[]), Some(Vec::new()));
        let bytes = encode_vendor_sets(&sets);
        assert_eq!(decode_vendor_sets(&bytes[..bytes.len() - 1]), None);
        assert_eq!(decode_vendor_sets(&[9, b'a']), None);
        let mut merged = sets.clone();
        merge_vendor_sets(
            &mut merged,
            vec![("apns".into(), [2u32].into_iter().collect())],
        );
        assert_eq!(merged[0].1.len(), 3);
        assert_eq!(merged.len(), 3);
    }
    use serde_json::{json, Value};

    #[test]
    fn events_are_spliced_into_one_json_array_with_their_ids() {
        let event = |id, body: &str| StoredEvent {
            id,
            command: "Push.Event".into(),
            body: body.into(),
            at_ms: 0,
        };
        let text = batch_events_json(&[
            event(7, r#"{"CallbackCommand":"Push.Event","MsgId":"1"}"#),
            event(8, " { \"A\": [1, {\"b\": \"}\"}] } "),
            event(9, "{}"),
        ]);
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            v,
            json!([
                {"EventId": "7", "CallbackCommand": "Push.Event", "MsgId": "1"},
                {"EventId": "8", "A": [1, {"b": "}"}]},
                {"EventId": "9"}
            ])
        );
        assert_eq!(batch_events_json(&[]), "[]");
    }

    #[test]
    fn formats_are_named_as_stored() {
        for f in CallbackFormat::ALL {
            assert_eq!(CallbackFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(CallbackFormat::default(), CallbackFormat::Pigeon);
        assert_eq!(CallbackFormat::parse("Tencent"), None);
        assert_eq!(CallbackFormat::parse("xml"), None);
    }
}

/// A segment (segments-abtests.md §1): a named audience, resolved each time a push uses it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SegmentRecord {
    pub app_key: String,
    pub segment_id: String,
    pub name: String,
    pub audience: pigeon_core::Audience,
    pub created_ms: u64,
}

/// An A/B test (segments-abtests.md §2): its audience, its variants in order (their weights
/// lay out the buckets, then control), and the test as the front door was given it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AbTestRecord {
    pub app_key: String,
    pub abtest_id: String,
    pub name: String,
    pub audience: pigeon_core::Audience,
    pub variants: Vec<pigeon_core::Variant>,
    pub control_weight: u8,
    pub created_ms: u64,
    /// Echoed back on reads; nothing below the door reads it.
    pub given: Value,
}

/// Which kind of saved audience a change or a delete is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SavedKind {
    Segment,
    AbTest,
}

impl SavedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SavedKind::Segment => "segment",
            SavedKind::AbTest => "abtest",
        }
    }

    pub fn parse(s: &str) -> Option<SavedKind> {
        match s {
            "segment" => Some(SavedKind::Segment),
            "abtest" => Some(SavedKind::AbTest),
            _ => None,
        }
    }
}

/// A geofence (geofences.md §1): a circle on the earth, the rules of when it fires, and the
/// push it may carry, in Pigeon's own terms.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct GeofenceRecord {
    pub app_key: String,
    pub geofence_id: String,
    pub name: String,
    pub lat: f64,
    pub lon: f64,
    pub radius_m: f64,
    /// Which actions fire: [`FENCE_ENTER`], [`FENCE_LEAVE`], [`FENCE_STAY`] or'ed.
    pub events: u8,
    pub stay_s: Option<u32>,
    /// Which devices the fence watches.
    pub audience: pigeon_core::Audience,
    /// Sent to the device each time the fence fires for it: a push whose msg_id, time and
    /// audience are filled in at each firing.
    pub push: Option<Push>,
    /// `false`: each action fires at most once per device, ever.
    pub repeat: bool,
    pub cooldown_s: u32,
    pub start_ms: Option<u64>,
    pub end_ms: Option<u64>,
    pub created_ms: u64,
    /// The fence as the front door was given it, echoed back on reads; nothing below the
    /// door reads it.
    pub given: Value,
}

/// [`GeofenceRecord::events`] bits, also the bits of [`FenceState::fired`].
pub const FENCE_ENTER: u8 = 1;
pub const FENCE_LEAVE: u8 = 2;
pub const FENCE_STAY: u8 = 4;

/// Where one device stands with one fence: written only when it changes.
#[derive(Clone, Debug, PartialEq)]
pub struct FenceState {
    pub app_key: String,
    pub geofence_id: String,
    pub ordinal: u32,
    pub inside: bool,
    /// When the device last entered (meaningful while `inside`).
    pub entered_ms: u64,
    /// When a `stay` of this entry is due, while one is pending.
    pub stay_due_ms: Option<u64>,
    /// The report that last changed this state.
    pub lat: f64,
    pub lon: f64,
    /// Actions that have ever fired for this device (`repeat: false`).
    pub fired: u8,
    /// When each action (enter, leave, stay) last fired; 0 never (`cooldown_s`).
    pub last_fired_ms: [u64; 3],
}
