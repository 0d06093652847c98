//! The OpenAPI 3.1 document of Pigeon's HTTP API, generated from the route tables the
//! routers are built from ([`crate::ROUTES`] and the ones other front doors pass in).

use crate::RouteDoc;
use serde_json::{json, Map, Value};

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
    let mut op = json!({
        "tags": [r.tag],
        "summary": r.summary,
        "operationId": format!("{}_{}", r.method, r.path.trim_start_matches('/').replace(['/', '{', '}'], "_")),
        "parameters": params,
        "responses": {
            "200": {"description": "Success", "content": {"application/json": {"schema": {"type": "object"}}}},
            "default": {"description": "A JPush-style error", "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}
        }
    });
    if r.body {
        op["requestBody"] = json!({"required": true, "content": {"application/json": {
            "schema": {"type": "object"}}}});
    }
    if r.tag == "Gateway" {
        op["security"] = json!([]);
    }
    op
}

/// The document for these routes.
pub fn document(routes: &[RouteDoc]) -> Value {
    let mut paths = Map::new();
    for r in routes {
        let item = paths.entry(r.path.to_string()).or_insert_with(|| json!({}));
        item[r.method] = operation(r);
    }
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
        "security": [{"basic": []}],
        "components": {
            "securitySchemes": {"basic": {"type": "http", "scheme": "basic",
                "description": "app_key:master_secret, or group-<group_key>:<master_secret> for group push"}},
            "schemas": {"Error": {"type": "object", "required": ["error"], "properties": {
                "error": {"type": "object", "required": ["code", "message"], "properties": {
                    "code": {"type": "integer"}, "message": {"type": "string"},
                    "illegal_rids": {"type": "array", "items": {"type": "string"}}}},
                "msg_id": {"type": "string"}}}}
        },
        "paths": paths,
    })
}
