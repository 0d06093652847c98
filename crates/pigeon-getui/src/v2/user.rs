//! The user routes (getui.md B.3 "User"): aliases, custom tags (Pigeon's tags), online
//! status, badges and counts, on the same devices, aliases and tags the JPush Device API
//! sees.

use super::audience::tag_conditions;
use super::fields::At;
use super::reply::{object, path_set, V2Error, V2Result};
use super::{engine_error, Call};
use pigeon_core::names::check_name;
use pigeon_core::BadgeOp;
use pigeon_core::{Ordinal, PlatformSet};
use pigeon_engine::devices::Presence;
use pigeon_engine::{now_ms, AppState};
use serde_json::{json, Map, Value};
use std::sync::Arc;

/// Most entries in one alias bind or unbind, and cids in one tag or status request.
const MAX_IDS: usize = 1000;
/// Most custom tags one device may be given at once (Getui's limit per user).
const MAX_TAGS: usize = 100;

/// The ordinal of a cid of this app, or `20001 "{what} is invalid"`.
fn device_of(call: &Call<'_>, app: &AppState, cid: &str, what: &str) -> Result<Ordinal, V2Error> {
    match call
        .v2
        .engine
        .ordinals_of(app, &[cid.to_string()])
        .0
        .first()
    {
        Some(o) => Ok(*o),
        None => Err(V2Error::invalid(what)),
    }
}

/// `data_list: [{cid, alias}]`, each cid a device of the app and each alias a valid name.
fn cid_alias_pairs(
    call: &Call<'_>,
    app: &AppState,
    body: Option<Value>,
) -> Result<Vec<(Ordinal, String, String)>, V2Error> {
    let body = object(body)?;
    let list = body
        .get("data_list")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty() && l.len() <= MAX_IDS)
        .ok_or_else(|| V2Error::invalid("data_list"))?;
    let mut out = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        let here = format!("data_list[{i}]");
        let obj = item.as_object().ok_or_else(|| V2Error::invalid(&here))?;
        let at = At { obj, path: here };
        let cid = at.req_str("cid", 64)?;
        let alias = at.req_str("alias", 40)?;
        check_name("alias", alias).map_err(|m| {
            V2Error::invalid_msg(format!("{} is invalid: {m}", at.path_of("alias")))
        })?;
        let ordinal = device_of(call, app, cid, &at.path_of("cid"))?;
        out.push((ordinal, cid.to_string(), alias.to_string()));
    }
    Ok(out)
}

/// `POST /user/alias`: binds each cid to its alias (a cid has one alias; binding another
/// replaces it).
pub async fn bind_alias(call: &Call<'_>, app: &Arc<AppState>, body: Option<Value>) -> V2Result {
    for (ordinal, _, alias) in cid_alias_pairs(call, app, body)? {
        call.v2
            .engine
            .update_device(app, ordinal, Some(Some(alias)), None)
            .await
            .map_err(engine_error)?;
    }
    Ok(Value::Null)
}

/// `DELETE /user/alias`: unbinds each cid from its alias (a cid not bound to it stays as
/// it is).
pub async fn unbind_alias(call: &Call<'_>, app: &Arc<AppState>, body: Option<Value>) -> V2Result {
    let pairs = cid_alias_pairs(call, app, body)?;
    for (_, cid, alias) in pairs {
        call.v2
            .engine
            .unbind_alias(app, &alias, &[cid])
            .await
            .map_err(engine_error)?;
    }
    Ok(Value::Null)
}

/// `DELETE /user/alias/{alias}`: unbinds every cid of the alias.
pub async fn unbind_all(call: &Call<'_>, app: &Arc<AppState>, alias: &str) -> V2Result {
    check_name("alias", alias)
        .map_err(|m| V2Error::invalid_msg(format!("alias is invalid: {m}")))?;
    call.v2
        .engine
        .delete_alias(app, alias, PlatformSet::all())
        .await
        .map_err(engine_error)?;
    Ok(Value::Null)
}

/// `GET /user/alias/cid/{cid}`: `{"alias": ".."}`, `""` when the cid has none.
pub fn alias_of_cid(call: &Call<'_>, app: &Arc<AppState>, cid: &str) -> V2Result {
    let device = call
        .v2
        .engine
        .find_device(app, cid)
        .ok_or_else(|| V2Error::invalid("cid"))?;
    Ok(json!({"alias": device.alias.unwrap_or_default()}))
}

/// `GET /user/cid/alias/{alias}`: `{"cid": [..]}`, oldest binding first.
pub fn cids_of_alias(call: &Call<'_>, app: &Arc<AppState>, alias: &str) -> V2Result {
    check_name("alias", alias)
        .map_err(|m| V2Error::invalid_msg(format!("alias is invalid: {m}")))?;
    let cids: Vec<String> = call
        .v2
        .engine
        .alias_devices(app, alias, PlatformSet::all())
        .into_iter()
        .map(|d| d.registration_id)
        .collect();
    Ok(json!({ "cid": cids }))
}

fn tag_list(at: &At<'_>, key: &str) -> Result<Vec<String>, V2Error> {
    let tags = at
        .strings(key, MAX_TAGS, 40)?
        .ok_or_else(|| at.invalid(key))?;
    for t in &tags {
        check_name("tag", t)
            .map_err(|m| V2Error::invalid_msg(format!("{} is invalid: {m}", at.path_of(key))))?;
    }
    Ok(tags)
}

/// `POST /user/custom_tag/cid/{cid}`: `{"custom_tag": [..]}` replaces the cid's tags.
pub async fn set_tags(
    call: &Call<'_>,
    app: &Arc<AppState>,
    cid: &str,
    body: Option<Value>,
) -> V2Result {
    let body = object(body)?;
    let tags = tag_list(&At::root(&body), "custom_tag")?;
    let ordinal = device_of(call, app, cid, "cid")?;
    call.v2
        .engine
        .update_device(app, ordinal, None, Some(tags))
        .await
        .map_err(engine_error)?;
    Ok(Value::Null)
}

