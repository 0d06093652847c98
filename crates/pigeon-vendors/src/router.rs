//! The router behind the engine's [`OfflineRouter`]: takes a push for devices that were
//! offline when it was sent and have a vendor token, builds each vendor's payload from the
//! push (title, body, extras, badge, notify id / collapse key, time to live), sends it with a
//! client made from the app's credentials, and tells the engine what became of it: sent
//! (`Push.Event` stage 1 with the vendor's `PushPlatform`, and no resend over Pigeon's
//! connection), dead token (removed from the device), retried with backoff, or refused.

use crate::apns::{ApnsAuth, ApnsClient, ApnsConfig};
use crate::fcm::{FcmClient, FcmConfig};
use crate::honor::HonorClient;
use crate::huawei::HuaweiClient;
use crate::meizu::{MeizuClient, MeizuConfig};
use crate::oppo::{OppoClient, OppoConfig};
use crate::payload::{self, notify_number, Shown};
use crate::vivo::{VivoClient, VivoConfig};
use crate::webpush::{Subscription, WebPushClient};
use crate::xiaomi::{XiaomiClient, XiaomiConfig};
use crate::{OAuthAppConfig, Outcome};
use parking_lot::{Mutex, RwLock};
use pigeon_core::Push;
use pigeon_engine::offline::{OfflineRouter, VendorTarget};
use pigeon_engine::{AppState, Engine, LivePush};
use pigeon_telemetry::VendorResult;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Semaphore};

/// Pushes (each with its devices) waiting for the router.
const QUEUE: usize = 1024;
/// Requests being sent or waiting for their vendor's turn, over all vendors.
const IN_FLIGHT: usize = 1024;
/// Tries of one send that the vendor asked to retry.
const MAX_ATTEMPTS: u32 = 5;
/// Who the app server says it is to Web Push services (RFC 8292 `sub`).
const VAPID_SUBJECT: &str = "mailto:push@pigeon.invalid";

/// Most devices of one push in one request to `vendor` (1: one device per request).
fn batch_size(vendor: &str) -> usize {
    match vendor {
        "huawei" => crate::huawei::MAX_TOKENS,
        "honor" => crate::honor::MAX_TOKENS,
        "xiaomi" => crate::xiaomi::MAX_REGIDS,
        "meizu" => crate::meizu::MAX_IDS,
        _ => 1,
    }
}

/// Requests to one vendor for one app at once, unless its credentials say
/// (`concurrency`): APNs multiplexes over HTTP/2, the others take one request per
/// connection.
fn default_concurrency(vendor: &str) -> usize {
    match vendor {
        "apns" => 256,
        "fcm" | "webpush" => 64,
        _ => 16,
    }
}

/// Messages per minute to one vendor for one app, unless its credentials say
/// (`rate_per_minute`): FCM's published default quota per project; the others publish none.
fn default_rate_per_minute(vendor: &str) -> Option<u64> {
    (vendor == "fcm").then_some(600_000)
}

/// Devices of one push for one vendor, sent in as few requests as the vendor allows.
struct Job {
    app: Arc<AppState>,
    push: Arc<LivePush>,
    /// For a push to an A/B test, the variant its targets are in (one job, one payload).
    variant: Option<usize>,
    vendor: &'static str,
    targets: Vec<Target>,
    attempt: u32,
}

struct Target {
    device: VendorTarget,
    /// The badge number it shows, once known: a push changes it once per device, however
    /// many tries its sending takes.
    badge: Option<Option<u32>>,
}

/// An app's credentials: vendor → (updated_ms, credentials).
type AppCredentials = HashMap<String, (u64, Value)>;
/// Channels per (app, vendor), with the updated_ms of the credentials they were made from.
type ChannelCache = HashMap<(String, String), (u64, Arc<Channel>)>;

enum Client {
    Apns(ApnsClient),
    Fcm(Box<FcmClient>),
    Huawei(HuaweiClient),
    Honor(HonorClient),
    Xiaomi(XiaomiClient),
    Oppo(OppoClient),
    Vivo(VivoClient),
    Meizu(MeizuClient),
    WebPush(WebPushClient),
}

/// An app's way to one vendor: its client, how many requests may be in flight, how fast.
struct Channel {
    client: Client,
    slots: Semaphore,
    pace: Option<Pace>,
}

