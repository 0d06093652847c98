//! The actions that push nothing: badges, aliases, tags, cid status, cid ↔ phone number
//! bindings and `stop_sms`, push results, user counts. Each is an engine call with Getui's
//! names and result strings around it.

use super::push::{conditions, engine_refusal, strings, Refusal};
use super::{result, str_field, Legacy};
use pigeon_core::names::check_name;
use pigeon_core::{Audience, AudienceExpr, PlatformSet};
use pigeon_engine::devices::{DeviceEdit, Presence};
use pigeon_engine::report::Counts;
use pigeon_engine::{now_ms, AppState, EngineError};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most cids, tokens or bindings one call may name.
const MAX_IDS: usize = 1_000;
/// Most task ids one result query may name.
const MAX_TASKS: usize = 200;

fn flatten(r: Result<Value, Refusal>) -> Value {
    r.unwrap_or_else(|Refusal(v)| v)
}

fn refuse<T>(r: &str) -> Result<T, Refusal> {
    Err(Refusal(result(r)))
}

fn required<'a>(body: &'a Map<String, Value>, key: &str) -> Result<&'a str, Refusal> {
    match str_field(body, key).map(str::trim) {
        Some(v) if !v.is_empty() => Ok(v),
        _ => refuse(&format!("{key} is not null")),
    }
}

/// A phone number: digits with an optional leading `+`, at most 20.
fn phone(p: &str) -> bool {
    let digits = p.strip_prefix('+').unwrap_or(p);
    !digits.is_empty() && digits.len() <= 20 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn counts_answer(c: Counts) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("msgTotal".into(), json!(c.targets.to_string()));
    m.insert("msgProcess".into(), json!(c.sent.to_string()));
    m.insert("msgFeedback".into(), json!(c.delivered.to_string()));
    m.insert("clickNum".into(), json!(c.clicked.to_string()));
    m
}

impl Legacy {
    /// `setBadgeAction`: `+N`, `-N` or `N` on devices named by cid or APNs device token.
    pub(crate) async fn set_badge(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        flatten(self.badge(app, body).await)
    }

    async fn badge(&self, app: &AppState, body: &Map<String, Value>) -> Result<Value, Refusal> {
        let badge = required(body, "badge")?;
        let op = pigeon_core::BadgeOp::parse(&Value::String(badge.to_string()))
            .ok_or_else(|| Refusal(result("badge must be +N, -N or N")))?;
        let cids = strings(body, "cid", MAX_IDS)?;
        let tokens = strings(body, "deviceToken", MAX_IDS)?;
        if cids.is_empty() && tokens.is_empty() {
            return refuse("cid or deviceToken is not null");
        }
        let (mut ordinals, _) = self.engine.ordinals_of(app, &cids);
        let (by_token, _) = self.engine.ordinals_by_apns_token(app, &tokens);
        ordinals.extend(by_token);
        ordinals.sort_unstable();
        ordinals.dedup();
        if ordinals.is_empty() {
            return refuse("TokenMD5NoUsers");
        }
        self.engine
            .change_badges(app, &ordinals, op)
            .await
            .map_err(engine_refusal)?;
        Ok(result("ok"))
    }

    /// `blackCidAction`: `optType` 1 adds the `cidList` devices to the app's black list (they
    /// get no push the app makes while there, through any door), 2 takes them off.
    pub(crate) async fn black_cids(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        flatten(self.black(app, body).await)
    }

    async fn black(&self, app: &AppState, body: &Map<String, Value>) -> Result<Value, Refusal> {
        let blocked = match body
            .get("optType")
            .and_then(crate::legacy::template::as_i64)
        {
            Some(1) => true,
            Some(2) => false,
            _ => return refuse("optType must be 1 (add) or 2 (restore)"),
        };
        let cids = strings(body, "cidList", MAX_IDS)?;
        if cids.is_empty() {
            return refuse("cidList is not null");
        }
        let (ordinals, unknown) = self.engine.ordinals_of(app, &cids);
        if !unknown.is_empty() {
            return Ok(json!({"result": "TokenMD5NoUsers", "cidList": unknown}));
        }
        self.engine
            .set_blocked(app, &ordinals, blocked)
            .await
            .map_err(engine_refusal)?;
        Ok(result("ok"))
    }

    async fn bind_one(&self, app: &AppState, alias: &str, cid: &str) -> Result<(), String> {
        check_name("alias", alias)?;
        if self.engine.find_device(app, cid).is_none() {
            return Err("TokenMD5NoUsers".into());
        }
        let edit = DeviceEdit {
            alias: Some(Some(alias.to_string())),
            ..DeviceEdit::default()
        };
        self.engine
            .edit_device(app, cid, edit)
            .await
            .map_err(|e| match e {
                EngineError::AliasFull(_) => "AliasOverLimit".to_string(),
                other => match engine_refusal(other).0["result"].as_str() {
                    Some(s) => s.to_string(),
                    None => "internal error, retry".to_string(),
                },
            })
    }

