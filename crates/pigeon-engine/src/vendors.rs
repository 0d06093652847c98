//! Vendor credentials of an app (APNs, FCM, Huawei, ...) and its Web Push VAPID key pair:
//! what each vendor needs, checked before it is stored, and shown only masked — a secret is
//! never logged or handed back in full. The free functions work on any `Storage` (the
//! command line uses them beside a running server); the doors use the engine's methods.

use crate::app::AppState;
use crate::{now_ms, Engine, EngineError};
use base64::Engine as _;
use pigeon_store::{Storage, StoreError};
use serde_json::{json, Map, Value};

/// The vendors Pigeon keeps credentials for, and the fields each needs (one of the lists, for
/// vendors with more than one way to authenticate).
const VENDORS: &[(&str, &[&[&str]])] = &[
    (
        "apns",
        &[
            &["key_id", "team_id", "private_key", "topic"],
            &["certificate", "private_key", "topic"],
        ],
    ),
    (
        "fcm",
        &[&["project_id", "client_email", "private_key", "token_uri"]],
    ),
    ("huawei", &[&["app_id", "client_id", "client_secret"]]),
    ("honor", &[&["app_id", "client_id", "client_secret"]]),
    ("xiaomi", &[&["app_secret", "package_name"]]),
    ("oppo", &[&["app_key", "master_secret"]]),
    ("vivo", &[&["app_id", "app_key", "app_secret"]]),
    ("meizu", &[&["app_id", "app_secret"]]),
];

/// Fields that are secret: shown as their first four characters and their length.
const SECRET_FIELDS: &[&str] = &[
    "private_key",
    "certificate",
    "client_secret",
    "app_secret",
    "master_secret",
    "auth_token",
];

/// Largest credentials object accepted.
pub const MAX_CREDENTIALS_BYTES: usize = 16 * 1024;

/// The names of the vendors Pigeon keeps credentials for.
pub fn vendor_names() -> Vec<&'static str> {
    VENDORS.iter().map(|(v, _)| *v).collect()
}

/// Checks one vendor's credentials: an object of strings with every field of one of the
/// vendor's ways to authenticate, nothing unknown.
pub fn check_credentials(vendor: &str, credentials: &Value) -> Result<(), String> {
    let Some((_, ways)) = VENDORS.iter().find(|(v, _)| *v == vendor) else {
        return Err(format!(
            "unknown vendor {vendor:?}: one of {}",
            vendor_names().join(", ")
        ));
    };
    let Some(fields) = credentials.as_object() else {
        return Err(format!("{vendor} credentials must be a JSON object"));
    };
    if credentials.to_string().len() > MAX_CREDENTIALS_BYTES {
        return Err(format!(
            "{vendor} credentials are larger than {MAX_CREDENTIALS_BYTES} bytes"
        ));
    }
    let known: Vec<&str> = ways.iter().flat_map(|w| w.iter().copied()).collect();
    for (k, v) in fields {
        // Where to send instead of the vendor, and a root certificate to trust: for a
        // local fake of the vendor's service. How fast and how many at once: the app's
        // quota with the vendor.
        let extra_ok = matches!(
            k.as_str(),
            "production" | "base_url" | "auth_url" | "ca_pem" | "rate_per_minute" | "concurrency"
        );
        if !known.contains(&k.as_str()) && !extra_ok && k != "type" {
            return Err(format!("{vendor} credentials: unknown field {k:?}"));
        }
        let is_text = v.as_str().is_some_and(|s| !s.trim().is_empty());
        if k == "rate_per_minute" || k == "concurrency" {
            let max = if k == "concurrency" {
                1024
            } else {
                100_000_000
            };
            if !v.as_u64().is_some_and(|n| (1..=max).contains(&n)) {
                return Err(format!(
                    "{vendor} credentials: {k} must be a whole number from 1 to {max}"
                ));
            }
        } else if k == "production" {
            if !v.is_boolean() {
                return Err(format!(
                    "{vendor} credentials: production must be true or false"
                ));
            }
        } else if !is_text {
            return Err(format!(
                "{vendor} credentials: {k} must be a non-empty string"
            ));
        }
    }
    let complete = ways
        .iter()
        .any(|way| way.iter().all(|f| fields.contains_key(*f)));
    if !complete {
        let options: Vec<String> = ways.iter().map(|w| w.join(", ")).collect();
        return Err(format!(
            "{vendor} credentials need {}",
            options.join("; or ")
        ));
    }
    Ok(())
}

