//! A Honor Push client: an OAuth access token from the app's client credentials (cached,
//! fetched again when refused), messages to up to 1000 tokens at once, and the answer's
//! `expireTokens` (dead) and `failTokens` (not taken) told apart per token.
//!
//! Honor's public material is thin: third-party clients disagree on the success code (`200`
//! or `0`), so success is read from `data.sendResult`, as they all do.

use crate::Outcome;
use serde_json::{json, Value};

pub const AUTH_URL: &str = "https://iam.developer.hihonor.com/auth/token";
pub const PRODUCTION: &str = "https://push-api.cloud.hihonor.com";
/// Most tokens in one request.
pub const MAX_TOKENS: usize = 1000;
/// Largest request Honor takes.
pub const MAX_BODY: usize = 4096;

/// The app's Honor account.
pub type HonorConfig = crate::OAuthAppConfig;

pub struct HonorClient {
    http: reqwest::Client,
    config: HonorConfig,
    access: crate::ClientCredentials,
}

impl HonorClient {
    pub fn new(config: HonorConfig) -> Result<HonorClient, reqwest::Error> {
        Ok(HonorClient {
            http: crate::http_client(config.allow_private_networks)?,
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

    /// Sends `message` (Honor's camelCase message, without its `token`) to up to
    /// [`MAX_TOKENS`] tokens; what became of each. A refused access token is fetched again
    /// and the message sent once more.
    pub async fn send(&self, tokens: &[String], message: &Value) -> Vec<(String, Outcome)> {
        let all = |o: Outcome| tokens.iter().map(|t| (t.clone(), o.clone())).collect();
        if tokens.is_empty() || tokens.len() > MAX_TOKENS {
            let reason = format!("{} tokens; 1 to {MAX_TOKENS} per request", tokens.len());
            return all(Outcome::Rejected { status: 0, reason });
        }
        let mut body = message.clone();
        body["token"] = json!(tokens);
        let body = body.to_string();
        if body.len() > MAX_BODY {
            let reason = format!("the message is larger than {MAX_BODY} bytes");
            return all(Outcome::Rejected { status: 0, reason });
        }
        crate::renewing(
            |renew| self.send_once(tokens, &body, renew),
            || {
                all(Outcome::Rejected {
                    status: 401,
                    reason: "the access token was refused again".into(),
                })
            },
        )
        .await
    }

    /// One request; `Err` if Honor refused the access token.
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
        let base = crate::base_url(self.config.base_url.as_deref(), PRODUCTION);
        let request = self
            .http
            .post(format!("{base}/api/v1/{}/sendMessage", self.config.app_id))
            .bearer_auth(access)
            .header("content-type", "application/json")
            .header("timestamp", pigeon_engine::now_ms().to_string())
            .body(body.to_string());
        let (status, retry_after, text) = match crate::exchange(request).await {
            Ok(answer) => answer,
            Err(retry) => return Ok(all(retry)),
        };
        let v: Value = serde_json::from_str(&text).unwrap_or_default();
        let code = match &v["code"] {
            Value::Number(n) => n.to_string(),
            Value::String(s) => s.clone(),
            _ => String::new(),
        };
        let reason = if code.is_empty() {
            format!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            )
        } else {
            format!("{code}: {}", v["message"].as_str().unwrap_or_default())
        };
        if (status == 401 || code == "80200003") && !renew {
            return Err(());
        }
        if status == 429 || status >= 500 || code == "81000001" {
            return Ok(all(Outcome::Retry {
                after: retry_after,
                reason,
            }));
        }
        let data = &v["data"];
        let listed = |k: &str| -> Vec<&str> {
            data[k]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default()
        };
        let (expired, failed) = (listed("expireTokens"), listed("failTokens"));
        if data["sendResult"] != json!(true) && expired.is_empty() && failed.is_empty() {
            return Ok(all(Outcome::Rejected { status, reason }));
        }
        let id = data["requestId"].as_str().unwrap_or_default().to_string();
        Ok(tokens
            .iter()
            .map(|t| {
                let o = if expired.contains(&t.as_str()) {
                    Outcome::DeadToken {
                        reason: "expired token".into(),
                    }
                } else if failed.contains(&t.as_str()) {
                    Outcome::Rejected {
                        status,
                        reason: format!("{reason} (failTokens)"),
                    }
                } else {
                    Outcome::Sent { id: id.clone() }
                };
                (t.clone(), o)
            })
            .collect())
    }
}
