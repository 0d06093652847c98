//! Pigeon's Tencent Cloud IM dialect (callbacks.md §5): the events of a push's sending,
//! delivery and click stages in the shape of Tencent's push callback, `Push.OfflinePush`
//! (seed `001`), so that a backend written for Tencent's push plugin takes Pigeon's callbacks
//! unchanged.
//!
//! An encoding only: it turns Pigeon's events, as the outbox holds them, into Tencent's event
//! objects. Which endpoint gets them, batching, signing and retries are the dispatcher's
//! (`pigeon-callbacks`), the same for every format.

pub mod offline_push;
