//! An APNs provider-API client: HTTP/2 over TLS, token auth (an ES256 JWT signed with the
//! app's `.p8` key, made again before it is an hour old and at once when APNs says it
//! expired), sandbox or production, one pooled connection multiplexing every request.

use crate::jwt::{Es256Signer, JwtError};
use crate::Outcome;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub const PRODUCTION: &str = "https://api.push.apple.com";
pub const SANDBOX: &str = "https://api.sandbox.push.apple.com";
/// How long a provider token is used: APNs refuses tokens older than an hour and wants them
/// no more often than every 20 minutes.
const TOKEN_LIFETIME: Duration = Duration::from_secs(50 * 60);
/// Longest APNs may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest payload APNs takes for a notification.
pub const MAX_PAYLOAD: usize = 4096;

/// How a provider proves itself to APNs.
#[derive(Clone, Debug)]
pub enum ApnsAuth {
    /// Token-based: a `.p8` key (PKCS#8 PEM) signs a provider token (ES256 JWT) made
    /// again before an hour is up.
    Token {
        key_id: String,
        team_id: String,
        private_key_pem: String,
    },
    /// Certificate-based: the app's TLS client certificate and its private key (PEM), shown
    /// on every connection; no provider token.
    Certificate {
        certificate_pem: String,
        private_key_pem: String,
    },
}