/// Credentials as they may be shown: secret fields as their first four characters and
/// their length.
pub fn masked(credentials: &Value) -> Value {
    let Some(fields) = credentials.as_object() else {
        return json!({});
    };
    let shown: Map<String, Value> = fields
        .iter()
        .map(|(k, v)| {
            let v = match (SECRET_FIELDS.contains(&k.as_str()), v.as_str()) {
                (true, Some(s)) => json!(format!(
                    "{}… ({} characters)",
                    s.chars().take(4).collect::<String>(),
                    s.chars().count()
                )),
                _ => v.clone(),
            };
            (k.clone(), v)
        })
        .collect();
    Value::Object(shown)
}

/// A new Web Push (VAPID, RFC 8292) key pair: (private scalar, public key as an uncompressed
/// P-256 point), both base64url without padding.
pub fn new_vapid_keys() -> (String, String) {
    let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
    let public = secret.public_key();
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(&public, false);
    (b64.encode(secret.to_bytes()), b64.encode(point.as_bytes()))
}

/// The app's VAPID public key, made (and stored) the first time it is asked for.
pub async fn vapid_public_key(store: &dyn Storage, app_key: &str) -> Result<String, StoreError> {
    if let Some((_, public)) = store.vapid_keys(app_key).await? {
        return Ok(public);
    }
    let (private, public) = new_vapid_keys();
    store.ensure_vapid_keys(app_key, private, public).await
}

/// What an app's push channels look like from outside: its VAPID public key and its vendor
/// credentials, masked.
pub async fn channels_view(store: &dyn Storage, app_key: &str) -> Result<Value, StoreError> {
    let vendors: Vec<Value> = store
        .vendor_credentials(app_key)
        .await?
        .into_iter()
        .map(|(vendor, body, updated_ms)| {
            let credentials: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            json!({"vendor": vendor, "updated_ms": updated_ms, "credentials": masked(&credentials)})
        })
        .collect();
    Ok(json!({
        "webpush_vapid_public_key": vapid_public_key(store, app_key).await?,
        "vendors": vendors,
    }))
}

/// Fields of credentials that are URLs Pigeon posts to (with the app's secrets, and their
/// answers logged): a way into the server's own network unless checked.
pub const URL_FIELDS: &[&str] = &["base_url", "auth_url", "token_uri"];

/// Checks the URLs in credentials against the address policy: their hosts as written and,
/// when `resolve`, what their names resolve to now. The vendor clients refuse private
/// addresses again at connect time, so a name that changes later is caught there.
pub async fn check_urls(
    credentials: &Value,
    policy: &pigeon_core::net::AddressPolicy,
    resolve: bool,
) -> Result<(), String> {
    for field in URL_FIELDS {
        let Some(url) = credentials.get(*field).and_then(Value::as_str) else {
            continue;
        };
        if resolve {
            pigeon_core::net::check_url(url, field, policy).await?;
        } else {
            let parsed =
                url::Url::parse(url).map_err(|e| format!("{field}: {url:?} is not a URL: {e}"))?;
            pigeon_core::net::check_literal(&parsed, field, policy)?;
        }
    }
    Ok(())
}

