//! The push routes (getui.md B.3 "Push"): single (cid, alias, batch), list (message, then
//! cid or alias), all, tag and fast custom tag. Each PushDTO becomes one Pigeon push through
//! `Engine::accept`, whose msg_id is the task id's number (`RASS-`/`RASL-`/`RASA-`); a
//! `revoke` recalls the push its `old_task_id` names instead. `/push/all`, `/push/tag` and
//! `/push/fast_custom_tag` with `settings.schedule_time` become schedules (`schedule.rs`).
//!
//! A list message (`/push/list/message`) is kept in memory until it is stopped or a day has
//! passed (at most [`MAX_LISTS_PER_APP`] per app and [`MAX_LIST_BYTES_PER_APP`] of requests,
//! the oldest dropped first). Its task id
//! names the msg_id reserved for the push of its first list call (`/push/list/cid` or
//! `/push/list/alias`); each later list call with it makes a push of its own, and while the
//! list is kept its task id names all of them in the stop and report routes. After a restart
//! a list message is gone (the list calls answer `taskid is invalid`) and its task id names
//! the first push only.

use super::audience::{audience_of, id_list, tag_conditions};
use super::dto::{parse_push, PushRequest, What};
use super::fields::At;
use super::reply::{object, V2Error, V2Result};
use super::{engine_error, Call};
use crate::task_id::{msg_id_of, task_id, Door, TaskKind};
use parking_lot::Mutex;
use pigeon_core::model::{IdempotencyKey, Message, Push};
use pigeon_core::FastMap as HashMap;
use pigeon_core::{Audience, AudienceExpr, PlatformSet};
use pigeon_engine::devices::Presence;
use pigeon_engine::{now_ms, AppState, EngineError};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::sync::Arc;

/// Most cids or aliases in one list push (Getui's limit).
const MAX_LIST_TARGETS: usize = 1000;
/// Most pushes in one batch request.
const MAX_BATCH: usize = 200;
/// How long a list message is kept for `/push/list/cid` and `/push/list/alias`.
pub const LIST_LIFETIME_MS: u64 = 86_400_000;
/// Most list messages one app keeps; a new one beyond that drops the oldest.
pub const MAX_LISTS_PER_APP: usize = 1000;
/// Most bytes of list messages (as their requests came) one app keeps.
pub const MAX_LIST_BYTES_PER_APP: usize = 16 * 1024 * 1024;
/// Most pushes one list message makes (one per list call).
const MAX_PUSHES_PER_LIST: usize = 1000;

/// Whom a single or list push names.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Target {
    Cid,
    Alias,
}

impl Target {
    fn key(self) -> &'static str {
        match self {
            Target::Cid => "cid",
            Target::Alias => "alias",
        }
    }

    fn audience(self, ids: &[String]) -> Audience {
        let mut e = AudienceExpr::default();
        match self {
            Target::Cid => e.registration_id = ids.to_vec(),
            Target::Alias => e.alias = ids.to_vec(),
        }
        Audience::Expr(e)
    }
}

struct ListMessage {
    app_key: String,
    request: PushRequest,
    /// The size of its request, counted against the app's budget.
    bytes: usize,
    expires_ms: u64,
    /// The msg_id its task id names, until its first list call takes it.
    reserved: Option<u64>,
    /// The pushes its list calls made.
    pushes: Vec<u64>,
}

#[derive(Default)]
struct Lists {
    by_id: HashMap<u64, ListMessage>,
    /// Per app, its list ids, oldest first, and the bytes they hold.
    by_app: HashMap<String, (VecDeque<u64>, usize)>,
}

/// The list messages waiting for their targets, in memory and bounded.
#[derive(Default)]
pub struct ListMessages {
    inner: Mutex<Lists>,
}

