//! The Device API (jpush-v3.md §5): a device's tags, alias and mobile number, aliases, tags,
//! and online status.

use crate::api::{
    authenticate, engine_error, json_response, ok_empty, query_platforms, query_value, read_json,
    string_list, ApiError, ApiResult, Family,
};
use crate::JPush;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use pigeon_core::names::check_name;
use pigeon_core::{BadgeOp, MAX_BADGE};
use pigeon_engine::devices::{DeviceEdit, Presence, TagEdit};
use serde_json::{json, Map, Value};

const F: Family = Family::Device;
/// Most tags in one add or remove of a device's tags.
const MAX_TAGS_PER_EDIT: usize = 100;
/// Most bytes of the tags in one add or remove.
const MAX_TAG_BYTES_PER_EDIT: usize = 1000;
/// Most registration ids in one tag, alias or status request.
const MAX_IDS: usize = 1000;
/// Longest mobile number accepted.
const MAX_MOBILE_BYTES: usize = 20;

fn unknown_device(rid: &str) -> ApiError {
    ApiError::invalid(
        F,
        format!("registration_id {rid:?} is not a device of this app"),
    )
    .with("illegal_rids", json!([rid]))
}

/// `GET /v3/devices/{registration_id}`
pub async fn get_device(
    State(s): State<JPush>,
    Path(rid): Path<String>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let d = s
        .engine
        .find_device_caught_up(&app, &rid)
        .await
        .ok_or_else(|| unknown_device(&rid))?;
    Ok(json_response(StatusCode::OK, &device_info(&d)))
}

/// JPush's device info; `region` (a Pigeon extension) only when the device has one, so the
/// answer stays JPush's exact shape for everyone else.
fn device_info(d: &pigeon_store::DeviceRecord) -> Value {
    let mut info = json!({"tags": d.tags, "alias": d.alias, "mobile": d.mobile});
    if let Some(region) = &d.region {
        info["region"] = json!(region);
    }
    info
}

/// `POST /v3/devices/{registration_id}`
pub async fn set_device(
    State(s): State<JPush>,
    Path(rid): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let body = read_json(body, F).await?;
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid(F, "the body must be a JSON object"))?;
    let mut edit = DeviceEdit::default();
    for (key, value) in obj {
        match key.as_str() {
            "tags" => edit.tags = Some(tag_edit(value)?),
            "alias" => edit.alias = Some(alias_value(value)?),
            "mobile" => edit.mobile = Some(mobile_value(value)?),
            // A Pigeon extension: where the device is, for Getui's audiences by region.
            "region" => edit.region = Some(region_value(value)?),
            other => {
                return Err(ApiError::invalid(
                    F,
                    format!(
                        "unknown field {other:?}: only tags, alias, mobile and region can be set"
                    ),
                ))
            }
        }
    }
    if edit.tags.is_none() && edit.alias.is_none() && edit.mobile.is_none() && edit.region.is_none()
    {
        return Err(ApiError::invalid(
            F,
            "give at least one of tags, alias, mobile, region",
        ));
    }
    if s.engine.find_device_caught_up(&app, &rid).await.is_none() {
        return Err(unknown_device(&rid));
    }
    s.engine
        .edit_device(&app, &rid, edit)
        .await
        .map_err(|e| engine_error(F, e))?;
    Ok(ok_empty())
}