/// Spreads messages to a vendor evenly over time: a token bucket holding a second's worth
/// that a caller may overdraw, waiting until its share is due. (Written here because a
/// batch of 1000 must be able to take more than the bucket holds.)
struct Pace {
    per_second: f64,
    /// Messages that may go now (negative: owed), as of the instant.
    bucket: Mutex<(f64, Instant)>,
}

impl Pace {
    fn new(per_minute: u64) -> Pace {
        let per_second = per_minute as f64 / 60.0;
        Pace {
            per_second,
            bucket: Mutex::new((per_second.max(1.0), Instant::now())),
        }
    }

    /// Takes `n` messages' worth; how long to wait before sending them.
    fn take(&self, n: usize) -> Duration {
        let mut bucket = self.bucket.lock();
        let now = Instant::now();
        let refill = now.duration_since(bucket.1).as_secs_f64() * self.per_second;
        bucket.0 = (bucket.0 + refill).min(self.per_second.max(1.0)) - n as f64;
        bucket.1 = now;
        if bucket.0 >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-bucket.0 / self.per_second)
        }
    }
}

/// What the operator decides about vendor channels.
#[derive(Clone, Debug, Default)]
pub struct RouterConfig {
    /// Whether a Web Push endpoint (which the device gave) may be plain `http` or on a
    /// loopback, private or link-local address: for a local push service.
    pub webpush_allow_private_networks: bool,
    /// Whether vendors' `base_url` / `auth_url` / `token_uri` may be on loopback, private,
    /// link-local or other non-public addresses: for local fakes of the vendors.
    pub vendors_allow_private_networks: bool,
}

/// The router; [`start`] makes it and hands it to the engine.
pub struct Router {
    config: RouterConfig,
    jobs: mpsc::Sender<Vec<Job>>,
    /// Per app: vendor → (updated_ms, credentials), refreshed every second.
    credentials: RwLock<HashMap<String, AppCredentials>>,
    channels: Mutex<ChannelCache>,
    engine: Weak<Engine>,
    this: Weak<Router>,
}

/// Starts routing pushes to vendors.
pub fn start(engine: &Arc<Engine>, config: RouterConfig) -> Arc<Router> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let router = Arc::new_cyclic(|this| Router {
        config,
        jobs: tx,
        credentials: RwLock::new(HashMap::new()),
        channels: Mutex::new(HashMap::new()),
        engine: Arc::downgrade(engine),
        this: this.clone(),
    });
    tokio::spawn(refresh_credentials(Arc::downgrade(&router)));
    tokio::spawn(work(router.clone(), rx));
    engine.set_offline_router(router.clone());
    router
}

impl OfflineRouter for Router {
    fn vendors_of(&self, app_key: &str) -> Vec<&'static str> {
        let creds = self.credentials.read();
        let Some(mine) = creds.get(app_key) else {
            return Vec::new();
        };
        // The vendors credentials are kept for (Web Push needs none).
        pigeon_engine::vendors::vendor_names()
            .into_iter()
            .filter(|v| mine.contains_key(*v))
            .collect()
    }

    fn route(&self, app: Arc<AppState>, push: Arc<LivePush>, targets: Vec<VendorTarget>) -> bool {
        let mut by_vendor: BTreeMap<(&'static str, Option<usize>), Vec<VendorTarget>> =
            BTreeMap::new();
        for t in targets {
            let variant = push.variant_with(t.ordinal, || Some(t.registration_id.clone()));
            by_vendor.entry((t.vendor, variant)).or_default().push(t);
        }
        let mut jobs = Vec::new();
        for ((vendor, variant), devices) in by_vendor {
            let mut devices = devices.into_iter().peekable();
            while devices.peek().is_some() {
                let targets = devices
                    .by_ref()
                    .take(batch_size(vendor))
                    .map(|device| Target {
                        device,
                        badge: None,
                    })
                    .collect();
                jobs.push(Job {
                    app: app.clone(),
                    push: push.clone(),
                    variant,
                    vendor,
                    targets,
                    attempt: 0,
                });
            }
        }
        self.jobs.try_send(jobs).is_ok()
    }

    fn revoke(&self, app: Arc<AppState>, push: Arc<LivePush>, targets: Vec<VendorTarget>) {
        // Huawei and Xiaomi document a revoke call; the other vendors replace a notification
        // by its notify id / collapse key, which override already carries.
        let mut by_vendor: BTreeMap<&'static str, Vec<String>> = BTreeMap::new();
        for t in targets {
            if let ("huawei" | "xiaomi", Some(token)) = (t.vendor, t.token.as_str()) {
                by_vendor
                    .entry(t.vendor)
                    .or_default()
                    .push(token.to_string());
            }
        }
        if by_vendor.is_empty() {
            return;
        }
        let this = self.this.clone();
        tokio::spawn(async move {
            let Some(router) = this.upgrade() else {
                return;
            };
            let Some(engine) = router.engine.upgrade() else {
                return;
            };
            let notify_id = notify_number(&push.push);
            for (vendor, tokens) in by_vendor {
                let channel = match router.channel(&engine, &app.app_key, vendor).await {
                    Ok(c) => c,
                    Err(why) => {
                        tracing::warn!(app = %app.app_key, vendor, error = %why, "cannot recall at the vendor");
                        continue;
                    }
                };
                for chunk in tokens.chunks(1000) {
                    let outcome = match &channel.client {
                        Client::Huawei(c) => c.revoke(notify_id, chunk).await,
                        Client::Xiaomi(c) => c.revoke(notify_id, chunk).await,
                        _ => continue,
                    }
                    .shortened();
                    tracing::info!(app = %app.app_key, msg_id = push.msg_id(), vendor,
                        tokens = chunk.len(), ?outcome, "recall sent to the vendor");
                }
            }
        });
    }
}

