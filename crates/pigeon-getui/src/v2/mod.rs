//! Getui RestAPI V2 (getui.md B, getui-door.md): `/v2/{appId}/...`, token auth, the push,
//! task, user and report routes, answered `{"code", "msg", "data"}`.
//!
//! One catch-all route reads the path itself: path parameters are decoded leniently (the Java
//! client does not encode them, and joins sets with commas), and a known path with the wrong
//! method, or an unknown path, still gets a JSON answer in Getui's shape.

mod audience;
mod auth;
mod dto;
mod fields;
mod push;
mod reply;
mod report;
mod schedule;
mod task;
mod user;

pub use reply::MAX_BODY_BYTES;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use axum::routing::any;
use axum::Router;
use pigeon_engine::limits::Admission;
use pigeon_engine::{now_ms, AppState, Engine, EngineError};
use reply::{respond, V2Error, V2Result};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;

/// What the V2 routes share.
pub(crate) struct V2 {
    pub engine: Arc<Engine>,
    pub tokens: auth::Tokens,
    pub lists: push::ListMessages,
}

/// The RestAPI V2 routes, `/v2/{appId}/...`, to merge beside the other doors.
pub fn router(engine: Arc<Engine>) -> Router {
    let state = Arc::new(V2 {
        engine,
        tokens: auth::Tokens::default(),
        lists: push::ListMessages::default(),
    });
    state
        .engine
        .schedules()
        .register(Arc::new(schedule::V2Schedules));
    Router::new()
        .route("/v2/{*rest}", any(dispatch))
        .with_state(state)
}

/// One route, with its path parameters decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    Auth,
    AuthDelete(String),
    PushSingleCid,
    PushSingleAlias,
    PushBatchCid,
    PushBatchAlias,
    PushCidByTag,
    PushListMessage,
    PushListCid,
    PushListAlias,
    PushListCidByTag,
    PushAll,
    PushTag,
    PushFastCustomTag,
    TaskStop(String),
    TaskScheduleGet(String),
    TaskScheduleDelete(String),
    TaskDetail(String, String),
    AliasBind,
    AliasOfCid(String),
    CidsOfAlias(String),
    AliasUnbind,
    AliasUnbindAll(String),
    TagsSet(String),
    TagsGet(String),
    TagBatchAdd(String),
    TagBatchDelete(String),
    BlackAdd(String),
    BlackRemove(String),
    Status(String),
    Badge(String),
    Count,
    ReportTask(String),
    ReportTaskDetail(String),
    ReportTaskGroup(String),
    ReportPushDate(String),
    ReportUserDate(String),
    ReportOnlineUser,
    ReportPushCount,
}

