//! `X-Pigeon-Signature`: `v1` is hex(HMAC-SHA256(secret, "<t>.<body>")) (callbacks.md §2).

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The `v1` signature of `body` sent at unix time `t`.
pub fn signature(secret: &str, t: u64, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        // HMAC takes keys of any length; this cannot happen.
        return String::new();
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_hmac_sha256_of_time_dot_body() {
        // Computed independently: Python's hmac.new(b"Jefe", b'1700000000.{"Events":[]}', sha256).
        assert_eq!(
            signature("Jefe", 1_700_000_000, r#"{"Events":[]}"#),
            "8ba5e1e654c96edcfee83539dd3df4a675095293c34e6062b5f3ed0609f15ce5"
        );
    }
}
