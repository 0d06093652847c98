//! Identifiers, secrets and the clock.

use rand::distributions::Alphanumeric;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
/// Microseconds since the epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A random string of `len` characters from [A-Za-z0-9].
pub fn random_alnum(len: usize) -> String {
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

/// A new registration id: 20 characters of [0-9a-z].
pub fn new_registration_id() -> String {
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    (0..20)
        .map(|_| DIGITS[rng.gen_range(0..DIGITS.len())] as char)
        .collect()
}

/// A random (version 4) UUID in its usual text form.
pub fn uuid_v4() -> String {
    uuid_text(rand::thread_rng().gen(), 4)
}

/// 16 bytes as a UUID of `version` (its version and variant bits set) in its usual text form.
pub fn uuid_text(mut b: [u8; 16], version: u8) -> String {
    b[6] = (b[6] & 0x0f) | (version << 4);
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// What is stored of a device secret.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Compares without stopping at the first difference, so timing tells nothing.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Whether `s` is a well-formed app_key or master secret: 24 characters of [A-Za-z0-9].
pub fn is_app_credential(s: &str) -> bool {
    s.len() == 24 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Device ordinals reserved in the store at once.
pub(crate) const ORDINAL_BLOCK: u32 = 256;
/// msg_ids reserved in the store at once; another block is reserved when half is used.
const MSG_ID_BLOCK: u64 = 1 << 20;

/// `[next, end)`.
type IdRange = (u64, u64);

/// msg_ids reserved in the store (so no two processes on one store give the same), handed
/// out without waiting: the next block is reserved while half of this one is left.
pub(crate) struct MsgIds {
    /// `[next, end)` of the current block, and the block reserved after it, if any.
    blocks: parking_lot::Mutex<(IdRange, Option<IdRange>)>,
    refilling: tokio::sync::Mutex<()>,
}

impl MsgIds {
    pub(crate) async fn reserve(
        store: &dyn pigeon_store::Storage,
    ) -> Result<MsgIds, crate::EngineError> {
        let first = store.reserve_msg_ids(MSG_ID_BLOCK, now_ms() * 1000).await?;
        Ok(MsgIds {
            blocks: parking_lot::Mutex::new(((first, first + MSG_ID_BLOCK), None)),
            refilling: tokio::sync::Mutex::new(()),
        })
    }

    pub(crate) async fn next(
        &self,
        store: &dyn pigeon_store::Storage,
    ) -> Result<u64, crate::EngineError> {
        loop {
            let (id, low) = {
                let mut b = self.blocks.lock();
                if b.0 .0 >= b.0 .1 {
                    if let Some(spare) = b.1.take() {
                        b.0 = spare;
                    }
                }
                let id = (b.0 .0 < b.0 .1).then(|| {
                    b.0 .0 += 1;
                    b.0 .0 - 1
                });
                (id, b.1.is_none() && b.0 .1 - b.0 .0 < MSG_ID_BLOCK / 2)
            };
            if low || id.is_none() {
                // One reservation at a time; whoever comes second finds it made.
                let _one = self.refilling.lock().await;
                let needed = {
                    let b = self.blocks.lock();
                    b.1.is_none() && b.0 .1 - b.0 .0 < MSG_ID_BLOCK / 2
                };
                if needed {
                    let first = store.reserve_msg_ids(MSG_ID_BLOCK, 0).await?;
                    self.blocks.lock().1 = Some((first, first + MSG_ID_BLOCK));
                }
            }
            if let Some(id) = id {
                return Ok(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_the_documented_shape() {
        let k = random_alnum(24);
        assert!(is_app_credential(&k));
        let r = new_registration_id();
        assert_eq!(r.len(), 20);
        assert!(r.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(new_registration_id(), r);
        assert!(same_secret(&hash_secret("a"), &hash_secret("a")));
        assert!(!same_secret(&hash_secret("a"), &hash_secret("b")));
        assert!(!same_secret(b"short", b"longer"));
        assert!(!is_app_credential("short"));
    }
}