/// The routes a path (after `/v2/{appId}`) has, by method; `None` for an unknown path.
fn routes_of(segs: &[String]) -> Option<Vec<(Method, Route)>> {
    use Method as M;
    use Route as R;
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let one = |m: Method, r: Route| Some(vec![(m, r)]);
    let p = |i: usize| segs[i].clone();
    match s.as_slice() {
        ["auth"] => one(M::POST, R::Auth),
        ["auth", _] => one(M::DELETE, R::AuthDelete(p(1))),
        ["push", "single", "cid"] => one(M::POST, R::PushSingleCid),
        ["push", "single", "alias"] => one(M::POST, R::PushSingleAlias),
        ["push", "single", "batch", "cid"] => one(M::POST, R::PushBatchCid),
        ["push", "single", "batch", "alias"] => one(M::POST, R::PushBatchAlias),
        ["push", "single", "cid_by_tag"] => one(M::POST, R::PushCidByTag),
        ["push", "list", "message"] => one(M::POST, R::PushListMessage),
        ["push", "list", "cid"] => one(M::POST, R::PushListCid),
        ["push", "list", "alias"] => one(M::POST, R::PushListAlias),
        ["push", "list", "cid_by_tag"] => one(M::POST, R::PushListCidByTag),
        ["push", "all"] => one(M::POST, R::PushAll),
        ["push", "tag"] => one(M::POST, R::PushTag),
        ["push", "fast_custom_tag"] => one(M::POST, R::PushFastCustomTag),
        ["task", "schedule", _] => Some(vec![
            (M::GET, R::TaskScheduleGet(p(2))),
            (M::DELETE, R::TaskScheduleDelete(p(2))),
        ]),
        ["task", "detail", _, _] => one(M::GET, R::TaskDetail(p(2), p(3))),
        ["task", _] => one(M::DELETE, R::TaskStop(p(1))),
        ["user", "alias"] => Some(vec![(M::POST, R::AliasBind), (M::DELETE, R::AliasUnbind)]),
        ["user", "alias", "cid", _] => one(M::GET, R::AliasOfCid(p(3))),
        ["user", "cid", "alias", _] => one(M::GET, R::CidsOfAlias(p(3))),
        ["user", "alias", _] => one(M::DELETE, R::AliasUnbindAll(p(2))),
        ["user", "custom_tag", "cid", _] => Some(vec![
            (M::POST, R::TagsSet(p(3))),
            (M::GET, R::TagsGet(p(3))),
        ]),
        ["user", "custom_tag", "batch", _] => Some(vec![
            (M::PUT, R::TagBatchAdd(p(3))),
            (M::DELETE, R::TagBatchDelete(p(3))),
        ]),
        ["user", "black", "cid", _] => Some(vec![
            (M::POST, R::BlackAdd(p(3))),
            (M::DELETE, R::BlackRemove(p(3))),
        ]),
        ["user", "status", _] => one(M::GET, R::Status(p(2))),
        ["user", "badge", "cid", _] => one(M::POST, R::Badge(p(3))),
        ["user", "count"] => one(M::POST, R::Count),
        ["report", "push", "task", _, "detail"] => one(M::GET, R::ReportTaskDetail(p(3))),
        ["report", "push", "task", _] => one(M::GET, R::ReportTask(p(3))),
        ["report", "push", "task_group", _] => one(M::GET, R::ReportTaskGroup(p(3))),
        ["report", "push", "date", _] => one(M::GET, R::ReportPushDate(p(3))),
        ["report", "user", "date", _] => one(M::GET, R::ReportUserDate(p(3))),
        ["report", "online_user"] => one(M::GET, R::ReportOnlineUser),
        ["report", "push", "count"] => one(M::GET, R::ReportPushCount),
        _ => None,
    }
}

/// Every `/v2/...` request.
async fn dispatch(State(v2): State<Arc<V2>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path();
    let mut segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .skip(1)
        .map(reply::decode_segment)
        .collect();
    if segs.first().is_none_or(String::is_empty) {
        return not_found(path);
    }
    let app_id = segs.remove(0);
    let Some(routes) = routes_of(&segs) else {
        return not_found(path);
    };
    // HEAD is GET without a body, as HTTP says.
    let method = if parts.method == Method::HEAD {
        Method::GET
    } else {
        parts.method.clone()
    };
    let Some((_, route)) = routes.iter().find(|(m, _)| *m == method) else {
        let allowed: Vec<&str> = routes.iter().map(|(m, _)| m.as_str()).collect();
        return respond(Err(V2Error::new(
            StatusCode::METHOD_NOT_ALLOWED,
            reply::CODE_FAILURE,
            format!("this API accepts only {}", allowed.join(", ")),
        )));
    };
    let ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    let call = Call {
        v2: &v2,
        app_id: &app_id,
        query: parts.uri.query(),
        ip,
    };
    // The app whose token was good, named in the request log.
    let mut caller = None;
    let result = match route {
        Route::Auth => auth_route(&call, body).await,
        Route::AuthDelete(token) => {
            v2.tokens.revoke(token, &app_id);
            Ok(Value::Null)
        }
        _ => match call.authenticate(&parts.headers).await {
            Ok(app) => {
                caller = Some(pigeon_http::CallerApp(Arc::from(app.app_key.as_str())));
                match reply::read_body(body).await {
                    Ok(body) => handle(&call, &app, route, body).await,
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        },
    };
    let mut response = respond(result);
    if let Some(caller) = caller {
        response.extensions_mut().insert(caller);
    }
    response
}

fn not_found(path: &str) -> Response {
    respond(Err(V2Error::new(
        StatusCode::NOT_FOUND,
        reply::CODE_FAILURE,
        format!("no such API: {path}"),
    )))
}

/// One call: who makes it and how.
pub(crate) struct Call<'a> {
    pub v2: &'a V2,
    pub app_id: &'a str,
    pub query: Option<&'a str>,
    pub ip: Option<std::net::IpAddr>,
}

impl Call<'_> {
    /// The app whose token the call carries in the `token` header, admitted by its
    /// switch, IP allowlist and rate limit.
    async fn authenticate(
        &self,
        headers: &axum::http::HeaderMap,
    ) -> Result<Arc<AppState>, V2Error> {
        let token = headers
            .get("token")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .ok_or_else(V2Error::token)?;
        if !self.v2.tokens.check(token, self.app_id, now_ms()) {
            return Err(V2Error::token());
        }
        let app = self
            .v2
            .engine
            .app(self.app_id)
            .await
            .map_err(|e| V2Error::internal(&e))?
            .ok_or_else(V2Error::token)?;
        self.admit(&app)?;
        Ok(app)
    }

    fn admit(&self, app: &AppState) -> Result<(), V2Error> {
        match self.v2.engine.admit(app, self.ip) {
            Admission::Allowed(_) => Ok(()),
            Admission::Disabled => Err(V2Error::new(
                StatusCode::UNAUTHORIZED,
                reply::CODE_BLOCKED,
                "the app is disabled",
            )),
            Admission::IpDenied => Err(V2Error::new(
                StatusCode::UNAUTHORIZED,
                reply::CODE_BLOCKED,
                "the caller's address is not in the app's IP allowlist",
            )),
            Admission::RateLimited(_) => Err(V2Error::new(
                StatusCode::UNAUTHORIZED,
                reply::CODE_CALL_RATE,
                "call rate limit exceeded: try again in a minute",
            )),
        }
    }
}