fn tag_names(value: &Value, what: &str) -> Result<Vec<String>, ApiError> {
    let list = value
        .as_array()
        .ok_or_else(|| ApiError::invalid(F, format!("{what} must be an array of tags")))?;
    if list.len() > MAX_TAGS_PER_EDIT {
        return Err(ApiError::invalid(
            F,
            format!(
                "{what} holds {} tags, at most {MAX_TAGS_PER_EDIT} are allowed",
                list.len()
            ),
        ));
    }
    let tags = list
        .iter()
        .map(|t| {
            let t = t
                .as_str()
                .ok_or_else(|| ApiError::invalid(F, format!("{what} must hold strings")))?;
            check_name("tag", t).map_err(|m| ApiError::invalid(F, m))?;
            Ok(t.to_string())
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let bytes: usize = tags.iter().map(String::len).sum();
    if bytes > MAX_TAG_BYTES_PER_EDIT {
        return Err(ApiError::invalid(
            F,
            format!("{what} holds {bytes} bytes of tags, at most {MAX_TAG_BYTES_PER_EDIT}"),
        ));
    }
    Ok(tags)
}

/// `"tags": ""` clears; `{"add": [..], "remove": [..]}` changes.
fn tag_edit(value: &Value) -> Result<TagEdit, ApiError> {
    match value {
        Value::String(s) if s.is_empty() => Ok(TagEdit::Clear),
        Value::Object(o) => {
            if let Some(k) = o.keys().find(|k| *k != "add" && *k != "remove") {
                return Err(ApiError::invalid(
                    F,
                    format!("tags.{k} is unknown: use add and remove"),
                ));
            }
            let add = o.get("add").map(|v| tag_names(v, "tags.add")).transpose()?;
            let remove = o
                .get("remove")
                .map(|v| tag_names(v, "tags.remove"))
                .transpose()?;
            Ok(TagEdit::Change {
                add: add.unwrap_or_default(),
                remove: remove.unwrap_or_default(),
            })
        }
        _ => Err(ApiError::invalid(
            F,
            "tags must be \"\" (clear) or {\"add\": [..], \"remove\": [..]}",
        )),
    }
}

/// `"alias": "a"` binds, `""` (or null) unbinds.
fn alias_value(value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => {
            check_name("alias", s).map_err(|m| ApiError::invalid(F, m))?;
            Ok(Some(s.clone()))
        }
        _ => Err(ApiError::invalid(
            F,
            "alias must be a string (\"\" to clear)",
        )),
    }
}

fn region_value(value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s) => pigeon_core::names::check_region(s)
            .map(|_| Some(s.clone()))
            .map_err(|m| ApiError::invalid(F, m)),
        _ => Err(ApiError::invalid(
            F,
            "region must be a string (\"\" to clear)",
        )),
    }
}

fn mobile_value(value: &Value) -> Result<Option<String>, ApiError> {
    match value {
        Value::Null => Ok(None),
        Value::String(s) if s.is_empty() => Ok(None),
        Value::String(s)
            if s.len() <= MAX_MOBILE_BYTES
                && s.trim_start_matches('+').bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok(Some(s.clone()))
        }
        _ => Err(ApiError::invalid(
            F,
            format!("mobile must be a phone number of at most {MAX_MOBILE_BYTES} digits (\"\" to clear)"),
        )),
    }
}

/// `POST /v3/devices/status`
pub async fn device_status(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let body = read_json(body, F).await?;
    let rids = string_list(&body, "registration_ids", MAX_IDS, F)?;
    if rids.is_empty() {
        return Err(ApiError::invalid(
            F,
            "registration_ids must list 1 to 1000 ids",
        ));
    }
    let presence = s
        .engine
        .device_presence(&app, &rids)
        .await
        .map_err(|e| engine_error(F, e))?;
    let mut out = Map::new();
    for (rid, p) in rids.iter().zip(presence) {
        let entry = match p {
            // Not a device of this app: an empty result, as JPush gives.
            None => continue,
            Some(Presence::Online) => json!({"online": true}),
            Some(Presence::Offline(None)) => json!({"online": false}),
            Some(Presence::Offline(Some(ms))) => {
                json!({"online": false, "last_online_time": crate::time::beijing(ms)})
            }
        };
        out.insert(rid.clone(), entry);
    }
    Ok(json_response(StatusCode::OK, &Value::Object(out)))
}

