//! A Huawei Push Kit client: an OAuth access token from the app's client credentials,
//! cached until shortly before it expires and fetched again when Push Kit says it expired;
//! messages to up to 1000 tokens at once, with the illegal tokens of a partial success told
//! apart.

use crate::Outcome;
use serde_json::{json, Value};

pub const AUTH_URL: &str = "https://oauth-login.cloud.huawei.com/oauth2/v3/token";
pub const PRODUCTION: &str = "https://push-api.cloud.huawei.com";
/// Most tokens in one request.
pub const MAX_TOKENS: usize = 1000;
/// Largest request Push Kit takes.
pub const MAX_BODY: usize = 4096;

/// The app's Huawei account.
pub type HuaweiConfig = crate::OAuthAppConfig;

pub struct HuaweiClient {
    http: reqwest::Client,
    config: HuaweiConfig,
    access: crate::ClientCredentials,
}

impl HuaweiClient {
    pub fn new(config: HuaweiConfig) -> Result<HuaweiClient, reqwest::Error> {
        let http = crate::http_client(config.allow_private_networks)?;
        Ok(HuaweiClient {
            http,
            access: crate::ClientCredentials::new(
                config.auth_url.as_deref().unwrap_or(AUTH_URL),
                &config.client_id,
                &config.client_secret,
            ),
            config,
        })
    }

    async fn access_token(&self, renew: bool) -> Result<String, String> {
        self.access.token(&self.http, renew).await
    }

    /// Sends `message` (Push Kit's message object, without its target) to up to
    /// [`MAX_TOKENS`] tokens; what became of each. An expired access token is fetched again
    /// and the message sent once more.
    pub async fn send(&self, tokens: &[String], message: &Value) -> Vec<(String, Outcome)> {
        let all = |o: Outcome| tokens.iter().map(|t| (t.clone(), o.clone())).collect();
        if tokens.is_empty() || tokens.len() > MAX_TOKENS {
            let reason = format!("{} tokens; 1 to {MAX_TOKENS} per request", tokens.len());
            return all(Outcome::Rejected { status: 0, reason });
        }
        let mut message = message.clone();
        message["token"] = json!(tokens);
        let body = json!({"validate_only": false, "message": message}).to_string();
        if body.len() > MAX_BODY {
            let reason = format!("80300008: the message is larger than {MAX_BODY} bytes");
            return all(Outcome::Rejected { status: 0, reason });
        }
        crate::renewing(
            |renew| self.send_once(tokens, &body, renew),
            || {
                all(Outcome::Rejected {
                    status: 401,
                    reason: "80200003: token refused again".into(),
                })
            },
        )
        .await
    }

    /// Takes back the notification shown with `notify_id` on these devices (Push Kit's
    /// `messages:revoke`, up to [`MAX_TOKENS`] tokens): `Sent` if Push Kit took the recall.
    pub async fn revoke(&self, notify_id: i64, tokens: &[String]) -> Outcome {
        if tokens.is_empty() || tokens.len() > MAX_TOKENS {
            let reason = format!("{} tokens; 1 to {MAX_TOKENS} per request", tokens.len());
            return Outcome::Rejected { status: 0, reason };
        }
        let body = json!({"notifyId": notify_id, "token": tokens}).to_string();
        crate::renewing(
            |renew| self.revoke_once(&body, renew),
            || Outcome::Rejected {
                status: 401,
                reason: "80200003: token refused again".into(),
            },
        )
        .await
    }

    /// One recall request; `Err` if Push Kit refused the access token.
    async fn revoke_once(&self, body: &str, renew: bool) -> Result<Outcome, ()> {
        let access = match self.access_token(renew).await {
            Ok(t) => t,
            Err(reason) => {
                return Ok(Outcome::Retry {
                    after: None,
                    reason,
                })
            }
        };
        let base = crate::base_url(self.config.base_url.as_deref(), PRODUCTION);
        let request = self
            .http
            .post(format!("{base}/v1/{}/messages:revoke", self.config.app_id))
            .bearer_auth(access)
            .header("content-type", "application/json;charset=utf-8")
            .header("push-type", "0")
            .body(body.to_string());
        let (status, retry_after, text) = match crate::exchange(request).await {
            Ok(answer) => answer,
            Err(retry) => return Ok(retry),
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let code = v["code"].as_str().unwrap_or_default();
        let reason = format!("{code}: {}", v["msg"].as_str().unwrap_or_default());
        if (status == 401 || code == "80200003") && !renew {
            return Err(());
        }
        Ok(match code {
            "80000000" => Outcome::Sent {
                id: v["requestId"].as_str().unwrap_or_default().into(),
            },
            _ if status == 429 || status >= 500 || code == "81000001" => Outcome::Retry {
                after: retry_after,
                reason,
            },
            _ => Outcome::Rejected { status, reason },
        })
    }

    /// One request; `Err` if Push Kit refused the access token.
    async fn send_once(
        &self,
        tokens: &[String],
        body: &str,
        renew: bool,
    ) -> Result<Vec<(String, Outcome)>, ()> {
        let all = |o: Outcome| tokens.iter().map(|t| (t.clone(), o.clone())).collect();
        let access = match self.access_token(renew).await {
            Ok(t) => t,
            Err(reason) => {
                return Ok(all(Outcome::Retry {
                    after: None,
                    reason,
                }))
            }
        };
        let base = self
            .config
            .base_url
            .as_deref()
            .unwrap_or(PRODUCTION)
            .trim_end_matches('/');
        let request = self
            .http
            .post(format!("{base}/v1/{}/messages:send", self.config.app_id))
            .bearer_auth(access)
            .header("content-type", "application/json;charset=utf-8")
            .body(body.to_string());
        let (status, retry_after, text) = match crate::exchange(request).await {
            Ok(answer) => answer,
            Err(retry) => return Ok(all(retry)),
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let code = v["code"].as_str().unwrap_or_default().to_string();
        let msg = v["msg"].as_str().unwrap_or_default().to_string();
        let reason = if code.is_empty() {
            format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )
        } else {
            format!("{code}: {msg}")
        };
        if (status == 401 || code == "80200003") && !renew {
            return Err(());
        }
        Ok(match code.as_str() {
            "80000000" => all(Outcome::Sent {
                id: v["requestId"].as_str().unwrap_or_default().into(),
            }),
            "80100000" => {
                // msg is itself JSON: {"success":n,"failure":m,"illegal_tokens":[...]}.
                let detail: Value = serde_json::from_str(&msg).unwrap_or_default();
                let illegal: Vec<&str> = detail["illegal_tokens"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let id = v["requestId"].as_str().unwrap_or_default().to_string();
                tokens
                    .iter()
                    .map(|t| {
                        let o = if illegal.contains(&t.as_str()) {
                            Outcome::DeadToken {
                                reason: "illegal token".into(),
                            }
                        } else {
                            Outcome::Sent { id: id.clone() }
                        };
                        (t.clone(), o)
                    })
                    .collect()
            }
            "80300007" => all(Outcome::DeadToken { reason }),
            "81000001" => all(Outcome::Retry {
                after: retry_after,
                reason,
            }),
            _ if status == 429 || status >= 500 => all(Outcome::Retry {
                after: retry_after,
                reason,
            }),
            _ => all(Outcome::Rejected { status, reason }),
        })
    }
}