impl ListMessages {
    /// Keeps a list message (its request `bytes` long) under the msg_id reserved for it,
    /// dropping the app's expired ones and, to make room, its oldest.
    fn create(&self, app_key: &str, request: PushRequest, bytes: usize, msg_id: u64, now: u64) {
        let mut lists = self.inner.lock();
        let Lists { by_id, by_app } = &mut *lists;
        let (queue, held) = by_app.entry(app_key.to_string()).or_default();
        while let Some(front) = queue.front() {
            let old = by_id.get(front);
            let expired = old.is_none_or(|l| l.expires_ms <= now);
            let room = queue.len() < MAX_LISTS_PER_APP && *held + bytes <= MAX_LIST_BYTES_PER_APP;
            if !expired && room {
                break;
            }
            if let Some(old) = queue.pop_front().and_then(|id| by_id.remove(&id)) {
                *held = held.saturating_sub(old.bytes);
            }
        }
        queue.push_back(msg_id);
        *held += bytes;
        by_id.insert(
            msg_id,
            ListMessage {
                app_key: app_key.to_string(),
                request,
                bytes,
                expires_ms: now + LIST_LIFETIME_MS,
                reserved: Some(msg_id),
                pushes: Vec::new(),
            },
        );
    }

    /// The request of a list message of this app still kept, and the msg_id its next push
    /// takes (its own, the first time; `0`, a new one, after).
    fn take(&self, app_key: &str, id: u64, now: u64) -> Option<(PushRequest, u64)> {
        let mut lists = self.inner.lock();
        let l = lists
            .by_id
            .get_mut(&id)
            .filter(|l| l.app_key == app_key && l.expires_ms > now)?;
        Some((l.request.clone(), l.reserved.take().unwrap_or(0)))
    }

    /// After a list call: the push it made, or (`None`) that it made none, which gives a
    /// msg_id it took back.
    fn sent(&self, id: u64, took: u64, made: Option<u64>) {
        let mut lists = self.inner.lock();
        let Some(l) = lists.by_id.get_mut(&id) else {
            return;
        };
        match made {
            None if took != 0 => l.reserved = Some(took),
            None => {}
            Some(msg_id) if l.pushes.contains(&msg_id) => {}
            Some(msg_id) if l.pushes.len() < MAX_PUSHES_PER_LIST => l.pushes.push(msg_id),
            Some(msg_id) => {
                tracing::warn!(
                    id,
                    msg_id,
                    "list message made too many pushes to name them all"
                )
            }
        }
    }

    fn pushes_of(&self, app_key: &str, id: u64) -> Option<Vec<u64>> {
        let lists = self.inner.lock();
        let l = lists.by_id.get(&id).filter(|l| l.app_key == app_key)?;
        Some(l.pushes.clone())
    }

    /// Forgets a list message (it was stopped); the pushes it made.
    fn remove(&self, app_key: &str, id: u64) -> Option<Vec<u64>> {
        let mut lists = self.inner.lock();
        if lists.by_id.get(&id).is_none_or(|l| l.app_key != app_key) {
            return None;
        }
        let l = lists.by_id.remove(&id)?;
        if let Some((q, held)) = lists.by_app.get_mut(app_key) {
            q.retain(|x| *x != id);
            *held = held.saturating_sub(l.bytes);
        }
        Some(l.pushes)
    }
}

/// The pushes a task id names: a push's own task id (any prefix, or a bare msg_id); a kept
/// list message's names every push its list calls made (none if it was never sent). `None`
/// if it is no task id.
pub fn pushes_of_task(call: &Call<'_>, app: &AppState, taskid: &str) -> Option<Vec<u64>> {
    let msg_id = msg_id_of(taskid)?;
    Some(
        call.v2
            .lists
            .pushes_of(&app.app_key, msg_id)
            .unwrap_or_else(|| vec![msg_id]),
    )
}

/// Stops a kept list message: it can no longer be sent; the pushes it made, if it was one.
pub fn stop_list(call: &Call<'_>, app: &AppState, taskid: &str) -> Option<Vec<u64>> {
    call.v2.lists.remove(&app.app_key, msg_id_of(taskid)?)
}

/// Hands a push to the engine: durable when it returns.
async fn accept(call: &Call<'_>, app: &AppState, push: Push) -> Result<u64, V2Error> {
    let msg_id = call
        .v2
        .engine
        .accept(app, push, false)
        .await
        .map_err(engine_error)?;
    pigeon_telemetry::push_accepted(pigeon_telemetry::Dialect::GetuiV2);
    Ok(msg_id)
}

/// How many devices an audience on `platforms` reaches (anything sent reaches every
/// platform).
pub fn reach(call: &Call<'_>, app: &AppState, platforms: PlatformSet, audience: Audience) -> u64 {
    let mut probe = Push::new(platforms, audience);
    probe.content.message = Some(Message::default());
    call.v2.engine.resolve(app, &probe).map_or(0, |b| b.len())
}

