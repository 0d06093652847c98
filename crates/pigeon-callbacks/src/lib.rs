//! Pigeon's callback dispatcher (callbacks.md): takes the events the engine wrote to the
//! outbox, batches them per endpoint and command (up to 100, or whatever waited the batch
//! wait), signs and posts them, and retries a failed batch — same delivery id, same events —
//! with growing, jittered delays until it is dead-lettered.
//!
//! Each endpoint has a task of its own, so a slow or dead receiver delays nobody else. A batch
//! is written before it is sent and deleted only when the receiver took it, so a crash at any
//! moment loses no event; it may send one twice, which receivers dedupe by `EventId`.
//!
//! It knows nothing of pushes or devices: only outbox rows, endpoints and HTTP. What differs
//! between an endpoint's formats is only how a batch is encoded (`encoding`).

mod encoding;
mod sign;

pub use encoding::{commands_for, encoder, parse_format, Encoder};
pub use sign::signature;

use pigeon_engine::cluster::Duty;
use pigeon_engine::events::{wants, COMMANDS};
use pigeon_engine::{now_ms, Engine};
use pigeon_store::{
    batch_events_json, CallbackBatch, CallbackEndpoint, CallbackFormat, Storage, StoreError,
};
use pigeon_telemetry::CallbackResult;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Most events in one request.
pub const MAX_BATCH: usize = 100;
/// Most batches created (and, once taken, forgotten) in one storage write: commits, not
/// requests, are what a busy endpoint waits on.
const BATCHES_PER_WRITE: usize = 50;
/// Why a new batch was not taken when it was never sent.
const NOT_TRIED: &str = "not tried: an earlier batch of the window failed";
/// Cursor writes a sending endpoint may have waiting to commit.
const CURSOR_WRITES_AHEAD: usize = 16;
/// Requests in flight to one endpoint at once.
const IN_FLIGHT: usize = 8;
/// Longest a receiver may take to answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often endpoints are looked for and idle endpoints look for new events.
const POLL: Duration = Duration::from_millis(100);
/// Delays between tries, as multiples of the first delay (5 s by default: 5 s, 30 s, 2 min,
/// 10 min, 30 min, 1 h, then every 2 h).
const BACKOFF: [u64; 7] = [1, 6, 24, 120, 360, 720, 1440];

/// How the dispatcher behaves.
#[derive(Debug, Clone)]
pub struct Config {
    /// Longest the oldest event of a batch waits for more.
    pub batch_wait: Duration,
    /// The first retry delay; later ones grow from it.
    pub retry_first: Duration,
    /// A batch that has failed for this long is dead-lettered.
    pub dead_after: Duration,
    /// Whether URLs may point at loopback, private or link-local addresses.
    pub allow_private_networks: bool,
    /// An endpoint whose every request has failed for this long is disabled.
    pub disable_after: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            batch_wait: Duration::from_secs(1),
            retry_first: Duration::from_secs(5),
            dead_after: Duration::from_secs(24 * 3600),
            allow_private_networks: false,
            disable_after: Duration::from_secs(3 * 24 * 3600),
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum SendError {
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Starts dispatching every app's events on a thread of its own; runs until the process
/// ends.
///
/// Its own runtime, because on the server's the dispatcher's every wake-up (a read done, an
/// answer in) queues behind the tasks of thousands of connections during a broadcast: the
/// events then wait for the fan-out that made them instead of flowing beside it.
pub fn start(engine: Arc<Engine>, config: Config) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("pigeon-callbacks")
        .build()?;
    std::thread::Builder::new()
        .name("pigeon-callbacks".into())
        .spawn(move || runtime.block_on(supervise(engine, Arc::new(config))))
}

/// The `X-Pigeon-Delivery` of the batch of an endpoint's events `first..=last` of one
/// command: the same whenever that batch is sent, even again after a crash before it was
/// recorded as taken. Shaped as a UUID (version 8, RFC 9562).
fn delivery_id(endpoint_id: u64, command: &str, first: u64, last: u64) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(endpoint_id.to_be_bytes())
        .chain_update(command.as_bytes())
        .chain_update(first.to_be_bytes())
        .chain_update(last.to_be_bytes())
        .finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&digest[..16]);
    pigeon_engine::uuid_text(b, 8)
}

