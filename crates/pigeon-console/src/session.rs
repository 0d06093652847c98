//! Console sessions and sign-in attempts, in memory and bounded.

use parking_lot::Mutex;
use rand::RngCore;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long a session lasts from sign-in.
pub const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once; signing in beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 1024;
/// Sign-in attempts an address may make per window.
pub const MAX_ATTEMPTS: u32 = 10;
pub const ATTEMPT_WINDOW: Duration = Duration::from_secs(60);
/// Addresses whose attempts are counted at once; beyond it (a flood from many addresses)
/// every address shares one count.
const MAX_TRACKED: usize = 4096;

/// Who a session is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    /// Signed in with an app's own secret: that app only.
    App(String),
    /// Signed in with the operator token: any app, the one picked last (if any).
    Operator(Option<String>),
}

#[derive(Clone, Debug)]
pub struct Session {
    pub who: Who,
    pub created: Instant,
}

#[derive(Default)]
pub struct Sessions {
    sessions: Mutex<HashMap<String, Session>>,
    attempts: Mutex<HashMap<Option<IpAddr>, (u32, Instant)>>,
}

/// A new session id: 256 random bits from the OS-seeded CSPRNG, as hex.
fn new_id() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Sessions {
    /// Makes a session and returns its id.
    pub fn create(&self, who: Who) -> String {
        let now = Instant::now();
        let id = new_id();
        let mut all = self.sessions.lock();
        if all.len() >= MAX_SESSIONS {
            all.retain(|_, s| now.duration_since(s.created) < SESSION_TTL);
        }
        if all.len() >= MAX_SESSIONS {
            if let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            {
                all.remove(&oldest);
            }
        }
        all.insert(id.clone(), Session { who, created: now });
        id
    }

    /// The live session of this id.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut all = self.sessions.lock();
        let s = all.get(id)?;
        if s.created.elapsed() >= SESSION_TTL {
            all.remove(id);
            return None;
        }
        Some(s.clone())
    }

    /// The operator picked an app.
    pub fn pick(&self, id: &str, app_key: String) -> bool {
        match self.sessions.lock().get_mut(id) {
            Some(s) if matches!(s.who, Who::Operator(_)) => {
                s.who = Who::Operator(Some(app_key));
                true
            }
            _ => false,
        }
    }

    pub fn remove(&self, id: &str) {
        self.sessions.lock().remove(id);
    }

    /// Counts a sign-in attempt from `ip`; false when it is over the limit.
    pub fn attempt(&self, ip: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut all = self.attempts.lock();
        if all.len() >= MAX_TRACKED && !all.contains_key(&ip) {
            all.retain(|_, (_, since)| now.duration_since(*since) < ATTEMPT_WINDOW);
        }
        let key = if all.len() >= MAX_TRACKED && !all.contains_key(&ip) {
            None
        } else {
            ip
        };
        let entry = all.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= ATTEMPT_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
        entry.0 <= MAX_ATTEMPTS
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions.lock().len()
    }
}