/// Recalls the push (or every push of the list) `old_task_id` names: devices that have not
/// got it never will, and devices showing it remove it. A push already recalled is fine (a
/// retried revoke).
async fn revoke(call: &Call<'_>, app: &AppState, old_task_id: &str) -> Result<(), V2Error> {
    let invalid = || V2Error::invalid("push_message.revoke.old_task_id");
    let pushes = pushes_of_task(call, app, old_task_id).ok_or_else(invalid)?;
    if pushes.is_empty() {
        return Err(invalid());
    }
    for msg_id in pushes {
        match call.v2.engine.recall(app, msg_id).await {
            Ok(()) | Err(EngineError::AlreadyRecalled(_)) => {}
            Err(EngineError::UnknownPush(_)) => return Err(invalid()),
            Err(EngineError::Invalid(m)) => {
                return Err(V2Error::invalid_msg(format!(
                    "push_message.revoke.old_task_id is invalid: {m}"
                )))
            }
            Err(e) => return Err(engine_error(e)),
        }
    }
    Ok(())
}

fn no_schedule(req: &PushRequest) -> Result<(), V2Error> {
    if req.schedule_ms.is_some() {
        return Err(V2Error::invalid_msg(
            "settings.schedule_time is invalid: only /push/all, /push/tag and /push/fast_custom_tag can be scheduled",
        ));
    }
    Ok(())
}

fn status_text(p: Option<Presence>) -> &'static str {
    match p {
        Some(Presence::Online) => "successed_online",
        _ => "successed_offline",
    }
}

/// `{cid: status}` for cids of the app (others are left out).
async fn cid_statuses(
    call: &Call<'_>,
    app: &AppState,
    cids: &[String],
) -> Result<Map<String, Value>, V2Error> {
    let presence = call
        .v2
        .engine
        .device_presence(app, cids)
        .await
        .map_err(engine_error)?;
    Ok(cids
        .iter()
        .zip(presence)
        .filter(|(_, p)| p.is_some())
        .map(|(c, p)| (c.clone(), json!(status_text(p))))
        .collect())
}

/// `{alias: status}` (online when a device of the alias is), or with `detail`
/// `{alias: {cid: status}}`, for aliases bound to a device.
async fn alias_statuses(
    call: &Call<'_>,
    app: &AppState,
    aliases: &[String],
    detail: bool,
) -> Result<Map<String, Value>, V2Error> {
    let mut out = Map::new();
    for alias in aliases {
        let cids: Vec<String> = call
            .v2
            .engine
            .alias_devices(app, alias, PlatformSet::all())
            .into_iter()
            .map(|d| d.registration_id)
            .collect();
        if cids.is_empty() {
            continue;
        }
        let per_cid = cid_statuses(call, app, &cids).await?;
        let v = if detail {
            Value::Object(per_cid)
        } else {
            let online = per_cid.values().any(|s| s == "successed_online");
            json!(if online {
                "successed_online"
            } else {
                "successed_offline"
            })
        };
        out.insert(alias.clone(), v);
    }
    Ok(out)
}

/// The targets of this list that are devices (cids) or bound aliases of the app.
fn known_targets(call: &Call<'_>, app: &AppState, target: Target, ids: &[String]) -> Vec<String> {
    match target {
        Target::Cid => {
            let (found, unknown) = call.v2.engine.ordinals_of(app, ids);
            if found.is_empty() {
                return Vec::new();
            }
            ids.iter()
                .filter(|i| !unknown.contains(i))
                .cloned()
                .collect()
        }
        Target::Alias => ids
            .iter()
            .filter(|a| {
                !call
                    .v2
                    .engine
                    .alias_devices(app, a, PlatformSet::all())
                    .is_empty()
            })
            .cloned()
            .collect(),
    }
}

/// To whom and how a request goes.
struct Send<'a> {
    kind: TaskKind,
    target: Target,
    ids: &'a [String],
    /// Instead of the request's own idempotency key.
    key: Option<IdempotencyKey>,
    /// A msg_id reserved for the push (0: a new one).
    msg_id: u64,
    /// Answer per cid of each alias.
    detail: bool,
}