async fn refresh_credentials(router: Weak<Router>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seen = None;
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let Some(engine) = router.engine.upgrade() else {
            return;
        };
        // Read again only when some app's credentials changed (a `pigeon app vendor`
        // beside the running server writes them to storage).
        match engine.store().vendor_credentials_version().await {
            Ok(v) if Some(v) == seen => continue,
            Ok(v) => seen = Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "could not check vendor credentials");
                continue;
            }
        }
        match engine.store().all_vendor_credentials().await {
            Ok(rows) => {
                let mut all: HashMap<String, AppCredentials> = HashMap::new();
                for (app_key, vendor, body, at) in rows {
                    if let Ok(v) = serde_json::from_str(&body) {
                        all.entry(app_key).or_default().insert(vendor, (at, v));
                    }
                }
                *router.credentials.write() = all;
            }
            Err(e) => {
                seen = None;
                tracing::warn!(error = %e, "could not read vendor credentials");
            }
        }
    }
}

/// Sends the jobs routed, [`IN_FLIGHT`] at a time, and the retries the vendors asked for
/// (as many as there are jobs routed, at most).
async fn work(router: Arc<Router>, mut rx: mpsc::Receiver<Vec<Job>>) {
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<Job>();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut ready = std::collections::VecDeque::new();
    loop {
        let job = if let Some(job) = ready.pop_front() {
            job
        } else {
            tokio::select! {
                Some(job) = retry_rx.recv() => job,
                batch = rx.recv() => match batch {
                    Some(batch) => {
                        ready.extend(batch);
                        continue;
                    }
                    None => return,
                },
            }
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (router, retry_tx) = (router.clone(), retry_tx.clone());
        tokio::spawn(async move {
            let again = router.send(job).await;
            drop(slot);
            if let Some((job, after)) = again {
                tokio::time::sleep(after).await;
                let _ = retry_tx.send(job);
            }
        });
    }
}

impl Router {
    /// Sends one job; what the vendor asked to retry, and when.
    async fn send(&self, mut job: Job) -> Option<(Job, Duration)> {
        let engine = self.engine.upgrade()?;
        if job.push.is_recalled() {
            return None;
        }
        let push = job.push.clone();
        job.targets
            .retain(|t| !push.is_delivered_to(t.device.ordinal));
        if job.targets.is_empty() {
            return None;
        }
        let channel = match self.channel(&engine, &job.app.app_key, job.vendor).await {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(app = %job.app.app_key, vendor = job.vendor, error = %why, "vendor channel unusable");
                let n = job.targets.len() as u64;
                pigeon_telemetry::vendor_result(job.vendor, VendorResult::Error, n);
                for t in &job.targets {
                    engine.vendor_refused(&job.app, &push, &t.device, &why);
                }
                return None;
            }
        };
        if job.vendor == "webpush" {
            let mut allowed = Vec::with_capacity(job.targets.len());
            for t in std::mem::take(&mut job.targets) {
                match self.check_endpoint(&t.device.token).await {
                    Ok(()) => allowed.push(t),
                    Err(why) => {
                        tracing::warn!(registration_id = %t.device.registration_id, %why,
                            "Web Push endpoint refused");
                        pigeon_telemetry::vendor_result(job.vendor, VendorResult::Error, 1);
                        engine.vendor_refused(&job.app, &push, &t.device, &why);
                    }
                }
            }
            job.targets = allowed;
        }
        for t in &mut job.targets {
            let d = &t.device;
            t.badge
                .get_or_insert_with(|| engine.badge_for(&job.app, d.ordinal, d.platform, &push));
        }
        let outcomes = {
            let _turn = channel.slots.acquire().await.ok()?;
            if let Some(pace) = &channel.pace {
                let wait = pace.take(job.targets.len());
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
            }
            deliver(
                &channel.client,
                push.variant_push(job.variant),
                &job.targets,
            )
            .await
        };
        let mut again = Vec::new();
        let mut after = None;
        // Outcomes by `VendorResult`, counted once per job.
        let mut counts = [0u64; 5];
        for outcome in &outcomes {
            let result = match outcome {
                Outcome::Sent { .. } => VendorResult::Ok,
                Outcome::DeadToken { .. } => VendorResult::DeadToken,
                Outcome::Retry { .. } => VendorResult::Retry,
                Outcome::Rejected { .. } => VendorResult::Rejected,
            };
            counts[result as usize] += 1;
        }
        pigeon_telemetry::vendor_results(job.vendor, &counts);
        for (t, outcome) in job.targets.into_iter().zip(outcomes) {
            let d = &t.device;
            match outcome.shortened() {
                Outcome::Sent { .. } => engine.vendor_sent(&job.app, &push, d.ordinal, d.vendor),
                Outcome::DeadToken { reason } => {
                    tracing::info!(vendor = d.vendor, registration_id = %d.registration_id, %reason,
                        "vendor token is dead; removed from the device");
                    if let Err(e) = engine
                        .drop_vendor_token(&job.app, &push, d.ordinal, d.vendor)
                        .await
                    {
                        tracing::warn!(error = %e, "could not remove a dead vendor token");
                    }
                    engine.vendor_failed(&job.app, &push, d.ordinal, d.route);
                }
                Outcome::Retry { after: a, reason } if job.attempt + 1 < MAX_ATTEMPTS => {
                    tracing::info!(vendor = d.vendor, %reason, attempt = job.attempt + 1, "vendor asked to retry");
                    after = after.max(a);
                    again.push(t);
                }
                Outcome::Retry { reason, .. } | Outcome::Rejected { reason, .. } => {
                    tracing::warn!(vendor = d.vendor, registration_id = %d.registration_id, %reason,
                        "vendor did not take the push");
                    engine.vendor_refused(&job.app, &push, d, &reason);
                }
            }
        }
        if again.is_empty() {
            return None;
        }
        let backoff = Duration::from_secs(1 << job.attempt);
        Some((
            Job {
                targets: again,
                attempt: job.attempt + 1,
                ..job
            },
            after.unwrap_or(backoff),
        ))
    }

    /// A Web Push endpoint Pigeon may post to: `https` on a public address, unless the
    /// operator allows private networks.
    async fn check_endpoint(&self, subscription: &Value) -> Result<(), String> {
        let endpoint = subscription["endpoint"].as_str().unwrap_or_default();
        let url = reqwest::Url::parse(endpoint).map_err(|e| format!("{endpoint:?}: {e}"))?;
        let allow = self.config.webpush_allow_private_networks;
        if !allow && url.scheme() == "http" {
            return Err(format!("{endpoint}: Web Push endpoints must be https"));
        }
        let policy = pigeon_core::net::AddressPolicy::webpush(allow);
        pigeon_core::net::check_before_send(&url, "endpoint", &policy).await
    }

    /// The app's channel to a vendor, made again when its credentials changed.
    async fn channel(
        &self,
        engine: &Engine,
        app_key: &str,
        vendor: &str,
    ) -> Result<Arc<Channel>, String> {
        let (updated, creds) = if vendor == "webpush" {
            (0, Value::Null)
        } else {
            self.credentials
                .read()
                .get(app_key)
                .and_then(|m| m.get(vendor))
                .cloned()
                .ok_or_else(|| format!("no {vendor} credentials"))?
        };
        let key = (app_key.to_string(), vendor.to_string());
        if let Some((at, c)) = self.channels.lock().get(&key) {
            if *at == updated {
                return Ok(c.clone());
            }
        }
        // Web Push endpoints come from devices, the other URLs from credentials: each kind
        // has its operator switch.
        let allow_private = if vendor == "webpush" {
            self.config.webpush_allow_private_networks
        } else {
            self.config.vendors_allow_private_networks
        };
        let client = make_client(engine, app_key, vendor, &creds, allow_private).await?;
        let number = |k: &str| creds.get(k).and_then(Value::as_u64);
        let concurrency = number("concurrency").map_or(default_concurrency(vendor), |n| n as usize);
        let rate = number("rate_per_minute").or(default_rate_per_minute(vendor));
        let channel = Arc::new(Channel {
            client,
            slots: Semaphore::new(concurrency),
            pace: rate.map(Pace::new),
        });
        self.channels.lock().insert(key, (updated, channel.clone()));
        Ok(channel)
    }
}

