//! The events of callbacks.md §3 that the engine reports, built only for apps with an
//! endpoint that wants them, and handed to storage with the change they report.

use crate::app::AppState;
use crate::{now_ms, Engine, EngineError};
use pigeon_core::{Audience, Push, PushCallback};
use pigeon_store::{CallbackEndpoint, NewEvent};
use serde_json::{json, Value};

pub const PUSH_ACCEPTED: &str = "Push.Accepted";
pub const PUSH_EVENT: &str = "Push.Event";
pub const PUSH_UNDELIVERED: &str = "Push.Undelivered";
pub const DEVICE_ONLINE_STATUS: &str = "Device.OnlineStatus";
pub const GEOFENCE_EVENT: &str = "Geofence.Event";
pub const SMS_RESULT: &str = "Sms.Result";

/// Every command of the contract.
pub const COMMANDS: [&str; 6] = [
    PUSH_ACCEPTED,
    PUSH_EVENT,
    PUSH_UNDELIVERED,
    DEVICE_ONLINE_STATUS,
    GEOFENCE_EVENT,
    SMS_RESULT,
];

/// Why a device went online or offline (`Reason` of `Device.OnlineStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceReason {
    Login,
    Logout,
    Disconnect,
    Timeout,
    Replaced,
}

impl PresenceReason {
    fn as_str(self) -> &'static str {
        match self {
            PresenceReason::Login => "Login",
            PresenceReason::Logout => "Logout",
            PresenceReason::Disconnect => "Disconnect",
            PresenceReason::Timeout => "Timeout",
            PresenceReason::Replaced => "Replaced",
        }
    }
}

/// `PushStage` of `Push.Event`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Sent = 1,
    Delivered = 2,
    Clicked = 3,
}

/// `PushPlatform` of Pigeon's own connection.
pub const OWN_CONNECTION: u8 = 10;

/// One stage of one push on one device, through one channel (`PushPlatform`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushStage {
    pub msg_id: u64,
    /// When the push was accepted (`MsgTime`).
    pub sent_ms: u64,
    pub ordinal: pigeon_core::Ordinal,
    pub stage: Stage,
    pub channel: u8,
}

impl PushStage {
    /// A stage on Pigeon's own connection of the push `msg_id`, accepted at `sent_ms`.
    pub fn own(
        (msg_id, sent_ms): (u64, u64),
        ordinal: pigeon_core::Ordinal,
        stage: Stage,
    ) -> PushStage {
        PushStage {
            msg_id,
            sent_ms,
            ordinal,
            stage,
            channel: OWN_CONNECTION,
        }
    }
}

/// Bits of a push's `callback.type` (callbacks.md §1): which of its events go to its URL.
pub const TYPE_DELIVERED: u64 = 1;
pub const TYPE_CLICKED: u64 = 2;
pub const TYPE_UNDELIVERED: u64 = 4;
pub const TYPE_ACCEPTED: u64 = 8;
const TYPE_ALL: u64 = 15;

/// Commands a push-level endpoint can get.
pub const PUSH_LEVEL_COMMANDS: [&str; 3] = [PUSH_ACCEPTED, PUSH_EVENT, PUSH_UNDELIVERED];

/// Whether an endpoint wants a command.
pub fn wants(endpoint: &CallbackEndpoint, command: &str) -> bool {
    endpoint.commands.is_empty() || endpoint.commands.iter().any(|c| c == command)
}

/// The URL of a push's `callback` field, if it names one.
pub fn push_callback_url(callback: Option<&PushCallback>) -> Option<&str> {
    callback?.url.as_deref()
}

/// An event's JSON text: its fields with its command and time.
fn event_body(command: &str, mut fields: Value, at_ms: u64) -> String {
    fields["CallbackCommand"] = json!(command);
    fields["EventTime"] = json!(at_ms / 1000);
    fields.to_string()
}

fn new_event(
    app: &AppState,
    command: &str,
    body: String,
    at_ms: u64,
    endpoint_id: Option<u64>,
) -> NewEvent {
    NewEvent {
        app_key: app.app_key.clone(),
        command: command.to_string(),
        body,
        at_ms,
        endpoint_id,
    }
}

