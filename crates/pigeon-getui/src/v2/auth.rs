//! Token auth (getui.md B.2): `POST /auth` checks `sign = sha256(appkey + timestamp +
//! mastersecret)` and hands out a token valid for a day; every other call carries it in the
//! `token` header. Tokens live in memory only: after a restart clients get `10001` and
//! authenticate again, as they do when a token expires.

use super::reply::{Data, V2Error, CODE_AUTH_RATE};
use axum::http::StatusCode;
use parking_lot::Mutex;
use pigeon_core::FastMap as HashMap;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use std::collections::VecDeque;

/// How long a token is valid.
pub const TOKEN_LIFETIME_MS: u64 = 86_400_000;
/// Most valid tokens one app holds; a new one beyond that retires the oldest.
pub const MAX_TOKENS_PER_APP: usize = 100;
/// `POST /auth` calls one app may make per minute (Getui's limit), beyond which `10003`.
pub const AUTH_CALLS_PER_MINUTE: u32 = 100;
/// How far a `timestamp` may be from the server's clock.
pub const TIMESTAMP_SKEW_MS: u64 = 10 * 60_000;

struct Issued {
    app_key: String,
    expires_ms: u64,
}

#[derive(Default)]
struct Inner {
    by_token: HashMap<String, Issued>,
    /// Each app's tokens, oldest first.
    by_app: HashMap<String, VecDeque<String>>,
    /// Each app's `POST /auth` calls in the current minute: (window start, calls).
    auth_calls: HashMap<String, (u64, u32)>,
}

/// The tokens handed out, per app and bounded.
#[derive(Default)]
pub struct Tokens {
    inner: Mutex<Inner>,
}

impl Tokens {
    /// A new token of `app_key`, valid until the returned time (ms since the epoch).
    pub fn issue(&self, app_key: &str, now_ms: u64) -> (String, u64) {
        let token = pigeon_engine::random_alnum(40).to_ascii_lowercase();
        let expires_ms = now_ms + TOKEN_LIFETIME_MS;
        let mut inner = self.inner.lock();
        let Inner {
            by_token, by_app, ..
        } = &mut *inner;
        let queue = by_app.entry(app_key.to_string()).or_default();
        // Tokens expire in the order they were issued: drop the expired ones at the front,
        // then the oldest while the app holds too many.
        while let Some(front) = queue.front() {
            let expired = by_token.get(front).is_none_or(|t| t.expires_ms <= now_ms);
            if !expired && queue.len() < MAX_TOKENS_PER_APP {
                break;
            }
            if let Some(old) = queue.pop_front() {
                by_token.remove(&old);
            }
        }
        queue.push_back(token.clone());
        by_token.insert(
            token.clone(),
            Issued {
                app_key: app_key.to_string(),
                expires_ms,
            },
        );
        (token, expires_ms)
    }

    /// Whether `token` is a valid token of `app_key` at `now_ms`.
    pub fn check(&self, token: &str, app_key: &str, now_ms: u64) -> bool {
        self.inner
            .lock()
            .by_token
            .get(token)
            .is_some_and(|t| t.app_key == app_key && t.expires_ms > now_ms)
    }

    /// Invalidates a token of `app_key`; whether it was one.
    pub fn revoke(&self, token: &str, app_key: &str) -> bool {
        let mut inner = self.inner.lock();
        if inner
            .by_token
            .get(token)
            .is_none_or(|t| t.app_key != app_key)
        {
            return false;
        }
        inner.by_token.remove(token);
        if let Some(q) = inner.by_app.get_mut(app_key) {
            q.retain(|t| t != token);
        }
        true
    }

    /// Counts one `POST /auth` call of an app; `false` when it is over the minute's limit.
    pub fn admit_auth(&self, app_key: &str, now_ms: u64) -> bool {
        let mut inner = self.inner.lock();
        let (start, calls) = inner
            .auth_calls
            .entry(app_key.to_string())
            .or_insert((now_ms, 0));
        if now_ms >= *start + 60_000 {
            *start = now_ms;
            *calls = 0;
        }
        if *calls >= AUTH_CALLS_PER_MINUTE {
            return false;
        }
        *calls += 1;
        true
    }
}

/// The fields of an auth request, checked: the app key and the timestamp as text.
#[derive(Debug, PartialEq, Eq)]
pub struct AuthRequest {
    pub appkey: String,
    pub timestamp: String,
    pub sign: String,
}