    /// `alias_bind`: one cid to an alias.
    pub(crate) async fn alias_bind(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let (alias, cid) = match (required(body, "alias"), required(body, "cid")) {
            (Ok(a), Ok(c)) => (a, c),
            (Err(Refusal(v)), _) | (_, Err(Refusal(v))) => return v,
        };
        match self.bind_one(app, alias, cid).await {
            Ok(()) => result("ok"),
            Err(why) => json!({"result": why, "error_msg": why}),
        }
    }

    /// `alias_bind_list`: `aliaslist` of `{cid, alias}`. Bindings that fail are listed.
    pub(crate) async fn alias_bind_list(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let Some(Value::Array(list)) = body.get("aliaslist") else {
            return result("aliaslist is not null");
        };
        if list.is_empty() {
            return result("aliaslist is not null");
        }
        if list.len() > MAX_IDS {
            return result("target overLimit");
        }
        let mut failed = Map::new();
        for item in list {
            let cid = item.get("cid").and_then(Value::as_str).unwrap_or_default();
            let alias = item
                .get("alias")
                .and_then(Value::as_str)
                .unwrap_or_default();
            if cid.is_empty() || alias.is_empty() {
                failed.insert(cid.to_string(), json!("cid and alias are not null"));
                continue;
            }
            if let Err(why) = self.bind_one(app, alias, cid).await {
                failed.insert(cid.to_string(), json!(why));
            }
        }
        if failed.len() == list.len() {
            return json!({"result": "error", "error_list": failed});
        }
        let mut out = result("ok");
        if !failed.is_empty() {
            out["error_list"] = Value::Object(failed);
        }
        out
    }

    /// `alias_query`: by `alias` the cids bound to it (`cidlist`), by `cid` its `alias`.
    pub(crate) fn alias_query(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        if let Some(alias) = str_field(body, "alias") {
            let cids: Vec<String> = self
                .engine
                .alias_devices(app, alias, PlatformSet::all())
                .into_iter()
                .map(|d| d.registration_id)
                .collect();
            return json!({"result": "ok", "cidlist": cids});
        }
        let Some(cid) = str_field(body, "cid") else {
            return result("alias or cid is not null");
        };
        match self.engine.find_device(app, cid) {
            Some(d) => json!({"result": "ok", "alias": d.alias.unwrap_or_default()}),
            None => result("TokenMD5NoUsers"),
        }
    }

    /// `alias_unbind`: one cid from an alias, or (no `cid`) the alias from every device.
    pub(crate) async fn alias_unbind(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let alias = match required(body, "alias") {
            Ok(a) => a,
            Err(Refusal(v)) => return v,
        };
        match str_field(body, "cid")
            .map(str::trim)
            .filter(|c| !c.is_empty())
        {
            Some(cid) => match self
                .engine
                .unbind_alias(app, alias, &[cid.to_string()])
                .await
            {
                Ok(not_bound) if not_bound.is_empty() => result("ok"),
                Ok(_) => json!({"result": "error",
                    "error_msg": format!("cid {cid} is not bound to alias {alias}")}),
                Err(e) => engine_refusal(e).0,
            },
            None => match self
                .engine
                .delete_alias(app, alias, PlatformSet::all())
                .await
            {
                Ok(_) => result("ok"),
                Err(e) => engine_refusal(e).0,
            },
        }
    }

    /// `setTagAction`: replaces a device's tags.
    pub(crate) async fn set_tags(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        flatten(self.set_tags_of(app, body).await)
    }

    async fn set_tags_of(
        &self,
        app: &AppState,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let cid = required(body, "clientId")?;
        let tags = strings(body, "tagList", pigeon_engine::devices::MAX_TAGS_PER_DEVICE)?;
        for t in &tags {
            check_name("tag", t).map_err(|m| Refusal(result(&m)))?;
        }
        let (ordinals, _) = self.engine.ordinals_of(app, &[cid.to_string()]);
        let Some(&ordinal) = ordinals.first() else {
            return refuse("TokenMD5NoUsers");
        };
        self.engine
            .update_device(app, ordinal, None, Some(tags))
            .await
            .map_err(engine_refusal)?;
        Ok(result("ok"))
    }

    /// `getUserTags`: a device's tags.
    pub(crate) fn get_tags(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let cid = str_field(body, "clientId").unwrap_or_default();
        match self.engine.find_device(app, cid) {
            Some(d) => json!({"result": "ok", "tags": d.tags}),
            None => result("TokenMD5NoUsers"),
        }
    }

    /// `changeTagAction`: adds a tag to (`operation` add) or removes it from (del / delete /
    /// remove) some cids.
    pub(crate) async fn change_tag(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        flatten(self.change_tag_of(app, body).await)
    }

