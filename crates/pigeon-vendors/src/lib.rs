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

/// The HTTP client of a vendor: a 30 s answer timeout, no redirects (a redirect could lead
/// anywhere), names resolved only to public addresses unless `allow_private_networks`.
pub(crate) fn http_client(allow_private_networks: bool) -> reqwest::Result<reqwest::Client> {
    let builder = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    let policy = pigeon_core::net::AddressPolicy::vendors(allow_private_networks);
    public_only(builder, policy).build()
}

pub use pigeon_core::net::{public_only, PublicResolver};

/// How much of a vendor's answer is kept in a reason (logged, and in `ErrInfo`).
pub const EXCERPT_CHARS: usize = 200;

/// The start of a vendor's answer, for a reason: answers are written by whoever is at the
/// URL, so they are never logged or recorded whole.
pub fn excerpt(text: &str) -> String {
    match text.char_indices().nth(EXCERPT_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
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
        return Err(format!(
            "token endpoint said {status}: {}",
            excerpt(&v.to_string())
        ));
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
    /// Whether names may resolve to private addresses (`vendors_allow_private_networks`).
    pub allow_private_networks: bool,
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

impl Outcome {
    /// The outcome with its reason cut to an [`excerpt`]: reasons quote vendors' answers
    /// (messages, descriptions) and go to the log and to `ErrInfo`.
    pub fn shortened(self) -> Outcome {
        match self {
            Outcome::Sent { id } => Outcome::Sent { id: excerpt(&id) },
            Outcome::DeadToken { reason } => Outcome::DeadToken {
                reason: excerpt(&reason),
            },
            Outcome::Retry { after, reason } => Outcome::Retry {
                after,
                reason: excerpt(&reason),
            },
            Outcome::Rejected { status, reason } => Outcome::Rejected {
                status,
                reason: excerpt(&reason),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A listener on 127.0.0.1 that answers every request 200 and counts connections.
    async fn local_server() -> (u16, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}")
                    .await;
            }
        });
        (port, connections)
    }

    #[tokio::test]
    async fn a_name_resolving_to_a_private_address_is_not_connected_to() {
        // "localhost" stands for a vendor host that resolved to a public address when its
        // credentials were set and to a private one now: the client must not connect.
        let (port, connections) = local_server().await;
        let url = format!("http://localhost:{port}/v1/send");
        let refused = http_client(false).unwrap().post(&url).send().await;
        let err = refused.expect_err("a loopback name must be refused");
        let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(": ");
        assert!(chain.contains("loopback address"), "{chain}");
        assert!(chain.contains("vendors_allow_private_networks"), "{chain}");
        assert_eq!(connections.load(Ordering::SeqCst), 0);

        // Allowed (a local fake), the same request goes through.
        let answer = http_client(true).unwrap().post(&url).send().await.unwrap();
        assert_eq!(answer.status(), 200);
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_vendor_client_does_not_reach_a_private_name() {
        // The whole client, as the router makes it: nothing reaches the fake.
        let fake = fake_xiaomi::FakeXiaomi::start("secret", "com.example")
            .await
            .unwrap();
        let port = fake.base_url.rsplit(':').next().unwrap().to_string();
        let client = xiaomi::XiaomiClient::new(xiaomi::XiaomiConfig {
            app_secret: "secret".into(),
            package_name: "com.example".into(),
            base_url: Some(format!("http://localhost:{port}")),
            allow_private_networks: false,
        })
        .unwrap();
        let m = xiaomi::XiaomiMessage {
            title: "t".into(),
            description: "d".into(),
            payload: None,
            pass_through: false,
            notify_id: None,
            time_to_live: None,
            extra: vec![],
        };
        let outcomes = client.send(&["regid1".to_string()], &m).await;
        assert!(
            outcomes
                .iter()
                .all(|(_, o)| !matches!(o, Outcome::Sent { .. })),
            "{outcomes:?}"
        );
        assert!(fake.received.lock().is_empty());
    }

    #[test]
    fn answers_are_cut_to_an_excerpt() {
        let long = "x".repeat(10_000);
        let cut = excerpt(&long);
        assert_eq!(cut.chars().count(), EXCERPT_CHARS + 1);
        assert!(cut.ends_with('…'));
        assert_eq!(excerpt("short"), "short");
        let outcome = Outcome::Rejected {
            status: 400,
            reason: format!("HTTP 400: {long}"),
        }
        .shortened();
        assert!(matches!(outcome, Outcome::Rejected { reason, .. } if reason.len() < 300));
    }
}
