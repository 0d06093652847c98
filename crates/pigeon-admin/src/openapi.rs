//! What the OpenAPI document needs from this API beyond its route table: the uploads take a
//! multipart form, not JSON, which a [`crate::RouteDoc`] cannot say.

use serde_json::{json, Value};

/// The routes that take a multipart form.
pub const UPLOADS: &[&str] = &["/v3/files/alias", "/v3/files/registration_id"];

/// Sets the request body of each upload route in `doc` (an OpenAPI document built from
/// [`crate::ROUTES`] among others) to its multipart form.
pub fn document_uploads(doc: &mut Value) {
    for path in UPLOADS {
        let op = &mut doc["paths"][*path]["post"];
        if op.is_object() {
            op["requestBody"] = json!({"required": true, "content": {"multipart/form-data": {
                "schema": {"type": "object", "required": ["filename"], "properties": {
                    "filename": {"type": "string", "format": "binary",
                        "description": "one alias or registration id a line"},
                    "ttl": {"type": "integer", "description": "days the file is kept"}}}}}});
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_upload_is_a_post_route() {
        for path in UPLOADS {
            assert!(crate::ROUTES
                .iter()
                .any(|r| r.path == *path && r.method == "post" && r.body));
        }
    }
}
