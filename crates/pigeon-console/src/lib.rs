//! Pigeon's web console, served at `/console/` by the binary itself: hand-written HTML, CSS
//! and JavaScript modules embedded with `include_str!` (no build step, nothing fetched at run
//! time), over a small JSON API under `/console/api/` that reads and acts through the
//! engine's methods, as the admin door does.
//!
//! Signing in takes an app's `app_key` + `master_secret`, or the operator token of the
//! server's settings (which sees every app). Either makes a session kept in memory (bounded)
//! and named by a random 256-bit id in an `HttpOnly`, `SameSite=Strict` cookie scoped to
//! `/console`; the secret never reaches the browser's storage. State-changing calls also need
//! the header `X-Pigeon-Console: 1`, which a form on another site cannot send.
//!
//! It must not know storage (everything goes through the engine), connections, or any
//! dialect beyond the one thing it borrows: a push is sent as a JPush push object read by
//! `pigeon_jpush::parse_push`, so the form's errors are JPush's, naming the field.
//!
//! Its routes are not in `/openapi.json`: they are the console's own, for its pages, under
//! a session cookie rather than an API credential, and may change with the pages.

mod api;
mod session;

use axum::body::Body;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use pigeon_engine::Engine;
use std::sync::Arc;

pub use session::{MAX_SESSIONS, SESSION_TTL};

/// What the console runs with.
#[derive(Clone, Debug, Default)]
pub struct ConsoleConfig {
    /// The operator token (`console_token`): signs in to every app. `None`: only apps sign in.
    pub operator_token: Option<String>,
    /// The listener serves only HTTPS: the session cookie is marked `Secure`.
    pub secure_cookie: bool,
}

#[derive(Clone)]
pub(crate) struct Console {
    pub engine: Arc<Engine>,
    pub sessions: Arc<session::Sessions>,
    pub operator_token: Option<Arc<str>>,
    pub secure_cookie: bool,
}

/// The header every state-changing console call must carry (with value `1`).
pub const CSRF_HEADER: &str = "x-pigeon-console";

/// Largest body a console call accepts.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; \
                   object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const VIEWS_JS: &str = include_str!("../assets/views.js");
const DRAW_JS: &str = include_str!("../assets/draw.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The console's router: its pages and its API, under `/console`.
pub fn router(engine: Arc<Engine>, config: ConsoleConfig) -> Router {
    let state = Console {
        engine,
        sessions: Arc::new(session::Sessions::default()),
        operator_token: config.operator_token.map(Arc::from),
        secure_cookie: config.secure_cookie,
    };
    let api = Router::new()
        .route(
            "/console/api/session",
            get(api::session_get)
                .post(api::sign_in)
                .delete(api::sign_out),
        )
        .route("/console/api/session/app", put(api::pick_app))
        .route("/console/api/apps", get(api::apps))
        .route("/console/api/pushes", get(api::pushes).post(api::send))
        .route("/console/api/pushes/{msg_id}", get(api::push_one))
        .route("/console/api/pushes/{msg_id}/recall", post(api::recall))
        .route("/console/api/devices", get(api::devices))
        .route("/console/api/callbacks", get(api::callbacks))
        .route(
            "/console/api/callbacks/{id}/dead/{delivery_id}/replay",
            post(api::replay),
        )
        .route("/console/api/schedules", get(api::schedules))
        .route("/console/api/vendors", get(api::vendors))
        .route("/console/api/segments", get(api::segments))
        .route("/console/api/abtests", get(api::abtests))
        .route("/console/api/geofences", get(api::geofences))
        .route("/console/api/{*rest}", axum::routing::any(api::unknown))
        .method_not_allowed_fallback(api::method_not_allowed)
        .layer(axum::middleware::from_fn(csrf))
        .with_state(state);
    Router::new()
        // The server strips trailing slashes before routing (`pigeon_jpush::normalize_path`):
        // `/console/` arrives here as `/console`. The page's URLs are absolute.
        .route(
            "/console",
            get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }),
        )
        .route(
            "/console/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/console/views.js",
            get(|| async { asset("text/javascript; charset=utf-8", VIEWS_JS) }),
        )
        .route(
            "/console/draw.js",
            get(|| async { asset("text/javascript; charset=utf-8", DRAW_JS) }),
        )
        .route(
            "/console/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route(
            "/console/favicon.svg",
            get(|| async { asset("image/svg+xml", FAVICON_SVG) }),
        )
        .merge(api)
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn(pigeon_http::json_errors))
}

/// Every console answer: the CSP, no sniffing, no framing, no referrer; API answers are
/// never cached.
async fn security_headers(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let is_api = req.uri().path().starts_with("/console/api/");
    let mut response = next.run(req).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if is_api {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// State-changing calls must carry `X-Pigeon-Console: 1` (403 otherwise): with the
/// `SameSite=Strict` cookie, another site can neither send the cookie nor the header.
async fn csrf(req: axum::extract::Request<Body>, next: axum::middleware::Next) -> Response {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let marked = req
        .headers()
        .get(CSRF_HEADER)
        .is_some_and(|v| v.as_bytes() == b"1");
    if !safe && !marked {
        return api::error(
            StatusCode::FORBIDDEN,
            "csrf",
            "state-changing console calls need the header X-Pigeon-Console: 1",
        )
        .into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests;