/// What an APNs client needs: the app's credentials and topic, and where to send.
#[derive(Clone, Debug)]
pub struct ApnsConfig {
    pub auth: ApnsAuth,
    /// The app's bundle id (`apns-topic`).
    pub topic: String,
    /// Production or sandbox, when `base_url` is not given (a notification may still ask
    /// for the sandbox: [`Notification::sandbox`]).
    pub production: bool,
    /// Where to send instead of Apple (a local fake).
    pub base_url: Option<String>,
    /// Whether names may resolve to private addresses (`vendors_allow_private_networks`).
    pub allow_private_networks: bool,
    /// A root certificate (PEM) to trust besides the public ones: a fake's test CA.
    pub extra_root_pem: Option<String>,
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ApnsError {
    #[error("APNs key: {0}")]
    Key(#[from] JwtError),
    #[error("APNs root certificate: {0}")]
    Root(String),
    #[error("APNs client certificate: {0}")]
    Identity(String),
    #[error("APNs HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// One notification as APNs takes it.
#[derive(Clone, Debug, Default)]
pub struct Notification {
    /// The JSON payload: `aps` and custom keys.
    pub payload: Value,
    /// `apns-push-type`: `alert`, `background`, ...
    pub push_type: String,
    /// `apns-priority`: 10 at once, 5 power-considerate.
    pub priority: u8,
    /// `apns-expiration`: unix seconds until which APNs keeps trying (0: once).
    pub expiration: Option<u64>,
    /// `apns-collapse-id` (≤ 64 bytes).
    pub collapse_id: Option<String>,
    /// `apns-id`: a UUID of the caller's, echoed back.
    pub id: Option<String>,
    /// To Apple's sandbox (development builds) whatever the client's default.
    pub sandbox: bool,
}

impl Notification {
    /// An alert with a title, a body, a badge number and custom keys beside `aps`.
    pub fn alert(
        title: Option<&str>,
        body: &str,
        badge: Option<u32>,
        extras: &Value,
    ) -> Notification {
        let mut aps = json!({"alert": {"body": body}, "sound": "default"});
        if let Some(t) = title {
            aps["alert"]["title"] = json!(t);
        }
        if let Some(b) = badge {
            aps["badge"] = json!(b);
        }
        let mut payload = json!({ "aps": aps });
        if let Some(extras) = extras.as_object() {
            for (k, v) in extras {
                if k != "aps" {
                    payload[k] = v.clone();
                }
            }
        }
        Notification {
            payload,
            push_type: "alert".into(),
            priority: 10,
            ..Default::default()
        }
    }
}

/// A client of one app's APNs account.
pub struct ApnsClient {
    http: reqwest::Client,
    base: String,
    /// Where a notification for the sandbox goes.
    sandbox_base: String,
    /// The provider token's signer, key id and team id (token-based auth).
    signer: Option<(Es256Signer, String, String)>,
    topic: String,
    /// The provider token and when it was made.
    token: Mutex<Option<(String, Instant)>>,
}

impl ApnsClient {
    pub fn new(config: ApnsConfig) -> Result<ApnsClient, ApnsError> {
        let mut http = reqwest::Client::builder()
            .timeout(ANSWER_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(600))
            .http2_adaptive_window(true)
            // APNs speaks HTTP/2 only; known up front, the pool opens one connection for
            // concurrent requests instead of one each while the first is still connecting.
            .http2_prior_knowledge()
            .redirect(reqwest::redirect::Policy::none());
        let policy = pigeon_core::net::AddressPolicy::vendors(config.allow_private_networks);
        http = crate::public_only(http, policy);
        if let Some(pem) = &config.extra_root_pem {
            let root = reqwest::Certificate::from_pem(pem.as_bytes())
                .map_err(|e| ApnsError::Root(e.to_string()))?;
            http = http.add_root_certificate(root);
        }
        let signer = match &config.auth {
            ApnsAuth::Token {
                key_id,
                team_id,
                private_key_pem,
            } => Some((
                Es256Signer::from_pkcs8_pem(private_key_pem)?,
                key_id.clone(),
                team_id.clone(),
            )),
            ApnsAuth::Certificate {
                certificate_pem,
                private_key_pem,
            } => {
                let pem = format!("{certificate_pem}\n{private_key_pem}");
                let identity = reqwest::Identity::from_pem(pem.as_bytes())
                    .map_err(|e| ApnsError::Identity(e.to_string()))?;
                http = http.identity(identity);
                None
            }
        };
        let base = config.base_url.clone().unwrap_or_else(|| {
            if config.production {
                PRODUCTION
            } else {
                SANDBOX
            }
            .to_string()
        });
        Ok(ApnsClient {
            http: http.build()?,
            sandbox_base: config
                .base_url
                .as_deref()
                .unwrap_or(SANDBOX)
                .trim_end_matches('/')
                .to_string(),
            base: base.trim_end_matches('/').to_string(),
            signer,
            topic: config.topic,
            token: Mutex::new(None),
        })
    }

    /// The provider token: the cached one, or a new one if it is old or `renew`; none with
    /// certificate-based auth.
    fn provider_token(&self, renew: bool) -> Option<String> {
        let (signer, key_id, team_id) = self.signer.as_ref()?;
        let mut cached = self.token.lock();
        if let Some((token, made)) = cached.as_ref() {
            if !renew && made.elapsed() < TOKEN_LIFETIME {
                return Some(token.clone());
            }
        }
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let token = signer.sign(
            &json!({"alg": "ES256", "kid": key_id}),
            &json!({"iss": team_id, "iat": iat}),
        );
        *cached = Some((token.clone(), Instant::now()));
        Some(token)
    }

    /// Sends one notification to one device token. A token APNs calls expired is made
    /// again and the notification sent once more.
    pub async fn send(&self, device_token: &str, n: &Notification) -> Outcome {
        match self.send_once(device_token, n, false).await {
            (_, Some(reason)) if reason == "ExpiredProviderToken" => {
                self.send_once(device_token, n, true).await.0
            }
            (outcome, _) => outcome,
        }
    }

    /// One request; with the APNs reason of a 403, so the caller can renew the token.
    async fn send_once(
        &self,
        device_token: &str,
        n: &Notification,
        renew: bool,
    ) -> (Outcome, Option<String>) {
        let body = n.payload.to_string();
        if body.len() > MAX_PAYLOAD {
            let reason = format!(
                "PayloadTooLarge: {} bytes, at most {MAX_PAYLOAD}",
                body.len()
            );
            return (
                Outcome::Rejected {
                    status: 413,
                    reason,
                },
                None,
            );
        }
        let mut req = self
            .http
            .post(format!(
                "{}/3/device/{device_token}",
                if n.sandbox {
                    &self.sandbox_base
                } else {
                    &self.base
                }
            ))
            .header("apns-topic", &self.topic)
            .header("apns-push-type", &n.push_type)
            .header("apns-priority", n.priority.to_string())
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = self.provider_token(renew) {
            req = req.header("authorization", format!("bearer {token}"));
        }
        if let Some(e) = n.expiration {
            req = req.header("apns-expiration", e.to_string());
        }
        if let Some(c) = &n.collapse_id {
            req = req.header("apns-collapse-id", c);
        }
        if let Some(id) = &n.id {
            req = req.header("apns-id", id);
        }
        let answer = match req.send().await {
            Ok(a) => a,
            Err(e) => {
                let reason = format!("no answer: {e}");
                return (
                    Outcome::Retry {
                        after: None,
                        reason,
                    },
                    None,
                );
            }
        };
        let status = answer.status().as_u16();
        let id = answer
            .headers()
            .get("apns-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let retry_after = crate::retry_after(answer.headers());
        if status == 200 {
            return (Outcome::Sent { id }, None);
        }
        let text = answer.text().await.unwrap_or_default();
        let reason = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get("reason").and_then(Value::as_str).map(String::from))
            .unwrap_or_else(|| text.chars().take(200).collect());
        let outcome = match (status, reason.as_str()) {
            (410, _) | (400, "BadDeviceToken") | (400, "DeviceTokenNotForTopic") => {
                Outcome::DeadToken {
                    reason: reason.clone(),
                }
            }
            (429, _) | (500, _) | (503, _) => Outcome::Retry {
                after: retry_after,
                reason: reason.clone(),
            },
            _ => Outcome::Rejected {
                status,
                reason: reason.clone(),
            },
        };
        (outcome, (status == 403).then_some(reason))
    }
}
