//! A vivo Push client: an auth token from the app id, key, a millisecond timestamp and the
//! MD5 signature with the app secret (valid a day), and single notifications by regId; an
//! invalid regId (10302) or an `invalidUser` answer means the token is dead.

use crate::{hex, Outcome};
use md5::Digest;
use serde_json::{json, Value};
use std::time::Duration;

pub const PRODUCTION: &str = "https://api-push.vivo.com.cn";
/// How long an auth token lasts.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug)]
pub struct VivoConfig {
    pub app_id: String,
    pub app_key: String,
    pub app_secret: String,
    pub base_url: Option<String>,
    /// Whether names may resolve to private addresses (`vendors_allow_private_networks`).
    pub allow_private_networks: bool,
}

pub struct VivoClient {
    http: reqwest::Client,
    config: VivoConfig,
    base: String,
    auth: crate::TokenCache,
}

/// `sign` of the auth call: lowercase hex MD5 of app id, app key, timestamp and app secret.
pub fn auth_sign(app_id: &str, app_key: &str, timestamp: u64, app_secret: &str) -> String {
    hex(&md5::Md5::digest(format!(
        "{app_id}{app_key}{timestamp}{app_secret}"
    )))
}

impl VivoClient {
    pub fn new(config: VivoConfig) -> Result<VivoClient, reqwest::Error> {
        let base = crate::base_url(config.base_url.as_deref(), PRODUCTION);
        Ok(VivoClient {
            http: crate::http_client(config.allow_private_networks)?,
            base,
            config,
            auth: Default::default(),
        })
    }

    async fn auth_token(&self, renew: bool) -> Result<String, String> {
        self.auth
            .get(renew, || async {
                let c = &self.config;
                let timestamp = pigeon_engine::now_ms();
                let body = json!({"appId": c.app_id, "appKey": c.app_key, "timestamp": timestamp,
                    "sign": auth_sign(&c.app_id, &c.app_key, timestamp, &c.app_secret)});
                let answer = self
                    .http
                    .post(format!("{}/message/auth", self.base))
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| format!("auth: no answer: {e}"))?;
                let v: Value = answer.json().await.unwrap_or_default();
                match (v["result"].as_i64(), v["authToken"].as_str()) {
                    (Some(0), Some(t)) => Ok((t.to_string(), TOKEN_LIFETIME)),
                    _ => Err(format!("auth refused: {}", crate::excerpt(&v.to_string()))),
                }
            })
            .await
    }

    /// Sends one message (vivo's fields but `regId` and `requestId`) to one regId. A refused
    /// auth token (10000) is fetched again and the message sent once more.
    pub async fn send(&self, reg_id: &str, message: &Value) -> Outcome {
        crate::renewing(
            |renew| self.send_once(reg_id, message, renew),
            || Outcome::Rejected {
                status: 0,
                reason: "10000: the auth token was refused again".into(),
            },
        )
        .await
    }

    /// One request; `Err` if vivo refused the auth token.
    async fn send_once(&self, reg_id: &str, message: &Value, renew: bool) -> Result<Outcome, ()> {
        let token = match self.auth_token(renew).await {
            Ok(t) => t,
            Err(reason) => {
                return Ok(Outcome::Retry {
                    after: None,
                    reason,
                })
            }
        };
        let mut body = message.clone();
        body["regId"] = json!(reg_id);
        body["requestId"] = json!(format!("{:032x}", rand::random::<u128>()));
        let answer = self
            .http
            .post(format!("{}/message/send", self.base))
            .header("authToken", token)
            .json(&body)
            .send()
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                return Ok(Outcome::Retry {
                    after: None,
                    reason: format!("no answer: {e}"),
                })
            }
        };
        let status = answer.status().as_u16();
        if status == 429 || status >= 500 {
            return Ok(Outcome::Retry {
                after: crate::retry_after(answer.headers()),
                reason: format!("HTTP {status}"),
            });
        }
        let v: Value = answer.json().await.unwrap_or_default();
        let result = v["result"].as_i64().unwrap_or(-1);
        let reason = format!("{result}: {}", v["desc"].as_str().unwrap_or_default());
        let invalid_user = v["invalidUser"]["status"]
            .as_i64()
            .is_some_and(|s| (1..=3).contains(&s));
        if result == 10000 && !renew {
            return Err(());
        }
        Ok(match result {
            0 if invalid_user => Outcome::DeadToken {
                reason: format!("invalidUser {}", v["invalidUser"]),
            },
            0 => Outcome::Sent {
                id: v["taskId"].as_str().unwrap_or_default().into(),
            },
            10302 => Outcome::DeadToken { reason },
            _ => Outcome::Rejected { status: 0, reason },
        })
    }
}