/// `POST /v3/devices/badge` (a Pigeon extension with the semantics of Getui's
/// setBadgeForCID and setBadgeForDeviceToken): `{"registration_ids": [..], "badge": "+1"}` or
/// `{"device_tokens": [..], "badge": "5"}`; connected devices get the `badge` op.
pub async fn set_badge(State(s): State<JPush>, headers: HeaderMap, body: Body) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let body = read_json(body, F).await?;
    let op = body
        .get("badge")
        .filter(|b| b.is_string() || b.is_number())
        .and_then(BadgeOp::parse)
        .ok_or_else(|| {
            ApiError::invalid(
                F,
                format!("badge must be \"N\", \"+N\" or \"-N\" with N in 0..={MAX_BADGE}"),
            )
        })?;
    let (key, what) = match (body.get("registration_ids"), body.get("device_tokens")) {
        (Some(_), None) => ("registration_ids", "registration id"),
        (None, Some(_)) => ("device_tokens", "APNs device token"),
        _ => {
            return Err(ApiError::invalid(
                F,
                "give either registration_ids or device_tokens (not both)",
            ))
        }
    };
    let ids = string_list(&body, key, MAX_IDS, F)?;
    if ids.is_empty() {
        return Err(ApiError::invalid(
            F,
            format!("{key} must list 1 to {MAX_IDS} ids"),
        ));
    }
    let (ordinals, unknown) = if key == "registration_ids" {
        s.engine.ordinals_of(&app, &ids)
    } else {
        s.engine.ordinals_by_apns_token(&app, &ids)
    };
    if !unknown.is_empty() {
        return Err(ApiError::invalid(
            F,
            format!("no device of this app has the {what} {:?}", unknown[0]),
        )
        .with(
            if key == "registration_ids" {
                "illegal_rids"
            } else {
                "illegal_tokens"
            },
            json!(unknown),
        ));
    }
    s.engine
        .change_badges(&app, &ordinals, op)
        .await
        .map_err(|e| engine_error(F, e))?;
    Ok(json_response(StatusCode::OK, &json!({})))
}

fn checked_alias(alias: &str) -> Result<(), ApiError> {
    check_name("alias", alias).map_err(|m| ApiError::invalid(F, m))
}

/// `GET /v3/aliases/{alias}?platform=..[&new_format=true]`
pub async fn get_alias(
    State(s): State<JPush>,
    Path(alias): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    checked_alias(&alias)?;
    let platforms = query_platforms(query.as_deref(), F)?;
    let devices = s.engine.alias_devices(&app, &alias, platforms);
    if query_value(query.as_deref(), "new_format").as_deref() == Some("true") {
        let rids: Vec<String> = devices.iter().map(|d| d.registration_id.clone()).collect();
        let presence = s
            .engine
            .device_presence(&app, &rids)
            .await
            .map_err(|e| engine_error(F, e))?;
        let now = pigeon_engine::now_ms();
        let data: Vec<Value> = devices
            .iter()
            .zip(presence)
            .map(|(d, p)| {
                let last = match p {
                    Some(Presence::Online) => Some(now),
                    Some(Presence::Offline(at)) => at,
                    None => None,
                };
                json!({"registration_id": d.registration_id, "platform": d.platform.as_str(),
                       "last_online_date": last.map(crate::time::beijing_date)})
            })
            .collect();
        return Ok(json_response(StatusCode::OK, &json!({ "data": data })));
    }
    let rids: Vec<&str> = devices.iter().map(|d| d.registration_id.as_str()).collect();
    Ok(json_response(
        StatusCode::OK,
        &json!({ "registration_ids": rids }),
    ))
}

/// `DELETE /v3/aliases/{alias}?platform=..`
pub async fn delete_alias(
    State(s): State<JPush>,
    Path(alias): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    checked_alias(&alias)?;
    let platforms = query_platforms(query.as_deref(), F)?;
    s.engine
        .delete_alias(&app, &alias, platforms)
        .await
        .map_err(|e| engine_error(F, e))?;
    Ok(ok_empty())
}

/// `POST /v3/aliases/{alias}` with `{"registration_ids":{"remove":[..]}}`
pub async fn unbind_alias(
    State(s): State<JPush>,
    Path(alias): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    checked_alias(&alias)?;
    let body = read_json(body, F).await?;
    let ids = body
        .get("registration_ids")
        .ok_or_else(|| ApiError::invalid(F, "registration_ids is required: {\"remove\": [..]}"))?;
    let remove = string_list(ids, "remove", MAX_IDS, F)?;
    if remove.is_empty() {
        return Err(ApiError::invalid(
            F,
            "registration_ids.remove must list 1 to 1000 ids",
        ));
    }
    let illegal = s
        .engine
        .unbind_alias(&app, &alias, &remove)
        .await
        .map_err(|e| engine_error(F, e))?;
    illegal_or_ok(illegal)
}

