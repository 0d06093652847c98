//! Secrets at rest: vendor credentials and Web Push VAPID private keys are sealed with
//! AES-256-GCM before they are written, under a key kept outside the database — the
//! `PIGEON_SECRET_KEY` environment variable (32 bytes, base64) if set, else `secret.key`
//! beside the database, made on first use, readable by its owner only. A copy of the
//! database alone does not give them away. Values written before sealing existed are read
//! as they are and sealed when the store opens.

use crate::{StoreError, StoreResult};
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use std::path::Path;

/// What a sealed value starts with.
const PREFIX: &str = "sealed:v1:";
/// The key file's name, beside the database.
pub const KEY_FILE: &str = "secret.key";

/// The key secrets are sealed with.
#[derive(Clone)]
pub struct SealingKey(Aes256Gcm);

impl std::fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealingKey(…)")
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl SealingKey {
    /// The key from `PIGEON_SECRET_KEY`, else from `dir/secret.key` (made if missing).
    pub fn load_or_create(dir: &Path) -> StoreResult<SealingKey> {
        if let Ok(text) = std::env::var("PIGEON_SECRET_KEY") {
            return SealingKey::from_text(&text)
                .map_err(|e| StoreError::Corrupt(format!("PIGEON_SECRET_KEY: {e}")));
        }
        let path = dir.join(KEY_FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => SealingKey::from_text(&text)
                .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key: [u8; 32] = rand::random();
                match write_private(&path, &b64().encode(key)) {
                    Ok(()) => Ok(SealingKey(Aes256Gcm::new(&key.into()))),
                    // Another process (`pigeon app ...` beside `pigeon serve`) made it first.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(&path)?;
                        SealingKey::from_text(&text)
                            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The key from `PIGEON_SECRET_KEY`, if that is set (for stores that keep no files).
    pub fn from_env() -> Option<StoreResult<SealingKey>> {
        let text = std::env::var("PIGEON_SECRET_KEY").ok()?;
        Some(
            SealingKey::from_base64(&text)
                .map_err(|e| StoreError::Corrupt(format!("PIGEON_SECRET_KEY: {e}"))),
        )
    }

    /// A key from its text form: 32 bytes, base64 (surrounding white space ignored).
    pub fn from_base64(text: &str) -> Result<SealingKey, String> {
        SealingKey::from_text(text)
    }

    /// A new random key in its text form, for [`SealingKey::from_base64`] (the text is
    /// what is kept: the key itself cannot be read back out of a `SealingKey`).
    pub fn generate_base64() -> String {
        let key: [u8; 32] = rand::random();
        b64().encode(key)
    }

    fn from_text(text: &str) -> Result<SealingKey, String> {
        let bytes = b64()
            .decode(text.trim())
            .map_err(|e| format!("not base64: {e}"))?;
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{} bytes; a key is 32", b.len()))?;
        Ok(SealingKey(Aes256Gcm::new(&key.into())))
    }

    /// `plain`, sealed: the prefix, then base64 of a random nonce and the ciphertext.
    pub fn seal(&self, plain: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        // Encrypting into a Vec cannot fail for inputs this size.
        let sealed = self
            .0
            .encrypt(Nonce::from_slice(&nonce), plain.as_bytes())
            .unwrap_or_default();
        let mut bytes = nonce.to_vec();
        bytes.extend(sealed);
        format!("{PREFIX}{}", b64().encode(bytes))
    }

    /// A stored value in the clear: opened if sealed, as it is if written before sealing.
    pub fn open(&self, stored: &str) -> StoreResult<String> {
        let Some(text) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let refused = || {
            StoreError::Corrupt(format!(
                "a secret sealed with another key: restore {KEY_FILE} (or PIGEON_SECRET_KEY) or set it again"
            ))
        };
        let bytes = b64().decode(text).map_err(|_| refused())?;
        if bytes.len() < 12 {
            return Err(refused());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let plain = self
            .0
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| refused())?;
        String::from_utf8(plain).map_err(|_| refused())
    }

    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }
}

/// Writes a new file only its owner may read, whole or not at all: written under another
/// name, then linked to `path` (which fails if another process got there first).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    linked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_value_opens_with_its_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let key = SealingKey::load_or_create(dir.path()).unwrap();
        let sealed = key.seal(r#"{"client_secret":"s3cret"}"#);
        assert!(SealingKey::is_sealed(&sealed) && !sealed.contains("s3cret"));
        assert_ne!(
            sealed,
            key.seal(r#"{"client_secret":"s3cret"}"#),
            "a fresh nonce each time"
        );
        assert_eq!(key.open(&sealed).unwrap(), r#"{"client_secret":"s3cret"}"#);
        // The same key file gives the same key.
        let again = SealingKey::load_or_create(dir.path()).unwrap();
        assert_eq!(
            again.open(&sealed).unwrap(),
            r#"{"client_secret":"s3cret"}"#
        );
        // Another key does not open it; an older plain value reads as it is.
        let other = tempfile::tempdir().unwrap();
        let stranger = SealingKey::load_or_create(other.path()).unwrap();
        assert!(stranger.open(&sealed).is_err());
        assert_eq!(key.open("{}").unwrap(), "{}");
        // A key given as text opens what it sealed; bad text is refused.
        let text = SealingKey::generate_base64();
        let a = SealingKey::from_base64(&text).unwrap();
        let b = SealingKey::from_base64(&format!(" {text}\n")).unwrap();
        assert_eq!(b.open(&a.seal("x")).unwrap(), "x");
        assert!(SealingKey::from_base64("not base64!").is_err());
        assert!(SealingKey::from_base64("AAAA").is_err());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
