//! SMS providers: a generic HTTP one, a Twilio-compatible one, and `log` for development.

use crate::Config;
use pigeon_engine::events::masked_mobile;
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// Longest a provider may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One SMS, as providers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sms {
    pub mobile: String,
    pub msg_id: String,
    pub registration_id: String,
    /// The template id: a number when it is one (JPush's are), else text (Getui's).
    pub temp_id: Option<Value>,
    pub temp_para: Value,
    pub content: Option<String>,
}

impl Sms {
    /// The SMS fields as JSON values, by the name templates use.
    fn field(&self, name: &str) -> Option<Value> {
        Some(match name {
            "mobile" => json!(self.mobile),
            "msg_id" => json!(self.msg_id),
            "registration_id" => json!(self.registration_id),
            "temp_id" => json!(self.temp_id),
            "temp_para" => self.temp_para.clone(),
            "content" => json!(self.content),
            _ => return None,
        })
    }

    /// The default JSON body of the HTTP provider.
    fn default_body(&self) -> String {
        json!({
            "mobile": self.mobile,
            "msg_id": self.msg_id,
            "registration_id": self.registration_id,
            "temp_id": self.temp_id,
            "temp_para": self.temp_para,
            "content": self.content,
        })
        .to_string()
    }

    /// The text of a provider that sends text only: the content, else the template id and
    /// its parameters.
    fn text(&self) -> String {
        if let Some(content) = &self.content {
            return content.clone();
        }
        let params: Vec<String> = self
            .temp_para
            .as_object()
            .map(|o| {
                o.iter()
                    .map(|(k, v)| match v {
                        Value::String(s) => format!("{k}={s}"),
                        other => format!("{k}={other}"),
                    })
                    .collect()
            })
            .unwrap_or_default();
        let id = match &self.temp_id {
            Some(Value::String(s)) => s.clone(),
            Some(v) => v.to_string(),
            None => "0".into(),
        };
        format!("[{id}] {}", params.join(", "))
    }
}

/// What a provider answers: `Err` with why the SMS was not sent (it is tried again).
pub type SendResult = Result<(), String>;

/// A service that sends SMS.
pub trait Provider: Send + Sync {
    fn send<'a>(&'a self, sms: &'a Sms) -> Pin<Box<dyn Future<Output = SendResult> + Send + 'a>>;
}

/// Why a provider cannot be made from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("[sms] provider {0:?} is not one of http, twilio, log")]
    Unknown(String),
    #[error("[sms] provider {0} needs {1}")]
    Missing(&'static str, &'static str),
    #[error("[sms] body_template: {0}")]
    Template(String),
    #[error("SMS HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// The provider the configuration names.