/// `POST /auth`.
async fn auth_route(call: &Call<'_>, body: axum::body::Body) -> V2Result {
    let body = reply::object(reply::read_body(body).await?)?;
    let now = now_ms();
    let req = auth::parse_auth(&body, now)?;
    if req.appkey != call.app_id {
        return Err(V2Error::invalid("appkey"));
    }
    let app = call
        .v2
        .engine
        .app(call.app_id)
        .await
        .map_err(|e| V2Error::internal(&e))?
        .ok_or_else(|| V2Error::invalid("appkey"))?;
    if !call.v2.tokens.admit_auth(&app.app_key, now) {
        return Err(auth::auth_rate_error());
    }
    call.admit(&app)?;
    if !auth::sign_matches(&req, &app.master_secret) {
        return Err(V2Error::invalid("sign"));
    }
    let (token, expires) = call.v2.tokens.issue(&app.app_key, now);
    Ok(auth::auth_data(&token, expires))
}

/// Every route behind the token.
async fn handle(
    call: &Call<'_>,
    app: &Arc<AppState>,
    route: &Route,
    body: Option<Value>,
) -> V2Result {
    use Route as R;
    match route {
        // Answered before the token is checked (`dispatch`).
        R::Auth | R::AuthDelete(_) => Err(V2Error::token()),
        R::PushSingleCid => push::single(call, app, body, push::Target::Cid).await,
        R::PushSingleAlias => push::single(call, app, body, push::Target::Alias).await,
        R::PushBatchCid => push::batch(call, app, body, push::Target::Cid).await,
        R::PushBatchAlias => push::batch(call, app, body, push::Target::Alias).await,
        R::PushCidByTag | R::PushListCidByTag => Err(V2Error::invalid_msg(
            "cid_by_tag is not supported: it is not part of Getui's public API",
        )),
        R::PushListMessage => push::list_message(call, app, body).await,
        R::PushListCid => push::list(call, app, body, push::Target::Cid).await,
        R::PushListAlias => push::list(call, app, body, push::Target::Alias).await,
        R::PushAll => push::wide(call, app, body, push::Wide::All).await,
        R::PushTag => push::wide(call, app, body, push::Wide::Tag).await,
        R::PushFastCustomTag => push::wide(call, app, body, push::Wide::FastCustomTag).await,
        R::TaskStop(t) => task::stop(call, app, t).await,
        R::TaskScheduleGet(t) => schedule::get(call, app, t).await,
        R::TaskScheduleDelete(t) => schedule::delete(call, app, t).await,
        R::TaskDetail(_, _) => task::detail(),
        R::AliasBind => user::bind_alias(call, app, body).await,
        R::AliasOfCid(cid) => user::alias_of_cid(call, app, cid),
        R::CidsOfAlias(alias) => user::cids_of_alias(call, app, alias),
        R::AliasUnbind => user::unbind_alias(call, app, body).await,
        R::AliasUnbindAll(alias) => user::unbind_all(call, app, alias).await,
        R::TagsSet(cid) => user::set_tags(call, app, cid, body).await,
        R::TagsGet(cid) => user::tags_of(call, app, cid),
        R::TagBatchAdd(tag) => user::tag_batch(call, app, tag, body, true).await,
        R::TagBatchDelete(tag) => user::tag_batch(call, app, tag, body, false).await,
        R::BlackAdd(cids) => user::black_list(call, app, cids, true).await,
        R::BlackRemove(cids) => user::black_list(call, app, cids, false).await,
        R::Status(cids) => user::status(call, app, cids).await,
        R::Badge(cids) => user::badge(call, app, cids, body).await,
        R::Count => user::count(call, app, body),
        R::ReportTask(ids) => report::tasks(call, app, ids).await,
        R::ReportTaskDetail(id) => report::task_detail(call, app, id).await,
        R::ReportTaskGroup(group) => report::task_group(call, app, group).await,
        R::ReportPushDate(date) => report::push_date(call, app, date).await,
        R::ReportUserDate(date) => report::user_date(call, app, date).await,
        R::ReportOnlineUser => report::online_user(app),
        R::ReportPushCount => report::push_count(call, app).await,
    }
}

