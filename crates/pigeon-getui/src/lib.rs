//! Pigeon's Getui front doors, spoken so that Getui's server SDKs work unchanged
//! (getui-door.md): the legacy protocol of `gt-push-sdk` (`/apiex.htm`, `/serviceex`) and
//! RestAPI V2 (`/v2/{appId}/...`).
//!
//! Translators only: each request is read into Pigeon's model (`pigeon_core::model`) and
//! handed to the engine; Getui's names, result strings and answer codes stay here. It never
//! touches storage or connections.

pub mod legacy;
pub mod task_id;
pub mod v2;

pub use legacy::router as legacy_router;
pub use v2::router as v2_router;