/// A vendor's client from an app's credentials (checked when they were stored).
async fn make_client(
    engine: &Engine,
    app_key: &str,
    vendor: &str,
    creds: &Value,
    allow_private: bool,
) -> Result<Client, String> {
    // Checked when they were set, but credentials stored before that check, or set while the
    // operator allowed private networks, may still point there. Only literal hosts here: the
    // clients' resolver judges names when connecting.
    let policy = pigeon_core::net::AddressPolicy::vendors(allow_private);
    pigeon_engine::vendors::check_urls(creds, &policy, false).await?;
    let s = |k: &str| creds.get(k).and_then(Value::as_str).map(String::from);
    let need = |k: &str| s(k).ok_or_else(|| format!("{vendor} credentials have no {k}"));
    let e = |e: &dyn std::fmt::Display| e.to_string();
    Ok(match vendor {
        "apns" => {
            let auth = match s("certificate") {
                Some(certificate_pem) => ApnsAuth::Certificate {
                    certificate_pem,
                    private_key_pem: need("private_key")?,
                },
                None => ApnsAuth::Token {
                    key_id: need("key_id")?,
                    team_id: need("team_id")?,
                    private_key_pem: need("private_key")?,
                },
            };
            Client::Apns(
                ApnsClient::new(ApnsConfig {
                    auth,
                    topic: need("topic")?,
                    production: creds
                        .get("production")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    base_url: s("base_url"),
                    extra_root_pem: s("ca_pem"),
                    allow_private_networks: allow_private,
                })
                .map_err(|x| e(&x))?,
            )
        }
        "fcm" => {
            let config = FcmConfig {
                allow_private_networks: allow_private,
                ..FcmConfig::from_service_account(creds).map_err(|x| e(&x))?
            };
            Client::Fcm(Box::new(FcmClient::new(config).map_err(|x| e(&x))?))
        }
        "huawei" | "honor" => {
            let account = OAuthAppConfig {
                app_id: need("app_id")?,
                client_id: need("client_id")?,
                client_secret: need("client_secret")?,
                auth_url: s("auth_url"),
                base_url: s("base_url"),
                allow_private_networks: allow_private,
            };
            if vendor == "huawei" {
                Client::Huawei(HuaweiClient::new(account).map_err(|x| e(&x))?)
            } else {
                Client::Honor(HonorClient::new(account).map_err(|x| e(&x))?)
            }
        }
        "xiaomi" => Client::Xiaomi(
            XiaomiClient::new(XiaomiConfig {
                app_secret: need("app_secret")?,
                package_name: need("package_name")?,
                base_url: s("base_url"),
                allow_private_networks: allow_private,
            })
            .map_err(|x| e(&x))?,
        ),
        "oppo" => Client::Oppo(
            OppoClient::new(OppoConfig {
                app_key: need("app_key")?,
                master_secret: need("master_secret")?,
                base_url: s("base_url"),
                allow_private_networks: allow_private,
            })
            .map_err(|x| e(&x))?,
        ),
        "vivo" => Client::Vivo(
            VivoClient::new(VivoConfig {
                app_id: need("app_id")?,
                app_key: need("app_key")?,
                app_secret: need("app_secret")?,
                base_url: s("base_url"),
                allow_private_networks: allow_private,
            })
            .map_err(|x| e(&x))?,
        ),
        "meizu" => Client::Meizu(
            MeizuClient::new(MeizuConfig {
                app_id: need("app_id")?,
                app_secret: need("app_secret")?,
                base_url: s("base_url"),
                allow_private_networks: allow_private,
            })
            .map_err(|x| e(&x))?,
        ),
        "webpush" => {
            let (private, public) = engine
                .store()
                .vapid_keys(app_key)
                .await
                .map_err(|x| e(&x))?
                .ok_or("the app has no VAPID key pair")?;
            Client::WebPush(
                WebPushClient::new(&private, &public, VAPID_SUBJECT, allow_private)
                    .map_err(|x| e(&x))?,
            )
        }
        other => return Err(format!("no client for {other}")),
    })
}

