//! The push actions: single, batch, list (`getContentId` + `pushMessageToList`), app, tag,
//! the APN actions, stop / cancel, and the revoke template. Each request is read into a
//! [`Prepared`] push of Pigeon's model and handed to the engine.

use super::contents::{Kind, Take};
use super::proto::{decode_b64, PushInfo, SingleBatchRequest, Transparent};
use super::template::{
    as_bool, as_i64, envelope_policy, interpret, interpret_push_info, Revoke, TemplateError,
};
use super::{result, str_field, Legacy};
use crate::task_id::{msg_id_of, task_id, Door, TaskKind};
use pigeon_core::model::{ChannelStrategy, IdempotencyKey, Push};
use pigeon_core::{Audience, AudienceExpr, Platform, PlatformSet};
use pigeon_engine::devices::Presence;
use pigeon_engine::{now_ms, AppState, EngineError};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most targets of one list push (the SDK's async limit).
pub const MAX_LIST_TARGETS: usize = 10_000;
/// Most items of one batch.
pub const MAX_BATCH_ITEMS: usize = 5_000;
/// Batch items pushed at once.
const BATCH_CONCURRENCY: usize = 16;
/// Longest `requestId` taken.
const MAX_REQUEST_ID: usize = 128;
/// Longest `taskGroupName` (the SDK's own limit).
const MAX_GROUP_NAME: usize = 40;
/// Most values in one condition, and conditions in one app push.
const MAX_CONDITION_VALUES: usize = 1_000;

/// A push read from a request, waiting for its audience.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// Content, policy and labels; audience and platforms are set when it is pushed (for an
    /// app content they are set here already).
    pub push: Push,
    /// A revoke template: no push, a recall of this task.
    pub revoke: Option<Revoke>,
    /// The template had `smsInfo`: the answer carries `smsResult` / `smsResultMsg`.
    pub sms_asked: bool,
    /// Why its SMS supplement is not used (the push still goes).
    pub sms_error: Option<String>,
}

/// A failure answered as a `result` string (Getui's codes where it has one).
#[derive(Debug)]
pub struct Refusal(pub Value);

impl From<TemplateError> for Refusal {
    fn from(e: TemplateError) -> Self {
        Refusal(result(&e.0))
    }
}

fn refuse<T>(r: &str) -> Result<T, Refusal> {
    Err(Refusal(result(r)))
}

/// A `requestId` as the engine's idempotency key (a repeat pushes once), kept apart from other
/// doors' keys; none for an empty one.
fn request_key(id: &str) -> Result<Option<IdempotencyKey>, Refusal> {
    if id.len() > MAX_REQUEST_ID {
        return refuse("requestId is longer than 128 characters");
    }
    Ok((!id.is_empty()).then(|| IdempotencyKey {
        key: format!("gt-legacy:{id}"),
        issued_only: false,
    }))
}

/// Reads `clientData` and the envelope of a push action.
pub fn prepare(body: &Map<String, Value>) -> Result<Prepared, Refusal> {
    let data = str_field(body, "clientData").unwrap_or_default();
    if data.trim().is_empty() {
        return refuse("clientDataNullError");
    }
    let transparent: Transparent =
        decode_b64("clientData", data).map_err(|e| Refusal(result(&e.to_string())))?;
    let transmission = match body.get("transmissionContent") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let interpreted = interpret(&transparent, &transmission)?;
    let mut policy = envelope_policy(body)?;
    policy.notify_id = interpreted.notify_id.clone();
    policy.collapse_id = interpreted.collapse_id.clone();
    policy.display_window = interpreted.display_window;
    for vendor in &interpreted.vendors_off {
        // A channel switched off: Pigeon's own connection only, for that vendor's devices.
        policy.vendors.entry(vendor.clone()).or_default().strategy = Some(ChannelStrategy::OwnOnly);
    }
    let (sms_asked, mut sms_error) = match &interpreted.sms {
        None => (false, None),
        Some(Err(why)) => (true, Some(why.clone())),
        Some(Ok(sms)) => {
            if policy.ttl_s == 0 {
                (
                    true,
                    Some("the SMS supplement needs an offline push (isOffline true)".to_string()),
                )
            } else if sms.delay_s > policy.ttl_s {
                (
                    true,
                    Some(format!(
                        "offlineSendtime ({} s) is beyond offlineExpireTime ({} s)",
                        sms.delay_s, policy.ttl_s
                    )),
                )
            } else {
                policy.sms = Some(sms.clone());
                (true, None)
            }
        }
    };
    if interpreted.revoke.is_some() {
        sms_error = sms_error.or(sms_asked.then(|| "no SMS with a revoke".to_string()));
    }
    let mut push = Push::new(PlatformSet::all(), Audience::All);
    push.content = interpreted.content;
    push.policy = policy;
    Ok(Prepared {
        push,
        revoke: interpreted.revoke,
        sms_asked,
        sms_error,
    })
}