impl<'a> Send<'a> {
    fn single(target: Target, ids: &'a [String]) -> Send<'a> {
        Send {
            kind: TaskKind::Single,
            target,
            ids,
            key: None,
            msg_id: 0,
            detail: false,
        }
    }
}

/// Sends (or revokes) one request to cids or aliases: `(taskid, {target: status})`.
async fn send_to(
    call: &Call<'_>,
    app: &AppState,
    req: &PushRequest,
    to: Send<'_>,
) -> Result<(String, Map<String, Value>), V2Error> {
    let Send {
        kind,
        target,
        ids,
        key,
        msg_id,
        detail,
    } = to;
    no_schedule(req)?;
    let taskid = match &req.what {
        What::Revoke { old_task_id, .. } => {
            if known_targets(call, app, target, ids).is_empty() {
                return Err(V2Error::invalid_msg("target user is invalid"));
            }
            revoke(call, app, old_task_id).await?;
            old_task_id.clone()
        }
        What::Send(_) => {
            let Some(mut push) = req.to_push(PlatformSet::all(), target.audience(ids)) else {
                return Err(V2Error::invalid("push_message"));
            };
            if key.is_some() {
                push.idempotency = key;
            }
            push.msg_id = msg_id;
            task_id(Door::RestV2, kind, accept(call, app, push).await?)
        }
    };
    let statuses = match target {
        Target::Cid => cid_statuses(call, app, ids).await?,
        Target::Alias => alias_statuses(call, app, ids, detail).await?,
    };
    Ok((taskid, statuses))
}

fn one(taskid: String, v: Value) -> Value {
    let mut out = Map::new();
    out.insert(taskid, v);
    Value::Object(out)
}

/// `POST /push/single/cid`, `/push/single/alias`: `{taskid: {target: status}}`.
pub async fn single(
    call: &Call<'_>,
    app: &Arc<AppState>,
    body: Option<Value>,
    target: Target,
) -> V2Result {
    let body = object(body)?;
    let at = At::root(&body);
    let req = parse_push(&at, Some(now_ms()))?;
    let ids = id_list(&audience_of(&at)?, target.key(), 1, 1)?;
    let (taskid, statuses) = send_to(call, app, &req, Send::single(target, &ids)).await?;
    Ok(one(taskid, Value::Object(statuses)))
}

/// `POST /push/single/batch/cid`, `/push/single/batch/alias` with `{"is_async", "msg_list":
/// [PushDTO…]}`: every entry is checked (its fields and that its target exists) before any
/// is sent; each is its own push with its own `request_id`, so a retried batch answers the
/// same task ids. `{taskid: {target: status}, …}`.
pub async fn batch(
    call: &Call<'_>,
    app: &Arc<AppState>,
    body: Option<Value>,
    target: Target,
) -> V2Result {
    let body = object(body)?;
    let root = At::root(&body);
    root.bool("is_async")?;
    let list = root
        .get("msg_list")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty() && l.len() <= MAX_BATCH)
        .ok_or_else(|| root.invalid("msg_list"))?;
    let now = now_ms();
    let mut entries = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let here = format!("msg_list[{i}]");
        let obj = item.as_object().ok_or_else(|| V2Error::invalid(&here))?;
        let at = At { obj, path: here };
        let req = parse_push(&at, Some(now))?;
        let ids = id_list(&audience_of(&at)?, target.key(), 1, 1)?;
        if known_targets(call, app, target, &ids).is_empty() {
            return Err(V2Error::invalid_msg(format!(
                "target user is invalid: {}",
                at.path_of("audience")
            )));
        }
        entries.push((req, ids));
    }
    let mut out = Map::new();
    for (req, ids) in entries {
        let (taskid, statuses) = send_to(call, app, &req, Send::single(target, &ids)).await?;
        out.insert(taskid, Value::Object(statuses));
    }
    Ok(Value::Object(out))
}