fn illegal_or_ok(illegal: Vec<String>) -> ApiResult {
    if illegal.is_empty() {
        return Ok(ok_empty());
    }
    Err(ApiError::new(
        StatusCode::BAD_REQUEST,
        7013,
        format!("{} registration ids were not applied", illegal.len()),
    )
    .with("illegal_rids", json!(illegal)))
}

/// `GET /v3/tags?platform=..`
pub async fn list_tags(
    State(s): State<JPush>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    let platforms = query_platforms(query.as_deref(), F)?;
    let tags = s.engine.tag_names(&app, platforms);
    Ok(json_response(StatusCode::OK, &json!({ "tags": tags })))
}

fn checked_tag(tag: &str) -> Result<(), ApiError> {
    check_name("tag", tag).map_err(|m| ApiError::invalid(F, m))
}

/// `GET /v3/tags/{tag}/registration_ids/{registration_id}`
pub async fn tag_has_device(
    State(s): State<JPush>,
    Path((tag, rid)): Path<(String, String)>,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    checked_tag(&tag)?;
    // JPush answers an unknown registration id with `{"result": false}` here, not an error:
    // the question is only whether the device is in the tag.
    let result = s.engine.device_has_tag(&app, &tag, &rid).unwrap_or(false);
    Ok(json_response(StatusCode::OK, &json!({ "result": result })))
}

/// `POST /v3/tags/{tag}` with `{"registration_ids":{"add":[..],"remove":[..]}}`
pub async fn edit_tag(
    State(s): State<JPush>,
    Path(tag): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    checked_tag(&tag)?;
    let body = read_json(body, F).await?;
    let ids = body.get("registration_ids").ok_or_else(|| {
        ApiError::invalid(
            F,
            "registration_ids is required: {\"add\": [..], \"remove\": [..]}",
        )
    })?;
    let add = string_list(ids, "add", MAX_IDS, F)?;
    let remove = string_list(ids, "remove", MAX_IDS, F)?;
    if add.is_empty() && remove.is_empty() {
        return Err(ApiError::invalid(
            F,
            "registration_ids.add and registration_ids.remove cannot both be empty",
        ));
    }
    let illegal = s
        .engine
        .edit_tag(&app, &tag, &add, &remove)
        .await
        .map_err(|e| engine_error(F, e))?;
    illegal_or_ok(illegal)
}