/// Reads the `PI` of an APN action and its envelope: an iOS-only push.
pub fn prepare_apn(body: &Map<String, Value>) -> Result<Prepared, Refusal> {
    let pi = str_field(body, "PI").unwrap_or_default();
    if pi.trim().is_empty() {
        return refuse("PI is not null");
    }
    let info: PushInfo = decode_b64("PI", pi).map_err(|e| Refusal(result(&e.to_string())))?;
    let apns = interpret_push_info(&info)?;
    let Some(notification) = apns.notification else {
        return refuse("PI has no APNs alert (aps)");
    };
    let mut push = Push::new(platforms(&[Platform::Ios]), Audience::All);
    push.content
        .notifications
        .insert(Platform::Ios, notification);
    push.policy = envelope_policy(body)?;
    push.policy.collapse_id = apns.collapse_id;
    Ok(Prepared {
        push,
        revoke: None,
        sms_asked: false,
        sms_error: None,
    })
}

fn platforms(list: &[Platform]) -> PlatformSet {
    let mut set = PlatformSet::empty();
    for p in list {
        set.insert(*p);
    }
    set
}

fn rids(list: Vec<String>) -> Audience {
    Audience::Expr(AudienceExpr {
        registration_id: list,
        ..AudienceExpr::default()
    })
}

/// A list of strings at `key` (absent: empty), at most `max`.
pub(crate) fn strings(
    body: &Map<String, Value>,
    key: &str,
    max: usize,
) -> Result<Vec<String>, Refusal> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => {
            if items.len() > max {
                return refuse("target overLimit");
            }
            items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    Value::Number(n) => Ok(n.to_string()),
                    _ => refuse(&format!("{key} must be a list of strings")),
                })
                .collect()
        }
        Some(_) => refuse(&format!("{key} must be a list of strings")),
    }
}

/// The answer's `smsResult` / `smsResultMsg`.
fn sms_answer(p: &Prepared, out: &mut Value) {
    if !p.sms_asked {
        return;
    }
    match &p.sms_error {
        None => {
            out["smsResult"] = json!("ok");
            out["smsResultMsg"] = json!("");
        }
        Some(why) => {
            out["smsResult"] = json!("fail");
            out["smsResultMsg"] = json!(why);
        }
    }
}

/// A result string for an engine refusal.
pub(crate) fn engine_refusal(e: EngineError) -> Refusal {
    Refusal(result(&match e {
        EngineError::NoTarget => "NOTarget".to_string(),
        EngineError::TooManyPaced => "TooFrequent".to_string(),
        EngineError::Invalid(m) => m,
        EngineError::UnknownPush(_) => "TaskNotExist".to_string(),
        e @ (EngineError::UnknownCid
        | EngineError::UnknownDevice
        | EngineError::AliasFull(_)
        | EngineError::NotReceived(_)
        | EngineError::AlreadyRecalled(_)) => e.to_string(),
        other => {
            tracing::error!(error = %other, "getui legacy: request failed");
            "internal error, retry".to_string()
        }
    }))
}

fn flatten(r: Result<Value, Refusal>) -> Value {
    r.unwrap_or_else(|Refusal(v)| v)
}

impl Legacy {
    /// Hands a push to the engine.
    async fn accept(&self, app: &AppState, push: Push) -> Result<u64, Refusal> {
        let msg_id = self
            .engine
            .accept(app, push, false)
            .await
            .map_err(engine_refusal)?;
        pigeon_telemetry::push_accepted(pigeon_telemetry::Dialect::GetuiLegacy);
        Ok(msg_id)
    }

