//! An OPPO Push client: an auth token from the app key, a millisecond timestamp and the
//! SHA-256 signature with the master secret (valid a day, fetched again when OPPO says it
//! is invalid), and unicast notifications by registration id.

use crate::{hex, Outcome};
use serde_json::{json, Value};
use sha2::Digest;
use std::time::Duration;

pub const PRODUCTION: &str = "https://api.push.oppomobile.com";
/// How long an auth token lasts.
const TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);

#[derive(Clone, Debug)]
pub struct OppoConfig {
    pub app_key: String,
    pub master_secret: String,
    pub base_url: Option<String>,
    /// Whether names may resolve to private addresses (`vendors_allow_private_networks`).
    pub allow_private_networks: bool,
}

pub struct OppoClient {
    http: reqwest::Client,
    config: OppoConfig,
    base: String,
    auth: crate::TokenCache,
}

/// `sign` of the auth call: lowercase hex SHA-256 of app key, timestamp and master secret.
pub fn auth_sign(app_key: &str, timestamp: u64, master_secret: &str) -> String {
    hex(&sha2::Sha256::digest(format!(
        "{app_key}{timestamp}{master_secret}"
    )))
}

impl OppoClient {
    pub fn new(config: OppoConfig) -> Result<OppoClient, reqwest::Error> {
        let base = crate::base_url(config.base_url.as_deref(), PRODUCTION);
        Ok(OppoClient {
            http: crate::http_client(config.allow_private_networks)?,
            base,
            config,
            auth: Default::default(),
        })
    }

    async fn auth_token(&self, renew: bool) -> Result<String, String> {
        self.auth
            .get(renew, || async {
                let timestamp = pigeon_engine::now_ms();
                let sign = auth_sign(&self.config.app_key, timestamp, &self.config.master_secret);
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("app_key", &self.config.app_key)
                    .append_pair("timestamp", &timestamp.to_string())
                    .append_pair("sign", &sign)
                    .finish();
                let url = format!("{}/server/v1/auth", self.base);
                let v = crate::post_form(&self.http, &url, form)
                    .await
                    .map_err(|e| format!("auth: {e}"))?;
                match (v["code"].as_i64(), v["data"]["auth_token"].as_str()) {
                    (Some(0), Some(t)) => Ok((t.to_string(), TOKEN_LIFETIME)),
                    _ => Err(format!("auth refused: {}", crate::excerpt(&v.to_string()))),
                }
            })
            .await
    }

    /// Sends a notification (OPPO's `notification` object) to one registration id.
    pub async fn send(&self, regid: &str, notification: &Value) -> Outcome {
        crate::renewing(
            |renew| self.send_once(regid, notification, renew),
            || Outcome::Rejected {
                status: 0,
                reason: "11: auth token refused again".into(),
            },
        )
        .await
    }

    async fn send_once(
        &self,
        regid: &str,
        notification: &Value,
        renew: bool,
    ) -> Result<Outcome, ()> {
        let token = match self.auth_token(renew).await {
            Ok(t) => t,
            Err(reason) => {
                return Ok(Outcome::Retry {
                    after: None,
                    reason,
                })
            }
        };
        let message =
            json!({"target_type": 2, "target_value": regid, "notification": notification});
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("message", &message.to_string())
            .append_pair("auth_token", &token)
            .finish();
        let url = format!("{}/server/v1/message/notification/unicast", self.base);
        let v = match crate::post_form(&self.http, &url, form).await {
            Ok(v) => v,
            Err(reason) => {
                return Ok(Outcome::Retry {
                    after: None,
                    reason,
                })
            }
        };
        let code = v["code"].as_i64().unwrap_or(-1);
        let reason = format!("{code}: {}", v["message"].as_str().unwrap_or_default());
        Ok(match code {
            0 => Outcome::Sent {
                id: v["data"]["messageId"].as_str().unwrap_or_default().into(),
            },
            11 if !renew => return Err(()),
            10000 => Outcome::DeadToken { reason },
            -2 | -1 | 13 | 55 => Outcome::Retry {
                after: None,
                reason,
            },
            _ => Outcome::Rejected { status: 0, reason },
        })
    }
}