/// Checks and stores an app's credentials for one vendor; returns them as shown (masked).
/// `policy` says whether their URLs may be on private networks.
pub async fn set_vendor_credentials(
    store: &dyn Storage,
    app_key: &str,
    vendor: &str,
    credentials: &Value,
    policy: &pigeon_core::net::AddressPolicy,
) -> Result<Value, EngineError> {
    check_credentials(vendor, credentials).map_err(EngineError::Invalid)?;
    check_urls(credentials, policy, true)
        .await
        .map_err(EngineError::Invalid)?;
    store
        .set_vendor_credentials(app_key, vendor, credentials.to_string(), now_ms())
        .await?;
    Ok(json!({"vendor": vendor, "credentials": masked(credentials)}))
}

impl Engine {
    /// An app's push channels as shown: its VAPID public key (made the first time) and its
    /// vendor credentials, masked.
    pub async fn vendor_channels(&self, app: &AppState) -> Result<Value, EngineError> {
        Ok(channels_view(self.store.as_ref(), &app.app_key).await?)
    }

    /// Checks and stores an app's credentials for one vendor, their URLs under the
    /// operator's address policy for vendors; returns them as shown (masked).
    pub async fn set_vendor_credentials(
        &self,
        app: &AppState,
        vendor: &str,
        credentials: &Value,
    ) -> Result<Value, EngineError> {
        let policy = self.private_networks().vendors_policy();
        set_vendor_credentials(
            self.store.as_ref(),
            &app.app_key,
            vendor,
            credentials,
            &policy,
        )
        .await
    }

    /// Removes an app's credentials for a vendor; false if it had none.
    pub async fn remove_vendor_credentials(
        &self,
        app: &AppState,
        vendor: &str,
    ) -> Result<bool, EngineError> {
        Ok(self
            .store
            .remove_vendor_credentials(&app.app_key, vendor)
            .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_checked_per_vendor() {
        let apns_token =
            json!({"key_id": "K", "team_id": "T", "private_key": "-----BEGIN", "topic": "a.b"});
        assert!(check_credentials("apns", &apns_token).is_ok());
        let apns_cert =
            json!({"certificate": "C", "private_key": "P", "topic": "a.b", "production": false});
        assert!(check_credentials("apns", &apns_cert).is_ok());
        let err = check_credentials("apns", &json!({"key_id": "K"})).unwrap_err();
        assert!(
            err.contains("need key_id, team_id, private_key, topic; or certificate"),
            "{err}"
        );
        assert!(check_credentials("pager", &json!({}))
            .unwrap_err()
            .contains("unknown vendor"));
        assert!(check_credentials(
            "xiaomi",
            &json!({"app_secret": "s", "package_name": "p", "x": "1"})
        )
        .unwrap_err()
        .contains("unknown field \"x\""));
        assert!(
            check_credentials("xiaomi", &json!({"app_secret": "", "package_name": "p"}))
                .unwrap_err()
                .contains("non-empty string")
        );
        assert!(check_credentials("xiaomi", &json!("s")).is_err());
        let limited = json!({"app_secret": "s", "package_name": "p",
            "rate_per_minute": 6000, "concurrency": 8});
        assert!(check_credentials("xiaomi", &limited).is_ok());
        for bad in [json!(0), json!(-1), json!("10"), json!(1.5)] {
            let c = json!({"app_secret": "s", "package_name": "p", "concurrency": bad});
            assert!(check_credentials("xiaomi", &c)
                .unwrap_err()
                .contains("concurrency must be a whole number from 1 to 1024"));
        }
    }

    #[test]
    fn secrets_are_shown_masked() {
        let shown = masked(&json!({"app_id": "123", "client_secret": "abcdefgh"}));
        assert_eq!(
            shown,
            json!({"app_id": "123", "client_secret": "abcd… (8 characters)"})
        );
    }

    #[test]
    fn a_vapid_public_key_is_an_uncompressed_p256_point() {
        let (private, public) = new_vapid_keys();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let point = b64.decode(public).unwrap();
        assert_eq!((point.len(), point[0]), (65, 4));
        assert_eq!(b64.decode(private).unwrap().len(), 32);
        let key = p256::PublicKey::from_sec1_bytes(&point);
        assert!(key.is_ok());
    }
}