    /// Recalls the task a revoke template names (and, for a content id, every push made
    /// from it). An already recalled task is no error: the revoke was repeated.
    async fn revoke(&self, app: &AppState, revoke: &Revoke) -> Result<(), Refusal> {
        let ids = self.task_msg_ids(app, &revoke.old_task_id);
        if ids.is_empty() {
            return refuse(if revoke.force {
                // Withdrawing every notification of the app is not something Pigeon can
                // do on devices (docs/getui.md, not supported).
                "TaskNotExist: force revoke of an unknown task is not supported"
            } else {
                "TaskNotExist"
            });
        }
        for msg_id in ids {
            match self.engine.recall(app, msg_id).await {
                Ok(()) | Err(EngineError::AlreadyRecalled(_)) => {}
                Err(EngineError::UnknownPush(_)) if !revoke.force => return refuse("TaskNotExist"),
                Err(EngineError::UnknownPush(_)) => {
                    return refuse("TaskNotExist: force revoke of an unknown task is not supported")
                }
                Err(e) => return Err(engine_refusal(e)),
            }
        }
        Ok(())
    }

    /// The pushes a task id names: a push's own id, or a pending content's pushes.
    pub(crate) fn task_msg_ids(&self, app: &AppState, task: &str) -> Vec<u64> {
        let task = task.trim();
        match msg_id_of(task) {
            Some(id) => vec![id],
            None => self
                .contents
                .pushes_of(&app.app_key, task)
                .unwrap_or_default(),
        }
    }

    /// Whether any of these devices is connected now.
    async fn any_online(&self, app: &AppState, rids: &[String]) -> bool {
        match self.engine.device_presence(app, rids).await {
            Ok(p) => p.iter().any(|p| matches!(p, Some(Presence::Online))),
            Err(_) => false,
        }
    }

    /// `pushMessageToSingleAction`: one cid, or the devices of one alias.
    pub(crate) async fn push_single(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        flatten(self.single(app, body, body.get("requestId")).await)
    }