    async fn change_tag_of(
        &self,
        app: &AppState,
        body: &Map<String, Value>,
    ) -> Result<Value, Refusal> {
        let tag = required(body, "tag")?;
        check_name("tag", tag).map_err(|m| Refusal(result(&m)))?;
        let cids = strings(body, "cids", MAX_IDS)?;
        if cids.is_empty() {
            return refuse("cids is not null");
        }
        let op = str_field(body, "operation")
            .unwrap_or("add")
            .trim()
            .to_ascii_lowercase();
        let (add, remove): (&[String], &[String]) = match op.as_str() {
            "add" | "" => (&cids, &[]),
            "del" | "delete" | "remove" | "unbind" => (&[], &cids),
            other => return refuse(&format!("operation {other:?} is not add or del")),
        };
        let illegal = self
            .engine
            .edit_tag(app, tag, add, remove)
            .await
            .map_err(engine_refusal)?;
        if illegal.len() == cids.len() {
            return refuse("TokenMD5NoUsers");
        }
        let mut out = result("ok");
        if !illegal.is_empty() {
            out["invalidCids"] = json!(illegal);
        }
        Ok(out)
    }

    /// `getClientIdStatusAction`: `Online` / `Offline`, with `lastLogin` (ms).
    pub(crate) async fn cid_status(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let cid = str_field(body, "clientId").unwrap_or_default().to_string();
        if cid.is_empty() {
            return result("clientId is not null");
        }
        match self.engine.device_presence(app, &[cid]).await {
            Ok(p) => match p.first().copied().flatten() {
                Some(Presence::Online) => {
                    json!({"result": "Online", "lastLogin": now_ms().to_string()})
                }
                Some(Presence::Offline(Some(at))) => {
                    json!({"result": "Offline", "lastLogin": at.to_string()})
                }
                Some(Presence::Offline(None)) => result("Offline"),
                None => result("TokenMD5NoUsers"),
            },
            Err(e) => engine_refusal(e).0,
        }
    }

    async fn set_mobile(
        &self,
        app: &AppState,
        cid: &str,
        mobile: Option<String>,
    ) -> Result<(), String> {
        if self.engine.find_device(app, cid).is_none() {
            return Err("TokenMD5NoUsers".into());
        }
        let edit = DeviceEdit {
            mobile: Some(mobile),
            ..DeviceEdit::default()
        };
        self.engine.edit_device(app, cid, edit).await.map_err(|e| {
            engine_refusal(e).0["result"]
                .as_str()
                .unwrap_or_default()
                .to_string()
        })
    }

    /// `bind_cid_pn`: `cidpnlist` {cid: phone number}, the numbers the SMS supplement uses.
    pub(crate) async fn bind_cid_pn(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let Some(Value::Object(list)) = body.get("cidpnlist") else {
            return result("cidpnlist is not null");
        };
        if list.is_empty() {
            return result("cidpnlist is not null");
        }
        if list.len() > MAX_IDS {
            return result("target overLimit");
        }
        let mut failed = Map::new();
        for (cid, pn) in list {
            let pn = match pn {
                Value::String(s) => s.trim().to_string(),
                Value::Number(n) => n.to_string(),
                _ => String::new(),
            };
            if !phone(&pn) {
                failed.insert(cid.clone(), json!("pn is not a phone number"));
                continue;
            }
            if let Err(why) = self.set_mobile(app, cid, Some(pn)).await {
                failed.insert(cid.clone(), json!(why));
            }
        }
        self.bindings_answer(failed, list.len())
    }

    fn bindings_answer(&self, failed: Map<String, Value>, total: usize) -> Value {
        if failed.len() == total {
            return json!({"result": "error", "error_list": failed});
        }
        let mut out = result("ok");
        if !failed.is_empty() {
            out["error_list"] = Value::Object(failed);
        }
        out
    }

