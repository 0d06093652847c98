//! The router behind the engine's [`OfflineRouter`]: takes a push for devices that were
//! offline when it was sent and have a vendor token, builds each vendor's payload from the
//! push (title, body, extras, badge, notify id / collapse key, time to live), sends it with a
//! client made from the app's credentials, and tells the engine what became of it: sent
//! (`Push.Event` stage 1 with the vendor's `PushPlatform`, and no resend over Pigeon's
//! connection), dead token (removed from the device), retried with backoff, or refused.

use crate::apns::{ApnsClient, ApnsConfig, Notification};
use crate::fcm::{FcmClient, FcmConfig};
use crate::huawei::{HuaweiClient, HuaweiConfig};
use crate::meizu::{MeizuClient, MeizuConfig};
use crate::oppo::{OppoClient, OppoConfig};
use crate::vivo::{VivoClient, VivoConfig};
use crate::webpush::{Delivery, Subscription, WebPushClient};
use crate::xiaomi::{XiaomiClient, XiaomiConfig, XiaomiMessage};
use crate::Outcome;
use futures_util::StreamExt;
use parking_lot::{Mutex, RwLock};
use pigeon_core::{Platform, Push};
use pigeon_engine::offline::{OfflineRouter, VendorTarget};
use pigeon_engine::{now_ms, AppState, Engine, LivePush};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// Pushes (each with its devices) waiting for the router.
const QUEUE: usize = 1024;
/// Sends in flight at once.
const IN_FLIGHT: usize = 64;
/// Tries of one send that the vendor asked to retry.
const MAX_ATTEMPTS: u32 = 5;
/// Vendors with a client here.
const VENDORS: [&str; 8] = [
    "apns", "fcm", "huawei", "xiaomi", "oppo", "vivo", "meizu", "webpush",
];
/// Who the app server says it is to Web Push services (RFC 8292 `sub`).
const VAPID_SUBJECT: &str = "mailto:push@pigeon.invalid";

struct Job {
    app: Arc<AppState>,
    push: Arc<LivePush>,
    target: VendorTarget,
    attempt: u32,
    /// The badge number it shows, once known: a push changes it once per device, however
    /// many tries its sending takes.
    badge: Option<Option<u32>>,
}

/// An app's credentials: vendor → (updated_ms, credentials).
type AppCredentials = HashMap<String, (u64, Value)>;
/// Clients per (app, vendor), with the updated_ms of the credentials they were made from.
type ClientCache = HashMap<(String, String), (u64, Arc<Client>)>;

enum Client {
    Apns(ApnsClient),
    Fcm(Box<FcmClient>),
    Huawei(HuaweiClient),
    Xiaomi(XiaomiClient),
    Oppo(OppoClient),
    Vivo(VivoClient),
    Meizu(MeizuClient),
    WebPush(WebPushClient),
}

/// The router; [`start`] makes it and hands it to the engine.
pub struct Router {
    jobs: mpsc::Sender<Vec<Job>>,
    /// Per app: vendor → (updated_ms, credentials), refreshed every second.
    credentials: RwLock<HashMap<String, AppCredentials>>,
    /// Clients per (app, vendor), with the credentials' updated_ms they were made from.
    clients: Mutex<ClientCache>,
    engine: Weak<Engine>,
}

/// Starts routing offline devices' pushes to their vendors.
pub fn start(engine: &Arc<Engine>) -> Arc<Router> {
    let (tx, rx) = mpsc::channel(QUEUE);
    let router = Arc::new(Router {
        jobs: tx,
        credentials: RwLock::new(HashMap::new()),
        clients: Mutex::new(HashMap::new()),
        engine: Arc::downgrade(engine),
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
        VENDORS
            .iter()
            .copied()
            .filter(|v| mine.contains_key(*v))
            .collect()
    }

    fn route(&self, app: Arc<AppState>, push: Arc<LivePush>, targets: Vec<VendorTarget>) -> bool {
        let jobs = targets
            .into_iter()
            .map(|target| Job {
                app: app.clone(),
                push: push.clone(),
                target,
                attempt: 0,
                badge: None,
            })
            .collect();
        self.jobs.try_send(jobs).is_ok()
    }
}

async fn refresh_credentials(router: Weak<Router>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let Some(router) = router.upgrade() else {
            return;
        };
        let Some(engine) = router.engine.upgrade() else {
            return;
        };
        // Every app in storage, not only those loaded: one made by `pigeon app create` beside
        // the running server is loaded on its first use, which may be a push.
        let apps = match engine.store().list_apps().await {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(error = %e, "could not list apps for their vendor credentials");
                continue;
            }
        };
        let mut all = HashMap::new();
        for app in apps {
            match engine.store().vendor_credentials(&app.app_key).await {
                Ok(rows) => {
                    let mine = rows
                        .into_iter()
                        .filter_map(|(vendor, body, at)| {
                            serde_json::from_str(&body).ok().map(|v| (vendor, (at, v)))
                        })
                        .collect();
                    all.insert(app.app_key.clone(), mine);
                }
                Err(e) => tracing::warn!(error = %e, "could not read vendor credentials"),
            }
        }
        *router.credentials.write() = all;
    }
}