    async fn single(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
        request_id: Option<&Value>,
    ) -> Result<Value, Refusal> {
        let cid = str_field(body, "clientId").unwrap_or_default().trim();
        let alias = str_field(body, "alias").unwrap_or_default().trim();
        let targets: Vec<String> = if !cid.is_empty() {
            if self.engine.find_device(app, cid).is_none() {
                return refuse("TokenMD5NoUsers");
            }
            vec![cid.to_string()]
        } else if !alias.is_empty() {
            let devices = self.engine.alias_devices(app, alias, PlatformSet::all());
            if devices.is_empty() {
                return refuse("AliasNotBind");
            }
            devices.into_iter().map(|d| d.registration_id).collect()
        } else {
            return refuse("clientId or alias is not null");
        };
        let mut prepared = prepare(body)?;
        if let Some(revoke) = &prepared.revoke {
            self.revoke(app, revoke).await?;
            return Ok(json!({"result": "ok", "taskId": revoke.old_task_id.trim(),
                "status": "successed_online"}));
        }
        prepared.push.audience = rids(targets.clone());
        if let Some(id) = request_id {
            let id = match id {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            prepared.push.idempotency = request_key(&id)?;
        }
        let msg_id = self.accept(app, prepared.push.clone()).await?;
        let online = self.any_online(app, &targets).await;
        let mut out = json!({
            "result": "ok",
            "taskId": task_id(Door::Legacy, TaskKind::Single, msg_id),
            "status": if online { "successed_online" } else { "successed_offline" },
        });
        sms_answer(&prepared, &mut out);
        Ok(out)
    }

    /// `pushMessageToSingleBatchAction`: `singleDatas`, each item a single push's body.
    pub(crate) async fn push_batch(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let data = str_field(body, "singleDatas").unwrap_or_default();
        if data.trim().is_empty() {
            return result("singleDatas is not null");
        }
        let batch: SingleBatchRequest = match decode_b64("singleDatas", data) {
            Ok(b) => b,
            Err(e) => return result(&e.to_string()),
        };
        if batch.batch_item.is_empty() {
            return result("NOTarget");
        }
        if batch.batch_item.len() > MAX_BATCH_ITEMS {
            return result("target overLimit");
        }
        let request_id = str_field(body, "requestId")
            .unwrap_or_default()
            .trim()
            .to_string();
        use futures_util::StreamExt;
        let answers: Vec<(i32, Value)> = futures_util::stream::iter(batch.batch_item)
            .map(|item| {
                let request_id = request_id.clone();
                async move {
                    let seq = item.seq_id;
                    let answer = match serde_json::from_str::<Value>(&item.data) {
                        Ok(Value::Object(o)) => {
                            let key = (!request_id.is_empty())
                                .then(|| Value::String(format!("{request_id}:{seq}")));
                            flatten(self.single(app, &o, key.as_ref()).await)
                        }
                        _ => result("batch item data is not a JSON object"),
                    };
                    (seq, answer)
                }
            })
            .buffered(BATCH_CONCURRENCY)
            .collect()
            .await;
        let mut info = Map::new();
        for (seq, answer) in answers {
            info.insert(seq.to_string(), answer);
        }
        json!({"result": "ok", "info": info})
    }

    /// `getContentIdAction`: stores a list (contentType 1) or app (2) content.
    pub(crate) async fn get_content_id(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        flatten(self.content_id(app, body))
    }

    fn content_id(&self, app: &AppState, body: &Map<String, Value>) -> Result<Value, Refusal> {
        let kind = match body.get("contentType").and_then(as_i64) {
            None | Some(1) => Kind::List,
            Some(2) => Kind::App,
            Some(_) => return refuse("contentType must be 1 (list) or 2 (app)"),
        };
        let group = group_name(body)?;
        let (prepared, scheduled) = if kind == Kind::App {
            // A pushTime is read when the content is pushed (`pushMessageToAppAction`), so a
            // bad one is answered there, as a result the SDK hands to user code (it raises on
            // a refused getContentId without saying why).
            let scheduled = super::schedule::push_time_of(body)
                .is_some()
                .then(|| super::schedule::stored_request(body));
            (app_content(app, body)?, scheduled)
        } else {
            let mut prepared = prepare(body)?;
            prepared.push.labels.group = group.clone();
            (prepared, None)
        };
        let id = self
            .contents
            .put(&app.app_key, kind, prepared, scheduled, group, now_ms())
            .ok_or_else(|| Refusal(result("PushTotalNumOverLimit")))?;
        Ok(json!({"result": "ok", "contentId": id}))
    }

    /// `pushMessageToListAction`: a stored list content to cids and aliases.
    pub(crate) async fn push_list(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        flatten(self.list(app, body, Kind::List).await)
    }

    async fn list(
        &self,
        app: &AppState,
        body: &Map<String, Value>,
        kind: Kind,
    ) -> Result<Value, Refusal> {
        let content_id = str_field(body, "contentId").unwrap_or_default().trim();
        let prepared = match self.contents.take(&app.app_key, content_id, kind, now_ms()) {
            Take::Ready(p, _) => p,
            Take::Cancelled => return refuse("TaskHasBeanCanceled"),
            Take::Unknown | Take::Used => return refuse("NullMsgCommon"),
        };
        if let Some(revoke) = &prepared.revoke {
            self.revoke(app, revoke).await?;
            return Ok(json!({"result": "ok", "contentId": revoke.old_task_id.trim()}));
        }
        let need_details = body.get("needDetails").and_then(as_bool).unwrap_or(false);
        let mut details = Map::new();
        let mut targets: Vec<String> = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut status_of: Vec<(String, Vec<String>)> = Vec::new();
        match kind {
            Kind::ApnList => {
                let tokens = strings(body, "DTL", MAX_LIST_TARGETS)?;
                let records = self.devices_by_token(app, &tokens);
                for (token, rid) in tokens.iter().zip(records) {
                    match rid {
                        Some(rid) => {
                            if seen.insert(rid.clone()) {
                                targets.push(rid.clone());
                            }
                            status_of.push((token.clone(), vec![rid]));
                        }
                        None => {
                            details.insert(token.clone(), json!("TokenMD5NoUsers"));
                        }
                    }
                }
            }
            _ => {
                let cids = strings(body, "clientIdList", MAX_LIST_TARGETS)?;
                let aliases = strings(body, "aliasList", MAX_LIST_TARGETS)?;
                if cids.len() + aliases.len() > MAX_LIST_TARGETS {
                    return refuse("target overLimit");
                }
                for cid in cids {
                    if self.engine.find_device(app, &cid).is_some() {
                        if seen.insert(cid.clone()) {
                            targets.push(cid.clone());
                        }
                        status_of.push((cid.clone(), vec![cid]));
                    } else {
                        details.insert(cid, json!("TokenMD5NoUsers"));
                    }
                }
                for alias in aliases {
                    let rids: Vec<String> = self
                        .engine
                        .alias_devices(app, &alias, PlatformSet::all())
                        .into_iter()
                        .map(|d| d.registration_id)
                        .collect();
                    if rids.is_empty() {
                        details.insert(alias, json!("AliasNotBind"));
                        continue;
                    }
                    for rid in &rids {
                        if seen.insert(rid.clone()) {
                            targets.push(rid.clone());
                        }
                    }
                    status_of.push((alias, rids));
                }
            }
        }
        if targets.is_empty() {
            let mut out = json!({"result": "NOTarget"});
            if need_details {
                out["details"] = Value::Object(details);
            }
            return Ok(out);
        }
        let mut push = prepared.push.clone();
        push.audience = rids(targets.clone());
        let msg_id = self.accept(app, push).await?;
        self.contents.pushed(content_id, msg_id);
        let task = task_id(Door::Legacy, TaskKind::List, msg_id);
        let mut out = json!({"result": "ok", "contentId": task, "taskId": task});
        if need_details {
            let presence = self
                .engine
                .device_presence(app, &targets)
                .await
                .unwrap_or_default();
            let online: std::collections::HashSet<&str> = targets
                .iter()
                .zip(&presence)
                .filter(|(_, p)| matches!(p, Some(Presence::Online)))
                .map(|(r, _)| r.as_str())
                .collect();
            for (name, rids) in status_of {
                let on = rids.iter().any(|r| online.contains(r.as_str()));
                details.insert(
                    name,
                    json!(if on {
                        "successed_online"
                    } else {
                        "successed_offline"
                    }),
                );
            }
            out["details"] = Value::Object(details);
        }
        sms_answer(&prepared, &mut out);
        Ok(out)
    }

    /// The registration id of the device with each APNs token, if any.
    fn devices_by_token(&self, app: &AppState, tokens: &[String]) -> Vec<Option<String>> {
        let (ordinals, _) = self.engine.ordinals_by_apns_token(app, tokens);
        let by_token: std::collections::HashMap<String, String> = ordinals
            .into_iter()
            .filter_map(|o| app.device(o))
            .filter_map(|d| {
                let token = d.push_tokens.get("apns")?.as_str()?.to_ascii_lowercase();
                Some((token, d.registration_id))
            })
            .collect();
        tokens
            .iter()
            .map(|t| by_token.get(&t.to_ascii_lowercase()).cloned())
            .collect()
    }

    /// `pushMessageToAppAction`: a stored app content, pushed once (or, with a `pushTime`,
    /// scheduled once: `schedule.rs`).
    pub(crate) async fn push_app(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let content_id = str_field(body, "contentId").unwrap_or_default().trim();
        let (prepared, scheduled) =
            match self
                .contents
                .take(&app.app_key, content_id, Kind::App, now_ms())
            {
                Take::Ready(p, scheduled) => (p, scheduled),
                Take::Cancelled => return result("TaskHasBeanCanceled"),
                Take::Used => {
                    return json!({"result": "DuplicatedContentId", "contentId": content_id})
                }
                Take::Unknown => {
                    return json!({"result": "UndefinedContentId", "contentId": content_id})
                }
            };
        if let Some(request) = scheduled {
            return match self.schedule_app(app, &prepared, &request).await {
                Ok(msg_id) => {
                    self.contents.pushed(content_id, msg_id);
                    let task = task_id(Door::Legacy, TaskKind::App, msg_id);
                    let mut out = json!({"result": "ok", "contentId": task, "taskId": task});
                    sms_answer(&prepared, &mut out);
                    out
                }
                Err(Refusal(v)) => v,
            };
        }
        if let Some(revoke) = &prepared.revoke {
            return match self.revoke(app, revoke).await {
                Ok(()) => json!({"result": "ok", "contentId": revoke.old_task_id.trim()}),
                Err(Refusal(v)) => v,
            };
        }
        match self.accept(app, prepared.push.clone()).await {
            Ok(msg_id) => {
                self.contents.pushed(content_id, msg_id);
                let task = task_id(Door::Legacy, TaskKind::App, msg_id);
                let mut out = json!({"result": "ok", "contentId": task, "taskId": task});
                sms_answer(&prepared, &mut out);
                out
            }
            Err(Refusal(v)) => v,
        }
    }

    /// `pushMessageByTagAction`: every device with a tag.
    pub(crate) async fn push_tag(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        flatten(self.tag(app, body).await)
    }

    async fn tag(&self, app: &AppState, body: &Map<String, Value>) -> Result<Value, Refusal> {
        let tag = str_field(body, "tag").unwrap_or_default().trim();
        if tag.is_empty() {
            return refuse("tag is not null");
        }
        check_app_ids(app, body, "appIdList")?;
        let mut prepared = prepare(body)?;
        if let Some(revoke) = &prepared.revoke {
            self.revoke(app, revoke).await?;
            return Ok(json!({"result": "ok", "taskId": revoke.old_task_id.trim()}));
        }
        prepared.push.audience = Audience::Expr(AudienceExpr {
            tag: vec![tag.to_string()],
            ..AudienceExpr::default()
        });
        apply_speed(&mut prepared.push, body)?;
        let id = str_field(body, "requestId").unwrap_or_default().trim();
        prepared.push.idempotency = request_key(id)?;
        let msg_id = self.accept(app, prepared.push.clone()).await?;
        let mut out = json!({"result": "ok",
            "taskId": task_id(Door::Legacy, TaskKind::App, msg_id)});
        sms_answer(&prepared, &mut out);
        Ok(out)
    }

    /// `stopTaskAction` / `cancleContentIdAction`: a pending content is cancelled, and the
    /// pushes made from it (or the push a task id names) stop going out: Pigeon stops a push
    /// by recalling it, so devices that showed it remove it too. A scheduled task that has not
    /// fired is deleted instead (it never pushes).
    pub(crate) async fn stop(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let id = str_field(body, "contentId").unwrap_or_default().trim();
        if id.is_empty() {
            return result("contentId is not null");
        }
        let ids = match msg_id_of(id) {
            Some(msg_id) => vec![msg_id],
            None => match self.contents.cancel(&app.app_key, id) {
                Some(ids) => ids,
                None => return result("NullMsgCommon"),
            },
        };
        for msg_id in ids {
            match self.cancel_waiting(app, msg_id).await {
                Ok(true) => continue,
                Ok(false) => {}
                Err(Refusal(v)) => return v,
            }
            match self.engine.recall(app, msg_id).await {
                Ok(()) | Err(EngineError::AlreadyRecalled(_)) => {}
                Err(e) => return engine_refusal(e).0,
            }
        }
        result("ok")
    }

    /// `apnGetContentIdAction`: stores an APNs content for `apnPushToListAction`.
    pub(crate) async fn apn_content_id(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let prepared = match prepare_apn(body) {
            Ok(p) => p,
            Err(Refusal(v)) => return v,
        };
        if let Err(Refusal(v)) = check_app_ids(app, body, "appId") {
            return v;
        }
        match self
            .contents
            .put(&app.app_key, Kind::ApnList, prepared, None, None, now_ms())
        {
            Some(id) => json!({"result": "ok", "contentId": id}),
            None => result("PushTotalNumOverLimit"),
        }
    }

    /// `apnPushToListAction`: a stored APNs content to device tokens.
    pub(crate) async fn apn_push_list(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        flatten(self.list(app, body, Kind::ApnList).await)
    }

    /// `apnPushToSingleAction`: an APNs notification to one device token.
    pub(crate) async fn apn_push_single(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let token = str_field(body, "DT").unwrap_or_default().trim().to_string();
        if token.is_empty() {
            return result("DT is not null");
        }
        let mut prepared = match prepare_apn(body) {
            Ok(p) => p,
            Err(Refusal(v)) => return v,
        };
        let Some(Some(rid)) = self.devices_by_token(app, &[token]).pop() else {
            return result("TokenMD5NoUsers");
        };
        prepared.push.audience = rids(vec![rid.clone()]);
        match self.accept(app, prepared.push).await {
            Ok(msg_id) => {
                let online = self.any_online(app, &[rid]).await;
                json!({"result": "ok",
                    "taskId": task_id(Door::Legacy, TaskKind::Single, msg_id),
                    "status": if online { "successed_online" } else { "successed_offline" }})
            }
            Err(Refusal(v)) => v,
        }
    }
}

/// `taskGroupName`, at most 40 characters.
fn group_name(body: &Map<String, Value>) -> Result<Option<String>, Refusal> {
    match str_field(body, "taskGroupName").map(str::trim) {
        None | Some("") => Ok(None),
        Some(g) if g.chars().count() > MAX_GROUP_NAME => {
            refuse("taskGroupName is longer than 40 characters")
        }
        Some(g) => Ok(Some(g.to_string())),
    }
}

/// An app content (`getContentIdAction` with contentType 2) read from its request: content,
/// envelope, `taskGroupName`, conditions and `speed` (a revoke template: its revoke only). A
/// scheduled one's firing reads its stored request again with this, so the conditions select
/// the devices as they are then.
pub(crate) fn app_content(app: &AppState, body: &Map<String, Value>) -> Result<Prepared, Refusal> {
    let mut prepared = prepare(body)?;
    prepared.push.labels.group = group_name(body)?;
    if prepared.revoke.is_none() {
        check_app_ids(app, body, "appIdList")?;
        let (set, expr) = conditions(body)?;
        prepared.push.platforms = intersect(prepared.push.platforms, set);
        prepared.push.audience = if expr.is_empty() {
            Audience::All
        } else {
            Audience::Expr(expr)
        };
        apply_speed(&mut prepared.push, body)?;
    }
    Ok(prepared)
}

/// The app ids a request names must include this app (Getui's appId is Pigeon's app_key).
pub(crate) fn check_app_ids(
    app: &AppState,
    body: &Map<String, Value>,
    key: &str,
) -> Result<(), Refusal> {
    let ids = match body.get(key) {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::String(s)) => vec![s.clone()],
        Some(_) => strings(body, key, 100)?,
    };
    if ids.is_empty() || ids.iter().any(|i| i.trim() == app.app_key) {
        Ok(())
    } else {
        refuse("AppidNoMatchAppKey")
    }
}