/// Reads `{"sign","timestamp","appkey"}`; `timestamp` may be a JSON number or a string of
/// digits (the docs show a string, the Java client sends a number).
pub fn parse_auth(body: &Map<String, Value>, now_ms: u64) -> Result<AuthRequest, V2Error> {
    let text = |key: &str| -> Result<String, V2Error> {
        body.get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .ok_or_else(|| V2Error::invalid(key))
    };
    let appkey = text("appkey")?;
    let sign = text("sign")?;
    let timestamp = match body.get("timestamp") {
        Some(Value::Number(n)) if n.is_u64() => n.to_string(),
        Some(Value::String(s)) if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) => {
            s.clone()
        }
        _ => return Err(V2Error::invalid("timestamp")),
    };
    let ms: u64 = timestamp
        .parse()
        .map_err(|_| V2Error::invalid("timestamp"))?;
    if ms.abs_diff(now_ms) > TIMESTAMP_SKEW_MS {
        return Err(V2Error::invalid_msg(format!(
            "timestamp is invalid: it is more than {} s away from the server's clock",
            TIMESTAMP_SKEW_MS / 1000
        )));
    }
    Ok(AuthRequest {
        appkey,
        timestamp,
        sign,
    })
}

/// Lowercase hex SHA-256 of `appkey + timestamp + mastersecret`.
pub fn sign_of(appkey: &str, timestamp: &str, master_secret: &str) -> String {
    let digest = Sha256::new()
        .chain_update(appkey.as_bytes())
        .chain_update(timestamp.as_bytes())
        .chain_update(master_secret.as_bytes())
        .finalize();
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `sign` (hex, any case) is the request's signature under `master_secret`, compared
/// in constant time.
pub fn sign_matches(req: &AuthRequest, master_secret: &str) -> bool {
    let want = sign_of(&req.appkey, &req.timestamp, master_secret);
    let got = req.sign.to_ascii_lowercase();
    want.len() == got.len()
        && want
            .bytes()
            .zip(got.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

/// `data` of a successful auth: the token and its expiry as a string of ms.
pub fn auth_data(token: &str, expires_ms: u64) -> Data {
    json!({"token": token, "expire_time": expires_ms.to_string()})
}

/// `10003`: too many auth calls this minute.
pub fn auth_rate_error() -> V2Error {
    V2Error::new(
        StatusCode::UNAUTHORIZED,
        CODE_AUTH_RATE,
        format!("auth rate limit: at most {AUTH_CALLS_PER_MINUTE} auth calls a minute per app"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn sign_is_sha256_of_key_time_secret() {
        // sha256("abc")
        assert_eq!(
            sign_of("a", "b", "c"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let now = 1_700_000_000_000;
        let req = parse_auth(
            &body(json!({"appkey": "k", "timestamp": now, "sign": sign_of("k", &now.to_string(), "s")})),
            now,
        )
        .unwrap();
        assert!(sign_matches(&req, "s"));
        assert!(!sign_matches(&req, "t"));
        let upper = AuthRequest {
            sign: req.sign.to_ascii_uppercase(),
            ..req
        };
        assert!(sign_matches(&upper, "s"));
    }

    #[test]
    fn timestamps_as_numbers_or_digit_strings_within_the_window() {
        let now = 1_700_000_000_000u64;
        let ok = |t: Value| {
            parse_auth(
                &body(json!({"appkey": "k", "sign": "x", "timestamp": t})),
                now,
            )
        };
        assert_eq!(ok(json!(now)).unwrap().timestamp, now.to_string());
        assert_eq!(
            ok(json!(now.to_string())).unwrap().timestamp,
            now.to_string()
        );
        for bad in [
            json!(1.5),
            json!("12a"),
            json!(""),
            json!(null),
            json!(now - 3_600_000),
        ] {
            assert_eq!(ok(bad).unwrap_err().code, 20001);
        }
        assert!(
            parse_auth(&body(json!({"timestamp": now, "sign": "x"})), now)
                .unwrap_err()
                .msg
                .starts_with("appkey")
        );
    }

    #[test]
    fn tokens_expire_are_per_app_and_bounded() {
        let t = Tokens::default();
        let (tok, exp) = t.issue("app1", 1000);
        assert_eq!(exp, 1000 + TOKEN_LIFETIME_MS);
        assert!(t.check(&tok, "app1", 2000));
        assert!(!t.check(&tok, "app2", 2000));
        assert!(!t.check(&tok, "app1", exp));
        let many: Vec<String> = (0..MAX_TOKENS_PER_APP + 5)
            .map(|i| t.issue("app1", 3000 + i as u64).0)
            .collect();
        assert!(!t.check(&many[0], "app1", 5000));
        assert!(t.check(&many[MAX_TOKENS_PER_APP + 4], "app1", 5000));
        assert!(t.inner.lock().by_token.len() <= MAX_TOKENS_PER_APP);
        assert!(t.revoke(&many[MAX_TOKENS_PER_APP + 4], "app1"));
        assert!(!t.check(&many[MAX_TOKENS_PER_APP + 4], "app1", 5000));
    }

    #[test]
    fn auth_calls_are_limited_per_minute() {
        let t = Tokens::default();
        for _ in 0..AUTH_CALLS_PER_MINUTE {
            assert!(t.admit_auth("a", 0));
        }
        assert!(!t.admit_auth("a", 59_999));
        assert!(t.admit_auth("b", 59_999));
        assert!(t.admit_auth("a", 60_000));
    }
}
