//! A Meizu (Flyme) Push client: notifications to up to 100 push ids in one signed form
//! request (MD5 of the sorted parameters and the app secret); the answer lists the ids that
//! failed, by code.

use crate::{hex, Outcome};
use md5::Digest;
use serde_json::Value;
use std::collections::BTreeMap;

pub const PRODUCTION: &str = "http://server-api-push.meizu.com";
/// Most push ids in one request.
pub const MAX_IDS: usize = 100;

#[derive(Clone, Debug)]
pub struct MeizuConfig {
    pub app_id: String,
    pub app_secret: String,
    pub base_url: Option<String>,
    /// Whether names may resolve to private addresses (`vendors_allow_private_networks`).
    pub allow_private_networks: bool,
}

pub struct MeizuClient {
    http: reqwest::Client,
    config: MeizuConfig,
    base: String,
}

/// Meizu's `sign`: the parameters sorted by name as `k=v` (not URL-encoded) one after
/// another, then the app secret, lowercase hex MD5.
pub fn sign(params: &BTreeMap<String, String>, app_secret: &str) -> String {
    let mut text: String = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    text.push_str(app_secret);
    hex(&md5::Md5::digest(text))
}

impl MeizuClient {
    pub fn new(config: MeizuConfig) -> Result<MeizuClient, reqwest::Error> {
        let base = crate::base_url(config.base_url.as_deref(), PRODUCTION);
        Ok(MeizuClient {
            http: crate::http_client(config.allow_private_networks)?,
            base,
            config,
        })
    }

    /// Sends a notification (`messageJson`) to up to [`MAX_IDS`] push ids; what became of each.
    pub async fn send(&self, push_ids: &[String], message: &Value) -> Vec<(String, Outcome)> {
        let all = |o: Outcome| push_ids.iter().map(|p| (p.clone(), o.clone())).collect();
        if push_ids.is_empty() || push_ids.len() > MAX_IDS {
            let reason = format!("{} push ids; 1 to {MAX_IDS} per request", push_ids.len());
            return all(Outcome::Rejected { status: 0, reason });
        }
        let mut params = BTreeMap::new();
        params.insert("appId".to_string(), self.config.app_id.clone());
        params.insert("pushIds".to_string(), push_ids.join(","));
        params.insert("messageJson".to_string(), message.to_string());
        let signature = sign(&params, &self.config.app_secret);
        params.insert("sign".to_string(), signature);
        let form = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(&params)
            .finish();
        let url = format!(
            "{}/garcia/api/server/push/varnished/pushByPushId",
            self.base
        );
        let v = match crate::post_form(&self.http, &url, form).await {
            Ok(v) => v,
            Err(reason) => {
                return all(Outcome::Retry {
                    after: None,
                    reason,
                })
            }
        };
        let code = v["code"].as_str().unwrap_or_default().to_string();
        let reason = format!("{code}: {}", v["message"].as_str().unwrap_or_default());
        match code.as_str() {
            "200" => {
                let id = v["msgId"].as_str().unwrap_or_default().to_string();
                let failed = v["value"].as_object().cloned().unwrap_or_default();
                push_ids
                    .iter()
                    .map(|p| {
                        let code = failed.iter().find_map(|(c, ids)| {
                            ids.as_array()?
                                .iter()
                                .any(|i| i.as_str() == Some(p))
                                .then_some(c.clone())
                        });
                        let o = match code.as_deref() {
                            None => Outcome::Sent { id: id.clone() },
                            Some("110002" | "110003") => Outcome::DeadToken {
                                reason: format!("{}: push id invalid", code.unwrap_or_default()),
                            },
                            Some("519") => Outcome::Retry {
                                after: None,
                                reason: "519: overloaded".into(),
                            },
                            Some(c) => Outcome::Rejected {
                                status: 0,
                                reason: format!("{c}: refused"),
                            },
                        };
                        (p.clone(), o)
                    })
                    .collect()
            }
            "1003" | "110010" => all(Outcome::Retry {
                after: None,
                reason,
            }),
            _ => all(Outcome::Rejected { status: 0, reason }),
        }
    }
}