/// `speed` (devices per second) when user code set it.
fn apply_speed(push: &mut Push, body: &Map<String, Value>) -> Result<(), Refusal> {
    match body.get("speed").and_then(as_i64) {
        None | Some(0) => Ok(()),
        Some(n) if n > 0 => {
            push.policy.pace.per_second = Some(n as u64);
            Ok(())
        }
        Some(_) => refuse("speed must be a positive number"),
    }
}

/// An app push's conditions: `conditions` `[{key, values, optType}]` (phoneType / region /
/// tag; optType 0 OR, 1 AND, 2 NOT), or the older `phoneTypeList` / `provinceList` /
/// `tagList` (each OR). Phone types become the push's platforms.
pub fn conditions(body: &Map<String, Value>) -> Result<(PlatformSet, AudienceExpr), Refusal> {
    let mut set = PlatformSet::all();
    let mut expr = AudienceExpr::default();
    let mut add = |key: &str, values: Vec<String>, op: i64| -> Result<(), Refusal> {
        if values.is_empty() {
            return Ok(());
        }
        match key {
            "phoneType" => {
                let mut named = PlatformSet::empty();
                for v in &values {
                    match v.trim().to_ascii_uppercase().as_str() {
                        "ANDROID" => named.insert(Platform::Android),
                        "IOS" => named.insert(Platform::Ios),
                        other => {
                            return refuse(&format!("phoneType {other:?} is not ANDROID or IOS"))
                        }
                    }
                }
                let chosen = match op {
                    // A device has one phone type: AND of two is nothing.
                    1 if named.iter().count() > 1 => PlatformSet::empty(),
                    2 => {
                        let mut rest = PlatformSet::empty();
                        for p in Platform::ALL {
                            if !named.contains(p) {
                                rest.insert(p);
                            }
                        }
                        rest
                    }
                    _ => named,
                };
                set = intersect(set, chosen);
            }
            "region" => match op {
                2 => expr.region_not.extend(values),
                1 if values.len() > 1 => {
                    // One region per device: AND of different regions reaches nobody.
                    let first = values[0].clone();
                    if values.iter().all(|v| *v == first) {
                        expr.region.push(first);
                    } else {
                        set = PlatformSet::empty();
                    }
                }
                _ => expr.region.extend(values),
            },
            "tag" => match op {
                1 => expr.tag_and.extend(values),
                2 => expr.tag_not.extend(values),
                _ => expr.tag.extend(values),
            },
            other => return refuse(&format!("condition key {other:?} is not supported")),
        }
        Ok(())
    };
    if let Some(c) = body.get("conditions").filter(|c| !c.is_null()) {
        let Value::Array(items) = c else {
            return refuse("conditions must be a list");
        };
        if items.len() > 10 {
            return refuse("conditions holds more than 10 conditions");
        }
        for item in items {
            let Value::Object(o) = item else {
                return refuse("each condition must be an object");
            };
            let key = str_field(o, "key").unwrap_or_default();
            let values = strings(o, "values", MAX_CONDITION_VALUES)?;
            let op = o.get("optType").and_then(as_i64).unwrap_or(0);
            if !(0..=2).contains(&op) {
                return refuse("optType must be 0 (OR), 1 (AND) or 2 (NOT)");
            }
            add(key, values, op)?;
        }
    } else {
        add("phoneType", strings(body, "phoneTypeList", 10)?, 0)?;
        add(
            "region",
            strings(body, "provinceList", MAX_CONDITION_VALUES)?,
            0,
        )?;
        add("tag", strings(body, "tagList", MAX_CONDITION_VALUES)?, 0)?;
    }
    if set.iter().next().is_none() {
        // Conditions no device can meet: a push to nobody (the engine answers NOTarget).
        expr.registration_id = vec![String::new()];
    }
    Ok((set, expr))
}

