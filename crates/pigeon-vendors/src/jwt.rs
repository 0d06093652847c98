//! ES256 JSON Web Tokens (RFC 7515/7518), as APNs token auth and VAPID use them: written by
//! hand because they are a few lines over `p256`, and the general JWT crates bring a crypto
//! backend of their own.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::DecodePrivateKey;
use serde_json::Value;

/// Why a key or token was not taken.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    #[error("not a PKCS#8 P-256 private key in PEM: {0}")]
    Key(String),
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("bad signature")]
    Signature,
}

/// A P-256 key that signs tokens.
#[derive(Clone)]
pub struct Es256Signer {
    key: SigningKey,
}

impl Es256Signer {
    /// From a PKCS#8 PEM private key (an APNs `.p8` file).
    pub fn from_pkcs8_pem(pem: &str) -> Result<Es256Signer, JwtError> {
        let key = SigningKey::from_pkcs8_pem(pem).map_err(|e| JwtError::Key(e.to_string()))?;
        Ok(Es256Signer { key })
    }

    /// From a P-256 secret key (a VAPID key).
    pub fn from_secret(secret: &p256::SecretKey) -> Es256Signer {
        Es256Signer {
            key: SigningKey::from(secret),
        }
    }

    /// `header.claims.signature`, each base64url.
    pub fn sign(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = self.key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        *self.key.verifying_key()
    }
}

/// The header and claims of an ES256 token whose signature `key` made.
pub fn verify(token: &str, key: &VerifyingKey) -> Result<(Value, Value), JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed("not three parts"));
    };
    let sig = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| JwtError::Malformed("signature is not base64url"))?;
    let sig = Signature::from_slice(&sig).map_err(|_| JwtError::Signature)?;
    key.verify(format!("{h}.{c}").as_bytes(), &sig)
        .map_err(|_| JwtError::Signature)?;
    let part = |p: &str| -> Result<Value, JwtError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(p)
            .map_err(|_| JwtError::Malformed("part is not base64url"))?;
        serde_json::from_slice(&bytes).map_err(|_| JwtError::Malformed("part is not JSON"))
    };
    Ok((part(h)?, part(c)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::pkcs8::EncodePrivateKey;
    use serde_json::json;

    #[test]
    fn a_signed_token_verifies_and_a_changed_one_does_not() {
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let pem = secret.to_pkcs8_pem(Default::default()).unwrap();
        let signer = Es256Signer::from_pkcs8_pem(&pem).unwrap();
        let token = signer.sign(
            &json!({"alg": "ES256", "kid": "K1"}),
            &json!({"iss": "T", "iat": 1}),
        );
        let (h, c) = verify(&token, &signer.verifying_key()).unwrap();
        assert_eq!(
            (h["kid"].as_str(), c["iss"].as_str()),
            (Some("K1"), Some("T"))
        );
        let forged = token.replacen('.', ".e30", 1);
        assert!(verify(&forged, &signer.verifying_key()).is_err());
        assert!(Es256Signer::from_pkcs8_pem(
            "-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----"
        )
        .is_err());
    }
}
