//! An FCM HTTP v1 client: the service account's RS256 JWT exchanged at its `token_uri` for an
//! OAuth access token (RFC 7523), cached until five minutes before it expires and fetched
//! again when FCM answers 401; one send per token.

use crate::Outcome;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rsa::pkcs1v15::SigningKey;
use rsa::pkcs8::DecodePrivateKey;
use rsa::signature::{SignatureEncoding, Signer};
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};

pub const PRODUCTION: &str = "https://fcm.googleapis.com";
pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// Largest message FCM takes.
pub const MAX_PAYLOAD: usize = 4096;

/// A service-account key file's fields that FCM needs, and where to send.
#[derive(Clone, Debug)]
pub struct FcmConfig {
    pub project_id: String,
    pub client_email: String,
    /// RSA, PKCS#8 PEM.
    pub private_key_pem: String,
    pub private_key_id: Option<String>,
    pub token_uri: String,
    /// Where to send instead of Google (a local fake).
    pub base_url: Option<String>,
    /// Whether names may resolve to private addresses (`vendors_allow_private_networks`).
    pub allow_private_networks: bool,
}

impl FcmConfig {
    /// From a service-account key file's JSON.
    pub fn from_service_account(v: &Value) -> Result<FcmConfig, FcmError> {
        let field = |k: &str| {
            v.get(k)
                .and_then(Value::as_str)
                .map(String::from)
                .ok_or_else(|| FcmError::Config(format!("the service account has no {k}")))
        };
        Ok(FcmConfig {
            project_id: field("project_id")?,
            client_email: field("client_email")?,
            private_key_pem: field("private_key")?,
            private_key_id: field("private_key_id").ok(),
            token_uri: field("token_uri")?,
            base_url: v.get("base_url").and_then(Value::as_str).map(String::from),
            // The safe default; the router sets the operator's choice.
            allow_private_networks: false,
        })
    }
}

/// Why a client could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FcmError {
    #[error("FCM service account: {0}")]
    Config(String),
    #[error("FCM HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// A client of one Firebase project.
pub struct FcmClient {
    http: reqwest::Client,
    config: FcmConfig,
    base: String,
    key: SigningKey<sha2::Sha256>,
    /// The access token and when to fetch a new one.
    access: crate::TokenCache,
}

impl FcmClient {
    pub fn new(config: FcmConfig) -> Result<FcmClient, FcmError> {
        let private = rsa::RsaPrivateKey::from_pkcs8_pem(&config.private_key_pem).map_err(|e| {
            FcmError::Config(format!("private_key is not an RSA PKCS#8 PEM key: {e}"))
        })?;
        let http = crate::http_client(config.allow_private_networks)?;
        let base = crate::base_url(config.base_url.as_deref(), PRODUCTION);
        Ok(FcmClient {
            http,
            config,
            base,
            key: SigningKey::new(private),
            access: Default::default(),
        })
    }

    /// The signed assertion of RFC 7523 for the token endpoint.
    fn assertion(&self) -> String {
        let iat = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or_default();
        let mut header = json!({"alg": "RS256", "typ": "JWT"});
        if let Some(kid) = &self.config.private_key_id {
            header["kid"] = json!(kid);
        }
        let claims = json!({"iss": self.config.client_email, "scope": SCOPE,
            "aud": self.config.token_uri, "iat": iat, "exp": iat + 3600});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature = self.key.sign(input.as_bytes()).to_bytes();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature))
    }

    /// The access token: the kept one, or a new one from the token endpoint.
    async fn access_token(&self, renew: bool) -> Result<String, String> {
        self.access
            .get(renew, || {
                let form = format!(
                    "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={}",
                    self.assertion()
                );
                crate::oauth_token(&self.http, &self.config.token_uri, form)
            })
            .await
    }

    /// Sends one message (`message` without its target) to one registration token. An
    /// access token FCM refuses (401) is fetched again and the message sent once more.
    pub async fn send(&self, token: &str, message: &Value) -> Outcome {
        let mut message = message.clone();
        message["token"] = json!(token);
        let body = json!({ "message": message }).to_string();
        if body.len() > MAX_PAYLOAD + 512 {
            return Outcome::Rejected {
                status: 400,
                reason: format!(
                    "INVALID_ARGUMENT: message of {} bytes is too large",
                    body.len()
                ),
            };
        }
        match self.send_once(&body, false).await {
            (_, true) => self.send_once(&body, true).await.0,
            (outcome, false) => outcome,
        }
    }

    /// One request; true if FCM refused the access token.
    async fn send_once(&self, body: &str, renew: bool) -> (Outcome, bool) {
        let access = match self.access_token(renew).await {
            Ok(t) => t,
            Err(reason) => {
                return (
                    Outcome::Retry {
                        after: None,
                        reason,
                    },
                    false,
                )
            }
        };
        let answer = self
            .http
            .post(format!(
                "{}/v1/projects/{}/messages:send",
                self.base, self.config.project_id
            ))
            .bearer_auth(access)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let reason = format!("no answer: {e}");
                return (
                    Outcome::Retry {
                        after: None,
                        reason,
                    },
                    false,
                );
            }
        };
        let (status, retry_after, text) = crate::read_answer(answer).await;
        let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status == 200 {
            let id = v.get("name").and_then(Value::as_str).unwrap_or_default();
            return (Outcome::Sent { id: id.to_string() }, false);
        }
        let error = &v["error"];
        let details = error["details"].as_array().cloned().unwrap_or_default();
        let code = details
            .iter()
            .find_map(|d| d.get("errorCode").and_then(Value::as_str))
            .unwrap_or_else(|| error["status"].as_str().unwrap_or(""))
            .to_string();
        let on_token = details.iter().any(|d| {
            d["fieldViolations"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f["field"] == "message.token"))
        });
        let reason = match error["message"].as_str() {
            Some(m) if !code.is_empty() => format!("{code}: {m}"),
            Some(m) => m.to_string(),
            None => format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            ),
        };
        let outcome = match (status, code.as_str()) {
            (404, _) | (403, "SENDER_ID_MISMATCH") => Outcome::DeadToken { reason },
            (400, _) if on_token => Outcome::DeadToken { reason },
            (401, "THIRD_PARTY_AUTH_ERROR") => Outcome::Rejected { status, reason },
            (401, _) => return (Outcome::Rejected { status, reason }, !renew),
            (429, _) | (500..=599, _) => Outcome::Retry {
                after: retry_after,
                reason,
            },
            _ => Outcome::Rejected { status, reason },
        };
        (outcome, false)
    }
}
