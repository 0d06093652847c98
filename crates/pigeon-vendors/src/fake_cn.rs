//! Local fakes of OPPO, vivo and Meizu push, on one server: each checks its vendor's
//! signature scheme and fields and answers with its codes. Tokens script the answer:
//! `dead…` is an invalid registration / push id, `busy…` gets flow control or overload.

use crate::{meizu, oppo, vivo};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The accounts the fakes stand for.
#[derive(Clone)]
pub struct Accounts {
    pub oppo_app_key: String,
    pub oppo_master_secret: String,
    pub vivo_app_id: String,
    pub vivo_app_key: String,
    pub vivo_app_secret: String,
    pub meizu_app_id: String,
    pub meizu_app_secret: String,
}

/// What each fake took: (vendor, the message as sent).
pub type Received = Arc<Mutex<Vec<(&'static str, Value)>>>;

pub struct FakeCn {
    pub base_url: String,
    pub received: Received,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeCn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Shared {
    accounts: Accounts,
    tokens: Mutex<Vec<String>>,
    received: Received,
}

impl FakeCn {
    /// Every OPPO and vivo auth token handed out so far expires: the next send is refused
    /// (OPPO code 11, vivo result 10000).
    pub fn expire_auth_tokens(&self) {
        self.shared.tokens.lock().clear();
    }

    pub async fn start(accounts: Accounts) -> std::io::Result<FakeCn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let shared = Arc::new(Shared {
            accounts,
            tokens: Mutex::new(Vec::new()),
            received: Received::default(),
        });
        let app = axum::Router::new()
            .route("/server/v1/auth", post(oppo_auth))
            .route(
                "/server/v1/message/notification/unicast",
                post(oppo_unicast),
            )
            .route("/message/auth", post(vivo_auth))
            .route("/message/send", post(vivo_send))
            .route(
                "/garcia/api/server/push/varnished/pushByPushId",
                post(meizu_push),
            )
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(FakeCn {
            base_url,
            received: shared.received.clone(),
            shared,
            task,
        })
    }

    /// Every auth token handed out so far becomes invalid.
    pub fn expire_tokens(&self) {
        self.shared.tokens.lock().clear();
    }
}

fn form(body: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect()
}

fn issue(s: &Shared) -> String {
    let t = format!("tok{:016x}", rand::random::<u64>());
    s.tokens.lock().push(t.clone());
    t
}

fn fresh(timestamp: u64) -> bool {
    pigeon_engine::now_ms().abs_diff(timestamp) <= 10 * 60 * 1000
}

async fn oppo_auth(State(s): State<Arc<Shared>>, body: String) -> Response {
    let f = form(&body);
    let a = &s.accounts;
    let ts: u64 = f.get("timestamp").and_then(|t| t.parse().ok()).unwrap_or(0);
    if f.get("app_key") != Some(&a.oppo_app_key) {
        return axum::Json(json!({"code": 14, "message": "Invalid AppKey"})).into_response();
    }
    if !fresh(ts) {
        return axum::Json(json!({"code": 17, "message": "Invalid Timestamp"})).into_response();
    }
    if f.get("sign") != Some(&oppo::auth_sign(&a.oppo_app_key, ts, &a.oppo_master_secret)) {
        return axum::Json(json!({"code": 16, "message": "Invalid Sign"})).into_response();
    }
    axum::Json(json!({"code": 0, "message": "Success", "data": {"auth_token": issue(&s), "create_time": ts}}))
        .into_response()
}

async fn oppo_unicast(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let f = form(&body);
    let token = f
        .get("auth_token")
        .cloned()
        .or_else(|| {
            headers
                .get("auth_token")
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default();
    if !s.tokens.lock().contains(&token) {
        return axum::Json(json!({"code": 11, "message": "Invalid AuthToken"})).into_response();
    }
    let Some(m) = f
        .get("message")
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
    else {
        return axum::Json(json!({"code": 40, "message": "Missing message"})).into_response();
    };
    let n = &m["notification"];
    let len = |k: &str| n[k].as_str().map(|t| t.chars().count()).unwrap_or(0);
    if m["target_type"] != 2
        || len("title") == 0
        || len("title") > 50
        || len("content") == 0
        || len("content") > 200
    {
        return axum::Json(json!({"code": 41, "message": "Invalid Parameter"})).into_response();
    }
    let regid = m["target_value"].as_str().unwrap_or_default();
    if regid.starts_with("dead") {
        return axum::Json(json!({"code": 10000, "message": "Invalid RegistrationId"}))
            .into_response();
    }
    if regid.starts_with("busy") {
        return axum::Json(json!({"code": -2, "message": "Service in Flow Control"}))
            .into_response();
    }
    s.received.lock().push(("oppo", m.clone()));
    axum::Json(json!({"code": 0, "message": "Success", "data": {"messageId": format!("oppo-{}", s.received.lock().len())}}))
        .into_response()
}

async fn vivo_auth(State(s): State<Arc<Shared>>, body: String) -> Response {
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let a = &s.accounts;
    let ts = v["timestamp"].as_u64().unwrap_or(0);
    if v["appId"] != json!(a.vivo_app_id) || v["appKey"] != json!(a.vivo_app_key) {
        return axum::Json(json!({"result": 10200, "desc": "appId or appKey illegal"}))
            .into_response();
    }
    if !fresh(ts) {
        return axum::Json(json!({"result": 10207, "desc": "timestamp illegal"})).into_response();
    }
    if v["sign"]
        != json!(vivo::auth_sign(
            &a.vivo_app_id,
            &a.vivo_app_key,
            ts,
            &a.vivo_app_secret
        ))
    {
        return axum::Json(json!({"result": 10206, "desc": "sign illegal"})).into_response();
    }
    axum::Json(json!({"result": 0, "desc": "ok", "authToken": issue(&s)})).into_response()
}

async fn vivo_send(State(s): State<Arc<Shared>>, headers: HeaderMap, body: String) -> Response {
    let token = headers
        .get("authToken")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    if !s.tokens.lock().contains(&token) {
        return axum::Json(json!({"result": 10000, "desc": "authToken illegal"})).into_response();
    }
    let v: Value = serde_json::from_str(&body).unwrap_or_default();
    let reg_id = v["regId"].as_str().unwrap_or_default();
    let ttl = v["timeToLive"].as_u64().unwrap_or(86400);
    if v["title"].as_str().unwrap_or_default().is_empty()
        || v["content"].as_str().unwrap_or_default().is_empty()
        || !(60..=7 * 86400).contains(&ttl)
        || v["requestId"].as_str().is_none()
    {
        return axum::Json(json!({"result": 10055, "desc": "parameter illegal"})).into_response();
    }
    if reg_id.starts_with("dead") {
        return axum::Json(json!({"result": 10302, "desc": "regId illegal"})).into_response();
    }
    if reg_id.starts_with("gone") {
        return axum::Json(json!({"result": 0, "desc": "ok", "taskId": "t0", "invalidUser": {"status": 2, "userid": reg_id}}))
            .into_response();
    }
    s.received.lock().push(("vivo", v.clone()));
    axum::Json(
        json!({"result": 0, "desc": "ok", "taskId": format!("vivo-{}", s.received.lock().len())}),
    )
    .into_response()
}

async fn meizu_push(State(s): State<Arc<Shared>>, body: String) -> Response {
    let mut f = form(&body);
    let a = &s.accounts;
    let given = f.remove("sign").unwrap_or_default();
    if f.get("appId") != Some(&a.meizu_app_id) {
        return axum::Json(json!({"code": "110000", "message": "appId illegal"})).into_response();
    }
    if given != meizu::sign(&f, &a.meizu_app_secret) {
        return axum::Json(json!({"code": "1006", "message": "sign error"})).into_response();
    }
    let ids: Vec<String> = f
        .get("pushIds")
        .map(|p| p.split(',').map(String::from).collect())
        .unwrap_or_default();
    if ids.is_empty() || ids.len() > meizu::MAX_IDS {
        return axum::Json(json!({"code": "1005", "message": "params error"})).into_response();
    }
    let Some(m) = f
        .get("messageJson")
        .and_then(|m| serde_json::from_str::<Value>(m).ok())
    else {
        return axum::Json(json!({"code": "1005", "message": "messageJson error"})).into_response();
    };
    if ids.iter().any(|i| i.starts_with("busy")) {
        return axum::Json(json!({"code": "1003", "message": "server busy"})).into_response();
    }
    let dead: Vec<&String> = ids.iter().filter(|i| i.starts_with("dead")).collect();
    s.received
        .lock()
        .push(("meizu", json!({"pushIds": ids, "messageJson": m})));
    let value = if dead.is_empty() {
        json!({})
    } else {
        json!({"110003": dead})
    };
    axum::Json(json!({"code": "200", "message": "", "value": value, "msgId": "mz-1"}))
        .into_response()
}