/// An event for the app's endpoints.
fn event(app: &AppState, command: &str, fields: Value) -> NewEvent {
    let at_ms = now_ms();
    new_event(
        app,
        command,
        event_body(command, fields, at_ms),
        at_ms,
        None,
    )
}

/// The copies of one event of a push: one for the app's endpoints if `app_wants`, one for
/// the push's own URL if its `callback.type` has `kind`.
fn copies(
    app: &AppState,
    command: &str,
    (body, at_ms): (String, u64),
    app_wants: bool,
    callback: Option<&PushCallback>,
    kind: u64,
) -> Vec<NewEvent> {
    let mut out = Vec::new();
    if let Some(id) = app.push_endpoint_for(callback, kind) {
        out.push(new_event(app, command, body.clone(), at_ms, Some(id)));
    }
    if app_wants {
        out.push(new_event(app, command, body, at_ms, None));
    }
    out
}

/// [`copies`] of an event given as fields, with the push's `Params`.
fn push_event_copies(
    app: &AppState,
    command: &str,
    mut fields: Value,
    callback: Option<&PushCallback>,
    kind: u64,
) -> Vec<NewEvent> {
    if let Some(params) = callback.and_then(|c| c.params.as_ref()) {
        fields["Params"] = Value::Object(params.clone());
    }
    let at_ms = now_ms();
    let body = event_body(command, fields, at_ms);
    copies(
        app,
        command,
        (body, at_ms),
        app.wants(command),
        callback,
        kind,
    )
}

/// The JSON text of a `Push.Event` on Pigeon's own connection, written directly: a broadcast
/// makes two for every device, and building each through a JSON tree cost more than the
/// delivery it reports. `params` is the push's `Params`, already JSON.
fn stage_event_body(
    (msg_id, sent_ms): (u64, u64),
    device: &pigeon_store::DeviceRecord,
    (stage, channel): (Stage, u8),
    (params, variant): (Option<&str>, Option<&str>),
    at_ms: u64,
) -> String {
    use std::fmt::Write as _;
    let text = |s: &str| Value::from(s).to_string();
    let mut out = String::with_capacity(320);
    let _ = write!(
        out,
        r#"{{"CallbackCommand":"{PUSH_EVENT}","EventTime":{},"MsgId":"{msg_id}","PushID":"{msg_id}","MsgTime":{},"RegistrationId":{},"To_Account":{},"Platform":"{}","PushPlatform":{channel},"PushStage":{},"ErrCode":0,"ErrInfo":"""#,
        at_ms / 1000,
        sent_ms / 1000,
        text(&device.registration_id),
        text(device.alias.as_deref().unwrap_or_default()),
        device.platform.as_str(),
        stage as u8,
    );
    if let Some(p) = params {
        let _ = write!(out, r#","Params":{p}"#);
    }
    if let Some(v) = variant {
        let _ = write!(out, r#","Variant":{}"#, text(v));
    }
    out.push('}');
    out
}

/// The name of the variant a device got of a push to an A/B test.
fn variant_name<'a>(
    split: Option<&'a pigeon_core::Split>,
    registration_id: &str,
) -> Option<&'a str> {
    let split = split?;
    let i = split.variant_of(registration_id)?;
    split.variants.get(i).map(|v| v.name.as_str())
}

/// `AudienceType`: the audience keys given, joined with `+`.
fn audience_type(audience: &Audience) -> String {
    match audience {
        Audience::All => "all".into(),
        Audience::Expr(e) => [
            ("tag", e.tag.is_empty()),
            ("tag_and", e.tag_and.is_empty()),
            ("tag_not", e.tag_not.is_empty()),
            ("alias", e.alias.is_empty()),
            ("registration_id", e.registration_id.is_empty()),
            ("segment", e.segment.is_none()),
            ("abtest", e.abtest.is_none()),
        ]
        .iter()
        .filter(|(_, empty)| !empty)
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join("+"),
    }
}