/// Sends the devices of each push routed, [`IN_FLIGHT`] at a time, with the retries the
/// vendors asked for (as many as there are devices routed, at most: each is one device's).
async fn work(router: Arc<Router>, mut rx: mpsc::Receiver<Vec<Job>>) {
    let (retry_tx, mut retry_rx) = mpsc::unbounded_channel::<Job>();
    let mut ready = std::collections::VecDeque::new();
    let jobs = futures_util::stream::poll_fn(move |cx| {
        use std::task::Poll;
        if let Poll::Ready(Some(j)) = retry_rx.poll_recv(cx) {
            return Poll::Ready(Some(j));
        }
        loop {
            if let Some(j) = ready.pop_front() {
                return Poll::Ready(Some(j));
            }
            match rx.poll_recv(cx) {
                Poll::Ready(Some(batch)) => ready.extend(batch),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    });
    jobs.for_each_concurrent(IN_FLIGHT, |job| {
        let (router, retry_tx) = (router.clone(), retry_tx.clone());
        async move {
            if let Some((job, after)) = router.send(job).await {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let _ = retry_tx.send(job);
                });
            }
        }
    })
    .await;
}

impl Router {
    /// Sends one job; the job again and when, if the vendor asked to retry.
    async fn send(&self, mut job: Job) -> Option<(Job, Duration)> {
        let engine = self.engine.upgrade()?;
        let t = &job.target;
        if job.push.is_recalled() || job.push.is_delivered_to(t.ordinal) {
            return None;
        }
        let client = match self.client(&engine, &job.app.app_key, t.vendor).await {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(app = %job.app.app_key, vendor = t.vendor, error = %why, "vendor channel unusable");
                engine.vendor_failed(&job.app, &job.push, t.ordinal, t.route);
                return None;
            }
        };
        let badge = *job
            .badge
            .get_or_insert_with(|| engine.badge_for(&job.app, t.ordinal, t.platform, &job.push));
        let outcome = deliver(&client, &job.push.push, t, badge).await;
        match outcome {
            Outcome::Sent { .. } => {
                engine.vendor_sent(&job.app, &job.push, t.ordinal, t.vendor);
                None
            }
            Outcome::DeadToken { reason } => {
                tracing::info!(vendor = t.vendor, registration_id = %t.registration_id, %reason,
                    "vendor token is dead; removed from the device");
                if let Err(e) = engine
                    .drop_vendor_token(&job.app, &job.push, t.ordinal, t.vendor)
                    .await
                {
                    tracing::warn!(error = %e, "could not remove a dead vendor token");
                }
                engine.vendor_failed(&job.app, &job.push, t.ordinal, t.route);
                None
            }
            Outcome::Retry { after, reason } if job.attempt + 1 < MAX_ATTEMPTS => {
                let backoff = Duration::from_secs(1 << job.attempt);
                tracing::info!(vendor = t.vendor, %reason, attempt = job.attempt + 1, "vendor asked to retry");
                Some((
                    Job {
                        attempt: job.attempt + 1,
                        ..job
                    },
                    after.unwrap_or(backoff),
                ))
            }
            Outcome::Retry { reason, .. } | Outcome::Rejected { reason, .. } => {
                tracing::warn!(vendor = t.vendor, registration_id = %t.registration_id, %reason,
                    "vendor did not take the push; the device waits for Pigeon's connection");
                engine.vendor_failed(&job.app, &job.push, t.ordinal, t.route);
                None
            }
        }
    }

    /// The app's client for a vendor, made again when its credentials changed.
    async fn client(
        &self,
        engine: &Engine,
        app_key: &str,
        vendor: &str,
    ) -> Result<Arc<Client>, String> {
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
        if let Some((at, c)) = self.clients.lock().get(&key) {
            if *at == updated {
                return Ok(c.clone());
            }
        }
        let s = |k: &str| creds.get(k).and_then(Value::as_str).map(String::from);
        let need = |k: &str| s(k).ok_or_else(|| format!("{vendor} credentials have no {k}"));
        let client = match vendor {
            "apns" => Client::Apns(
                ApnsClient::new(ApnsConfig {
                    key_id: need("key_id")?,
                    team_id: need("team_id")?,
                    private_key_pem: need("private_key")?,
                    topic: need("topic")?,
                    production: creds
                        .get("production")
                        .and_then(Value::as_bool)
                        .unwrap_or(true),
                    base_url: s("base_url"),
                    extra_root_pem: s("ca_pem"),
                })
                .map_err(|e| e.to_string())?,
            ),
            "fcm" => Client::Fcm(Box::new(
                FcmClient::new(FcmConfig::from_service_account(&creds).map_err(|e| e.to_string())?)
                    .map_err(|e| e.to_string())?,
            )),
            "huawei" => Client::Huawei(
                HuaweiClient::new(HuaweiConfig {
                    app_id: need("app_id")?,
                    client_id: need("client_id")?,
                    client_secret: need("client_secret")?,
                    auth_url: s("auth_url"),
                    base_url: s("base_url"),
                })
                .map_err(|e| e.to_string())?,
            ),
            "xiaomi" => Client::Xiaomi(
                XiaomiClient::new(XiaomiConfig {
                    app_secret: need("app_secret")?,
                    package_name: need("package_name")?,
                    base_url: s("base_url"),
                })
                .map_err(|e| e.to_string())?,
            ),
            "oppo" => Client::Oppo(
                OppoClient::new(OppoConfig {
                    app_key: need("app_key")?,
                    master_secret: need("master_secret")?,
                    base_url: s("base_url"),
                })
                .map_err(|e| e.to_string())?,
            ),
            "vivo" => Client::Vivo(
                VivoClient::new(VivoConfig {
                    app_id: need("app_id")?,
                    app_key: need("app_key")?,
                    app_secret: need("app_secret")?,
                    base_url: s("base_url"),
                })
                .map_err(|e| e.to_string())?,
            ),
            "meizu" => Client::Meizu(
                MeizuClient::new(MeizuConfig {
                    app_id: need("app_id")?,
                    app_secret: need("app_secret")?,
                    base_url: s("base_url"),
                })
                .map_err(|e| e.to_string())?,
            ),
            "webpush" => {
                let (private, public) = engine
                    .store()
                    .vapid_keys(app_key)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("the app has no VAPID key pair")?;
                Client::WebPush(
                    WebPushClient::new(&private, &public, VAPID_SUBJECT)
                        .map_err(|e| e.to_string())?,
                )
            }
            other => return Err(format!("no client for {other}")),
        };
        let client = Arc::new(client);
        self.clients.lock().insert(key, (updated, client.clone()));
        Ok(client)
    }
}

