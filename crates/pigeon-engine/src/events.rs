//! The events of callbacks.md §3 that the engine reports, built only for apps with an
//! endpoint that wants them, and handed to storage with the change they report.

use crate::app::AppState;
use crate::{now_ms, Engine, EngineError};
use pigeon_core::{Audience, Push};
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

/// Whether an endpoint wants a command.
pub fn wants(endpoint: &CallbackEndpoint, command: &str) -> bool {
    endpoint.commands.is_empty() || endpoint.commands.iter().any(|c| c == command)
}

fn event(app: &AppState, command: &str, mut fields: Value) -> NewEvent {
    let at_ms = now_ms();
    fields["CallbackCommand"] = json!(command);
    fields["EventTime"] = json!(at_ms / 1000);
    NewEvent {
        app_key: app.app_key.clone(),
        command: command.to_string(),
        body: fields,
        at_ms,
    }
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
        ]
        .iter()
        .filter(|(_, empty)| !empty)
        .map(|(k, _)| *k)
        .collect::<Vec<_>>()
        .join("+"),
    }
}

impl AppState {
    /// Whether any of the app's endpoints wants `command`.
    pub fn wants(&self, command: &str) -> bool {
        self.callbacks.read().iter().any(|e| wants(e, command))
    }
}

impl Engine {
    /// `Push.Accepted` for a push just accepted, if the app wants it.
    pub(crate) fn accepted_event(
        &self,
        app: &AppState,
        push: &Push,
        targets: u64,
    ) -> Vec<NewEvent> {
        if !app.wants(PUSH_ACCEPTED) {
            return Vec::new();
        }
        let mut fields = json!({
            "MsgId": push.msg_id.to_string(),
            "Sendno": push.options.sendno.unwrap_or(0).to_string(),
            "Platform": push.platforms.iter().map(|p| p.as_str()).collect::<Vec<_>>(),
            "AudienceType": audience_type(&push.audience),
            "TargetCount": targets,
        });
        if let Some(params) = push.callback.as_ref().and_then(|c| c.get("params")) {
            fields["Params"] = params.clone();
        }
        vec![event(app, PUSH_ACCEPTED, fields)]
    }

    /// `Push.Event`s for stages of pushes on devices.
    pub(crate) fn push_events(
        &self,
        app: &AppState,
        stages: &[(u64, pigeon_core::Ordinal, Stage)],
    ) -> Vec<NewEvent> {
        if stages.is_empty() {
            return Vec::new();
        }
        let mut params: pigeon_core::FastMap<u64, Option<Value>> = Default::default();
        let devices = app.devices.read();
        stages
            .iter()
            .filter_map(|&(msg_id, ordinal, stage)| {
                let d = devices.record(ordinal)?;
                let params = params
                    .entry(msg_id)
                    .or_insert_with(|| {
                        app.push_callback(msg_id)
                            .and_then(|c| c.get("params").cloned())
                    })
                    .clone();
                let mut fields = json!({
                    "MsgId": msg_id.to_string(),
                    "PushID": msg_id.to_string(),
                    "RegistrationId": d.registration_id,
                    "To_Account": d.alias.clone().unwrap_or_default(),
                    "Platform": d.platform.as_str(),
                    "PushPlatform": OWN_CONNECTION,
                    "PushStage": stage as u8,
                    "ErrCode": 0,
                    "ErrInfo": "",
                });
                if let Some(p) = params {
                    fields["Params"] = p;
                }
                Some(event(app, PUSH_EVENT, fields))
            })
            .collect()
    }

    /// Reports pushes that expired more than the grace ago: `Push.Undelivered` (ErrCode 1)
    /// for every target that never acked, if the app wants it; the report and its events
    /// are one write, so a restart neither loses nor repeats one.
    pub(crate) async fn report_expired(&self, app: &AppState) -> Result<usize, EngineError> {
        let before = now_ms().saturating_sub(self.expired_grace_ms());
        let expired = self.store.expired_unreported(&app.app_key, before).await?;
        let n = expired.len();
        for p in expired {
            let mut events = Vec::new();
            if app.wants(PUSH_UNDELIVERED) {
                let missed = &p.audience - &p.delivered;
                let params = p
                    .push
                    .callback
                    .as_ref()
                    .and_then(|c| c.get("params"))
                    .cloned();
                let devices = app.devices.read();
                for ordinal in missed.iter() {
                    let Some(d) = devices.record(ordinal) else {
                        continue;
                    };
                    let mut fields = json!({
                        "MsgId": p.push.msg_id.to_string(),
                        "PushID": p.push.msg_id.to_string(),
                        "RegistrationId": d.registration_id,
                        "To_Account": d.alias.clone().unwrap_or_default(),
                        "Platform": d.platform.as_str(),
                        "PushPlatform": if p.sent.contains(ordinal) { OWN_CONNECTION } else { 0 },
                        "ErrCode": 1,
                        "ErrInfo": "expired: time_to_live ran out before the device received it",
                    });
                    if let Some(params) = &params {
                        fields["Params"] = params.clone();
                    }
                    events.push(event(app, PUSH_UNDELIVERED, fields));
                }
            }
            self.store.report_expired(p.push.msg_id, events).await?;
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
