//! Pigeon's SMS fallback: when a push's delay has passed, every device
//! it targeted that has not acked it and has a mobile number bound gets one SMS through the
//! configured provider, and each result is reported as an `Sms.Result` event.
//!
//! Durable from end to end: the push's timer is written with the push; when it is due it is
//! replaced by one row per SMS in one transaction; a row is deleted, with its `Sms.Result`,
//! only once the provider took it or it was given up. A crash between a provider's answer and
//! that write sends that SMS again (providers get `msg_id` and `registration_id` to dedupe).

mod provider;

pub use provider::{from_config, Provider, ProviderError, Sms};

use futures_util::StreamExt;
use pigeon_core::SmsFallback;
use pigeon_engine::cluster::Duty;
use pigeon_engine::{now_ms, Engine};
use pigeon_store::{SmsSend, StoreError};
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

/// How often due timers and SMS are looked for.
const POLL: Duration = Duration::from_millis(200);
/// Most timers or SMS taken in one look.
const BATCH: usize = 100;
/// SMS sent at once.
const IN_FLIGHT: usize = 8;

/// The `[sms]` section of the configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `http`, `twilio` or `log` (the default: SMS are logged, not sent).
    pub provider: String,
    /// Where the `http` provider posts; the API base of the `twilio` provider.
    pub url: Option<String>,
    /// Extra headers of the `http` provider's requests.
    pub headers: BTreeMap<String, String>,
    /// The `http` provider's body, with `{mobile}`, `{msg_id}`, `{registration_id}`,
    /// `{temp_id}`, `{temp_para}`, `{content}` standing for those fields as JSON values.
    pub body_template: Option<String>,
    pub account_sid: Option<String>,
    pub auth_token: Option<String>,
    /// The sender number of the `twilio` provider.
    pub from: Option<String>,
    /// Tries of one SMS before it is given up (and reported).
    pub max_attempts: u32,
    /// The delay before the second try, in ms; each later one doubles.
    pub retry_first_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            provider: "log".into(),
            url: None,
            headers: BTreeMap::new(),
            body_template: None,
            account_sid: None,
            auth_token: None,
            from: None,
            max_attempts: 5,
            retry_first_ms: 2000,
        }
    }
}

/// Starts the SMS fallback; runs until the process ends.
pub fn start(engine: Arc<Engine>, config: Config) -> Result<JoinHandle<()>, ProviderError> {
    let provider = from_config(&config)?;
    let worker = Worker {
        engine,
        provider,
        config,
    };
    Ok(tokio::spawn(worker.run()))
}

struct Worker {
    engine: Arc<Engine>,
    provider: Box<dyn Provider>,
    config: Config,
}

impl Worker {
    async fn run(self) {
        let mut tick = tokio::time::interval(POLL);
        loop {
            tick.tick().await;
            // In a cluster one node sends the SMS; it checks its lease (fencing) first.
            if !self.engine.on_duty(Duty::Sms) || !self.engine.still_on_duty(Duty::Sms).await {
                continue;
            }
            if let Err(e) = self.expand_due_timers().await {
                tracing::warn!(error = %e, "SMS fallback: could not read due timers");
            }
            if let Err(e) = self.send_due().await {
                tracing::warn!(error = %e, "SMS fallback: could not send due SMS");
            }
        }
    }

    /// Turns each due timer into the SMS of the devices its push has not reached.
    async fn expand_due_timers(&self) -> Result<(), StoreError> {
        let store = self.engine.store();
        let now = now_ms();
        for (msg_id, app_key) in store.due_sms_jobs(now, BATCH).await? {
            let targets = match self.engine.sms_targets(&app_key, msg_id).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(msg_id, error = %e, "SMS fallback: cannot tell whom to send to");
                    continue;
                }
            };
            let sends = match targets {
                None => Vec::new(),
                Some((_, sms, targets)) => {
                    let sms = serde_json::to_string(&sms).unwrap_or_default();
                    targets
                        .into_iter()
                        .map(|(ordinal, registration_id, mobile)| SmsSend {
                            msg_id,
                            ordinal,
                            app_key: app_key.clone(),
                            registration_id,
                            mobile,
                            sms: sms.clone(),
                            attempts: 0,
                            next_ms: now,
                        })
                        .collect()
                }
            };
            tracing::debug!(msg_id, sms = sends.len(), "SMS fallback due");
            store.expand_sms_job(msg_id, sends).await?;
        }
        Ok(())
    }

    /// Sends the SMS that are due, [`IN_FLIGHT`] at a time.
    async fn send_due(&self) -> Result<(), StoreError> {
        let due = self.engine.store().due_sms_sends(now_ms(), BATCH).await?;
        let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(due)
            .map(|send| self.send_one(send))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        results.into_iter().collect()
    }

    /// One try of one SMS: forgotten with its `Sms.Result` when the provider took it or
    /// it has had all its tries, else scheduled again.
    async fn send_one(&self, send: SmsSend) -> Result<(), StoreError> {
        let sms: SmsFallback = serde_json::from_str(&send.sms).unwrap_or_default();
        let message = Sms {
            mobile: send.mobile.clone(),
            msg_id: send.msg_id.to_string(),
            registration_id: send.registration_id.clone(),
            temp_id: sms.template.map(|t| match t.trim().parse::<i64>() {
                Ok(n) => Value::from(n),
                Err(_) => Value::String(t),
            }),
            temp_para: Value::Object(sms.params),
            content: sms.text,
        };
        let attempts = send.attempts + 1;
        let outcome = self.provider.send(&message).await;
        let store = self.engine.store();
        let result = match &outcome {
            Ok(()) => (0, "sent".to_string()),
            Err(why) if attempts < self.config.max_attempts.max(1) => {
                tracing::info!(msg_id = send.msg_id, attempts, error = %why,
                    "SMS not sent; will retry");
                let delay = self
                    .config
                    .retry_first_ms
                    .saturating_mul(1 << (attempts - 1).min(16));
                return store
                    .retry_sms_send(send.msg_id, send.ordinal, attempts, now_ms() + delay)
                    .await;
            }
            Err(why) => {
                tracing::warn!(msg_id = send.msg_id, attempts, error = %why, "SMS given up");
                (
                    1,
                    format!("the SMS provider refused it {attempts} times: {why}"),
                )
            }
        };
        let events = match self.engine.app(&send.app_key).await {
            Ok(Some(app)) => self.engine.sms_result_event(
                &app,
                send.msg_id,
                &send.registration_id,
                &send.mobile,
                (result.0, &result.1),
            ),
            _ => Vec::new(),
        };
        store
            .finish_sms_send(send.msg_id, send.ordinal, events)
            .await
    }
}
