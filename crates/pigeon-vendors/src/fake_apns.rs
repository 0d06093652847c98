//! A local APNs that speaks the real protocol — HTTP/2 only (ALPN `h2`) over TLS with a test
//! CA made at start — for tests and `pigeon bench apns`. It checks what Apple checks (the
//! provider token's ES256 signature, key id, team and age; `apns-topic`, `apns-push-type`,
//! `apns-collapse-id`, the payload) and answers as Apple does. Device tokens script the
//! answer: `dead…` 410 Unregistered, `bad…` 400 BadDeviceToken, `busy…` 429 with
//! `retry-after`, `down…` 503; any other token is taken. Started for certificate-based auth
//! it requires a TLS client certificate its test CA issued (mutual TLS) instead of a
//! provider token, as APNs does.

use crate::jwt::verify;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use p256::ecdsa::VerifyingKey;
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio_rustls::rustls;

/// A notification the fake took.
#[derive(Debug, Clone)]
pub struct Received {
    pub device_token: String,
    /// Request headers, names in lower case.
    pub headers: Vec<(String, String)>,
    pub payload: Value,
}

/// What the fake was told.
#[derive(Default)]
pub struct Stats {
    /// Notifications taken (200).
    pub accepted: AtomicU64,
    /// Requests answered with something else.
    pub refused: AtomicU64,
    /// TLS connections clients opened.
    pub connections: AtomicU64,
    /// Provider tokens it saw (distinct, in order).
    pub provider_tokens: Mutex<Vec<String>>,
    /// Notifications taken, if the fake records them.
    pub received: Mutex<Vec<Received>>,
}

/// The account the fake stands for.
#[derive(Clone)]
pub struct Account {
    pub key: VerifyingKey,
    pub key_id: String,
    pub team_id: String,
    pub topic: String,
}