    /// `unbind_cid_pn`: forgets the numbers of some cids.
    pub(crate) async fn unbind_cid_pn(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let cids = match strings(body, "cids", MAX_IDS) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return result("cids is not null"),
            Err(Refusal(v)) => return v,
        };
        let mut failed = Map::new();
        for cid in &cids {
            if let Err(why) = self.set_mobile(app, cid, None).await {
                failed.insert(cid.clone(), json!(why));
            }
        }
        self.bindings_answer(failed, cids.len())
    }

    /// `query_cid_pn`: the numbers of some cids (`cidpnlist`, also as `data`; cids without
    /// one are left out).
    pub(crate) fn query_cid_pn(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let cids = match strings(body, "cids", MAX_IDS) {
            Ok(c) if !c.is_empty() => c,
            Ok(_) => return result("cids is not null"),
            Err(Refusal(v)) => return v,
        };
        let mut found = Map::new();
        for cid in cids {
            if let Some(m) = self.engine.find_device(app, &cid).and_then(|d| d.mobile) {
                found.insert(cid, json!(m));
            }
        }
        json!({"result": "ok", "cidpnlist": found.clone(), "data": found})
    }

    /// `stop_sms`: no SMS supplement for a task's devices any more.
    pub(crate) async fn stop_sms(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        let task = match required(body, "taskId") {
            Ok(t) => t,
            Err(Refusal(v)) => return v,
        };
        let ids = self.task_msg_ids(app, task);
        if ids.is_empty() {
            return result("TaskNotExist");
        }
        for msg_id in ids {
            if let Err(e) = self.engine.stop_sms(app, msg_id).await {
                return engine_refusal(e).0;
            }
        }
        result("ok")
    }

    /// The counts of the pushes a task id names, summed.
    async fn task_counts(&self, app: &AppState, task: &str) -> Result<Option<Counts>, Refusal> {
        let ids = self.task_msg_ids(app, task);
        self.sum_counts(app, &ids).await
    }

    async fn sum_counts(&self, app: &AppState, ids: &[u64]) -> Result<Option<Counts>, Refusal> {
        let mut total = Counts::default();
        let mut any = false;
        for &msg_id in ids {
            if let Some(r) = self
                .engine
                .push_report(app, msg_id)
                .await
                .map_err(engine_refusal)?
            {
                any = true;
                total.targets += r.total.targets;
                total.sent += r.total.sent;
                total.delivered += r.total.delivered;
                total.clicked += r.total.clicked;
            }
        }
        Ok(any.then_some(total))
    }

    /// `getPushMsgResult`: what became of a task.
    pub(crate) async fn push_result(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let task = match required(body, "taskId") {
            Ok(t) => t.to_string(),
            Err(Refusal(v)) => return v,
        };
        match self.task_counts(app, &task).await {
            Ok(Some(c)) => {
                let mut out = counts_answer(c);
                out.insert("result".into(), json!("ok"));
                out.insert("taskId".into(), json!(task));
                Value::Object(out)
            }
            Ok(None) => json!({"result": "TaskNotExist", "taskId": task}),
            Err(Refusal(v)) => v,
        }
    }

    /// `getPushMsgResultByTaskidList`: the results of several tasks, under `data` by task id.
    pub(crate) async fn push_results(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let tasks = match strings(body, "taskIdList", MAX_TASKS) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => return result("taskIdList is not null"),
            Err(Refusal(v)) => return v,
        };
        let mut data = Map::new();
        for task in tasks {
            let entry = match self.task_counts(app, &task).await {
                Ok(Some(c)) => Value::Object(counts_answer(c)),
                Ok(None) => result("TaskNotExist"),
                Err(Refusal(v)) => return v,
            };
            data.insert(task, entry);
        }
        json!({"result": "ok", "data": data})
    }

    /// `getPushResultByGroupName`: the summed results of the contents made with a
    /// `taskGroupName` (kept while their contents are, see `contents`).
    pub(crate) async fn push_result_by_group(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let group = match required(body, "groupName") {
            Ok(g) => g.to_string(),
            Err(Refusal(v)) => return v,
        };
        let ids = self.contents.pushes_of_group(&app.app_key, &group);
        match self.sum_counts(app, &ids).await {
            Ok(c) => {
                let mut out = counts_answer(c.unwrap_or_default());
                out.insert("result".into(), json!("ok"));
                out.insert("groupName".into(), json!(group));
                Value::Object(out)
            }
            Err(Refusal(v)) => v,
        }
    }

    /// `queryUserCount`: how many devices meet app-push conditions.
    pub(crate) fn query_user_count(&self, app: &Arc<AppState>, body: &Map<String, Value>) -> Value {
        match conditions(body) {
            Ok((platforms, expr)) => {
                let audience = if expr.is_empty() {
                    Audience::All
                } else {
                    Audience::Expr(expr)
                };
                let n = self.engine.audience_size(app, &audience, platforms);
                json!({"result": "ok", "userCount": n.to_string()})
            }
            Err(Refusal(v)) => v,
        }
    }

    /// `getUserCountByTags`: how many devices carry any of the tags.
    pub(crate) fn user_count_by_tags(
        &self,
        app: &Arc<AppState>,
        body: &Map<String, Value>,
    ) -> Value {
        let tags = match strings(body, "tagList", 10) {
            Ok(t) if !t.is_empty() => t,
            Ok(_) => return result("tagList is not null"),
            Err(Refusal(v)) => return v,
        };
        let audience = Audience::Expr(AudienceExpr {
            tag: tags,
            ..AudienceExpr::default()
        });
        let n = self
            .engine
            .audience_size(app, &audience, PlatformSet::all());
        json!({"result": "ok", "userCount": n.to_string()})
    }
}