/// `POST /push/list/message`: a PushDTO without audience, kept for list calls:
/// `{"taskid": "RASL-…"}`, the msg_id of its first list call's push, reserved now.
pub async fn list_message(call: &Call<'_>, app: &Arc<AppState>, body: Option<Value>) -> V2Result {
    let body = object(body)?;
    let req = parse_push(&At::root(&body), Some(now_ms()))?;
    no_schedule(&req)?;
    if matches!(req.what, What::Revoke { .. }) {
        return Err(V2Error::invalid_msg(
            "push_message.revoke is not supported in a list message: revoke through /push/single/cid or /push/all",
        ));
    }
    let bytes = serde_json::to_vec(&body).map_or(0, |b| b.len());
    let msg_id = call
        .v2
        .engine
        .reserve_msg_id()
        .await
        .map_err(super::engine_error)?;
    call.v2
        .lists
        .create(&app.app_key, req, bytes, msg_id, now_ms());
    Ok(json!({ "taskid": task_id(Door::RestV2, TaskKind::List, msg_id) }))
}

/// `POST /push/list/cid`, `/push/list/alias` with `{"audience": {"cid"|"alias": [..]},
/// "taskid", "is_async", "need_alias_detail"}`: the list message to those of the targets
/// that exist. `{taskid: {target: status}}` (with `need_alias_detail`, `{taskid: {alias:
/// {cid: status}}}`). The same list sent to the same targets again is the same push.
pub async fn list(
    call: &Call<'_>,
    app: &Arc<AppState>,
    body: Option<Value>,
    target: Target,
) -> V2Result {
    let body = object(body)?;
    let root = At::root(&body);
    root.bool("is_async")?;
    let detail = root.bool("need_alias_detail")?.unwrap_or(false);
    let taskid = root.req_str("taskid", 64)?;
    let ids = id_list(&audience_of(&root)?, target.key(), 1, MAX_LIST_TARGETS)?;
    let list_id = msg_id_of(taskid).ok_or_else(|| root.invalid("taskid"))?;
    let known = known_targets(call, app, target, &ids);
    let (req, took) = call
        .v2
        .lists
        .take(&app.app_key, list_id, now_ms())
        .ok_or_else(|| root.invalid("taskid"))?;
    if known.is_empty() {
        call.v2.lists.sent(list_id, took, None);
        return Err(V2Error::invalid_msg("target user is invalid"));
    }
    let to = Send {
        kind: TaskKind::List,
        target,
        ids: &known,
        key: Some(list_key(&req, taskid, target, &known)),
        msg_id: took,
        detail,
    };
    let outcome = send_to(call, app, &req, to).await;
    let made = outcome
        .as_ref()
        .ok()
        .and_then(|(push_taskid, _)| msg_id_of(push_taskid));
    call.v2.lists.sent(list_id, took, made);
    let (_, statuses) = outcome?;
    Ok(one(taskid.to_string(), Value::Object(statuses)))
}

/// A list call's idempotency key: its list message's request, and which targets.
fn list_key(req: &PushRequest, taskid: &str, target: Target, ids: &[String]) -> IdempotencyKey {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort();
    let mut h = Sha256::new();
    h.update(taskid.as_bytes());
    h.update(target.key().as_bytes());
    for id in sorted {
        h.update(b"\n");
        h.update(id.as_bytes());
    }
    let digest: String = h.finalize()[..12]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    IdempotencyKey {
        key: format!("{}:list:{digest}", req.idempotency().key),
        issued_only: false,
    }
}

/// The routes that push to a whole audience, and may be scheduled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wide {
    All,
    Tag,
    FastCustomTag,
}

impl Wide {
    pub fn name(self) -> &'static str {
        match self {
            Wide::All => "all",
            Wide::Tag => "tag",
            Wide::FastCustomTag => "fast_custom_tag",
        }
    }

    pub fn parse(name: &str) -> Option<Wide> {
        [Wide::All, Wide::Tag, Wide::FastCustomTag]
            .into_iter()
            .find(|w| w.name() == name)
    }
}

/// A wide route's request: the PushDTO, and the platforms and audience it names (`"audience":
/// "all"`, `audience.tag` conditions, or `audience.fast_custom_tag`).
pub fn wide_request(
    wide: Wide,
    body: &Map<String, Value>,
    now: Option<u64>,
) -> Result<(PushRequest, PlatformSet, Audience), V2Error> {
    let at = At::root(body);
    let req = parse_push(&at, now)?;
    let (platforms, audience) = match wide {
        Wide::All => {
            if at.get("audience").and_then(Value::as_str) != Some("all") {
                return Err(at.invalid("audience"));
            }
            (PlatformSet::all(), Audience::All)
        }
        Wide::Tag => tag_conditions(audience_of(&at)?.get("tag"), "audience.tag")?,
        Wide::FastCustomTag => {
            let tag = audience_of(&at)?
                .req_str("fast_custom_tag", 40)?
                .to_string();
            let expr = AudienceExpr {
                tag: vec![tag],
                ..AudienceExpr::default()
            };
            (PlatformSet::all(), Audience::Expr(expr))
        }
    };
    Ok((req, platforms, audience))
}

