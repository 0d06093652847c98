//! A local FCM that speaks the real protocol: an OAuth token endpoint that checks the service
//! account's RS256 assertion (signature, issuer, scope, audience, lifetime) as Google does,
//! and the HTTP v1 send endpoint, answering with FCM's error shapes. Registration tokens
//! script the answer: `dead…` 404 UNREGISTERED, `bad…` 400 INVALID_ARGUMENT on
//! `message.token`, `busy…` 429 QUOTA_EXCEEDED with `retry-after`, `down…` 503 UNAVAILABLE,
//! `html…` a 502 HTML page; any other token is taken.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use parking_lot::Mutex;
use rsa::pkcs1v15::{Signature, VerifyingKey};
use rsa::signature::Verifier;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// The project the fake stands for.
#[derive(Clone)]
pub struct Project {
    pub project_id: String,
    pub client_email: String,
    pub public_key: rsa::RsaPublicKey,
}

/// What the fake saw.
#[derive(Default)]
pub struct Stats {
    /// Access tokens handed out.
    pub tokens_issued: AtomicU64,
    /// Assertions refused.
    pub assertions_refused: AtomicU64,
    /// Send requests, whatever their answer.
    pub sends: AtomicU64,
    /// Messages taken, as sent (`message` objects).
    pub received: Mutex<Vec<Value>>,
}

/// A running fake FCM.
pub struct FakeFcm {
    /// `http://127.0.0.1:<port>`: the send API's base.
    pub base_url: String,
    /// Its token endpoint, for the service account's `token_uri`.
    pub token_uri: String,
    pub stats: Arc<Stats>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    project: Project,
    token_uri: String,
    stats: Arc<Stats>,
    /// Access tokens still good.
    valid: Mutex<Vec<String>>,
}

impl FakeFcm {
    pub async fn start(project: Project) -> std::io::Result<FakeFcm> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let token_uri = format!("{base_url}/token");
        let stats = Arc::new(Stats::default());
        let shared = Arc::new(Shared {
            project,
            token_uri: token_uri.clone(),
            stats: stats.clone(),
            valid: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/token", post(token))
            .route("/v1/projects/{project}/messages:send", post(send))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeFcm {
            base_url,
            token_uri,
            stats,
            shared,
            task,
        })
    }

