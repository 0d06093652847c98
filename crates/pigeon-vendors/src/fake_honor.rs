//! A local Honor Push: the client-credentials token endpoint and `sendMessage`, checking
//! the bearer token, the `timestamp` header, the app id and the camelCase message, and
//! answering as the third-party clients of Honor read it. Tokens script the answer:
//! `dead…` are listed in `expireTokens`, `fail…` in `failTokens`, `busy…` get HTTP 503.
//! The success code is `200` unless set to another (clients disagree on it).

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

pub struct FakeHonor {
    /// The push API's base.
    pub base_url: String,
    /// The token endpoint.
    pub auth_url: String,
    /// Requests taken (the whole body, tokens included).
    pub received: Arc<Mutex<Vec<Value>>>,
    pub tokens_issued: Arc<AtomicU64>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeHonor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    app_id: String,
    client_id: String,
    client_secret: String,
    success_code: AtomicI64,
    valid: Mutex<Vec<String>>,
    received: Arc<Mutex<Vec<Value>>>,
    tokens_issued: Arc<AtomicU64>,
}

impl FakeHonor {
    pub async fn start(
        app_id: &str,
        client_id: &str,
        client_secret: &str,
    ) -> std::io::Result<FakeHonor> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            app_id: app_id.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            success_code: AtomicI64::new(200),
            valid: Mutex::new(Vec::new()),
            received: Default::default(),
            tokens_issued: Default::default(),
        });
        let app = axum::Router::new()
            .route("/auth/token", post(token))
            .route("/api/v1/{app_id}/sendMessage", post(send))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeHonor {
            auth_url: format!("{base_url}/auth/token"),
            base_url,
            received: shared.received.clone(),
            tokens_issued: shared.tokens_issued.clone(),
            shared,
            task,
        })
    }

    /// Every access token handed out so far expires: the next send gets HTTP 401.
    pub fn expire_access_tokens(&self) {
        self.shared.valid.lock().clear();
    }

    /// The `code` of a successful answer.
    pub fn set_success_code(&self, code: i64) {
        self.shared.success_code.store(code, Ordering::Relaxed);
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
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": "invalid_client", "error_description": "bad client"})),
        )
            .into_response();
    }
    let n = s.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1;
    let token = format!("HN{n}{:012x}", rand::random::<u64>());
    s.valid.lock().push(token.clone());
    axum::Json(json!({"access_token": token, "expires_in": 3600, "token_type": "Bearer"}))
        .into_response()
}

fn answer(code: i64, message: &str, data: Value) -> Response {
    axum::Json(json!({"code": code, "message": message, "data": data})).into_response()
}

async fn send(
    State(s): State<Arc<Shared>>,
    Path(app_id): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s.valid.lock().iter().any(|t| t == bearer) {
        return (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"code": 80200003, "message": "access token expired"})),
        )
            .into_response();
    }
    let timestamp = headers
        .get("timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if app_id != s.app_id || timestamp.is_none() {
        return answer(80100001, "bad app id or timestamp", Value::Null);
    }
    if body.len() > crate::honor::MAX_BODY {
        return answer(80300008, "message body too large", Value::Null);
    }
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return answer(80100003, "incorrect message structure", Value::Null);
    };
    let tokens: Vec<&str> = v["token"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let n = &v["android"]["notification"];
    if tokens.is_empty()
        || tokens.len() > crate::honor::MAX_TOKENS
        || n["title"].as_str().is_none()
        || n["body"].as_str().is_none()
    {
        return answer(
            80100001,
            "some request parameters are incorrect",
            Value::Null,
        );
    }
    if tokens.iter().any(|t| t.starts_with("busy")) {
        return (StatusCode::SERVICE_UNAVAILABLE, "flow control").into_response();
    }
    let pick = |prefix: &str| -> Vec<&str> {
        tokens
            .iter()
            .copied()
            .filter(|t| t.starts_with(prefix))
            .collect()
    };
    let (expired, failed) = (pick("dead"), pick("fail"));
    let taken = tokens.len() - expired.len() - failed.len();
    if taken > 0 {
        s.received.lock().push(v.clone());
    }
    answer(
        s.success_code.load(Ordering::Relaxed),
        "success",
        json!({"sendResult": taken > 0, "requestId": format!("{:016x}", rand::random::<u64>()),
            "failTokens": failed, "expireTokens": expired}),
    )
}
