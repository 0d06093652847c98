//! Clients of the push vendors' protocols, each with its base URL configurable (production by
//! default) so tests can point it at a local fake that speaks the same protocol, and those
//! fakes. Vendor channels never touch storage: they take a token and a notification and say
//! what became of it.

pub mod apns;
pub mod fake_apns;
pub mod fake_cn;
pub mod fake_fcm;
pub mod fake_honor;
pub mod fake_huawei;
pub mod fake_xiaomi;
pub mod fcm;
pub mod honor;
pub mod huawei;
pub mod jwt;
pub mod meizu;
pub mod oppo;
mod payload;
pub mod router;
pub mod vivo;
pub mod webpush;
pub mod xiaomi;

use std::time::Duration;

/// Where a client sends: the configured base URL (a local fake's) or the vendor's, without a
/// trailing slash.
pub(crate) fn base_url(configured: Option<&str>, vendor: &str) -> String {
    configured
        .unwrap_or(vendor)
        .trim_end_matches('/')
        .to_string()
}

/// The HTTP client of a vendor: a 30 s answer timeout, no redirects.
pub(crate) fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Posts a form and reads the JSON answer; `Err` with why if there is none (no answer, a
/// 429 or 5xx, or not JSON): those are worth another try.
pub(crate) async fn post_form(
    http: &reqwest::Client,
    url: &str,
    form: String,
) -> Result<serde_json::Value, String> {
    let answer = http
        .post(url)
        .header(
            "content-type",
            "application/x-www-form-urlencoded;charset=UTF-8",
        )
        .body(form)
        .send()
        .await
        .map_err(|e| format!("no answer: {e}"))?;
    let status = answer.status().as_u16();
    if status == 429 || status >= 500 {
        return Err(format!("HTTP {status}"));
    }
    let text = answer.text().await.unwrap_or_default();
    serde_json::from_str(&text).map_err(|_| {
        format!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        )
    })
}

/// Sends a request and reads its answer whole (status, `Retry-After`, body text); a retry if
/// there was no answer.
pub(crate) async fn exchange(
    request: reqwest::RequestBuilder,
) -> Result<(u16, Option<Duration>, String), Outcome> {
    let answer = request.send().await.map_err(|e| Outcome::Retry {
        after: None,
        reason: format!("no answer: {e}"),
    })?;
    Ok(read_answer(answer).await)
}

/// An answer read whole: its status, `Retry-After` and body text.
pub(crate) async fn read_answer(answer: reqwest::Response) -> (u16, Option<Duration>, String) {
    let status = answer.status().as_u16();
    let retry_after = retry_after(answer.headers());
    (status, retry_after, answer.text().await.unwrap_or_default())
}

/// A token kept until shortly before it expires: an OAuth access token, a vendor's auth token.
#[derive(Default)]
pub(crate) struct TokenCache(tokio::sync::Mutex<Option<(String, std::time::Instant)>>);

/// A kept token is fetched again this long before it expires.
const REFRESH_MARGIN: Duration = Duration::from_secs(300);

impl TokenCache {
    /// The kept token; a new one from `fetch` (the token and how long it lasts) if there is
    /// none, it is about to expire, or `renew` (the vendor refused it).
    pub(crate) async fn get<F, Fut>(&self, renew: bool, fetch: F) -> Result<String, String>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<(String, Duration), String>>,
    {
        let mut kept = self.0.lock().await;
        if let Some((token, until)) = kept.as_ref() {
            if !renew && std::time::Instant::now() < *until {
                return Ok(token.clone());
            }
        }
        let (token, lifetime) = fetch().await?;
        let until = std::time::Instant::now() + lifetime.saturating_sub(REFRESH_MARGIN);
        *kept = Some((token.clone(), until));
        Ok(token)
    }
}

/// An OAuth token from a token endpoint: a form POST answered with `access_token` and
/// `expires_in`.
pub(crate) async fn oauth_token(
    http: &reqwest::Client,
    url: &str,
    form: String,
) -> Result<(String, Duration), String> {
    let answer = http
        .post(url)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form)
        .send()
        .await
        .map_err(|e| format!("token endpoint: no answer: {e}"))?;
    let status = answer.status();
    let v: serde_json::Value = answer.json().await.unwrap_or_default();
    let (true, Some(token)) = (status.is_success(), v["access_token"].as_str()) else {
        return Err(format!("token endpoint said {status}: {v}"));
    };
    let lifetime = Duration::from_secs(v["expires_in"].as_u64().unwrap_or(3600));
    Ok((token.to_string(), lifetime))
}

/// An app's account with a vendor that authenticates by an OAuth client-credentials grant
/// (Huawei Push Kit, Honor Push).
#[derive(Clone, Debug)]
pub struct OAuthAppConfig {
    pub app_id: String,
    pub client_id: String,
    pub client_secret: String,
    /// The OAuth token endpoint (the vendor's unless a fake's).
    pub auth_url: Option<String>,
    /// The push API (the vendor's unless a fake's).
    pub base_url: Option<String>,
}

/// An app's OAuth client-credentials grant (Huawei, Honor): its access token, cached.
pub(crate) struct ClientCredentials {
    pub url: String,
    pub client_id: String,
    pub client_secret: String,
    cache: TokenCache,
}

impl ClientCredentials {
    pub(crate) fn new(url: &str, client_id: &str, client_secret: &str) -> ClientCredentials {
        ClientCredentials {
            url: url.to_string(),
            client_id: client_id.to_string(),
            client_secret: client_secret.to_string(),
            cache: TokenCache::default(),
        }
    }

    /// The access token: the kept one, or a new one if there is none, it is about to
    /// expire, or `renew` (the vendor refused it).
    pub(crate) async fn token(
        &self,
        http: &reqwest::Client,
        renew: bool,
    ) -> Result<String, String> {
        self.cache
            .get(renew, || {
                let form = form_urlencoded::Serializer::new(String::new())
                    .append_pair("grant_type", "client_credentials")
                    .append_pair("client_id", &self.client_id)
                    .append_pair("client_secret", &self.client_secret)
                    .finish();
                oauth_token(http, &self.url, form)
            })
            .await
    }
}

/// Sends with the kept auth token and, if the vendor refuses it (`Err`), once more with a new
/// one; `refused_again` is the answer if it refuses that too.
pub(crate) async fn renewing<T, F, Fut>(send: F, refused_again: impl FnOnce() -> T) -> T
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = Result<T, ()>>,
{
    match send(false).await {
        Ok(answer) => answer,
        Err(()) => send(true).await.unwrap_or_else(|()| refused_again()),
    }
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Retry-After` of an answer, in seconds (the form push services use).
pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

/// What a vendor said of one notification to one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Taken; the vendor's id for it.
    Sent { id: String },
    /// The token is dead (uninstalled, expired): never try it again.
    DeadToken { reason: String },
    /// Not now: try again, after `after` if the vendor said.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Refused for good (bad payload, bad topic, ...), with the vendor's reason.
    Rejected { status: u16, reason: String },
}