/// A `Geofence.Event` (callbacks.md §3): `msg_id` names the fence's push sent with it.
pub(crate) fn geofence_event(
    app: &AppState,
    fence: &pigeon_store::GeofenceRecord,
    device: &pigeon_store::DeviceRecord,
    action: crate::geofences::Action,
    (lat, lon): (f64, f64),
    msg_id: Option<u64>,
) -> NewEvent {
    let mut fields = json!({
        "GeofenceId": fence.geofence_id,
        "GeofenceName": fence.name,
        "RegistrationId": device.registration_id,
        "To_Account": device.alias.clone().unwrap_or_default(),
        "Platform": device.platform.as_str(),
        "Action": action.as_str(),
        "Lat": lat,
        "Lon": lon,
    });
    if let Some(msg_id) = msg_id {
        fields["MsgId"] = json!(msg_id.to_string());
    }
    event(app, GEOFENCE_EVENT, fields)
}

impl AppState {
    /// Whether any of the app's own (not push-level, not disabled) endpoints wants `command`.
    pub fn wants(&self, command: &str) -> bool {
        self.callbacks
            .read()
            .iter()
            .any(|e| !e.push_level && e.disabled_ms.is_none() && wants(e, command))
    }

    /// Whether a push's stages are worth recording: an endpoint of the app wants
    /// `Push.Event`, or the push has a URL of its own.
    pub(crate) fn reports_stages(&self, push: &pigeon_core::Push) -> bool {
        push_callback_url(push.callback.as_ref()).is_some() || self.wants(PUSH_EVENT)
    }

    /// The push-level endpoint that a push's events of `kind` (a `callback.type` bit) go
    /// to, if its `callback` names a URL and asks for that kind.
    fn push_endpoint_for(&self, callback: Option<&PushCallback>, kind: u64) -> Option<u64> {
        let url = push_callback_url(callback)?;
        let bits = callback.and_then(|c| c.kinds).map_or(TYPE_ALL, u64::from);
        if bits & kind == 0 {
            return None;
        }
        self.callbacks
            .read()
            .iter()
            .find(|e| e.push_level && e.url == url && e.disabled_ms.is_none())
            .map(|e| e.id)
    }
}

/// A mobile number as events show it: all but the last four digits masked.
pub fn masked_mobile(mobile: &str) -> String {
    let chars: Vec<char> = mobile.chars().collect();
    let keep = chars.len().saturating_sub(4);
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| if i < keep { '*' } else { *c })
        .collect()
}

impl Engine {
    /// `Sms.Result` for one SMS of a push's fallback, if the app wants it: `code` 0 sent,
    /// else why not in `info`.
    pub fn sms_result_event(
        &self,
        app: &AppState,
        msg_id: u64,
        registration_id: &str,
        mobile: &str,
        (code, info): (u32, &str),
    ) -> Vec<NewEvent> {
        if !app.wants(SMS_RESULT) {
            return Vec::new();
        }
        vec![event(
            app,
            SMS_RESULT,
            json!({
                "MsgId": msg_id.to_string(),
                "RegistrationId": registration_id,
                "Mobile": masked_mobile(mobile),
                "ErrCode": code,
                "ErrInfo": info,
            }),
        )]
    }

    /// `Push.Accepted` for a push just accepted, if the app wants it.
    pub(crate) fn accepted_event(
        &self,
        app: &AppState,
        push: &Push,
        targets: u64,
    ) -> Vec<NewEvent> {
        if !app.wants(PUSH_ACCEPTED) && push_callback_url(push.callback.as_ref()).is_none() {
            return Vec::new();
        }
        let fields = json!({
            "MsgId": push.msg_id.to_string(),
            "Sendno": push.labels.sendno.unwrap_or(0).to_string(),
            "Platform": push.platforms.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "AudienceType": audience_type(&push.audience),
            "TargetCount": targets,
        });
        push_event_copies(
            app,
            PUSH_ACCEPTED,
            fields,
            push.callback.as_ref(),
            TYPE_ACCEPTED,
        )
    }