/// The answer to an engine error that is not the caller's fault.
pub(crate) fn engine_error(e: EngineError) -> V2Error {
    match e {
        EngineError::Invalid(m) => V2Error::invalid_msg(m),
        EngineError::NoTarget | EngineError::UnknownDevice => {
            V2Error::invalid_msg("target user is invalid")
        }
        EngineError::AliasFull(alias) => V2Error::invalid_msg(format!(
            "alias is invalid: {alias:?} is already bound to {} cids",
            pigeon_engine::devices::MAX_DEVICES_PER_ALIAS
        )),
        EngineError::UnknownPush(_) => V2Error::invalid("taskid"),
        EngineError::UnknownSegment(id) => V2Error::invalid_msg(format!(
            "audience.tag is invalid: portrait {id:?} is no segment of this app"
        )),
        EngineError::TooManyPaced => V2Error::invalid_msg(format!(
            "settings.speed is invalid: at most {} paced pushes may run at once",
            pigeon_engine::MAX_PACED_PER_APP
        )),
        other => V2Error::internal(&other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(method: Method, path: &str) -> Option<Route> {
        let segs: Vec<String> = path.split('/').map(reply::decode_segment).collect();
        routes_of(&segs)?
            .into_iter()
            .find(|(m, _)| *m == method)
            .map(|(_, r)| r)
    }

    #[test]
    fn paths_map_to_routes() {
        assert_eq!(route(Method::POST, "auth"), Some(Route::Auth));
        assert_eq!(
            route(Method::DELETE, "auth/abc"),
            Some(Route::AuthDelete("abc".into()))
        );
        assert_eq!(
            route(Method::GET, "user/status/a,b"),
            Some(Route::Status("a,b".into()))
        );
        assert_eq!(
            route(Method::GET, "user/status/a%2Cb"),
            Some(Route::Status("a,b".into()))
        );
        assert_eq!(
            route(Method::DELETE, "task/RASS-1"),
            Some(Route::TaskStop("RASS-1".into()))
        );
        assert_eq!(
            route(Method::DELETE, "task/schedule/RASA-1"),
            Some(Route::TaskScheduleDelete("RASA-1".into()))
        );
        assert_eq!(
            route(Method::GET, "report/push/task/a,b/detail"),
            Some(Route::ReportTaskDetail("a,b".into()))
        );
        assert_eq!(
            route(Method::DELETE, "user/alias/bob"),
            Some(Route::AliasUnbindAll("bob".into()))
        );
        assert_eq!(
            route(Method::DELETE, "user/alias"),
            Some(Route::AliasUnbind)
        );
        assert_eq!(route(Method::GET, "push/all"), None);
        assert!(routes_of(&["nope".to_string()]).is_none());
    }
}
