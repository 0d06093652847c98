//! A local Huawei Push Kit: the OAuth client-credentials endpoint and the send endpoint,
//! checking what Push Kit checks and answering with its codes. Tokens script the answer:
//! `dead…` are illegal (80100000 with `illegal_tokens`, or 80300007 when all are), `busy…`
//! gets HTTP 503 (traffic control), `oops…` 81000001 (internal error). Recalls
//! (`messages:revoke`) are checked the same way and recorded.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Recalls taken: (notifyId, tokens).
pub type Revoked = Arc<Mutex<Vec<(i64, Vec<String>)>>>;

pub struct FakeHuawei {
    /// The push API's base.
    pub base_url: String,
    /// The token endpoint.
    pub auth_url: String,
    /// Messages taken.
    pub received: Arc<Mutex<Vec<Value>>>,
    /// Recalls taken: (notifyId, tokens).
    pub revoked: Revoked,
    pub tokens_issued: Arc<AtomicU64>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHuawei {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    app_id: String,
    client_id: String,
    client_secret: String,
    valid: Mutex<Vec<String>>,
    received: Arc<Mutex<Vec<Value>>>,
    revoked: Revoked,
    tokens_issued: Arc<AtomicU64>,
}

impl FakeHuawei {
    pub async fn start(
        app_id: &str,
        client_id: &str,
        client_secret: &str,
    ) -> std::io::Result<FakeHuawei> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            app_id: app_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            valid: Mutex::new(Vec::new()),
            received: Arc::new(Mutex::new(Vec::new())),
            revoked: Default::default(),
            tokens_issued: Arc::new(AtomicU64::new(0)),
        });
        let app = axum::Router::new()
            .route("/oauth2/v3/token", post(token))
            .route("/v1/{app_id}/messages:send", post(send))
            .route("/v1/{app_id}/messages:revoke", post(revoke))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeHuawei {
            auth_url: format!("{base_url}/oauth2/v3/token"),
            base_url,
            received: shared.received.clone(),
            revoked: shared.revoked.clone(),
            tokens_issued: shared.tokens_issued.clone(),
            shared,
            task,
        })
    }

    /// Every access token handed out so far expires: the next send gets 80200003.
    pub fn expire_access_tokens(&self) {
        self.shared.valid.lock().clear();
    }
}

async fn token(State(s): State<Arc<Shared>>, body: String) -> Response {
    let form: BTreeMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let good = form.get("grant_type").map(String::as_str) == Some("client_credentials")
        && form.get("client_id") == Some(&s.client_id)
        && form.get("client_secret") == Some(&s.client_secret);
    if !good {
        return (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": 1101, "error_description": "invalid client"})),
        )
            .into_response();
    }
    let n = s.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("CF{n}{:012x}", rand::random::<u64>());
    s.valid.lock().push(token.clone());
    axum::Json(json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}))
        .into_response()
}

/// Push Kit's answer to a request without a valid access token or for another app.
fn refuse_caller(s: &Shared, app_id: &str, headers: &HeaderMap) -> Option<Response> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s.valid.lock().iter().any(|t| t == bearer) {
        return Some(answer(
            StatusCode::UNAUTHORIZED,
            "80200003",
            "OAuth token expired",
        ));
    }
    if app_id != s.app_id {
        return Some(answer(
            StatusCode::OK,
            "80200001",
            "Oauth authentication error",
        ));
    }
    None
}

fn answer(status: StatusCode, code: &str, msg: &str) -> Response {
    (status, axum::Json(json!({"code": code, "msg": msg, "requestId": format!("{:016x}", rand::random::<u64>())})))
        .into_response()
}

async fn send(
    State(s): State<Arc<Shared>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(refused) = refuse_caller(&s, &app_id, &headers) {
        return refused;
    }
    if body.len() > crate::huawei::MAX_BODY {
        return answer(
            StatusCode::OK,
            "80300008",
            "The message body size exceeds the default value",
        );
    }
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return answer(StatusCode::OK, "80100003", "Incorrect message structure");
    };
    let message = &v["message"];
    let tokens: Vec<&str> = message["token"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if tokens.is_empty() || tokens.len() > crate::huawei::MAX_TOKENS {
        return answer(
            StatusCode::OK,
            "80100001",
            "Some request parameters are incorrect",
        );
    }
    if let Some(ttl) = message["android"]["ttl"].as_str() {
        if !ttl.ends_with('s') || ttl.trim_end_matches('s').parse::<u64>().is_err() {
            return answer(
                StatusCode::OK,
                "80100004",
                "The message expiration time is earlier than the current time",
            );
        }
    }
    if tokens.iter().any(|t| t.starts_with("busy")) {
        return (StatusCode::SERVICE_UNAVAILABLE, "traffic control").into_response();
    }
    if tokens.iter().any(|t| t.starts_with("oops")) {
        return answer(StatusCode::OK, "81000001", "System internal error");
    }
    let illegal: Vec<&str> = tokens
        .iter()
        .copied()
        .filter(|t| t.starts_with("dead"))
        .collect();
    if illegal.len() == tokens.len() {
        return answer(StatusCode::OK, "80300007", "All the tokens are invalid");
    }
    s.received.lock().push(message.clone());
    if illegal.is_empty() {
        return answer(StatusCode::OK, "80000000", "Success");
    }
    let detail = json!({"success": tokens.len() - illegal.len(), "failure": illegal.len(), "illegal_tokens": illegal});
    answer(StatusCode::OK, "80100000", &detail.to_string())
}

async fn revoke(
    State(s): State<Arc<Shared>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    if let Some(refused) = refuse_caller(&s, &app_id, &headers) {
        return refused;
    }
    if !matches!(
        headers.get("push-type").and_then(|v| v.to_str().ok()),
        Some("0" | "2")
    ) {
        return answer(
            StatusCode::BAD_REQUEST,
            "80100003",
            "Illegal payload, The header does not contain valid push-type",
        );
    }
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let tokens: Vec<String> = v["token"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    let Some(notify_id) = v["notifyId"].as_i64() else {
        return answer(StatusCode::BAD_REQUEST, "80100001", "notifyId is required");
    };
    if tokens.is_empty() || tokens.len() > crate::huawei::MAX_TOKENS {
        return answer(StatusCode::BAD_REQUEST, "80100001", "1 to 1000 tokens");
    }
    s.revoked.lock().push((notify_id, tokens));
    answer(StatusCode::OK, "80000000", "Success")
}