/// The result of a spawned storage write, a panic in it reported as a storage error.
async fn joined(write: JoinHandle<Result<(), StoreError>>) -> Result<(), StoreError> {
    write
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(format!("cursor write stopped: {e}"))))?
}

/// Keeps one task per endpoint, starting and stopping them as endpoints come and go.
async fn supervise(engine: Arc<Engine>, config: Arc<Config>) {
    let builder = reqwest::Client::builder()
        .timeout(ANSWER_TIMEOUT)
        .redirect(reqwest::redirect::Policy::none());
    // Names are judged again on the addresses connected to, after the check before sending:
    // between the two a name could change (DNS rebinding).
    let policy = pigeon_core::net::AddressPolicy::callbacks(config.allow_private_networks);
    let http = match pigeon_core::net::public_only(builder, policy).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "callbacks disabled: no HTTP client");
            return;
        }
    };
    let mut running: HashMap<u64, (CallbackEndpoint, JoinHandle<()>)> = HashMap::new();
    loop {
        match engine.store().list_callbacks().await {
            Ok(endpoints) => {
                let endpoints: Vec<CallbackEndpoint> = endpoints
                    .into_iter()
                    .filter(|e| e.disabled_ms.is_none())
                    .collect();
                running.retain(|id, (known, task)| {
                    let keep = endpoints
                        .iter()
                        .any(|e| e.same_config(known) && e.id == *id);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                for e in endpoints {
                    if let std::collections::hash_map::Entry::Vacant(slot) = running.entry(e.id) {
                        let worker = Endpoint {
                            encoder: encoder(e.format),
                            engine: engine.clone(),
                            http: http.clone(),
                            config: config.clone(),
                            failing_since_ms: AtomicU64::new(e.failing_since_ms.unwrap_or(0)),
                            holds: AtomicU64::new(0),
                            endpoint: e.clone(),
                        };
                        slot.insert((e, tokio::spawn(worker.run())));
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not list callback endpoints"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

struct Endpoint {
    /// How its batches are encoded, by its format.
    encoder: &'static dyn Encoder,
    engine: Arc<Engine>,
    http: reqwest::Client,
    config: Arc<Config>,
    endpoint: CallbackEndpoint,
    /// Since when every request has failed; 0 while the last one was taken.
    failing_since_ms: AtomicU64,
    /// Its part of `pigeon_callback_events_pending`, given back when its task stops.
    holds: AtomicU64,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.hold(0);
    }
}

/// How many events a batch's JSON array holds (each begins with its `EventId`).
fn events_in(batch_json: &str) -> u64 {
    batch_json.matches(r#"{"EventId":""#).count() as u64
}

impl Endpoint {
    fn store(&self) -> &Arc<dyn Storage> {
        self.engine.store()
    }

    /// Sets how many callback events this endpoint holds untaken (for the gauge).
    fn hold(&self, events: u64) {
        let before = self.holds.swap(events, Ordering::Relaxed);
        pigeon_telemetry::callback_pending_add(events as i64 - before as i64);
    }

    async fn run(self) {
        let mut rounds = 0u64;
        loop {
            if let Err(e) = self.round().await {
                tracing::warn!(endpoint = self.endpoint.id, error = %e, "callback round failed");
            }
            rounds += 1;
            if rounds % 50 == 0 {
                if let Err(e) = self.store().prune_events(&self.endpoint.app_key).await {
                    tracing::warn!(error = %e, "could not prune sent callback events");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = self.engine.events_written() => {}
            }
        }
    }

    /// Retries what is due, then batches and sends what is new. A batch that fails stops
    /// the round: the endpoint is not answering, and its next try is scheduled.
    async fn round(&self) -> Result<(), StoreError> {
        // In a cluster one node posts the callbacks; it checks its lease (fencing) first.
        if !self.engine.on_duty(Duty::Callbacks)
            || !self.engine.still_on_duty(Duty::Callbacks).await
        {
            self.hold(0);
            return Ok(());
        }
        let now = now_ms();
        let pending: Vec<CallbackBatch> = self
            .store()
            .callback_batches(self.endpoint.id)
            .await?
            .into_iter()
            .filter(|b| !b.dead)
            .collect();
        // What waits now: the stored batches (those taken below are counted again next
        // round), then what the look at new events finds waiting for its batch to fill.
        let stored: u64 = pending.iter().map(|b| events_in(&b.events)).sum();
        self.hold(stored);
        if pending.iter().any(|b| b.next_ms > now) {
            // Order per endpoint: nothing new goes out while an older batch waits to retry.
            let due: Vec<CallbackBatch> = pending
                .into_iter()
                .take_while(|b| b.next_ms <= now)
                .collect();
            self.retry_all(due).await?;
            return Ok(());
        }
        if !self.retry_all(pending).await? {
            return Ok(());
        }
        let sent = |c: &&&str| wants(&self.endpoint, c) && self.encoder.carries(c);
        let mut waiting = 0;
        for command in COMMANDS.iter().filter(sent) {
            let (all_taken, held) = self.send_new(command).await?;
            waiting += held;
            if !all_taken {
                break;
            }
        }
        self.hold(waiting);
        Ok(())
    }

    /// Sends the outbox's events of `command` after the endpoint's cursor, in batches,
    /// until none is ready or one fails; false if one failed. With it, how many events it
    /// left waiting for their batch to fill.
    ///
    /// A batch is stored only if it was not taken: the events are durable in the outbox
    /// already, and the cursor moves past a window of batches only in the write that stores
    /// the ones not taken (a crash before it sends the window again; receivers dedupe). Up to
    /// [`CURSOR_WRITES_AHEAD`] of those writes are not waited for before the next window is
    /// read and sent: commits queue behind the delivery checkpoint's, and waiting for each
    /// would hold events that are durable already.
    async fn send_new(&self, command: &str) -> Result<(bool, u64), StoreError> {
        let mut after = self
            .store()
            .callback_cursor(self.endpoint.id, command)
            .await?
            .unwrap_or(self.endpoint.start_event_id);
        // Cursor writes not yet committed, oldest first; the writer commits them in order.
        let mut moving: std::collections::VecDeque<JoinHandle<Result<(), StoreError>>> =
            Default::default();
        let mut held = 0;
        let all_taken = loop {
            let mut events = self
                .store()
                .events_after(
                    &self.endpoint.app_key,
                    self.endpoint.push_level.then_some(self.endpoint.id),
                    command,
                    after,
                    MAX_BATCH * BATCHES_PER_WRITE,
                )
                .await?;
            let Some(oldest) = events.first() else {
                break true;
            };
            let wait = self.config.batch_wait.as_millis() as u64;
            if events.len() < MAX_BATCH && now_ms().saturating_sub(oldest.at_ms) < wait {
                held = events.len() as u64;
                break true;
            }
            // Full batches now; a last partial one only once its oldest event has waited.
            let partial = events.len() % MAX_BATCH;
            if partial != 0 && events.len() > MAX_BATCH {
                let from = events.len() - partial;
                if now_ms().saturating_sub(events[from].at_ms) < wait {
                    events.truncate(from);
                }
            }
            let last = events.last().map(|e| e.id).unwrap_or(after);
            let now = now_ms();
            let batches: Vec<CallbackBatch> = events
                .chunks(MAX_BATCH)
                .map(|chunk| {
                    let (first, last) = (
                        chunk.first().map(|e| e.id).unwrap_or(0),
                        chunk.last().map(|e| e.id).unwrap_or(0),
                    );
                    CallbackBatch {
                        delivery_id: delivery_id(self.endpoint.id, command, first, last),
                        endpoint_id: self.endpoint.id,
                        command: command.to_string(),
                        events: batch_events_json(chunk),
                        first_event_id: first,
                        last_event_id: last,
                        attempts: 0,
                        next_ms: now,
                        first_ms: now,
                        dead: false,
                        last_error: String::new(),
                    }
                })
                .collect();
            tracing::debug!(events = events.len(), "window");
            let outcomes = self.send_window(batches).await?;
            let failed = outcomes
                .iter()
                .find_map(|(_, why)| why.clone().filter(|w| w != NOT_TRIED));
            for (_, why) in &outcomes {
                if why.as_deref().is_some_and(|w| w != NOT_TRIED) {
                    pigeon_telemetry::callback_batch(CallbackResult::Retry);
                }
            }
            let not_taken: Vec<CallbackBatch> = outcomes
                .into_iter()
                .filter_map(|(b, why)| why.map(|why| self.failed_batch(b, why)))
                .collect();
            if moving.len() >= CURSOR_WRITES_AHEAD {
                if let Some(oldest) = moving.pop_front() {
                    joined(oldest).await?;
                }
            }
            let (store, id, command) =
                (self.store().clone(), self.endpoint.id, command.to_string());
            let write = async move { store.create_batches(id, &command, not_taken, last).await };
            if let Some(why) = failed {
                write.await?;
                self.failed(&why).await?;
                break false;
            }
            moving.push_back(tokio::spawn(write));
            after = last;
        };
        for write in moving {
            joined(write).await?;
        }
        Ok((all_taken, held))
    }

    /// Sends new batches, [`IN_FLIGHT`] at a time, starting no more once one failed.
    /// Returns each with `None` if it was taken, else why not (batches never started
    /// included).
    async fn send_window(
        &self,
        batches: Vec<CallbackBatch>,
    ) -> Result<Vec<(CallbackBatch, Option<String>)>, StoreError> {
        let mut waiting = batches.into_iter();
        let mut in_flight = futures_util::stream::FuturesOrdered::new();
        let mut out = Vec::new();
        let mut failed = false;
        loop {
            while !failed && in_flight.len() < IN_FLIGHT {
                let Some(b) = waiting.next() else { break };
                in_flight.push_back(async move {
                    let answer = self.attempt(&b).await;
                    (b, answer)
                });
            }
            let Some((b, answer)) = futures_util::StreamExt::next(&mut in_flight).await else {
                break;
            };
            let why = answer?;
            failed |= why.is_some();
            out.push((b, why));
        }
        out.extend(waiting.map(|b| (b, Some(NOT_TRIED.into()))));
        Ok(out)
    }

    /// A new batch that was not taken, as it is stored to be tried again (dead-lettered
    /// only by a later try: it has failed once).
    fn failed_batch(&self, mut b: CallbackBatch, why: String) -> CallbackBatch {
        let tried = why != NOT_TRIED;
        let now = now_ms();
        b.attempts = u32::from(tried);
        b.next_ms = now + self.delay(1);
        b.last_error = why;
        b
    }

    /// Tries stored batches again, [`IN_FLIGHT`] at a time, until one fails, and forgets
    /// those taken in one write. True if all were taken.
    async fn retry_all(&self, batches: Vec<CallbackBatch>) -> Result<bool, StoreError> {
        let mut taken = Vec::new();
        let mut all = true;
        for group in batches.chunks(IN_FLIGHT) {
            let sends = group.iter().map(|b| async move {
                let answer = self.attempt(b).await?;
                if let Some(why) = &answer {
                    self.record_failure(b, why).await?;
                    self.failed(why).await?;
                }
                Ok::<_, StoreError>((b.delivery_id.clone(), answer.is_none()))
            });
            for result in futures_util::future::join_all(sends).await {
                let (id, ok) = result?;
                if ok {
                    taken.push(id);
                } else {
                    all = false;
                }
            }
            if !all {
                break;
            }
        }
        if !taken.is_empty() {
            self.store().finish_batches(taken).await?;
        }
        Ok(all)
    }

    /// Sends a batch; `None` if the receiver took it, else why not. A failure is for the
    /// caller to record, then to count against the endpoint ([`Endpoint::failed`], which
    /// may disable it and dead-letter what it recorded).
    async fn attempt(&self, batch: &CallbackBatch) -> Result<Option<String>, StoreError> {
        match self.send(batch).await {
            Ok(()) => {
                pigeon_telemetry::callback_batch(CallbackResult::Ok);
                if self.failing_since_ms.swap(0, Ordering::AcqRel) != 0 {
                    tracing::info!(
                        endpoint = self.endpoint.id,
                        "callback endpoint answers again"
                    );
                    self.store()
                        .set_endpoint_health(self.endpoint.id, None, None)
                        .await?;
                }
                Ok(None)
            }
            Err(SendError::Store(e)) => Err(e),
            Err(SendError::Refused(why)) => {
                let attempts = batch.attempts + 1;
                tracing::info!(endpoint = self.endpoint.id, delivery = %batch.delivery_id,
                    attempts, error = %why, "callback batch failed; will retry");
                Ok(Some(why))
            }
        }
    }

    /// Schedules the next try of a stored batch that failed, or dead-letters it.
    async fn record_failure(&self, batch: &CallbackBatch, why: &str) -> Result<(), StoreError> {
        let attempts = batch.attempts + 1;
        let now = now_ms();
        let dead = now.saturating_sub(batch.first_ms) >= self.config.dead_after.as_millis() as u64;
        if dead {
            tracing::warn!(endpoint = self.endpoint.id, delivery = %batch.delivery_id,
                attempts, error = %why, "callback batch dead-lettered");
        }
        pigeon_telemetry::callback_batch(if dead {
            CallbackResult::DeadLetter
        } else {
            CallbackResult::Retry
        });
        self.store()
            .fail_batch(
                &batch.delivery_id,
                attempts,
                now + self.delay(attempts),
                dead,
                why,
            )
            .await
    }

    /// Notes a failed request; an endpoint that has failed for [`Config::disable_after`]
    /// is disabled (its task stops with the next look at the endpoints) and reported.
    async fn failed(&self, why: &str) -> Result<(), StoreError> {
        let now = now_ms();
        let since = match self.failing_since_ms.compare_exchange(
            0,
            now,
            Ordering::AcqRel,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.store()
                    .set_endpoint_health(self.endpoint.id, Some(now), None)
                    .await?;
                now
            }
            Err(since) => since,
        };
        if now.saturating_sub(since) >= self.config.disable_after.as_millis() as u64 {
            tracing::error!(endpoint = self.endpoint.id, app = %self.endpoint.app_key,
                url = %self.endpoint.url, failing_since_ms = since, error = %why,
                "callback endpoint disabled: every request has failed since failing_since_ms; \
                 its waiting batches are dead-lettered; enable it again with \
                 `pigeon app callback enable` or POST /v3/callbacks/{{id}}/enable");
            self.store()
                .set_endpoint_health(self.endpoint.id, Some(since), Some(now))
                .await?;
        }
        Ok(())
    }

    /// The delay before try `attempts + 1`, ±20% so that receivers coming back are not hit
    /// by every sender at once.
    fn delay(&self, attempts: u32) -> u64 {
        let step = BACKOFF[(attempts as usize).saturating_sub(1).min(BACKOFF.len() - 1)];
        let base = self.config.retry_first.as_millis() as u64 * step;
        let jitter = rand::random::<f64>() * 0.4 + 0.8;
        (base as f64 * jitter) as u64
    }

    async fn send(&self, batch: &CallbackBatch) -> Result<(), SendError> {
        let app = self
            .engine
            .app(&self.endpoint.app_key)
            .await
            .map_err(|e| SendError::Refused(format!("app lookup: {e}")))?
            .ok_or_else(|| SendError::Refused("the app no longer exists".into()))?;
        let mut url = url::Url::parse(&self.endpoint.url)
            .map_err(|e| SendError::Refused(format!("bad URL: {e}")))?;
        self.check_address(&url).await?;
        let (command, body) = self
            .encoder
            .encode(&batch.command, &batch.events)
            .map_err(|e| {
                SendError::Refused(format!(
                    "the batch has no {} encoding: {e}",
                    self.endpoint.format.as_str()
                ))
            })?;
        url.query_pairs_mut()
            .append_pair("SdkAppid", &app.app_key)
            .append_pair("CallbackCommand", command)
            .append_pair("contenttype", "json");
        let t = now_ms() / 1000;
        let mut req = self
            .http
            .post(url)
            .header("Content-Type", "application/json")
            .header(
                "X-Pigeon-Signature",
                format!(
                    "t={t},v1={}",
                    signature(&self.endpoint.signing_secret, t, &body)
                ),
            )
            .header("X-Pigeon-Delivery", &batch.delivery_id)
            .body(body);
        if self.endpoint.basic_auth {
            req = req.basic_auth(&app.app_key, Some(&app.master_secret));
        }
        let answer = req
            .send()
            .await
            .map_err(|e| SendError::Refused(format!("no answer: {e}")))?;
        let status = answer.status();
        let text = answer
            .text()
            .await
            .map_err(|e| SendError::Refused(format!("reading the answer: {e}")))?;
        if status != reqwest::StatusCode::OK {
            return Err(SendError::Refused(format!("HTTP {status}")));
        }
        let v: Value = serde_json::from_str(&text)
            .map_err(|_| SendError::Refused("the answer is not JSON".into()))?;
        let ok = v.get("ActionStatus").and_then(Value::as_str) == Some("OK")
            && v.get("ErrorCode").and_then(Value::as_i64) == Some(0);
        if !ok {
            return Err(SendError::Refused(format!("the receiver said {v}")));
        }
        Ok(())
    }

    /// Refuses loopback, private and link-local targets unless the operator allows them.
    async fn check_address(&self, url: &url::Url) -> Result<(), SendError> {
        let policy = pigeon_core::net::AddressPolicy::callbacks(self.config.allow_private_networks);
        // Again at send time, though the URL was checked when given: a name can resolve to
        // another address since, and endpoints stored before that check are in the database.
        pigeon_core::net::check_before_send(url, "url", &policy)
            .await
            .map_err(SendError::Refused)
    }
}

/// How an endpoint is shown to an operator (`pigeon app callback list`, `GET /v3/callbacks`):
/// its secret only as a hint.
pub fn endpoint_view(e: &CallbackEndpoint) -> Value {
    let hint: String = e.signing_secret.chars().take(4).collect();
    json!({"id": e.id, "url": e.url, "format": e.format.as_str(), "commands": e.commands,
           "basic_auth": e.basic_auth,
           "signing_secret": format!("{hint}…"), "push_level": e.push_level,
           "failing_since_ms": e.failing_since_ms, "disabled": e.disabled_ms.is_some(),
           "disabled_ms": e.disabled_ms})
}

/// A new endpoint of an app's own (not push-level), checked, with a fresh signing secret.
/// Its commands are those given, or all its format carries (callbacks.md §5): one that has
/// no place in the format is refused.
pub fn new_endpoint(
    app_key: &str,
    url: &str,
    (commands, format): (Vec<String>, CallbackFormat),
    basic_auth: bool,
) -> Result<CallbackEndpoint, String> {
    check_endpoint(url, &commands)?;
    let commands = commands_for(format, commands)?;
    Ok(CallbackEndpoint {
        id: 0,
        app_key: app_key.to_string(),
        url: url.to_string(),
        commands,
        basic_auth,
        signing_secret: pigeon_engine::random_alnum(32),
        created_ms: now_ms(),
        start_event_id: 0,
        push_level: false,
        failing_since_ms: None,
        disabled_ms: None,
        format,
    })
}

/// Checks an endpoint before it is stored: an http(s) URL with a host, known commands.
pub fn check_endpoint(url: &str, commands: &[String]) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !["http", "https"].contains(&parsed.scheme()) || parsed.host_str().is_none() {
        return Err(format!("{url:?} must be an http or https URL with a host"));
    }
    if let Some(c) = commands.iter().find(|c| !COMMANDS.contains(&c.as_str())) {
        return Err(format!(
            "unknown command {c:?}; known: {}",
            COMMANDS.join(", ")
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_grow_with_jitter() {
        let config = Config::default();
        let e = |attempts| {
            let step = BACKOFF[(attempts as usize - 1).min(BACKOFF.len() - 1)];
            config.retry_first.as_millis() as u64 * step
        };
        assert_eq!(e(1), 5_000);
        assert_eq!(e(2), 30_000);
        assert_eq!(e(7), 2 * 3600 * 1000);
        assert_eq!(e(20), 2 * 3600 * 1000);
    }
}