/// A running fake APNs.
pub struct FakeApns {
    /// `https://127.0.0.1:<port>`
    pub base_url: String,
    /// The test CA its certificate is signed by, PEM: give it to the client.
    pub ca_pem: String,
    pub stats: Arc<Stats>,
    /// Provider tokens issued before this unix second are answered 403
    /// ExpiredProviderToken (0: none are).
    pub expire_tokens_before: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FakeApns {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Why the fake could not start.
#[derive(Debug, thiserror::Error)]
pub enum FakeError {
    #[error("test certificates: {0}")]
    Certs(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Tls(#[from] rustls::Error),
    #[error("listening: {0}")]
    Io(#[from] std::io::Error),
}

/// A provider's TLS client certificate and key, PEM, as Apple issues them.
pub struct ClientIdentity {
    pub certificate_pem: String,
    pub private_key_pem: String,
}

impl FakeApns {
    /// Starts a fake on 127.0.0.1 (a free port) for `account`; records each notification it
    /// takes if `record`.
    pub async fn start(account: Account, record: bool) -> Result<FakeApns, FakeError> {
        let (ca_pem, server_config, _) = tls_config(false)?;
        Self::serve(
            ca_pem,
            server_config,
            Some(account.clone()),
            account.topic,
            record,
        )
        .await
    }

    /// Starts a fake for certificate-based auth on `topic`: connections must show a client
    /// certificate of the fake's CA, which is returned with it.
    pub async fn start_certificate(
        topic: &str,
        record: bool,
    ) -> Result<(FakeApns, ClientIdentity), FakeError> {
        let (ca_pem, server_config, identity) = tls_config(true)?;
        let fake = Self::serve(ca_pem, server_config, None, topic.into(), record).await?;
        let identity = identity.ok_or(FakeError::Certs(rcgen::Error::CouldNotParseCertificate))?;
        Ok((fake, identity))
    }

    async fn serve(
        ca_pem: String,
        server_config: rustls::ServerConfig,
        account: Option<Account>,
        topic: String,
        record: bool,
    ) -> Result<FakeApns, FakeError> {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let stats = Arc::new(Stats::default());
        let expire = Arc::new(AtomicU64::new(0));
        let state = Arc::new(State {
            verified: Mutex::new(None),
            account,
            topic,
            record,
            stats: stats.clone(),
            expire_tokens_before: expire.clone(),
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                state.stats.connections.fetch_add(1, Ordering::Relaxed);
                let (acceptor, state) = (acceptor.clone(), state.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper::service::service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(state.answer(req).await) }
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .max_concurrent_streams(1000)
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Ok(FakeApns {
            base_url: format!("https://127.0.0.1:{port}"),
            ca_pem,
            stats,
            expire_tokens_before: expire,
            task,
        })
    }
}

/// A test CA, and a server configuration with a certificate it signed for 127.0.0.1 and
/// localhost, offering only HTTP/2; with `client_auth`, requiring a client certificate of
/// that CA, and one such certificate for the provider.
fn tls_config(
    client_auth: bool,
) -> Result<(String, rustls::ServerConfig, Option<ClientIdentity>), FakeError> {
    let ca_key = rcgen::KeyPair::generate()?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "Pigeon test CA");
    let ca_cert = ca.self_signed(&ca_key)?;
    let key = rcgen::KeyPair::generate()?;
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])?;
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
    let cert = leaf.signed_by(&key, &ca_cert, &ca_key)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?;
    let (builder, identity) = if client_auth {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca_cert.der().clone())?;
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
        let client_key = rcgen::KeyPair::generate()?;
        let mut client = rcgen::CertificateParams::new(Vec::<String>::new())?;
        client
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Apple Push Services: test");
        let client_cert = client.signed_by(&client_key, &ca_cert, &ca_key)?;
        let identity = ClientIdentity {
            certificate_pem: client_cert.pem(),
            private_key_pem: client_key.serialize_pem(),
        };
        (builder.with_client_cert_verifier(verifier), Some(identity))
    } else {
        (builder.with_no_client_auth(), None)
    };
    let mut config = builder.with_single_cert(
        vec![cert.der().clone()],
        rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    )?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok((ca_cert.pem(), config, identity))
}

/// How Apple refuses a request: status, reason, and a header to add.
type Refusal = (
    StatusCode,
    &'static str,
    Option<(&'static str, &'static str)>,
);

struct State {
    /// The last provider token whose signature checked out, with its header and claims.
    verified: Mutex<Option<(String, Value, Value)>>,
    /// The token-auth account; none when connections authenticate with a certificate.
    account: Option<Account>,
    topic: String,
    record: bool,
    stats: Arc<Stats>,
    expire_tokens_before: Arc<AtomicU64>,
}

const PUSH_TYPES: [&str; 7] = [
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
];

impl State {
    async fn answer(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let answer = self.check(req).await;
        match &answer {
            Ok(_) => self.stats.accepted.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.stats.refused.fetch_add(1, Ordering::Relaxed),
        };
        match answer {
            Ok(id) => Response::builder()
                .status(StatusCode::OK)
                .header("apns-id", id)
                .body(Full::new(Bytes::new())),
            Err((status, reason, extra)) => {
                let mut body = json!({ "reason": reason });
                if status == StatusCode::GONE {
                    body["timestamp"] = json!(now_s() * 1000);
                }
                let mut r = Response::builder()
                    .status(status)
                    .header("content-type", "application/json");
                if let Some((k, v)) = extra {
                    r = r.header(k, v);
                }
                r.body(Full::new(Bytes::from(body.to_string())))
            }
        }
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
    }

    /// The provider token of a request: signed by the account's key, its key id and team,
    /// less than an hour old.
    fn check_provider_token(&self, account: &Account, bearer: String) -> Result<(), Refusal> {
        let refuse = |s: StatusCode, r: &'static str| (s, r, None);
        let Some(token) = bearer.strip_prefix("bearer ") else {
            return Err(refuse(StatusCode::FORBIDDEN, "MissingProviderToken"));
        };
        // A token is verified once, as APNs does, not on every request.
        let known = self
            .verified
            .lock()
            .as_ref()
            .filter(|(t, _, _)| t == token)
            .cloned();
        let (h, claims) = match known {
            Some((_, h, c)) => (h, c),
            None => {
                let Ok((h, c)) = verify(token, &account.key) else {
                    return Err(refuse(StatusCode::FORBIDDEN, "InvalidProviderToken"));
                };
                *self.verified.lock() = Some((token.to_string(), h.clone(), c.clone()));
                (h, c)
            }
        };
        let iat = claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
        if h.get("alg").and_then(Value::as_str) != Some("ES256")
            || h.get("kid").and_then(Value::as_str) != Some(&account.key_id)
            || claims.get("iss").and_then(Value::as_str) != Some(&account.team_id)
        {
            return Err(refuse(StatusCode::FORBIDDEN, "InvalidProviderToken"));
        }
        if iat + 3600 < now_s() || iat < self.expire_tokens_before.load(Ordering::Relaxed) {
            return Err(refuse(StatusCode::FORBIDDEN, "ExpiredProviderToken"));
        }
        {
            let mut seen = self.stats.provider_tokens.lock();
            if seen.last().map(String::as_str) != Some(token) {
                seen.push(token.to_string());
            }
        }
        Ok(())
    }

    /// The `apns-id` of a notification taken, or the status and reason Apple would give.
    async fn check(&self, req: Request<Incoming>) -> Result<String, Refusal> {
        let refuse = |s: StatusCode, r: &'static str| (s, r, None);
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(String::from)
        };
        if req.version() != hyper::Version::HTTP_2 {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadRequest"));
        }
        if req.method() != hyper::Method::POST {
            return Err(refuse(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed"));
        }
        let Some(device_token) = req
            .uri()
            .path()
            .strip_prefix("/3/device/")
            .map(String::from)
        else {
            return Err(refuse(StatusCode::NOT_FOUND, "BadPath"));
        };
        if device_token.is_empty() || !device_token.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadDeviceToken"));
        }
        // With certificate-based auth the TLS handshake proved who the provider is, and
        // APNs ignores any authorization header.
        if let Some(account) = &self.account {
            self.check_provider_token(account, header("authorization").unwrap_or_default())?;
        }
        if header("apns-topic").as_deref() != Some(self.topic.as_str()) {
            return Err(refuse(StatusCode::BAD_REQUEST, "TopicDisallowed"));
        }
        match header("apns-push-type") {
            Some(t) if PUSH_TYPES.contains(&t.as_str()) => {}
            _ => return Err(refuse(StatusCode::BAD_REQUEST, "InvalidPushType")),
        }
        if !matches!(
            header("apns-priority").as_deref(),
            None | Some("5" | "10" | "1")
        ) {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadPriority"));
        }
        if header("apns-collapse-id").is_some_and(|c| c.len() > 64) {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadCollapseId"));
        }
        if header("apns-expiration").is_some_and(|e| e.parse::<u64>().is_err()) {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadExpirationDate"));
        }
        let headers: Vec<(String, String)> = if self.record {
            req.headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.as_str().to_string(),
                        v.to_str().unwrap_or_default().to_string(),
                    )
                })
                .collect()
        } else {
            Vec::new()
        };
        let id = header("apns-id").unwrap_or_else(|| format!("{:032x}", rand::random::<u128>()));
        let Ok(body) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadRequest"));
        };
        if body.len() > crate::apns::MAX_PAYLOAD {
            return Err(refuse(StatusCode::PAYLOAD_TOO_LARGE, "PayloadTooLarge"));
        }
        let payload: Value = match serde_json::from_slice(&body) {
            Ok(v @ Value::Object(_)) => v,
            _ => return Err(refuse(StatusCode::BAD_REQUEST, "PayloadEmpty")),
        };
        if !payload.get("aps").is_some_and(Value::is_object) {
            return Err(refuse(StatusCode::BAD_REQUEST, "PayloadEmpty"));
        }
        if device_token.starts_with("dead") {
            return Err(refuse(StatusCode::GONE, "Unregistered"));
        }
        if device_token.starts_with("bad") {
            return Err(refuse(StatusCode::BAD_REQUEST, "BadDeviceToken"));
        }
        if device_token.starts_with("busy") {
            return Err((
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                Some(("retry-after", "2")),
            ));
        }
        if device_token.starts_with("down") {
            return Err(refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
            ));
        }
        if self.record {
            self.stats.received.lock().push(Received {
                device_token,
                headers,
                payload,
            });
        }
        Ok(id)
    }
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}
