//! A local Mi Push regid API: checks the app secret, the package, the form's fields and
//! their limits as Mi Push does, and answers with its JSON. Registration ids script the
//! answer: `dead…` ones come back in `bad_regids` (all dead: code 20301), `busy…` gets HTTP
//! 503, `slow…` code 10002 (try again). Recalls (`/v3/message/regid/revoke`) are checked
//! the same way and recorded.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A running fake.
pub struct FakeXiaomi {
    pub base_url: String,
    /// Each request it took, as its form fields.
    pub received: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    /// Each recall it took, as its form fields.
    pub revoked: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeXiaomi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    app_secret: String,
    package_name: String,
    received: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
    revoked: Arc<Mutex<Vec<BTreeMap<String, String>>>>,
}

impl FakeXiaomi {
    pub async fn start(app_secret: &str, package_name: &str) -> std::io::Result<FakeXiaomi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let received = Arc::new(Mutex::new(Vec::new()));
        let revoked = Arc::new(Mutex::new(Vec::new()));
        let shared = Arc::new(Shared {
            app_secret: app_secret.into(),
            package_name: package_name.into(),
            received: received.clone(),
            revoked: revoked.clone(),
        });
        let app = axum::Router::new()
            .route("/v3/message/regid", post(regid))
            .route("/v3/message/regid/revoke", post(revoke))
            .with_state(shared);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeXiaomi {
            base_url,
            received,
            revoked,
            task,
        })
    }
}

/// The request's form, if it carries the app secret and names the app's package; else
/// Mi Push's code and reason.
fn caller_form(
    s: &Shared,
    headers: &HeaderMap,
    body: &str,
) -> Result<BTreeMap<String, String>, (i64, &'static str)> {
    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("key={}", s.app_secret))
    {
        return Err((22000, "Invalid app secret"));
    }
    let form: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    if form.get("restricted_package_name") != Some(&s.package_name) {
        return Err((22006, "Invalid package name"));
    }
    Ok(form)
}

fn error(code: i64, reason: &str) -> Response {
    axum::Json(json!({"result": "error", "code": code, "reason": reason, "description": reason}))
        .into_response()
}

async fn regid(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let form = match caller_form(&s, &headers, &body) {
        Ok(form) => form,
        Err((code, reason)) => return error(code, reason),
    };
    let regids: Vec<&str> = form
        .get("registration_id")
        .map(|r| r.split(',').filter(|x| !x.is_empty()).collect())
        .unwrap_or_default();
    if regids.is_empty() || regids.len() > crate::xiaomi::MAX_REGIDS {
        return error(20300, "Invalid registration_id");
    }
    let pass_through = form.get("pass_through").map(String::as_str) == Some("1");
    let title_len = form.get("title").map(|t| t.chars().count()).unwrap_or(0);
    let description_len = form
        .get("description")
        .map(|t| t.chars().count())
        .unwrap_or(0);
    if !pass_through && (title_len == 0 || title_len >= 50 || description_len >= 128) {
        return error(20001, "Invalid title or description");
    }
    if form
        .get("payload")
        .is_some_and(|p| p.len() > crate::xiaomi::MAX_PAYLOAD)
    {
        return error(20002, "payload too long");
    }
    if regids.iter().any(|r| r.starts_with("busy")) {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response();
    }
    if regids.iter().any(|r| r.starts_with("slow")) {
        return error(10002, "Service is busy, try again");
    }
    let bad: Vec<&str> = regids
        .iter()
        .copied()
        .filter(|r| r.starts_with("dead"))
        .collect();
    if bad.len() == regids.len() {
        return error(20301, "All registration ids are invalid");
    }
    let id = {
        let mut received = s.received.lock();
        received.push(form.clone());
        format!("sdm{:08}", received.len())
    };
    axum::Json(
        json!({"result": "ok", "code": 0, "description": "success", "trace_id": "t1",
        "info": "Received push messages for 1 REGID",
        "data": {"id": id, "bad_regids": bad.join(",")}}),
    )
    .into_response()
}

async fn revoke(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let form = match caller_form(&s, &headers, &body) {
        Ok(form) => form,
        Err((code, reason)) => return error(code, reason),
    };
    if form
        .get("notify_id")
        .and_then(|n| n.parse::<i64>().ok())
        .is_none()
        || !form.get("registration_id").is_some_and(|r| !r.is_empty())
    {
        return error(20300, "notify_id and registration_id are required");
    }
    s.revoked.lock().push(form);
    axum::Json(json!({"result": "ok", "code": 0, "description": "success", "trace_id": "r1"}))
        .into_response()
}