/// `GET /user/custom_tag/cid/{cid}`: `{cid: [tags]}`.
pub fn tags_of(call: &Call<'_>, app: &Arc<AppState>, cid: &str) -> V2Result {
    let device = call
        .v2
        .engine
        .find_device(app, cid)
        .ok_or_else(|| V2Error::invalid("cid"))?;
    let mut out = Map::new();
    out.insert(cid.to_string(), json!(device.tags));
    Ok(Value::Object(out))
}

/// `PUT` (add) / `DELETE` (remove) `/user/custom_tag/batch/{tag}` with `{"cid": [..]}`:
/// `{cid: "true"}` for each cid changed or already so, `"false"` for a cid that is not a
/// device of the app (or, adding, one at its tag limit).
pub async fn tag_batch(
    call: &Call<'_>,
    app: &Arc<AppState>,
    tag: &str,
    body: Option<Value>,
    add: bool,
) -> V2Result {
    check_name("tag", tag).map_err(|m| V2Error::invalid_msg(format!("tag is invalid: {m}")))?;
    let body = object(body)?;
    let cids = At::root(&body)
        .strings("cid", MAX_IDS, 64)?
        .filter(|c| !c.is_empty())
        .ok_or_else(|| V2Error::invalid("cid"))?;
    let (adding, removing): (&[String], &[String]) = if add { (&cids, &[]) } else { (&[], &cids) };
    let failed = call
        .v2
        .engine
        .edit_tag(app, tag, adding, removing)
        .await
        .map_err(engine_error)?;
    let out: Map<String, Value> = cids
        .iter()
        .map(|c| (c.clone(), json!((!failed.contains(c)).to_string())))
        .collect();
    Ok(Value::Object(out))
}

/// `POST` (add) / `DELETE` (remove) `/user/black/cid/{cids}`: a blocked cid gets no push the
/// app makes while it is blocked, through any door. Every cid must be a device of the app.
pub async fn black_list(
    call: &Call<'_>,
    app: &Arc<AppState>,
    cids: &str,
    blocked: bool,
) -> V2Result {
    let cids = cid_set(cids)?;
    let (ordinals, unknown) = call.v2.engine.ordinals_of(app, &cids);
    if let Some(cid) = unknown.first() {
        return Err(V2Error::invalid_msg(format!(
            "cid is invalid: {cid:?} is not a device of this app"
        )));
    }
    call.v2
        .engine
        .set_blocked(app, &ordinals, blocked)
        .await
        .map_err(engine_error)?;
    Ok(Value::Null)
}

/// The cids of a path set, at least one and at most [`MAX_IDS`].
fn cid_set(cids: &str) -> Result<Vec<String>, V2Error> {
    let set = path_set(cids);
    if set.is_empty() || set.len() > MAX_IDS {
        return Err(V2Error::invalid("cid"));
    }
    Ok(set)
}

/// `GET /user/status/{cids}`: `{cid: {"last_login_time": "<ms>", "status":
/// "online"/"offline"}}` for each cid of the app. A connected device's last login is now;
/// one that never connected has no `last_login_time`.
pub async fn status(call: &Call<'_>, app: &Arc<AppState>, cids: &str) -> V2Result {
    let cids = cid_set(cids)?;
    let presence = call
        .v2
        .engine
        .device_presence(app, &cids)
        .await
        .map_err(engine_error)?;
    let now = now_ms();
    let mut out = Map::new();
    for (cid, p) in cids.iter().zip(presence) {
        let entry = match p {
            None => continue,
            Some(Presence::Online) => {
                json!({"last_login_time": now.to_string(), "status": "online"})
            }
            Some(Presence::Offline(Some(t))) => {
                json!({"last_login_time": t.to_string(), "status": "offline"})
            }
            Some(Presence::Offline(None)) => json!({"status": "offline"}),
        };
        out.insert(cid.clone(), entry);
    }
    Ok(Value::Object(out))
}

/// `POST /user/badge/cid/{cids}` with `{"badge": "+N" | "-N" | "N"}`: every cid must be a
/// device of the app; connected devices are sent their new number at once.
pub async fn badge(
    call: &Call<'_>,
    app: &Arc<AppState>,
    cids: &str,
    body: Option<Value>,
) -> V2Result {
    let cids = cid_set(cids)?;
    let body = object(body)?;
    let op = match body.get("badge") {
        Some(v @ Value::String(s)) if !s.is_empty() && s != "auto" => BadgeOp::parse(v),
        Some(v @ Value::Number(_)) => BadgeOp::parse(v),
        _ => None,
    }
    .ok_or_else(|| V2Error::invalid("badge"))?;
    let (ordinals, unknown) = call.v2.engine.ordinals_of(app, &cids);
    if let Some(cid) = unknown.first() {
        return Err(V2Error::invalid_msg(format!(
            "cid is invalid: {cid:?} is not a device of this app"
        )));
    }
    call.v2
        .engine
        .change_badges(app, &ordinals, op)
        .await
        .map_err(engine_error)?;
    Ok(Value::Null)
}

/// `POST /user/count` with `{"tag": [conditions]}`: `{"user_count": n}`, the devices a
/// `/push/tag` with those conditions would reach.
pub fn count(call: &Call<'_>, app: &Arc<AppState>, body: Option<Value>) -> V2Result {
    let body = object(body)?;
    let (platforms, audience) = tag_conditions(body.get("tag"), "tag")?;
    let n = super::push::reach(call, app, platforms, audience);
    Ok(json!({ "user_count": n }))
}
