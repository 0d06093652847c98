//! Web Push: the message encrypted for the browser (RFC 8291, `aes128gcm` of RFC 8188), the
//! application server identified by VAPID (RFC 8292), and the request of RFC 8030. Written on
//! RustCrypto (`p256`, `hkdf`, `aes-gcm`): the Web Push crates bring OpenSSL and old HTTP types.

use crate::jwt::Es256Signer;
use crate::Outcome;
use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes128Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hkdf::Hkdf;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::{PublicKey, SecretKey};
use serde_json::json;
use sha2::Sha256;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The record size written in the header: one record holds the whole message.
const RECORD_SIZE: u32 = 4096;
/// Largest plaintext one record can carry (4096 − header 86 − delimiter 1 − tag 16).
pub const MAX_PLAINTEXT: usize = 3993;
/// How long a VAPID token is good for.
const VAPID_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// Why a message could not be made or read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebPushError {
    #[error("subscription: {0}")]
    Subscription(&'static str),
    #[error("message of {0} bytes; at most {MAX_PLAINTEXT} fit")]
    TooLarge(usize),
    #[error("VAPID key: {0}")]
    Vapid(String),
    #[error("cannot decrypt: {0}")]
    Decrypt(&'static str),
}

/// A browser's subscription: where to post and the keys to encrypt for.
#[derive(Clone, Debug)]
pub struct Subscription {
    pub endpoint: String,
    /// `keys.p256dh`: base64url of the browser's uncompressed P-256 public key.
    pub p256dh: String,
    /// `keys.auth`: base64url of its 16-byte authentication secret.
    pub auth: String,
}

fn decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// HKDF-SHA256 of `len` bytes.
fn hkdf(salt: &[u8], ikm: &[u8], info: &[u8], out: &mut [u8]) {
    // The lengths used here (12, 16, 32) are within HKDF's limit, so expand cannot fail.
    let _ = Hkdf::<Sha256>::new(Some(salt), ikm).expand(info, out);
}

/// The content key and nonce of RFC 8291 §3.3–3.4 for a message between `ua_public` (the
/// browser) and `as_public` (this server's one-time key).
fn content_key(
    shared: &[u8],
    auth: &[u8],
    ua_public: &[u8],
    as_public: &[u8],
    salt: &[u8],
) -> ([u8; 16], [u8; 12]) {
    let mut info = b"WebPush: info\0".to_vec();
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    hkdf(auth, shared, &info, &mut ikm);
    let (mut cek, mut nonce) = ([0u8; 16], [0u8; 12]);
    hkdf(salt, &ikm, b"Content-Encoding: aes128gcm\0", &mut cek);
    hkdf(salt, &ikm, b"Content-Encoding: nonce\0", &mut nonce);
    (cek, nonce)
}

/// Encrypts `plaintext` for a subscription with a given one-time key and salt (RFC 8291):
/// the body is `salt ‖ record size ‖ key length ‖ one-time public key ‖ ciphertext`.
pub fn encrypt_with(
    plaintext: &[u8],
    sub: &Subscription,
    as_secret: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, WebPushError> {
    if plaintext.len() > MAX_PLAINTEXT {
        return Err(WebPushError::TooLarge(plaintext.len()));
    }
    let ua_public =
        decode(&sub.p256dh).ok_or(WebPushError::Subscription("p256dh is not base64url"))?;
    let auth = decode(&sub.auth).ok_or(WebPushError::Subscription("auth is not base64url"))?;
    if auth.len() != 16 {
        return Err(WebPushError::Subscription("auth is not 16 bytes"));
    }
    let ua_key = PublicKey::from_sec1_bytes(&ua_public)
        .map_err(|_| WebPushError::Subscription("p256dh is not a P-256 point"))?;
    let as_public = as_secret.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua_key.as_affine());
    let (cek, nonce) = content_key(
        shared.raw_secret_bytes(),
        &auth,
        &ua_public,
        as_public.as_bytes(),
        &salt,
    );
    let mut record = plaintext.to_vec();
    record.push(0x02); // the last (and only) record
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| WebPushError::Decrypt("key"))?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .map_err(|_| WebPushError::Decrypt("seal"))?;
    let mut body = Vec::with_capacity(86 + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(as_public.as_bytes().len() as u8);
    body.extend_from_slice(as_public.as_bytes());
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// Encrypts `plaintext` for a subscription with a fresh one-time key and salt.
pub fn encrypt(plaintext: &[u8], sub: &Subscription) -> Result<Vec<u8>, WebPushError> {
    let as_secret = SecretKey::random(&mut rand::rngs::OsRng);
    encrypt_with(plaintext, sub, &as_secret, rand::random())
}

/// What a browser does with a message: the plaintext, given its private key and auth secret.
pub fn decrypt(body: &[u8], ua_secret: &SecretKey, auth: &[u8]) -> Result<Vec<u8>, WebPushError> {
    if body.len() < 21 {
        return Err(WebPushError::Decrypt("shorter than the header"));
    }
    let (salt, idlen) = (&body[..16], body[20] as usize);
    let rest = &body[21..];
    if rest.len() < idlen {
        return Err(WebPushError::Decrypt("shorter than its key"));
    }
    let (as_public, sealed) = rest.split_at(idlen);
    let as_key =
        PublicKey::from_sec1_bytes(as_public).map_err(|_| WebPushError::Decrypt("key id"))?;
    let ua_public = ua_secret.public_key().to_encoded_point(false);
    let shared = p256::ecdh::diffie_hellman(ua_secret.to_nonzero_scalar(), as_key.as_affine());
    let (cek, nonce) = content_key(
        shared.raw_secret_bytes(),
        auth,
        ua_public.as_bytes(),
        as_public,
        salt,
    );
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| WebPushError::Decrypt("key"))?;
    let mut record = cipher
        .decrypt(Nonce::from_slice(&nonce), sealed)
        .map_err(|_| WebPushError::Decrypt("authentication failed"))?;
    while record.last() == Some(&0) {
        record.pop();
    }
    match record.pop() {
        Some(0x02) => Ok(record),
        _ => Err(WebPushError::Decrypt("no last-record delimiter")),
    }
}

/// The `Authorization` header of RFC 8292 for a push to `endpoint`: a JWT for the
/// endpoint's origin signed with the app's VAPID key, and that key.
pub fn vapid_authorization(
    endpoint: &str,
    vapid_private: &str,
    vapid_public: &str,
    subject: &str,
) -> Result<String, WebPushError> {
    let url = reqwest::Url::parse(endpoint)
        .map_err(|_| WebPushError::Subscription("endpoint is not a URL"))?;
    let origin = url.origin().ascii_serialization();
    let scalar =
        decode(vapid_private).ok_or_else(|| WebPushError::Vapid("not base64url".into()))?;
    let secret = SecretKey::from_slice(&scalar).map_err(|e| WebPushError::Vapid(e.to_string()))?;
    let signer = Es256Signer::from_secret(&secret);
    let exp = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
        + VAPID_LIFETIME.as_secs();
    let jwt = signer.sign(
        &json!({"typ": "JWT", "alg": "ES256"}),
        &json!({"aud": origin, "exp": exp, "sub": subject}),
    );
    Ok(format!("vapid t={jwt}, k={vapid_public}"))
}

/// How a push service is asked to deliver.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// Seconds the push service keeps it for an offline browser.
    pub ttl: u64,
    /// `very-low`, `low`, `normal` or `high`.
    pub urgency: &'static str,
    /// Replaces a still-queued message with the same topic (≤ 32 base64url characters).
    pub topic: Option<String>,
}

