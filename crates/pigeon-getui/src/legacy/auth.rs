//! `connect` tokens (getui.md A.3): `sign = md5(appkey + timeStamp + masterSecret)` within a
//! clock-skew window gives a token; every other action carries it as `authToken`. Tokens live
//! in memory only: after a restart, or once expired, an action is answered `sign_error` and
//! the SDK connects again and repeats it by itself.

use md5::{Digest, Md5};
use parking_lot::Mutex;
use pigeon_core::FastMap as HashMap;
use std::collections::VecDeque;

/// How long a token is good for.
pub const TOKEN_LIFETIME_MS: u64 = 24 * 3_600_000;
/// How far `timeStamp` may be from the server's clock.
pub const CLOCK_SKEW_MS: u64 = 10 * 60_000;
/// Most live tokens per app; the oldest goes when another is made.
pub const MAX_TOKENS_PER_APP: usize = 64;
/// Most live tokens in all.
pub const MAX_TOKENS: usize = 100_000;

struct Token {
    app_key: String,
    expires_ms: u64,
}

/// The live tokens.
#[derive(Default)]
pub struct Tokens {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_token: HashMap<String, Token>,
    /// Tokens in the order they were made, per app and overall, to drop the oldest.
    order: VecDeque<String>,
    per_app: HashMap<String, VecDeque<String>>,
}

/// Why `connect` was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The timestamp is missing or too far from now.
    TimeStamp,
    /// The sign is wrong.
    Sign,
}

/// The lowercase hex MD5 the SDK signs with.
pub fn sign(app_key: &str, timestamp: &str, master_secret: &str) -> String {
    let mut h = Md5::new();
    h.update(app_key.as_bytes());
    h.update(timestamp.as_bytes());
    h.update(master_secret.as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// Checks a `connect` and makes a token for the app.
    pub fn connect(
        &self,
        app_key: &str,
        master_secret: &str,
        timestamp: &str,
        given_sign: &str,
        now_ms: u64,
    ) -> Result<String, ConnectError> {
        let ts: u64 = timestamp
            .trim()
            .parse()
            .map_err(|_| ConnectError::TimeStamp)?;
        if ts.abs_diff(now_ms) > CLOCK_SKEW_MS {
            return Err(ConnectError::TimeStamp);
        }
        let expected = sign(app_key, timestamp.trim(), master_secret);
        if !same(
            expected.as_bytes(),
            given_sign.trim().to_ascii_lowercase().as_bytes(),
        ) {
            return Err(ConnectError::Sign);
        }
        let token = pigeon_engine::random_alnum(40);
        let mut inner = self.inner.lock();
        inner.drop_expired(now_ms);
        let per_app = inner.per_app.entry(app_key.to_string()).or_default();
        per_app.push_back(token.clone());
        let evict_app = (per_app.len() > MAX_TOKENS_PER_APP)
            .then(|| per_app.pop_front())
            .flatten();
        if let Some(old) = evict_app {
            inner.by_token.remove(&old);
        }
        inner.by_token.insert(
            token.clone(),
            Token {
                app_key: app_key.to_string(),
                expires_ms: now_ms + TOKEN_LIFETIME_MS,
            },
        );
        inner.order.push_back(token.clone());
        if inner.order.len() > 2 * MAX_TOKENS {
            let Inner {
                order, by_token, ..
            } = &mut *inner;
            order.retain(|x| by_token.contains_key(x));
        }
        while inner.by_token.len() > MAX_TOKENS {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            inner.forget(&old);
        }
        Ok(token)
    }

    /// Whether `token` is a live token of `app_key`.
    pub fn check(&self, app_key: &str, token: &str, now_ms: u64) -> bool {
        if token.is_empty() {
            return false;
        }
        let inner = self.inner.lock();
        inner
            .by_token
            .get(token)
            .is_some_and(|t| t.app_key == app_key && t.expires_ms > now_ms)
    }

    /// `close`: the token is no longer good.
    pub fn close(&self, app_key: &str, token: &str) {
        let mut inner = self.inner.lock();
        if inner
            .by_token
            .get(token)
            .is_some_and(|t| t.app_key == app_key)
        {
            inner.forget(token);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().by_token.len()
    }
}

impl Inner {
    fn forget(&mut self, token: &str) {
        if let Some(t) = self.by_token.remove(token) {
            if let Some(q) = self.per_app.get_mut(&t.app_key) {
                q.retain(|x| x != token);
                if q.is_empty() {
                    self.per_app.remove(&t.app_key);
                }
            }
        }
    }

    /// Drops expired tokens from the front of the creation order (all made at least a
    /// lifetime ago); tokens closed earlier are skipped.
    fn drop_expired(&mut self, now_ms: u64) {
        while let Some(front) = self.order.front() {
            match self.by_token.get(front) {
                Some(t) if t.expires_ms > now_ms => break,
                _ => {
                    if let Some(old) = self.order.pop_front() {
                        self.forget(&old);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_matches_the_sdk() {
        // md5("AK" + "1700000000000" + "MS")
        let s = sign("AK", "1700000000000", "MS");
        assert_eq!(s.len(), 32);
        assert_eq!(s, s.to_ascii_lowercase());
        let t = Tokens::default();
        let now = 1_700_000_000_000;
        let token = t.connect("AK", "MS", "1700000000000", &s, now).unwrap();
        assert!(t.check("AK", &token, now));
        assert!(!t.check("OTHER", &token, now));
        assert!(!t.check("AK", "", now));
        assert!(!t.check("AK", &token, now + TOKEN_LIFETIME_MS));
        assert_eq!(
            t.connect("AK", "MS", "1700000000000", "0", now),
            Err(ConnectError::Sign)
        );
        assert_eq!(
            t.connect("AK", "MS", "1700000000000", &s, now + CLOCK_SKEW_MS + 1),
            Err(ConnectError::TimeStamp)
        );
        assert_eq!(
            t.connect("AK", "MS", "x", &s, now),
            Err(ConnectError::TimeStamp)
        );
        t.close("AK", &token);
        assert!(!t.check("AK", &token, now));
    }

    #[test]
    fn tokens_are_bounded_per_app() {
        let t = Tokens::default();
        let now = 1_700_000_000_000;
        let s = sign("AK", "1700000000000", "MS");
        let first = t.connect("AK", "MS", "1700000000000", &s, now).unwrap();
        for _ in 0..MAX_TOKENS_PER_APP {
            t.connect("AK", "MS", "1700000000000", &s, now).unwrap();
        }
        assert_eq!(t.len(), MAX_TOKENS_PER_APP);
        assert!(!t.check("AK", &first, now));
        // Expired tokens go when the next one is made.
        t.connect(
            "AK",
            "MS",
            "1700086400000",
            &sign("AK", "1700086400000", "MS"),
            now + TOKEN_LIFETIME_MS,
        )
        .unwrap();
        assert_eq!(t.len(), 1);
    }
}