/// Sends a push to a job's devices through their vendor: one request per device, or, to
/// vendors that take many tokens, one per group of devices shown the same notification
/// (platform and badge number). An outcome per device, in order.
async fn deliver(client: &Client, push: &Push, targets: &[Target]) -> Vec<Outcome> {
    let mut groups: BTreeMap<(usize, Option<u32>), Vec<usize>> = BTreeMap::new();
    for (i, t) in targets.iter().enumerate() {
        let key = (t.device.platform as usize, t.badge.flatten());
        groups.entry(key).or_default().push(i);
    }
    let mut out: Vec<Option<Outcome>> = vec![None; targets.len()];
    for ((_, badge), members) in groups {
        let shown = Shown::of(push, targets[members[0]].device.platform);
        let tokens: Vec<String> = members
            .iter()
            .map(|&i| {
                targets[i]
                    .device
                    .token
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let answers: Vec<Outcome> = match client {
            Client::Huawei(c) => {
                in_order(c.send(&tokens, &payload::huawei(push, &shown, badge)).await)
            }
            Client::Honor(c) => {
                in_order(c.send(&tokens, &payload::honor(push, &shown, badge)).await)
            }
            Client::Xiaomi(c) => in_order(c.send(&tokens, &payload::xiaomi(push, &shown)).await),
            Client::Meizu(c) => in_order(c.send(&tokens, &payload::meizu(push, &shown)).await),
            _ => {
                let mut answers = Vec::with_capacity(members.len());
                for &i in &members {
                    let device = &targets[i].device;
                    answers.push(deliver_one(client, push, &shown, device, badge).await);
                }
                answers
            }
        };
        for (&i, answer) in members.iter().zip(answers) {
            out[i] = Some(answer);
        }
    }
    out.into_iter()
        .map(|o| {
            o.unwrap_or(Outcome::Rejected {
                status: 0,
                reason: "no answer for the token".into(),
            })
        })
        .collect()
}

/// The outcomes of a batch answer, in the order of its tokens.
fn in_order(answers: Vec<(String, Outcome)>) -> Vec<Outcome> {
    answers.into_iter().map(|(_, o)| o).collect()
}

/// Sends one push to one device through a vendor that takes one token per request.
async fn deliver_one(
    client: &Client,
    push: &Push,
    shown: &Shown<'_>,
    t: &VendorTarget,
    badge: Option<u32>,
) -> Outcome {
    let token = t.token.as_str().unwrap_or_default();
    match client {
        Client::Apns(c) => c.send(token, &payload::apns(push, shown, badge)).await,
        Client::Fcm(c) => c.send(token, &payload::fcm(push, shown, badge)).await,
        Client::Oppo(c) => c.send(token, &payload::oppo(push, shown)).await,
        Client::Vivo(c) => c.send(token, &payload::vivo(push, shown)).await,
        Client::WebPush(c) => {
            let text = |k: &str| {
                t.token
                    .pointer(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
            };
            let sub = Subscription {
                endpoint: text("/endpoint").to_string(),
                p256dh: text("/keys/p256dh").to_string(),
                auth: text("/keys/auth").to_string(),
            };
            let (body, delivery) = payload::webpush(push, shown);
            c.send(&sub, &body, &delivery).await
        }
        Client::Huawei(_) | Client::Honor(_) | Client::Xiaomi(_) | Client::Meizu(_) => {
            Outcome::Rejected {
                status: 0,
                reason: "a batch vendor's device went the one-by-one way".into(),
            }
        }
    }
}
