//! Pending contents: what `getContentIdAction` / `apnGetContentIdAction` stored for a later
//! `pushMessageToList` / `pushMessageToApp` / `apnPushToList`. Kept in memory only, bounded
//! and expiring: a content id is good for [`CONTENT_LIFETIME_MS`] and at most
//! [`MAX_PER_APP`] per app are kept (the oldest goes); after a restart the SDK's next push with
//! an old id is answered `NullMsgCommon` and it asks for a new one. An app content with a
//! `pushTime` also keeps its request, which `pushMessageToAppAction` stores in a schedule (the
//! schedule, not the content, is durable).

use super::push::Prepared;
use parking_lot::Mutex;
use pigeon_core::FastMap as HashMap;
use serde_json::{Map, Value};
use std::collections::VecDeque;
use std::sync::Arc;

/// How long a content id is good for.
pub const CONTENT_LIFETIME_MS: u64 = 24 * 3_600_000;
/// Most pending contents per app.
pub const MAX_PER_APP: usize = 1_000;
/// Most pending contents in all.
pub const MAX_CONTENTS: usize = 50_000;

/// What a content id is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    List,
    App,
    ApnList,
}

pub struct Pending {
    pub app_key: String,
    pub kind: Kind,
    pub prepared: Arc<Prepared>,
    /// An app content with a `pushTime`: the request it was made from, for its schedule.
    pub scheduled: Option<Arc<Map<String, Value>>>,
    pub expires_ms: u64,
    /// `taskGroupName`.
    pub group: Option<String>,
    /// The pushes made from it so far.
    pub pushed: Vec<u64>,
    /// Cancelled (`cancleContentIdAction`) or stopped: no more pushes from it.
    pub cancelled: bool,
}

#[derive(Default)]
pub struct Contents {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_id: HashMap<String, Pending>,
    per_app: HashMap<String, VecDeque<String>>,
    order: VecDeque<String>,
}

/// What taking a content for a push found.
pub enum Take {
    /// The content, and for a scheduled app content the request it was made from.
    Ready(Arc<Prepared>, Option<Arc<Map<String, Value>>>),
    Unknown,
    Cancelled,
    /// An app content is pushed once.
    Used,
}

impl Contents {
    /// Stores a content (with, for a scheduled app content, the request it was made from);
    /// returns its id, or `None` when the table is full of live contents.
    pub fn put(
        &self,
        app_key: &str,
        kind: Kind,
        prepared: Prepared,
        scheduled: Option<Map<String, Value>>,
        group: Option<String>,
        now_ms: u64,
    ) -> Option<String> {
        let prefix = match kind {
            Kind::List | Kind::ApnList => "OSL",
            Kind::App => "OSA",
        };
        // Not digits after the dash: a pending content id never reads as a msg_id.
        let id = format!("{prefix}-c{}", pigeon_engine::random_alnum(20));
        let mut inner = self.inner.lock();
        inner.drop_expired(now_ms);
        if inner.by_id.len() >= MAX_CONTENTS {
            return None;
        }
        let q = inner.per_app.entry(app_key.to_string()).or_default();
        q.push_back(id.clone());
        let evict = (q.len() > MAX_PER_APP).then(|| q.pop_front()).flatten();
        if let Some(old) = evict {
            inner.by_id.remove(&old);
        }
        inner.order.push_back(id.clone());
        if inner.order.len() > 2 * MAX_CONTENTS {
            let Inner { order, by_id, .. } = &mut *inner;
            order.retain(|x| by_id.contains_key(x));
        }
        inner.by_id.insert(
            id.clone(),
            Pending {
                app_key: app_key.to_string(),
                kind,
                prepared: Arc::new(prepared),
                scheduled: scheduled.map(Arc::new),
                expires_ms: now_ms + CONTENT_LIFETIME_MS,
                group,
                pushed: Vec::new(),
                cancelled: false,
            },
        );
        Some(id)
    }

    /// The content for a push of `kind`.
    pub fn take(&self, app_key: &str, id: &str, kind: Kind, now_ms: u64) -> Take {
        let inner = self.inner.lock();
        match inner.by_id.get(id) {
            Some(p) if p.app_key == app_key && p.kind == kind && p.expires_ms > now_ms => {
                if p.cancelled {
                    Take::Cancelled
                } else if kind == Kind::App && !p.pushed.is_empty() {
                    Take::Used
                } else {
                    Take::Ready(p.prepared.clone(), p.scheduled.clone())
                }
            }
            _ => Take::Unknown,
        }
    }

    /// Notes a push made from a content.
    pub fn pushed(&self, id: &str, msg_id: u64) {
        if let Some(p) = self.inner.lock().by_id.get_mut(id) {
            if p.pushed.len() < 10_000 {
                p.pushed.push(msg_id);
            }
        }
    }

    /// The group a content was given, if it is a pending content of this app.
    pub fn group(&self, app_key: &str, id: &str) -> Option<String> {
        let inner = self.inner.lock();
        inner
            .by_id
            .get(id)
            .filter(|p| p.app_key == app_key)
            .and_then(|p| p.group.clone())
    }

    /// Cancels a content; returns the pushes made from it (`None`: no such content).
    pub fn cancel(&self, app_key: &str, id: &str) -> Option<Vec<u64>> {
        let mut inner = self.inner.lock();
        let p = inner.by_id.get_mut(id).filter(|p| p.app_key == app_key)?;
        p.cancelled = true;
        Some(p.pushed.clone())
    }

    /// The pushes made from a content of this app (`None`: no such content).
    pub fn pushes_of(&self, app_key: &str, id: &str) -> Option<Vec<u64>> {
        let inner = self.inner.lock();
        inner
            .by_id
            .get(id)
            .filter(|p| p.app_key == app_key)
            .map(|p| p.pushed.clone())
    }

    /// The pushes made from this app's contents of group `group`.
    pub fn pushes_of_group(&self, app_key: &str, group: &str) -> Vec<u64> {
        let inner = self.inner.lock();
        inner
            .by_id
            .values()
            .filter(|p| p.app_key == app_key && p.group.as_deref() == Some(group))
            .flat_map(|p| p.pushed.iter().copied())
            .collect()
    }
}

impl Inner {
    fn drop_expired(&mut self, now_ms: u64) {
        while let Some(front) = self.order.front() {
            match self.by_id.get(front) {
                Some(p) if p.expires_ms > now_ms => break,
                _ => {
                    let Some(old) = self.order.pop_front() else {
                        break;
                    };
                    if let Some(p) = self.by_id.remove(&old) {
                        if let Some(q) = self.per_app.get_mut(&p.app_key) {
                            q.retain(|x| *x != old);
                            if q.is_empty() {
                                self.per_app.remove(&p.app_key);
                            }
                        }
                    }
                }
            }
        }
    }
}