pub fn from_config(config: &Config) -> Result<Box<dyn Provider>, ProviderError> {
    let http = || {
        reqwest::Client::builder()
            .timeout(ANSWER_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
    };
    match config.provider.as_str() {
        "log" => Ok(Box::new(LogProvider)),
        "http" => {
            let url = config
                .url
                .clone()
                .ok_or(ProviderError::Missing("http", "url"))?;
            if let Some(t) = &config.body_template {
                check_template(t)?;
            }
            Ok(Box::new(HttpProvider {
                http: http()?,
                url,
                headers: config
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                body_template: config.body_template.clone(),
            }))
        }
        "twilio" => {
            let need =
                |v: &Option<String>, what| v.clone().ok_or(ProviderError::Missing("twilio", what));
            Ok(Box::new(TwilioProvider {
                http: http()?,
                base_url: config
                    .url
                    .clone()
                    .unwrap_or_else(|| "https://api.twilio.com".into()),
                account_sid: need(&config.account_sid, "account_sid")?,
                auth_token: need(&config.auth_token, "auth_token")?,
                from: need(&config.from, "from")?,
            }))
        }
        other => Err(ProviderError::Unknown(other.to_string())),
    }
}

/// Logs each SMS (the number masked) and counts it as sent: for development.
pub struct LogProvider;

impl Provider for LogProvider {
    fn send<'a>(&'a self, sms: &'a Sms) -> Pin<Box<dyn Future<Output = SendResult> + Send + 'a>> {
        Box::pin(async move {
            tracing::info!(mobile = %masked_mobile(&sms.mobile), msg_id = %sms.msg_id,
                registration_id = %sms.registration_id, temp_id = ?sms.temp_id,
                text = %sms.text(), "SMS (log provider: not sent)");
            Ok(())
        })
    }
}

/// POSTs one JSON object per SMS to a URL; any 2xx answer means sent.
pub struct HttpProvider {
    http: reqwest::Client,
    url: String,
    headers: Vec<(String, String)>,
    /// The body with `{mobile}`, `{msg_id}`, `{registration_id}`, `{temp_id}`, `{temp_para}`
    /// and `{content}` standing for those fields as JSON values; the default object if none.
    body_template: Option<String>,
}

impl Provider for HttpProvider {
    fn send<'a>(&'a self, sms: &'a Sms) -> Pin<Box<dyn Future<Output = SendResult> + Send + 'a>> {
        Box::pin(async move {
            let body = match &self.body_template {
                Some(t) => render(t, sms),
                None => sms.default_body(),
            };
            let mut req = self
                .http
                .post(&self.url)
                .header("Content-Type", "application/json")
                .body(body);
            for (k, v) in &self.headers {
                req = req.header(k, v);
            }
            answered(req.send().await).await
        })
    }
}

/// Twilio's Messages API (or anything speaking it): `To`, `From`, `Body` as a form, Basic
/// auth with the account SID and token; a 2xx answer means sent.
pub struct TwilioProvider {
    http: reqwest::Client,
    base_url: String,
    account_sid: String,
    auth_token: String,
    from: String,
}

impl Provider for TwilioProvider {
    fn send<'a>(&'a self, sms: &'a Sms) -> Pin<Box<dyn Future<Output = SendResult> + Send + 'a>> {
        Box::pin(async move {
            let url = format!(
                "{}/2010-04-01/Accounts/{}/Messages.json",
                self.base_url.trim_end_matches('/'),
                self.account_sid
            );
            let text = sms.text();
            let form = [
                ("To", sms.mobile.as_str()),
                ("From", self.from.as_str()),
                ("Body", text.as_str()),
            ];
            let body = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(form)
                .finish();
            let req = self
                .http
                .post(url)
                .basic_auth(&self.account_sid, Some(&self.auth_token))
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(body);
            answered(req.send().await).await
        })
    }
}

/// Sent if the provider answered 2xx; else why not.
async fn answered(answer: reqwest::Result<reqwest::Response>) -> SendResult {
    let answer = answer.map_err(|e| format!("no answer: {e}"))?;
    let status = answer.status();
    if status.is_success() {
        return Ok(());
    }
    let text = answer.text().await.unwrap_or_default();
    let text: String = text.chars().take(200).collect();
    Err(format!("HTTP {status}: {text}"))
}

/// Refuses a template with a placeholder (`{name}`, name of `a-z` and `_`) that is not a
/// field.
fn check_template(template: &str) -> Result<(), ProviderError> {
    for (start, _) in template.match_indices('{') {
        let after = &template[start + 1..];
        let name_len = after
            .bytes()
            .take_while(|b| b.is_ascii_lowercase() || *b == b'_')
            .count();
        let name = &after[..name_len];
        let closed = after[name_len..].starts_with('}');
        if closed && !name.is_empty() && PLACEHOLDERS.iter().all(|p| *p != name) {
            return Err(ProviderError::Template(format!(
                "{{{name}}} is not one of {}",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            )));
        }
    }
    Ok(())
}

const PLACEHOLDERS: [&str; 6] = [
    "mobile",
    "msg_id",
    "registration_id",
    "temp_id",
    "temp_para",
    "content",
];

/// The template with each placeholder replaced by that field as a JSON value (so a value
/// can never break out of its place).
fn render(template: &str, sms: &Sms) -> String {
    let mut out = String::with_capacity(template.len() + 128);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        match after.find('}').and_then(|end| {
            let value = sms.field(&after[..end])?;
            Some((end, value))
        }) {
            Some((end, value)) => {
                out.push_str(&value.to_string());
                rest = &after[end + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sms() -> Sms {
        Sms {
            mobile: "13800138000".into(),
            msg_id: "42".into(),
            registration_id: "rid\"1".into(),
            temp_id: Some(json!(7)),
            temp_para: json!({"code": "9 9"}),
            content: None,
        }
    }

    #[test]
    fn a_template_gets_each_field_as_a_json_value() {
        let body = render(
            r#"{"to": {mobile}, "id": {temp_id}, "p": {temp_para}, "who": {registration_id}, "x": {content}}"#,
            &sms(),
        );
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            v,
            json!({"to": "13800138000", "id": 7, "p": {"code": "9 9"}, "who": "rid\"1", "x": null})
        );
        assert!(check_template("{\"a\": {mobile}}").is_ok());
        assert!(check_template("{\"a\": {phone}}").is_err());
    }

    #[test]
    fn text_only_providers_get_the_content_or_the_template() {
        let mut s = sms();
        assert_eq!(s.text(), "[7] code=9 9");
        s.content = Some("hello".into());
        assert_eq!(s.text(), "hello");
    }
}
