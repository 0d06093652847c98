//! The OpenAPI 3.1 document of Pigeon's HTTP API, generated from the route tables the
//! routers are built from ([`crate::ROUTES`] and the ones other front doors pass in).
//!
//! Each route names the schemas of its body and its answer; they sit under
//! `components/schemas`. The push object's schema is generated from the very tables the
//! push parser checks with (`push.rs`, `fields.rs`), and the batch push's from it, so the
//! two cannot disagree; the other bodies' schemas are built beside their hand-written
//! parsers from the same limits.

use crate::RouteDoc;
use serde_json::{json, Map, Value};

fn reference(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn operation(r: &RouteDoc) -> Value {
    let mut params: Vec<Value> = r
        .path
        .split('/')
        .filter_map(|seg| seg.strip_prefix('{')?.strip_suffix('}'))
        .map(|name| json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}))
        .collect();
    params.extend(r.query.iter().map(|q| {
        json!({"name": q, "in": "query", "required": false,
               "description": "a comma list, or the key repeated, where a list makes sense",
               "schema": {"type": "string"}})
    }));
    let answer = r
        .answer
        .map(reference)
        .unwrap_or_else(|| json!({"type": "object"}));
    let mut op = json!({
        "tags": [r.tag],
        "summary": r.summary,
        "operationId": format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['/', '{', '}'], "_")),
        "parameters": params,
        "responses": {
            "200": {"description": "Success", "content": {"application/json": {"schema": answer}}},
            "default": {"description": "A JPush-style error", "content": {"application/json": {
                "schema": reference("Error")}}}
        }
    });
    if r.body {
        // A route whose body is not JSON (a multipart upload) is documented by its door
        // after the document is built (`pigeon_admin::openapi::document_uploads`).
        let body = r
            .schema
            .map(reference)
            .unwrap_or_else(|| json!({"type": "object"}));
        op["requestBody"] =
            json!({"required": true, "content": {"application/json": {"schema": body}}});
    }
    if r.tag == "Gateway" {
        op["security"] = json!([]);
    }
    op
}

/// The schemas of the JPush front door: the push object (from the parser's tables), the
/// bodies built from it, the Device API's and the Schedule API's, and the answers.
pub fn schemas() -> Map<String, Value> {
    let mut c = Map::new();
    crate::push::push_schema(&mut c);
    // A batch entry is a push whose audience is its `target` and whose cid is its key in
    // `pushlist` (push_api.rs `batch_entry`): the push's schema with those swapped.
    if let Some(mut entry) = c.get("Push").cloned() {
        if let Some(props) = entry["properties"].as_object_mut() {
            props.remove("audience");
            props.remove("cid");
            props.insert(
                "target".into(),
                json!({"type": "string", "minLength": 1,
                    "description": "the registration id or alias this push goes to"}),
            );
        }
        if let Some(required) = entry["required"].as_array_mut() {
            required.retain(|k| k != "audience");
            required.push(json!("target"));
        }
        entry["description"] =
            json!("One push of a batch: a push object with target instead of audience.");
        c.insert("BatchPushEntry".into(), entry);
    }
    c.insert(
        "BatchPush".into(),
        json!({"type": "object", "required": ["pushlist"], "properties": {
            "pushlist": {"type": "object", "minProperties": 1, "maxProperties": 1000,
                "description": "cid (from GET /v3/push/cid) → push",
                "additionalProperties": reference("BatchPushEntry")}}}),
    );
    crate::device_api::schemas(&mut c);
    crate::schedule_api::schemas(&mut c);
    crate::geofence_api::schemas(&mut c);
    crate::saved_api::schemas(&mut c);
    let error_body = json!({"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "integer"}, "message": {"type": "string"},
        "illegal_rids": {"type": "array", "items": {"type": "string"}},
        "illegal_tokens": {"type": "array", "items": {"type": "string"}}}});
    c.insert(
        "Error".into(),
        json!({"type": "object", "required": ["error"], "properties": {
            "error": error_body, "msg_id": {"type": "string"}}}),
    );
    c.insert(
        "PushAnswer".into(),
        json!({"type": "object", "required": ["sendno", "msg_id"], "properties": {
            "sendno": {"type": "string", "description": "options.sendno, or \"0\""},
            "msg_id": {"type": "string", "pattern": "^[0-9]+$"}}}),
    );
    c.insert(
        "BatchPushAnswer".into(),
        json!({"type": "object", "description": "cid → that push's msg_id or error",
            "additionalProperties": {"oneOf": [
                {"type": "object", "required": ["msg_id"], "properties": {"msg_id": {"type": "string"}}},
                {"type": "object", "required": ["error"], "properties": {"error": error_body}}]}}),
    );
    c.insert(
        "GroupPushAnswer".into(),
        json!({"type": "object", "required": ["group_msgid"],
            "properties": {"group_msgid": {"type": "string"}},
            "description": "group_msgid, and for each app_key of the group its msg_id and sendno or its error",
            "additionalProperties": {"type": "object", "properties": {
                "msg_id": {"type": "string"}, "sendno": {"type": "string"}, "error": error_body}}}),
    );
    c.insert(
        "CidList".into(),
        json!({"type": "object", "required": ["cidlist"], "properties": {
            "cidlist": {"type": "array", "items": {"type": "string"}}}}),
    );
    c.insert(
        "Empty".into(),
        json!({"type": "object", "maxProperties": 0}),
    );
    c
}

/// The document for these routes. `more_schemas` are the other front doors' (the gateway's)
/// schemas their routes name.
pub fn document(routes: &[RouteDoc], more_schemas: Map<String, Value>) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method] = operation(r);
    }
    let mut components = schemas();
    components.extend(more_schemas);
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "Pigeon",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Self-hosted push: the JPush v3 API, and the device gateway. Every \
                API answers JSON; errors are {\"error\":{\"code\":..,\"message\":..}}. Paths \
                also accept a trailing slash and the Beijing-zone prefixes /v3/device, \
                /v3/report and /v3/push/schedules."
        },
        // Relative: the document is served by the server it describes, at whatever address
        // and scheme (behind a TLS proxy, say) it was reached, so clients resolve "/" against
        // the URL they fetched it from (OpenAPI 3.1 §4.8.5.1) rather than a host named here.
        "servers": [{"url": "/", "description": "the server that served this document"}],
        "security": [{"basic": []}],
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic",
                "description": "app_key:master_secret, or group-<group_key>:<master_secret> for group push"}},
            "schemas": components,
        },
        "paths": paths,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every `$ref` in `v`.
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get("$ref") {
                    out.push(r.clone());
                }
                o.values().for_each(|v| refs(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }

    #[test]
    fn every_schema_a_route_names_is_in_the_document() {
        let doc = document(crate::ROUTES, Map::new());
        let mut found = vec![];
        refs(&doc, &mut found);
        assert!(found.contains(&"#/components/schemas/Push".to_string()));
        for r in found {
            let name = r.trim_start_matches("#/components/schemas/");
            assert!(
                doc["components"]["schemas"][name].is_object(),
                "{r} is not in the document"
            );
        }
        let push = &doc["paths"]["/v3/push"]["post"];
        assert_eq!(
            push["requestBody"]["content"]["application/json"]["schema"],
            json!({"$ref": "#/components/schemas/Push"})
        );
        let entry = &doc["components"]["schemas"]["BatchPushEntry"];
        assert!(entry["properties"]["target"].is_object());
        assert!(entry["properties"]["audience"].is_null());
        assert!(entry["properties"]["notification"].is_object());
    }
}