/// What a device on `platform` shows: (title, body, extras).
fn texts(push: &Push, platform: Platform) -> (Option<String>, String, Map<String, Value>) {
    let n = push.notification_for(platform).unwrap_or_default();
    let (mut title, body) = match n.get("alert") {
        Some(Value::String(s)) => (None, s.clone()),
        Some(Value::Object(a)) => (
            a.get("title").and_then(Value::as_str).map(String::from),
            a.get("body")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
        ),
        _ => (None, String::new()),
    };
    if let Some(t) = n.get("title").and_then(Value::as_str) {
        title = Some(t.to_string());
    }
    let extras = n
        .get("extras")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    (title, body, extras)
}

/// Seconds the push may still be kept for the device.
fn ttl_s(push: &Push) -> u64 {
    push.expires_ms().saturating_sub(now_ms()) / 1000
}

/// Sends one push to one device through its vendor.
async fn deliver(client: &Client, push: &Push, t: &VendorTarget, badge: Option<u32>) -> Outcome {
    let (title, body, mut extras) = texts(push, t.platform);
    let msg_id = push.msg_id.to_string();
    let token = t.token.as_str().unwrap_or_default();
    match client {
        Client::Apns(c) => {
            extras.insert("msg_id".into(), json!(msg_id));
            let mut n = Notification::alert(title.as_deref(), &body, badge, &Value::Object(extras));
            n.collapse_id = push.options.apns_collapse_id.clone();
            n.expiration = Some(push.expires_ms() / 1000);
            c.send(token, &n).await
        }
        Client::Fcm(c) => {
            let mut data: Map<String, Value> = extras
                .into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (k, json!(v))
                })
                .collect();
            data.insert("msg_id".into(), json!(msg_id));
            let mut notification = json!({"body": body});
            if let Some(t) = title {
                notification["title"] = json!(t);
            }
            let message = json!({"notification": notification, "data": data,
                "android": {"ttl": format!("{}s", ttl_s(push)), "priority": "HIGH",
                    "notification": {"tag": push.notify_id()}}});
            c.send(token, &message).await
        }
        Client::Huawei(c) => {
            extras.insert("msg_id".into(), json!(msg_id));
            let mut notification = json!({"body": body, "click_action": {"type": 3},
                "tag": push.notify_id()});
            notification["title"] = json!(title.unwrap_or_default());
            if let Some(b) = badge {
                notification["badge"] = json!({"set_num": b});
            }
            let message = json!({"data": Value::Object(extras).to_string(),
                "android": {"ttl": format!("{}s", ttl_s(push)), "notification": notification}});
            first(c.send(&[token.to_string()], &message).await)
        }
        Client::Xiaomi(c) => {
            extras.insert("msg_id".into(), json!(msg_id));
            let m = XiaomiMessage {
                title: title.unwrap_or_default(),
                description: body,
                payload: Some(Value::Object(extras).to_string()),
                notify_id: Some((push.msg_id % i32::MAX as u64) as i64),
                time_to_live: Some(Duration::from_secs(ttl_s(push))),
                ..Default::default()
            };
            first(c.send(&[token.to_string()], &m).await)
        }
        Client::Oppo(c) => {
            extras.insert("msg_id".into(), json!(msg_id));
            let n = json!({"title": title.unwrap_or_default(), "content": body,
                "notify_id": (push.msg_id % i32::MAX as u64), "click_action_type": 0,
                "action_parameters": Value::Object(extras).to_string(),
                "off_line": true, "off_line_ttl": ttl_s(push).min(10 * 86400)});
            c.send(token, &n).await
        }
        Client::Vivo(c) => {
            extras.insert("msg_id".into(), json!(msg_id));
            let custom: Map<String, Value> = extras
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        json!(v
                            .as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string())),
                    )
                })
                .collect();
            let m = json!({"notifyType": 4, "title": title.unwrap_or_default(), "content": body,
                "timeToLive": ttl_s(push).clamp(60, 7 * 86400), "skipType": 1,
                "classification": 0, "clientCustomMap": custom});
            c.send(token, &m).await
        }
        Client::Meizu(c) => {
            extras.insert("msg_id".into(), json!(msg_id));
            let m = json!({"noticeBarInfo": {"noticeBarType": 0, "title": title.unwrap_or_default(), "content": body},
                "clickTypeInfo": {"clickType": 0, "parameters": extras},
                "pushTimeInfo": {"offLine": 1, "validTime": (ttl_s(push) / 3600).clamp(1, 72)},
                "advanceInfo": {"notifyKey": format!("{:08x}", push.msg_id as u32)}});
            first(c.send(&[token.to_string()], &m).await)
        }
        Client::WebPush(c) => {
            let sub = Subscription {
                endpoint: t.token["endpoint"].as_str().unwrap_or_default().to_string(),
                p256dh: t.token["keys"]["p256dh"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                auth: t.token["keys"]["auth"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            };
            let payload = json!({"msg_id": msg_id, "notify_id": push.notify_id(),
                "title": title, "body": body, "extras": extras});
            let delivery = Delivery {
                ttl: ttl_s(push),
                urgency: "normal",
                topic: None,
            };
            c.send(&sub, payload.to_string().as_bytes(), &delivery)
                .await
        }
    }
}

/// The outcome of a batch of one.
fn first(mut outcomes: Vec<(String, Outcome)>) -> Outcome {
    outcomes.pop().map(|(_, o)| o).unwrap_or(Outcome::Rejected {
        status: 0,
        reason: "no answer for the token".into(),
    })
}
