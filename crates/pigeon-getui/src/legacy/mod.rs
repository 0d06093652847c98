//! The legacy Getui protocol of `gt-push-sdk` 4.1.1.2 (getui.md A): `POST /apiex.htm`
//! answers the SDK's discovery with this server's `/serviceex`, and `POST /serviceex` takes
//! every action, told apart by the body's `action` and routed by its `appkey`.
//!
//! Every answer is HTTP 200 with a JSON object whose scalar values are strings (the SDK
//! `eval`s plain answers, so JSON `true`/`false`/`null` would reach user code as strings);
//! failures are a `result` string other than `ok`, never `domain_error` (it crashes the SDK).

mod actions;
pub mod auth;
pub mod contents;
pub mod proto;
pub mod push;
pub mod schedule;
pub mod template;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use pigeon_engine::{now_ms, AppState, Engine};
use serde_json::{json, Map, Value};
use std::io::Read;
use std::sync::Arc;

/// Largest request body taken as sent (gzip-compressed or not).
pub const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
/// Largest body once gunzipped (a batch of 5000 single pushes fits).
pub const MAX_INFLATED_BYTES: usize = 32 * 1024 * 1024;

/// The door's state: the engine, live tokens, pending contents, the public URL.
pub struct Legacy {
    pub(crate) engine: Arc<Engine>,
    pub(crate) tokens: auth::Tokens,
    pub(crate) contents: contents::Contents,
    /// `public_url` of the configuration: the base of the `osList` URL when set, else the
    /// request's Host.
    public_url: Option<String>,
}

/// The legacy routes, `POST /apiex.htm` and `POST /serviceex`, on one handler (the SDK posts
/// every action to the URL discovery gave it); this door's schedules start firing.
pub fn router(engine: Arc<Engine>, public_url: Option<String>) -> Router {
    engine
        .schedules()
        .register(Arc::new(schedule::LegacySchedules));
    let legacy = Arc::new(Legacy {
        engine,
        tokens: auth::Tokens::default(),
        contents: contents::Contents::default(),
        public_url: public_url
            .map(|u| u.trim_end_matches('/').to_string())
            .filter(|u| !u.is_empty()),
    });
    Router::new()
        .route("/apiex.htm", post(handle))
        .route("/serviceex", post(handle))
        .with_state(legacy)
}

/// The routes, for the OpenAPI document.
pub const ROUTES: &[pigeon_core::RouteDoc] = &[
    pigeon_core::RouteDoc {
        method: "post",
        path: "/apiex.htm",
        tag: "Getui legacy",
        summary: "Getui legacy protocol (gt-push-sdk): discovery, answered with this server's /serviceex",
        query: &[],
        body: true,
        schema: None,
        answer: None,
    },
    pigeon_core::RouteDoc {
        method: "post",
        path: "/serviceex",
        tag: "Getui legacy",
        summary: "Getui legacy protocol (gt-push-sdk): every action, by the body's action and appkey (always HTTP 200, a result string)",
        query: &[],
        body: true,
        schema: None,
        answer: None,
    },
];

/// A 200 answer with a JSON body.
pub(crate) fn answer(v: Value) -> Response {
    let mut r = (StatusCode::OK, v.to_string()).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

/// `{"result": result}`.
pub(crate) fn result(result: &str) -> Value {
    json!({ "result": result })
}

async fn handle(State(l): State<Arc<Legacy>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let ip = parts
        .extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip());
    let body = match read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return answer(e),
    };
    let mut caller = None;
    let mut response = answer(l.dispatch(&parts.headers, body, ip, &mut caller).await);
    if let Some(caller) = caller {
        response.extensions_mut().insert(caller);
    }
    response
}

/// The request body as a JSON object: read within [`MAX_BODY_BYTES`], gunzipped within
/// [`MAX_INFLATED_BYTES`] when `Content-Encoding: gzip` (off the async threads).
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Map<String, Value>, Value> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| result("data_too_big"))?;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("gzip"));
    let large = gzip || bytes.len() > 256 * 1024;
    let parse = move || -> Result<Map<String, Value>, Value> {
        let plain = if gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&bytes[..])
                .take(MAX_INFLATED_BYTES as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|_| result("the request body is not valid gzip"))?;
            if out.len() > MAX_INFLATED_BYTES {
                return Err(result("data_too_big"));
            }
            out
        } else {
            bytes.to_vec()
        };
        match serde_json::from_slice::<Value>(&plain) {
            Ok(Value::Object(o)) => Ok(o),
            Ok(_) => Err(result("the request body must be a JSON object")),
            Err(_) => Err(result("the request body is not valid JSON")),
        }
    };
    if large {
        tokio::task::spawn_blocking(parse)
            .await
            .unwrap_or_else(|_| Err(result("internal error, retry")))
    } else {
        parse()
    }
}

/// A string field of the body (numbers are taken as their text).
pub(crate) fn str_field<'a>(body: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    body.get(key).and_then(Value::as_str)
}

