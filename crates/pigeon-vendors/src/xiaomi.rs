//! A Xiaomi (Mi Push) client: the regid API, a form POST authorized by the app secret,
//! to up to 1000 registration ids at once; its answer says which of them are dead.

use crate::Outcome;
use std::time::Duration;

pub const PRODUCTION: &str = "https://api.xmpush.xiaomi.com";
/// Most registration ids in one request.
pub const MAX_REGIDS: usize = 1000;
/// Largest `payload` Mi Push takes.
pub const MAX_PAYLOAD: usize = 4096;
/// Codes the Mi Push documentation and clients treat as "try again".
const RETRY_CODES: [i64; 4] = [10002, 10003, 10027, 10037];
/// Every registration id of the request is invalid.
const ALL_INVALID: i64 = 20301;

#[derive(Clone, Debug)]
pub struct XiaomiConfig {
    pub app_secret: String,
    /// The app's package (`restricted_package_name`).
    pub package_name: String,
    /// Where to send instead of Xiaomi (a local fake).
    pub base_url: Option<String>,
    /// Whether names may resolve to private addresses (`vendors_allow_private_networks`).
    pub allow_private_networks: bool,
}

/// One message as Mi Push takes it.
#[derive(Clone, Debug, Default)]
pub struct XiaomiMessage {
    pub title: String,
    pub description: String,
    /// The app's own data (`payload`).
    pub payload: Option<String>,
    /// A pass-through (custom) message instead of a notification.
    pub pass_through: bool,
    /// Messages with the same id replace each other's notification.
    pub notify_id: Option<i64>,
    pub time_to_live: Option<Duration>,
    /// `extra.*` fields (channel_id, notify_effect, ...).
    pub extra: Vec<(String, String)>,
}

pub struct XiaomiClient {
    http: reqwest::Client,
    config: XiaomiConfig,
    base: String,
}

impl XiaomiClient {
    pub fn new(config: XiaomiConfig) -> Result<XiaomiClient, reqwest::Error> {
        let http = crate::http_client(config.allow_private_networks)?;
        let base = crate::base_url(config.base_url.as_deref(), PRODUCTION);
        Ok(XiaomiClient { http, config, base })
    }

    /// Posts a form with the app secret: the answer's status, `Retry-After` and text, or a
    /// retry if there was no answer.
    async fn post(
        &self,
        path: &str,
        body: String,
    ) -> Result<(u16, Option<Duration>, String), Outcome> {
        let request = self
            .http
            .post(format!("{}{path}", self.base))
            .header("authorization", format!("key={}", self.config.app_secret))
            .header(
                "content-type",
                "application/x-www-form-urlencoded;charset=UTF-8",
            )
            .body(body);
        crate::exchange(request).await
    }

    /// Sends one message to up to [`MAX_REGIDS`] registration ids; what became of each.
    pub async fn send(&self, regids: &[String], m: &XiaomiMessage) -> Vec<(String, Outcome)> {
        let all = |o: Outcome| regids.iter().map(|r| (r.clone(), o.clone())).collect();
        if regids.is_empty() || regids.len() > MAX_REGIDS {
            let reason = format!(
                "{} registration ids; 1 to {MAX_REGIDS} per request",
                regids.len()
            );
            return all(Outcome::Rejected { status: 0, reason });
        }
        if m.payload.as_ref().is_some_and(|p| p.len() > MAX_PAYLOAD) {
            let reason = format!("payload larger than {MAX_PAYLOAD} bytes");
            return all(Outcome::Rejected { status: 0, reason });
        }
        let mut form: Vec<(String, String)> = vec![
            ("registration_id".into(), regids.join(",")),
            (
                "restricted_package_name".into(),
                self.config.package_name.clone(),
            ),
            (
                "pass_through".into(),
                if m.pass_through { "1" } else { "0" }.into(),
            ),
            ("title".into(), m.title.clone()),
            ("description".into(), m.description.clone()),
            ("notify_type".into(), "-1".into()),
        ];
        if let Some(p) = &m.payload {
            form.push(("payload".into(), p.clone()));
        }
        if let Some(id) = m.notify_id {
            form.push(("notify_id".into(), id.to_string()));
        }
        if let Some(ttl) = m.time_to_live {
            form.push(("time_to_live".into(), ttl.as_millis().to_string()));
        }
        for (k, v) in &m.extra {
            form.push((format!("extra.{k}"), v.clone()));
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&form)
            .finish();
        let (status, retry_after, text) = match self.post("/v3/message/regid", body).await {
            Ok(answer) => answer,
            Err(retry) => return all(retry),
        };
        if status == 429 || status >= 500 {
            let reason = format!("HTTP {status}");
            return all(Outcome::Retry {
                after: retry_after,
                reason,
            });
        }
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let code = v["code"].as_i64().unwrap_or(-1);
        let reason = v["reason"]
            .as_str()
            .or(v["description"].as_str())
            .map(String::from)
            .unwrap_or_else(|| {
                format!(
                    "HTTP {status}: {}",
                    text.chars().take(200).collect::<String>()
                )
            });
        match code {
            0 => {
                let id = v["data"]["id"].as_str().unwrap_or_default().to_string();
                let bad: Vec<&str> = v["data"]["bad_regids"]
                    .as_str()
                    .unwrap_or_default()
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .collect();
                regids
                    .iter()
                    .map(|r| {
                        let o = if bad.contains(&r.as_str()) {
                            Outcome::DeadToken {
                                reason: "bad regid".into(),
                            }
                        } else {
                            Outcome::Sent { id: id.clone() }
                        };
                        (r.clone(), o)
                    })
                    .collect()
            }
            ALL_INVALID => all(Outcome::DeadToken { reason }),
            c if RETRY_CODES.contains(&c) => all(Outcome::Retry {
                after: None,
                reason,
            }),
            c => all(Outcome::Rejected {
                status: c.clamp(0, u16::MAX as i64) as u16,
                reason,
            }),
        }
    }

    /// Takes back the notification shown with `notify_id` on up to [`MAX_REGIDS`] devices:
    /// Mi Push's v3 regid revoke (the endpoint of Xiaomi's notice of October 2026; its form
    /// follows the regid send's names). `Sent` if Mi Push took the recall.
    pub async fn revoke(&self, notify_id: i64, regids: &[String]) -> Outcome {
        if regids.is_empty() || regids.len() > MAX_REGIDS {
            let reason = format!(
                "{} registration ids; 1 to {MAX_REGIDS} per request",
                regids.len()
            );
            return Outcome::Rejected { status: 0, reason };
        }
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("registration_id", &regids.join(","))
            .append_pair("restricted_package_name", &self.config.package_name)
            .append_pair("notify_id", &notify_id.to_string())
            .finish();
        let (status, retry_after, text) = match self.post("/v3/message/regid/revoke", body).await {
            Ok(answer) => answer,
            Err(retry) => return retry,
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        let reason = v["reason"]
            .as_str()
            .or(v["description"].as_str())
            .map(String::from)
            .unwrap_or_else(|| format!("HTTP {status}"));
        match v["code"].as_i64() {
            Some(0) => Outcome::Sent {
                id: v["trace_id"].as_str().unwrap_or_default().into(),
            },
            _ if status == 429 || status >= 500 => Outcome::Retry {
                after: retry_after,
                reason,
            },
            Some(c) if RETRY_CODES.contains(&c) => Outcome::Retry {
                after: None,
                reason,
            },
            _ => Outcome::Rejected { status, reason },
        }
    }
}