    /// `Push.Event`s for stages of pushes on devices.
    pub(crate) fn push_events(&self, app: &AppState, stages: &[PushStage]) -> Vec<NewEvent> {
        if stages.is_empty() {
            return Vec::new();
        }
        // Per push: its `callback` field, its `Params` as JSON, its A/B split.
        type PerPush = (
            Option<PushCallback>,
            Option<String>,
            Option<Box<pigeon_core::Split>>,
        );
        let mut pushes: pigeon_core::FastMap<u64, PerPush> = Default::default();
        let app_wants = app.wants(PUSH_EVENT);
        let at_ms = now_ms();
        let devices = app.devices.read();
        let mut out = Vec::new();
        for &PushStage {
            msg_id,
            sent_ms,
            ordinal,
            stage,
            channel,
        } in stages
        {
            let Some(d) = devices.record(ordinal) else {
                continue;
            };
            let (callback, params, split) = pushes.entry(msg_id).or_insert_with(|| {
                let callback = app.push_callback(msg_id);
                let params = callback
                    .as_ref()
                    .and_then(|c| c.params.as_ref())
                    .map(|p| Value::Object(p.clone()).to_string());
                (callback, params, app.push_split(msg_id))
            });
            let kind = match stage {
                Stage::Sent => 0,
                Stage::Delivered => TYPE_DELIVERED,
                Stage::Clicked => TYPE_CLICKED,
            };
            let body = stage_event_body(
                (msg_id, sent_ms),
                d,
                (stage, channel),
                (
                    params.as_deref(),
                    variant_name(split.as_deref(), &d.registration_id),
                ),
                at_ms,
            );
            out.extend(copies(
                app,
                PUSH_EVENT,
                (body, at_ms),
                app_wants,
                callback.as_ref(),
                kind,
            ));
        }
        out
    }

    /// `Push.Undelivered` for the devices a push will never reach (`missed`), with why
    /// (callbacks.md: 1 expired, 2 recalled, ...). `sent`: who it was written to.
    pub(crate) fn undelivered_events(
        &self,
        app: &AppState,
        push: &Push,
        missed: &roaring::RoaringBitmap,
        sent: &roaring::RoaringBitmap,
        (err_code, err_info): (u8, &str),
    ) -> Vec<NewEvent> {
        let callback = push.callback.as_ref();
        if !app.wants(PUSH_UNDELIVERED) && push_callback_url(callback).is_none() {
            return Vec::new();
        }
        let devices = app.devices.read();
        let mut events = Vec::new();
        for ordinal in missed.iter() {
            let Some(d) = devices.record(ordinal) else {
                continue;
            };
            let mut fields = json!({
                "MsgId": push.msg_id.to_string(),
                "PushID": push.msg_id.to_string(),
                "MsgTime": push.sent_ms / 1000,
                "RegistrationId": d.registration_id,
                "To_Account": d.alias.clone().unwrap_or_default(),
                "Platform": d.platform.as_str(),
                "PushPlatform": if sent.contains(ordinal) { OWN_CONNECTION } else { 0 },
                "ErrCode": err_code,
                "ErrInfo": err_info,
            });
            if let Some(v) = variant_name(push.split.as_deref(), &d.registration_id) {
                fields["Variant"] = json!(v);
            }
            events.extend(push_event_copies(
                app,
                PUSH_UNDELIVERED,
                fields,
                callback,
                TYPE_UNDELIVERED,
            ));
        }
        events
    }

    /// Reports pushes that expired more than the grace ago: `Push.Undelivered` (ErrCode 1)
    /// for every target that never acked, if the app wants it; the report and its events
    /// are one write, so a restart neither loses nor repeats one.
    pub(crate) async fn report_expired(&self, app: &AppState) -> Result<usize, EngineError> {
        let before = now_ms().saturating_sub(self.expired_grace_ms());
        let expired = self.store.expired_unreported(&app.app_key, before).await?;
        let n = expired.len();
        for p in expired {
            let missed = &p.audience - &p.delivered;
            let failures = app
                .vendor_failures
                .lock()
                .remove(&p.push.msg_id)
                .unwrap_or_default();
            let dead = &failures.dead & &missed;
            let mut expired = &missed - &dead;
            let mut events = Vec::new();
            let mut no_channel = 0;
            for (reason, devices) in &failures.refused {
                let refused = devices & &expired;
                expired -= &refused;
                no_channel += refused.len();
                let info = format!("{reason}; the device did not connect before the push expired");
                events.extend(self.undelivered_events(app, &p.push, &refused, &p.sent, (4, &info)));
            }
            events.extend(self.undelivered_events(
                app,
                &p.push,
                &expired,
                &p.sent,
                (
                    1,
                    "expired: time_to_live ran out before the device received it",
                ),
            ));
            events.extend(self.undelivered_events(
                app,
                &p.push,
                &dead,
                &p.sent,
                (
                    3,
                    "the vendor rejected the device's token, and the device did not connect before the push expired",
                ),
            ));
            self.store.report_expired(p.push.msg_id, events).await?;
            use pigeon_telemetry::{undelivered, Undelivered};
            undelivered(Undelivered::Expired, expired.len());
            undelivered(Undelivered::VendorRejected, dead.len());
            undelivered(Undelivered::NoChannel, no_channel);
        }
        Ok(n)
    }