impl Legacy {
    /// Answers one request; `caller` is set to the app once its token is good (for the
    /// request log).
    async fn dispatch(
        &self,
        headers: &HeaderMap,
        body: Map<String, Value>,
        ip: Option<std::net::IpAddr>,
        caller: &mut Option<pigeon_http::CallerApp>,
    ) -> Value {
        let action = str_field(&body, "action").unwrap_or_default().to_string();
        let app_key = match body.get("appkey") {
            Some(Value::String(s)) => s.clone(),
            _ => String::new(),
        };
        match action.as_str() {
            "" => return result("action is not null"),
            "getOSPushDomailUrlListAction" => {
                return discovery_for(self.public_url.as_deref(), headers)
            }
            _ => {}
        }
        if app_key.is_empty() {
            return result("appkey is not null");
        }
        let app = match self.engine.app(&app_key).await {
            Ok(Some(app)) => app,
            Ok(None) => return result("AppKeyError"),
            Err(e) => {
                tracing::error!(error = %e, "getui legacy: loading an app failed");
                return result("internal error, retry");
            }
        };
        if action == "connect" {
            return self.connect(&app, &body);
        }
        let token = str_field(&body, "authToken").unwrap_or_default();
        if !self.tokens.check(&app.app_key, token, now_ms()) {
            return result("sign_error");
        }
        *caller = Some(pigeon_http::CallerApp(Arc::from(app.app_key.as_str())));
        if action == "close" {
            self.tokens.close(&app.app_key, token);
            return result("ok");
        }
        use pigeon_engine::limits::Admission;
        match self.engine.admit(&app, ip) {
            Admission::Allowed(_) => {}
            Admission::Disabled => return result("AppDisabled"),
            Admission::IpDenied => return result("IpNotAllowed"),
            Admission::RateLimited(_) => return result("flow_exceeded"),
        }
        self.action(&app, &action, &body).await
    }

    /// `connect`: checks the sign and hands out a token.
    fn connect(&self, app: &AppState, body: &Map<String, Value>) -> Value {
        let timestamp = match body.get("timeStamp") {
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::String(s)) => s.clone(),
            _ => return result("timeStamp is not null"),
        };
        let Some(sign) = str_field(body, "sign") else {
            return result("sign is not null");
        };
        match self
            .tokens
            .connect(&app.app_key, &app.master_secret, &timestamp, sign, now_ms())
        {
            Ok(token) => json!({"result": "success", "authtoken": token}),
            Err(auth::ConnectError::TimeStamp) => result("TimeStampError"),
            Err(auth::ConnectError::Sign) => result("sign_error"),
        }
    }

    async fn action(&self, app: &Arc<AppState>, action: &str, body: &Map<String, Value>) -> Value {
        match action {
            "pushMessageToSingleAction" => self.push_single(app, body).await,
            "pushMessageToSingleBatchAction" => self.push_batch(app, body).await,
            "getContentIdAction" => self.get_content_id(app, body).await,
            "pushMessageToListAction" => self.push_list(app, body).await,
            "pushMessageToAppAction" => self.push_app(app, body).await,
            "pushMessageByTagAction" => self.push_tag(app, body).await,
            "stopTaskAction" | "cancleContentIdAction" => self.stop(app, body).await,
            "getScheduleTaskAction" => self.get_schedule_task(app, body).await,
            "delScheduleTaskAction" => self.del_schedule_task(app, body).await,
            "apnGetContentIdAction" => self.apn_content_id(app, body).await,
            "apnPushToListAction" => self.apn_push_list(app, body).await,
            "apnPushToSingleAction" => self.apn_push_single(app, body).await,
            "setBadgeAction" => self.set_badge(app, body).await,
            "blackCidAction" => self.black_cids(app, body).await,
            "alias_bind" => self.alias_bind(app, body).await,
            "alias_bind_list" => self.alias_bind_list(app, body).await,
            "alias_query" => self.alias_query(app, body),
            "alias_unbind" => self.alias_unbind(app, body).await,
            "setTagAction" => self.set_tags(app, body).await,
            "getUserTags" => self.get_tags(app, body),
            "changeTagAction" => self.change_tag(app, body).await,
            "getClientIdStatusAction" => self.cid_status(app, body).await,
            "bind_cid_pn" => self.bind_cid_pn(app, body).await,
            "unbind_cid_pn" => self.unbind_cid_pn(app, body).await,
            "query_cid_pn" => self.query_cid_pn(app, body),
            "stop_sms" => self.stop_sms(app, body).await,
            "getPushMsgResult" => self.push_result(app, body).await,
            "getPushMsgResultByTaskidList" => self.push_results(app, body).await,
            "getPushResultByGroupName" => self.push_result_by_group(app, body).await,
            "queryUserCount" => self.query_user_count(app, body),
            "getUserCountByTags" => self.user_count_by_tags(app, body),
            // Not available here; see docs/getui.md, "not supported".
            _ => result("NotSupport"),
        }
    }
}

/// `getOSPushDomailUrlListAction`: the one URL every later call goes to.
fn discovery_for(public_url: Option<&str>, headers: &HeaderMap) -> Value {
    let base = match public_url {
        Some(u) => u.to_string(),
        None => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .filter(|h| {
                    !h.is_empty()
                        && h.len() <= 255
                        && h.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-:[]_".contains(&b))
                });
            let Some(host) = host else {
                return result("the request has no usable Host header; set public_url");
            };
            let scheme = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .filter(|p| *p == "https")
                .unwrap_or("http");
            format!("{scheme}://{host}")
        }
    };
    json!({"result": "ok", "osList": [format!("{base}/serviceex")]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_uses_host_or_public_url() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("push.example:8080"));
        assert_eq!(
            discovery_for(None, &h),
            json!({"result": "ok", "osList": ["http://push.example:8080/serviceex"]})
        );
        assert_eq!(
            discovery_for(Some("https://p.example"), &h)["osList"][0],
            json!("https://p.example/serviceex")
        );
        h.insert(header::HOST, HeaderValue::from_static("bad host/x"));
        assert_ne!(discovery_for(None, &h)["result"], json!("ok"));
    }
}