/// A Web Push sender for one app (its VAPID key pair).
pub struct WebPushClient {
    http: reqwest::Client,
    vapid_private: String,
    vapid_public: String,
    subject: String,
}

impl WebPushClient {
    /// `allow_private_networks`: whether endpoint names may resolve to private addresses
    /// (`webpush_allow_private_networks`); the router checks each endpoint before sending,
    /// and this checks the addresses actually connected to.
    pub fn new(
        vapid_private: &str,
        vapid_public: &str,
        subject: &str,
        allow_private_networks: bool,
    ) -> Result<WebPushClient, WebPushError> {
        let builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none());
        let policy = pigeon_core::net::AddressPolicy::webpush(allow_private_networks);
        let http = crate::public_only(builder, policy)
            .build()
            .map_err(|e| WebPushError::Vapid(e.to_string()))?;
        Ok(WebPushClient {
            http,
            vapid_private: vapid_private.to_string(),
            vapid_public: vapid_public.to_string(),
            subject: subject.to_string(),
        })
    }

    /// Encrypts and posts one message to one subscription.
    pub async fn send(&self, sub: &Subscription, payload: &[u8], delivery: &Delivery) -> Outcome {
        let body = match encrypt(payload, sub) {
            Ok(b) => b,
            Err(WebPushError::Subscription(why)) => {
                return Outcome::DeadToken { reason: why.into() }
            }
            Err(e) => {
                return Outcome::Rejected {
                    status: 413,
                    reason: e.to_string(),
                }
            }
        };
        let auth = match vapid_authorization(
            &sub.endpoint,
            &self.vapid_private,
            &self.vapid_public,
            &self.subject,
        ) {
            Ok(a) => a,
            Err(WebPushError::Subscription(why)) => {
                return Outcome::DeadToken { reason: why.into() }
            }
            Err(e) => {
                return Outcome::Rejected {
                    status: 0,
                    reason: e.to_string(),
                }
            }
        };
        let mut req = self
            .http
            .post(&sub.endpoint)
            .header("TTL", delivery.ttl.to_string())
            .header("Urgency", delivery.urgency)
            .header("Content-Encoding", "aes128gcm")
            .header("Content-Type", "application/octet-stream")
            .header("Authorization", auth)
            .body(body);
        if let Some(topic) = &delivery.topic {
            req = req.header("Topic", topic);
        }
        let answer = match req.send().await {
            Ok(a) => a,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    reason: format!("no answer: {e}"),
                }
            }
        };
        let status = answer.status().as_u16();
        let header = |name: &str| {
            answer
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        let location = header("location").unwrap_or_default();
        let retry_after = crate::retry_after(answer.headers());
        let text: String = answer
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(200)
            .collect();
        let reason = format!("HTTP {status}: {text}");
        match status {
            200..=202 => Outcome::Sent { id: location },
            404 | 410 => Outcome::DeadToken { reason },
            429 | 500..=599 => Outcome::Retry {
                after: retry_after,
                reason,
            },
            _ => Outcome::Rejected { status, reason },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 Appendix A: its keys, salt and message, and the body it gives.
    const UA_PRIVATE: &str = "q1dXpw3UpT5VOmu_cf_v6ih07Aems3njxI-JWgLcM94";
    const UA_PUBLIC: &str =
        "BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4";
    const AS_PRIVATE: &str = "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw";
    const AUTH: &str = "BTBZMqHH6r4Tts7J_aSIgg";
    const SALT: &str = "DGv6ra1nlYgDCS1FRnbzlw";
    const PLAINTEXT: &str = "When I grow up, I want to be a watermelon";
    const BODY: &str = "DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN";

    fn subscription() -> Subscription {
        Subscription {
            endpoint: "https://push.example.net/p/abc".into(),
            p256dh: UA_PUBLIC.into(),
            auth: AUTH.into(),
        }
    }

    fn key(b64: &str) -> SecretKey {
        SecretKey::from_slice(&decode(b64).unwrap()).unwrap()
    }

    #[test]
    fn encryption_gives_the_body_of_rfc_8291_appendix_a() {
        let mut salt = [0u8; 16];
        salt.copy_from_slice(&decode(SALT).unwrap());
        let body = encrypt_with(
            PLAINTEXT.as_bytes(),
            &subscription(),
            &key(AS_PRIVATE),
            salt,
        )
        .unwrap();
        assert_eq!(URL_SAFE_NO_PAD.encode(&body), BODY);
        let read = decrypt(
            &decode(BODY).unwrap(),
            &key(UA_PRIVATE),
            &decode(AUTH).unwrap(),
        )
        .unwrap();
        assert_eq!(read, PLAINTEXT.as_bytes());
    }

    #[test]
    fn a_fresh_message_decrypts_and_a_changed_one_does_not() {
        let body = encrypt(b"{\"title\":\"hi\"}", &subscription()).unwrap();
        let (ua, auth) = (key(UA_PRIVATE), decode(AUTH).unwrap());
        assert_eq!(decrypt(&body, &ua, &auth).unwrap(), b"{\"title\":\"hi\"}");
        let mut changed = body.clone();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(
            decrypt(&changed, &ua, &auth),
            Err(WebPushError::Decrypt("authentication failed"))
        );
        assert_eq!(
            encrypt(&[b'x'; MAX_PLAINTEXT + 1], &subscription()),
            Err(WebPushError::TooLarge(MAX_PLAINTEXT + 1))
        );
        let mut bad = subscription();
        bad.auth = "AAAA".into();
        assert!(encrypt(b"x", &bad).is_err());
    }

    #[test]
    fn the_vapid_header_is_a_token_for_the_endpoint_origin() {
        let secret = SecretKey::random(&mut rand::rngs::OsRng);
        let public = URL_SAFE_NO_PAD.encode(secret.public_key().to_encoded_point(false).as_bytes());
        let private = URL_SAFE_NO_PAD.encode(secret.to_bytes());
        let header = vapid_authorization(
            "https://push.example.net:8443/p/abc",
            &private,
            &public,
            "mailto:ops@example.com",
        )
        .unwrap();
        let (token, k) = header
            .strip_prefix("vapid t=")
            .and_then(|r| r.split_once(", k="))
            .unwrap();
        assert_eq!(k, public);
        let key = p256::ecdsa::VerifyingKey::from(secret.public_key());
        let (_, claims) = crate::jwt::verify(token, &key).unwrap();
        assert_eq!(claims["aud"], "https://push.example.net:8443");
        assert_eq!(claims["sub"], "mailto:ops@example.com");
    }
}