    /// Records that a device went online or offline: when it was last online, and the
    /// `Device.OnlineStatus` event if the app wants it, in one write.
    pub async fn record_presence(
        &self,
        app: &AppState,
        ordinal: pigeon_core::Ordinal,
        online: bool,
        reason: PresenceReason,
    ) -> Result<(), EngineError> {
        let mut events = Vec::new();
        if app.wants(DEVICE_ONLINE_STATUS) {
            if let Some(d) = app.device(ordinal) {
                events.push(event(
                    app,
                    DEVICE_ONLINE_STATUS,
                    json!({
                        "RegistrationId": d.registration_id,
                        "To_Account": d.alias.unwrap_or_default(),
                        "Platform": d.platform.as_str(),
                        "Status": if online { "Online" } else { "Offline" },
                        "Reason": reason.as_str(),
                    }),
                ));
            }
        }
        if online && events.is_empty() {
            // Going online changes nothing stored unless someone wants to hear of it: a
            // reconnect storm costs no writes.
            return Ok(());
        }
        Ok(self
            .store
            .set_last_online(&app.app_key, ordinal, now_ms(), events)
            .await?)
    }

    /// Re-reads every app's callback endpoints from storage.
    pub(crate) async fn refresh_callbacks(&self) -> Result<(), EngineError> {
        let all = self.store.list_callbacks().await?;
        for app in self.apps() {
            let mine: Vec<CallbackEndpoint> = all
                .iter()
                .filter(|e| e.app_key == app.app_key)
                .cloned()
                .collect();
            if *app.callbacks.read() != mine {
                *app.callbacks.write() = mine;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pigeon_core::Platform;
    use pigeon_store::DeviceRecord;
    use std::sync::Arc;

    #[test]
    fn a_stage_event_written_directly_is_the_json_of_its_fields() {
        let device = DeviceRecord {
            app_key: Arc::from("k"),
            ordinal: 3,
            registration_id: "1a2b".into(),
            install_id: None,
            secret_hash: [0; 32],
            platform: Platform::Ios,
            alias: Some("quote\" back\\ 用户\n".into()),
            tags: Vec::new(),
            mobile: None,
            region: None,
            push_tokens: Default::default(),
            apns_production: false,
            info: Default::default(),
            created_ms: 0,
            updated_ms: 0,
        };
        let text = stage_event_body(
            (42, 1_700_000_100_999),
            &device,
            (Stage::Clicked, OWN_CONNECTION),
            (Some(r#"{"a":[1,"x"]}"#), Some("B \"bold\"")),
            1_700_000_123_456,
        );
        let v: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_eq!(
            v,
            json!({"CallbackCommand": "Push.Event", "EventTime": 1_700_000_123u64, "MsgId": "42",
                   "PushID": "42", "MsgTime": 1_700_000_100u64, "RegistrationId": "1a2b", "To_Account": "quote\" back\\ 用户\n",
                   "Platform": "ios", "PushPlatform": 10, "PushStage": 3, "ErrCode": 0,
                   "ErrInfo": "", "Params": {"a": [1, "x"]}, "Variant": "B \"bold\""})
        );
        let device = DeviceRecord {
            alias: None,
            ..device
        };
        let v: Value = serde_json::from_str(&stage_event_body(
            (1, 0),
            &device,
            (Stage::Sent, OWN_CONNECTION),
            (None, None),
            0,
        ))
        .expect("valid JSON");
        assert_eq!(
            (v["To_Account"].as_str(), v.get("Params"), v.get("Variant")),
            (Some(""), None, None)
        );
    }
}
