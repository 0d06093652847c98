//! Who may call an app's APIs, and how often: the app's switch, its IP allowlist and its
//! rate limit (a fixed one-minute window, as JPush counts).

use crate::app::AppState;
use crate::{now_ms, Engine, EngineError};
use pigeon_store::AppSettings;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// JPush's rate-limit window.
pub const DEFAULT_WINDOW_MS: u64 = 60_000;
/// Calls per minute an app may make unless its settings say otherwise. Generous: a limit a
/// self-hosted server enforces is a guard rail, not a price plan.
pub const DEFAULT_RATE_LIMIT_PER_MINUTE: u64 = 6_000_000;
/// How often settings changed by another process (the CLI) are picked up.
const SETTINGS_REFRESH: Duration = Duration::from_secs(1);

/// The answer to "may this call go ahead?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Allowed(RateState),
    Disabled,
    IpDenied,
    RateLimited(RateState),
}

/// What the `X-Rate-Limit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the window resets.
    pub reset_s: u64,
}

/// Calls counted in the current window.
#[derive(Debug, Default)]
pub(crate) struct RateWindow {
    pub(crate) start_ms: u64,
    pub(crate) calls: u64,
}

impl Engine {
    /// Admits one API call to `app` from `ip` (if known), counting it against the limit.
    pub fn admit(&self, app: &AppState, ip: Option<IpAddr>) -> Admission {
        let (enabled, limit, allowed_ip) = {
            let s = app.settings.read();
            let limit = s
                .rate_limit_per_minute
                .unwrap_or_else(|| self.default_rate_limit.load(Ordering::Relaxed));
            let allowed_ip = s.ip_allowlist.is_empty()
                || ip.is_some_and(|ip| s.ip_allowlist.iter().any(|range| in_range(ip, range)));
            (s.enabled, limit, allowed_ip)
        };
        if !enabled {
            return Admission::Disabled;
        }
        if !allowed_ip {
            return Admission::IpDenied;
        }
        let now = now_ms();
        let window = self.rate_window_ms.load(Ordering::Relaxed);
        // In a cluster, windows start on multiples of their length, so that every node's
        // count of a window is of the same window; the others' counts add to this one's.
        let clustered = self.cluster().is_some();
        let mut w = app.rate.lock();
        if now >= w.start_ms + window {
            *w = RateWindow {
                start_ms: if clustered {
                    now - now % window.max(1)
                } else {
                    now
                },
                calls: 0,
            };
        }
        let reset_s = (w.start_ms + window - now).div_ceil(1000);
        let elsewhere = if clustered {
            app.remote_calls_in(w.start_ms)
        } else {
            0
        };
        if w.calls + elsewhere >= limit {
            return Admission::RateLimited(RateState {
                limit,
                remaining: 0,
                reset_s,
            });
        }
        w.calls += 1;
        Admission::Allowed(RateState {
            limit,
            remaining: limit.saturating_sub(w.calls + elsewhere),
            reset_s,
        })
    }

    /// What the `X-Rate-Limit-*` headers say to a caller that is not an app (no or bad
    /// credentials, `/health`): the server's default limit over a full window, counting
    /// nothing.
    pub fn default_rate_state(&self) -> RateState {
        let limit = self.default_rate_limit.load(Ordering::Relaxed);
        RateState {
            limit,
            remaining: limit,
            reset_s: self.rate_window_ms.load(Ordering::Relaxed).div_ceil(1000),
        }
    }

    /// Sets the rate limit of apps without one of their own.
    pub fn set_default_rate_limit(&self, per_minute: u64) {
        self.default_rate_limit.store(per_minute, Ordering::Relaxed);
    }

    /// Sets the length of the rate-limit window (JPush's is a minute; tests shorten it).
    pub fn set_rate_window(&self, window: Duration) {
        let ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1);
        self.rate_window_ms.store(ms, Ordering::Relaxed);
    }

    /// Stores an app's settings and applies them.
    pub async fn set_app_settings(
        &self,
        app: &AppState,
        settings: AppSettings,
    ) -> Result<(), EngineError> {
        check_settings(&settings)?;
        self.store
            .set_app_settings(&app.app_key, settings.clone())
            .await?;
        *app.settings.write() = settings;
        Ok(())
    }

    /// Re-reads every app's settings from storage.
    pub(crate) async fn refresh_settings(&self) -> Result<(), EngineError> {
        let all = self.store.app_settings().await?;
        for (key, settings) in all {
            if let Some(app) = self.apps.read().get(&key) {
                if *app.settings.read() != settings {
                    *app.settings.write() = settings;
                }
            }
        }
        Ok(())
    }
}

/// Checks settings before they are stored: every allowlist entry must parse.
pub fn check_settings(settings: &AppSettings) -> Result<(), EngineError> {
    for range in &settings.ip_allowlist {
        if parse_range(range).is_none() {
            return Err(EngineError::Invalid(format!(
                "{range:?} is not an IP address or CIDR range (e.g. 10.0.0.0/8)"
            )));
        }
    }
    if settings.rate_limit_per_minute == Some(0) {
        return Err(EngineError::Invalid(
            "a rate limit must be at least 1 call per minute".into(),
        ));
    }
    Ok(())
}

fn parse_range(range: &str) -> Option<(IpAddr, u32)> {
    let (addr, bits) = match range.split_once('/') {
        Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u32>().ok()?),
        None => {
            let a = range.parse::<IpAddr>().ok()?;
            (a, if a.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    (bits <= max).then_some((addr, bits))
}

/// Whether `ip` is `range` (an address, or a CIDR range).
fn in_range(ip: IpAddr, range: &str) -> bool {
    let Some((net, bits)) = parse_range(range) else {
        return false;
    };
    let ip = match (ip, net) {
        (IpAddr::V6(v6), IpAddr::V4(_)) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => return false,
        },
        _ => ip,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// Picks up app settings and callback endpoints changed by another process (the CLI).
pub(crate) async fn refresh_app_config_forever(engine: std::sync::Weak<Engine>) {
    let mut tick = tokio::time::interval(SETTINGS_REFRESH);
    loop {
        tick.tick().await;
        let Some(engine) = engine.upgrade() else {
            return;
        };
        if let Err(e) = engine.refresh_settings().await {
            tracing::warn!(error = %e, "could not refresh app settings");
        }
        if let Err(e) = engine.refresh_callbacks().await {
            tracing::warn!(error = %e, "could not refresh callback endpoints");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_match_addresses() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(in_range(ip("10.1.2.3"), "10.0.0.0/8"));
        assert!(!in_range(ip("11.1.2.3"), "10.0.0.0/8"));
        assert!(in_range(ip("127.0.0.1"), "127.0.0.1"));
        assert!(!in_range(ip("127.0.0.2"), "127.0.0.1"));
        assert!(in_range(ip("::ffff:127.0.0.1"), "127.0.0.0/8"));
        assert!(in_range(ip("2001:db8::1"), "2001:db8::/32"));
        assert!(in_range(ip("1.2.3.4"), "0.0.0.0/0"));
        assert!(parse_range("10.0.0.0/33").is_none());
        assert!(parse_range("example.com").is_none());
    }
}
