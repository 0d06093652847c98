//! Getui RestAPI V2 (getui.md B, getui-door.md): `/v2/{appId}/...`, token auth, the push,
//! task, user and report routes, answered `{"code", "msg", "data"}`.

pub mod audience;
pub mod auth;
pub mod dto;
pub mod fields;
pub mod reply;