/// `POST /push/all` (`"audience": "all"`), `/push/tag` (`audience.tag: [{"key", "values",
/// "opt_type"}]`), `/push/fast_custom_tag` (`audience.fast_custom_tag: "<tag>"`):
/// `{"taskid": ..}`, sent now or, with `settings.schedule_time`, scheduled.
pub async fn wide(
    call: &Call<'_>,
    app: &Arc<AppState>,
    body: Option<Value>,
    wide: Wide,
) -> V2Result {
    let body = object(body)?;
    let (req, platforms, audience) = wide_request(wide, &body, Some(now_ms()))?;
    if let Some(at) = req.schedule_ms {
        return super::schedule::create(call, app, wide, &body, &req, at).await;
    }
    let taskid = match &req.what {
        What::Revoke { old_task_id, .. } => {
            revoke(call, app, old_task_id).await?;
            old_task_id.clone()
        }
        What::Send(_) => {
            let push = req
                .to_push(platforms, audience)
                .ok_or_else(|| V2Error::invalid("push_message"))?;
            task_id(Door::RestV2, TaskKind::App, accept(call, app, push).await?)
        }
    };
    Ok(json!({ "taskid": taskid }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::dto::{PushRequest, What};
    use pigeon_core::model::{DeliveryPolicy, Labels};

    fn request() -> PushRequest {
        PushRequest {
            request_id: "0123456789".into(),
            labels: Labels::default(),
            policy: DeliveryPolicy::default(),
            callback: None,
            schedule_ms: None,
            what: What::Send(Box::default()),
        }
    }

    #[test]
    fn list_messages_are_bounded_per_app_in_number_bytes_and_time() {
        let lists = ListMessages::default();
        for id in 1..=(MAX_LISTS_PER_APP as u64 + 5) {
            lists.create("a", request(), 10, id, 0);
        }
        assert!(lists.take("a", 1, 1).is_none());
        assert!(lists.take("a", 6, 1).is_some());
        assert_eq!(lists.inner.lock().by_id.len(), MAX_LISTS_PER_APP);
        // Bytes: one big request pushes out what it needs.
        lists.create("b", request(), MAX_LIST_BYTES_PER_APP / 2, 10_001, 0);
        lists.create("b", request(), MAX_LIST_BYTES_PER_APP / 2, 10_002, 0);
        lists.create("b", request(), 1, 10_003, 0);
        assert!(lists.take("b", 10_001, 1).is_none());
        assert!(lists.take("b", 10_002, 1).is_some());
        assert_eq!(
            lists.inner.lock().by_app["b"].1,
            MAX_LIST_BYTES_PER_APP / 2 + 1
        );
        // Another app's id is not this app's; an expired one is gone.
        assert!(lists.take("a", 10_002, 1).is_none());
        assert!(lists.take("b", 10_003, LIST_LIFETIME_MS).is_none());
        // The first call takes the reserved id, later ones a new one, a failed one gives it back.
        let (_, took) = lists.take("b", 10_003, 1).unwrap();
        assert_eq!(took, 10_003);
        lists.sent(10_003, took, None);
        assert_eq!(lists.take("b", 10_003, 1).unwrap().1, 10_003);
        lists.sent(10_003, 10_003, Some(10_003));
        assert_eq!(lists.take("b", 10_003, 1).unwrap().1, 0);
        lists.sent(10_003, 0, Some(77));
        assert_eq!(lists.pushes_of("b", 10_003), Some(vec![10_003, 77]));
        assert_eq!(lists.remove("a", 10_003), None);
        assert_eq!(lists.remove("b", 10_003), Some(vec![10_003, 77]));
        assert_eq!(lists.inner.lock().by_app["b"].1, MAX_LIST_BYTES_PER_APP / 2);
    }
}