    /// Makes every access token handed out so far expire: the next send gets 401.
    pub fn expire_access_tokens(&self) {
        self.shared.valid.lock().clear();
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// `POST /token`: a JWT-bearer grant.
async fn token(State(s): State<Arc<Shared>>, body: String) -> Response {
    let form: Vec<(String, String)> = body
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%3A", ":")))
        .collect();
    let get = |k: &str| form.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let refuse = |why: &str| {
        s.stats.assertions_refused.fetch_add(1, Ordering::Relaxed);
        (
            StatusCode::BAD_REQUEST,
            axum::Json(json!({"error": "invalid_grant", "error_description": why})),
        )
            .into_response()
    };
    if get("grant_type") != Some("urn:ietf:params:oauth:grant-type:jwt-bearer") {
        return refuse("Invalid grant_type.");
    }
    let Some(claims) = get("assertion").and_then(|a| verified_claims(a, &s.project.public_key))
    else {
        return refuse("Invalid JWT Signature.");
    };
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap_or(0),
        claims["exp"].as_u64().unwrap_or(0),
    );
    let scope_ok = claims["scope"].as_str().is_some_and(|sc| {
        sc.split(' ')
            .any(|x| x.ends_with("/auth/firebase.messaging") || x.ends_with("/auth/cloud-platform"))
    });
    if claims["iss"] != json!(s.project.client_email) || !scope_ok {
        return refuse("Invalid issuer or scope.");
    }
    if claims["aud"] != json!(s.token_uri) {
        return refuse("Invalid JWT: audience is not the token endpoint.");
    }
    if exp <= iat || exp - iat > 3600 || exp < now_s() || iat > now_s() + 60 {
        return refuse("Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.");
    }
    let n = s.stats.tokens_issued.fetch_add(1, Ordering::Relaxed) + 1;
    let access = format!("ya29.fake-{n}-{:016x}", rand::random::<u64>());
    s.valid.lock().push(access.clone());
    axum::Json(json!({"access_token": access, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

/// The claims of an RS256 token signed by `key`.
fn verified_claims(token: &str, key: &rsa::RsaPublicKey) -> Option<Value> {
    let mut parts = token.split('.');
    let (h, c, sig) = (parts.next()?, parts.next()?, parts.next()?);
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
    if header["alg"] != "RS256" {
        return None;
    }
    let signature = Signature::try_from(URL_SAFE_NO_PAD.decode(sig).ok()?.as_slice()).ok()?;
    VerifyingKey::<sha2::Sha256>::new(key.clone())
        .verify(format!("{h}.{c}").as_bytes(), &signature)
        .ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()
}

/// An FCM error answer.
fn fcm_error(status: StatusCode, canonical: &str, code: Option<&str>, message: &str) -> Response {
    let mut details = Vec::new();
    if let Some(code) = code {
        details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}));
    }
    if message.contains("registration token") {
        details.push(json!({"@type": "type.googleapis.com/google.rpc.BadRequest",
            "fieldViolations": [{"field": "message.token", "description": "Invalid registration token"}]}));
    }
    (
        status,
        axum::Json(
            json!({"error": {"code": status.as_u16(), "message": message,
            "status": canonical, "details": details}}),
        ),
    )
        .into_response()
}

/// `POST /v1/projects/{project}/messages:send`
async fn send(
    State(s): State<Arc<Shared>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: String,
) -> Response {
    s.stats.sends.fetch_add(1, Ordering::Relaxed);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s.valid.lock().iter().any(|t| t == bearer) {
        return fcm_error(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            None,
            "Request had invalid authentication credentials. Expected OAuth 2 access token.",
        );
    }
    if project != s.project.project_id {
        return fcm_error(
            StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
            "SenderId mismatch",
        );
    }
    let invalid = |m: &str| {
        fcm_error(
            StatusCode::BAD_REQUEST,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
            m,
        )
    };
    let Ok(v) = serde_json::from_str::<Value>(&body) else {
        return invalid("Invalid JSON payload received.");
    };
    let message = &v["message"];
    let targets = ["token", "topic", "condition"]
        .iter()
        .filter(|t| message.get(**t).is_some())
        .count();
    if !message.is_object() || targets != 1 {
        return invalid("Exactly one of token, topic or condition must be given.");
    }
    if message.to_string().len() > crate::fcm::MAX_PAYLOAD + 256 {
        return invalid("Message is too big.");
    }
    if let Some(ttl) = message["android"]["ttl"].as_str() {
        if !ttl.ends_with('s') || ttl.trim_end_matches('s').parse::<f64>().is_err() {
            return invalid("Invalid value at 'message.android.ttl'.");
        }
    }
    let token = message["token"].as_str().unwrap_or_default();
    if token.starts_with("dead") {
        return fcm_error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            Some("UNREGISTERED"),
            "Requested entity was not found.",
        );
    }
    if token.starts_with("bad") {
        return invalid("The registration token is not a valid FCM registration token");
    }
    if token.starts_with("busy") {
        let mut r = fcm_error(
            StatusCode::TOO_MANY_REQUESTS,
            "RESOURCE_EXHAUSTED",
            Some("QUOTA_EXCEEDED"),
            "Quota exceeded for quota metric 'Send requests'.",
        );
        r.headers_mut()
            .insert("retry-after", axum::http::HeaderValue::from_static("3"));
        return r;
    }
    if token.starts_with("down") {
        return fcm_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
            "The service is currently unavailable.",
        );
    }
    if token.starts_with("html") {
        return (
            StatusCode::BAD_GATEWAY,
            "<html><body>502. That's an error.</body></html>",
        )
            .into_response();
    }
    let n = {
        let mut received = s.stats.received.lock();
        received.push(message.clone());
        received.len()
    };
    axum::Json(json!({"name": format!("projects/{project}/messages/0:{n}")})).into_response()
}