fn intersect(a: PlatformSet, b: PlatformSet) -> PlatformSet {
    a.iter().filter(|p| b.contains(*p)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn conditions_map_onto_platforms_and_the_audience() {
        let (set, expr) = conditions(&obj(json!({"conditions": [
            {"key": "phoneType", "values": ["IOS"], "optType": 0},
            {"key": "region", "values": ["11000000", "33000000"], "optType": 0},
            {"key": "tag", "values": ["a", "b"], "optType": 1},
            {"key": "tag", "values": ["c"], "optType": 2}]})))
        .unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [Platform::Ios]);
        assert_eq!(expr.region, ["11000000", "33000000"]);
        assert_eq!(expr.tag_and, ["a", "b"]);
        assert_eq!(expr.tag_not, ["c"]);
        let (set, _) = conditions(&obj(json!({"conditions": [
            {"key": "phoneType", "values": ["IOS"], "optType": 2}]})))
        .unwrap();
        assert!(set.contains(Platform::Android) && !set.contains(Platform::Ios));
        let (set, expr) = conditions(&obj(json!({"phoneTypeList": ["ANDROID"],
            "provinceList": ["浙江"], "tagList": ["t"]})))
        .unwrap();
        assert_eq!(set.iter().collect::<Vec<_>>(), [Platform::Android]);
        assert_eq!((expr.region.len(), expr.tag.len()), (1, 1));
        assert!(conditions(&obj(json!({"conditions": [{"key": "x", "values": ["1"]}]}))).is_err());
        assert!(conditions(&obj(json!({"phoneTypeList": ["WINDOWS"]}))).is_err());
        let (_, expr) = conditions(&obj(json!({"conditions": [
            {"key": "region", "values": ["1", "2"], "optType": 1}]})))
        .unwrap();
        assert_eq!(expr.registration_id, [""]);
    }

    #[test]
    fn prepare_reads_the_envelope_and_refuses_bad_client_data() {
        let notification = "CgASC3B1c2htZXNzYWdlGgAiAkFLKgNBSUQyADoEWAFoAUIHCAEQABiQTkKHAQiQThABGJpOogYIaWNvbi5wbmeqBgCyBgFUugYEYm9kecAGAcgGAdAGAeoXEgoLbm90aWZ5U3R5bGUSATAYAeoXFAoHY2hhbm5lbBIHRGVmYXVsdBgA6hcYCgtjaGFubmVsTmFtZRIHRGVmYXVsdBgA6hcTCgxjaGFubmVsTGV2ZWwSATMYAUIICJpOEAAYrk5CGQiuThADGGTiCADqCAYKABIAGgDwCAH4CGRCBAhkEAdKAFAA";
        let p = prepare(&obj(
            json!({"clientData": notification, "transmissionContent": "",
            "isOffline": true, "offlineExpireTime": 3_600_000, "pushNetWorkType": 0}),
        ))
        .unwrap();
        assert_eq!(p.push.policy.ttl_s, 3600);
        assert!(!p.sms_asked);
        assert!(p
            .push
            .content
            .notifications
            .contains_key(&Platform::Android));
        let refused = |b: Value| match prepare(&obj(b)) {
            Err(Refusal(v)) => v["result"].as_str().unwrap_or_default().to_string(),
            Ok(_) => "ok".into(),
        };
        assert_eq!(refused(json!({})), "clientDataNullError");
        assert!(refused(json!({"clientData": "%%%"})).contains("base64"));
        assert!(refused(json!({"clientData": &notification[..40]})).contains("protobuf"));
    }
}