/// `DELETE /v3/tags/{tag}?platform=..`
pub async fn delete_tag(
    State(s): State<JPush>,
    Path(tag): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> ApiResult {
    let app = authenticate(&s.engine, &headers, F).await?;
    checked_tag(&tag)?;
    let platforms = query_platforms(query.as_deref(), F)?;
    s.engine
        .delete_tag(&app, &tag, platforms)
        .await
        .map_err(|e| engine_error(F, e))?;
    Ok(ok_empty())
}

/// The JSON Schemas of the Device API's bodies and answers for `/openapi.json`, built from
/// the limits the handlers above check against (their parsers are hand-written because each
/// error has its own code and words; these schemas sit beside them so a change is seen).
pub(crate) fn schemas(c: &mut Map<String, Value>) {
    let name = "at most 40 bytes of letters, digits, _, CJK characters and @!#$&*+=.|￥";
    let tags = json!({"type": "array", "maxItems": MAX_TAGS_PER_EDIT, "items": {"type": "string"},
        "description": format!("each {name}; at most {MAX_TAG_BYTES_PER_EDIT} bytes in all")});
    let ids = json!({"type": "array", "maxItems": MAX_IDS, "items": {"type": "string"}});
    let some_ids =
        json!({"type": "array", "minItems": 1, "maxItems": MAX_IDS, "items": {"type": "string"}});
    let nullable_string = |description: String| json!({"anyOf": [{"type": "string"}, {"type": "null"}], "description": description});
    c.insert(
        "DeviceEdit".into(),
        json!({
        "type": "object", "additionalProperties": false,
        "anyOf": [{"required": ["tags"]}, {"required": ["alias"]}, {"required": ["mobile"]},
            {"required": ["region"]}],
        "properties": {
            "tags": {"anyOf": [{"const": ""}, {"type": "object", "additionalProperties": false,
                "properties": {"add": tags, "remove": tags}}],
                "description": "\"\" clears the device's tags; add and remove change them"},
            "alias": nullable_string(format!("{name}; \"\" or null unbinds")),
            "mobile": {"anyOf": [{"type": "string", "maxLength": MAX_MOBILE_BYTES,
                "pattern": "^\\+*[0-9]*$"}, {"type": "null"}],
                "description": "a phone number, for the SMS fallback; \"\" or null clears"},
            "region": {"anyOf": [{"type": "string", "maxLength": pigeon_core::names::MAX_REGION_BYTES},
                {"type": "null"}],
                "description": "where the device is (province or region code), for Getui's audiences by region; \"\" or null clears (Pigeon extension)"}}}),
    );
    c.insert(
        "TagDevices".into(),
        json!({
        "type": "object", "required": ["registration_ids"], "properties": {
            "registration_ids": {"type": "object", "properties": {"add": ids, "remove": ids},
                "description": "add and remove cannot both be empty"}}}),
    );
    c.insert(
        "AliasUnbind".into(),
        json!({
        "type": "object", "required": ["registration_ids"], "properties": {
            "registration_ids": {"type": "object", "required": ["remove"],
                "properties": {"remove": some_ids}}}}),
    );
    c.insert(
        "DeviceStatusQuery".into(),
        json!({
        "type": "object", "required": ["registration_ids"],
        "properties": {"registration_ids": some_ids}}),
    );
    c.insert("BadgeChange".into(), json!({
        "type": "object", "required": ["badge"],
        "oneOf": [{"required": ["registration_ids"]}, {"required": ["device_tokens"]}],
        "properties": {
            "registration_ids": some_ids,
            "device_tokens": {"type": "array", "minItems": 1, "maxItems": MAX_IDS,
                "items": {"type": "string"}, "description": "APNs device tokens (hex)"},
            "badge": {"anyOf": [{"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^(auto|[+-]?[0-9]{1,5})?$"}],
                "description": format!("N sets, +N / -N change (never below 0); N at most {MAX_BADGE}")}}}));
    let strings = json!({"type": "array", "items": {"type": "string"}});
    c.insert(
        "DeviceInfo".into(),
        json!({
        "type": "object", "required": ["tags", "alias", "mobile"], "properties": {
            "tags": strings, "alias": {"type": ["string", "null"]},
            "mobile": {"type": ["string", "null"]},
            "region": {"type": ["string", "null"]}}}),
    );
    c.insert(
        "AliasDevices".into(),
        json!({
        "type": "object", "description": "registration_ids, or data with new_format=true",
        "properties": {
            "registration_ids": strings,
            "data": {"type": "array", "items": {"type": "object",
                "required": ["registration_id", "platform"], "properties": {
                    "registration_id": {"type": "string"}, "platform": {"type": "string"},
                    "last_online_date": {"type": ["string", "null"]}}}}}}),
    );
    c.insert(
        "TagList".into(),
        json!({
        "type": "object", "required": ["tags"], "properties": {"tags": strings}}),
    );
    c.insert(
        "TagHasDevice".into(),
        json!({
        "type": "object", "required": ["result"], "properties": {"result": {"type": "boolean"}}}),
    );
    c.insert("DeviceStatus".into(), json!({
        "type": "object", "description": "by registration id; ids not of this app are left out",
        "additionalProperties": {"type": "object", "required": ["online"], "properties": {
            "online": {"type": "boolean"},
            "last_online_time": {"type": "string", "description": "Beijing time, yyyy-MM-dd HH:mm:ss"}}}}));
}
