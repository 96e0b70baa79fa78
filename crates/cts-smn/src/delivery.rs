//! The delivery workers: one task per subscription, so a slow or dead
//! endpoint holds back only its own messages. A worker attempts the
//! oldest pending delivery of its subscription (order is kept), waits with
//! exponential backoff and jitter after a failure, and gives a message up
//! (`dead`) once it has been failing for `retry_for`. Tasks only await:
//! every SQLite call runs on a blocking thread.
//!
//! At-least-once: a delivery is marked after the endpoint answered, so a
//! crash in between repeats it (receivers drop repeats by message id).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::task::JoinHandle;

use crate::db::now_ms;
use crate::email::{Mailer, SmtpConfig};
use crate::error::SmnError;
use crate::model::{Protocol, Subscription};
use crate::outbox::{Attempt, Delivery, Outbox};
use crate::topics::TopicStore;
use crate::webhook;

/// How deliveries are attempted.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Longest wait for one attempt (connect, send, answer).
    pub timeout: Duration,
    /// How long a message is retried before it is dead.
    pub retry_for: Duration,
    /// Wait after the first failure; doubled after each further one.
    pub first_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
    /// The relay e-mail subscriptions go through; without it they fail
    /// (and retry) with "no SMTP relay configured".
    pub smtp: Option<SmtpConfig>,
}

/// What an attempt did, for the metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    Retry,
    Dead,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry => "retry",
            Outcome::Dead => "dead",
        }
    }
}

pub type OnOutcome = Arc<dyn Fn(Outcome) + Send + Sync>;

/// The running delivery of one server.
pub struct Deliverer {
    topics: Arc<TopicStore>,
    outbox: Arc<Outbox>,
    config: DeliveryConfig,
    http: reqwest::Client,
    mailer: Option<Mailer>,
    on_outcome: OnOutcome,
}

impl Deliverer {
    /// Checks the SMTP settings (the sender must be a mailbox).
    pub fn new(
        topics: Arc<TopicStore>,
        outbox: Arc<Outbox>,
        config: DeliveryConfig,
        on_outcome: OnOutcome,
    ) -> Result<Deliverer, SmnError> {
        let mailer = config
            .smtp
            .as_ref()
            .map(|smtp| Mailer::new(smtp, config.timeout))
            .transpose()?;
        Ok(Deliverer {
            topics,
            outbox,
            http: webhook::client(config.timeout),
            mailer,
            config,
            on_outcome,
        })
    }

    /// Serves every subscription until the task is aborted: starts a
    /// worker for each new subscription and stops those of removed ones.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.topics.watch();
        let mut workers = Workers::default();
        loop {
            changes.mark_unchanged();
            let topics = Arc::clone(&self.topics);
            match blocking(move || topics.all_subscriptions()).await {
                Ok(subs) => {
                    workers.0.retain(|urn, task| {
                        let keep = subs.iter().any(|s| &s.urn == urn);
                        if !keep {
                            task.abort();
                        }
                        keep
                    });
                    for sub in subs {
                        if !workers.0.contains_key(&sub.urn) {
                            let me = Arc::clone(&self);
                            workers
                                .0
                                .insert(sub.urn.clone(), tokio::spawn(me.work(sub)));
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the subscriptions; retrying"),
            }
            // A periodic rescan too: a change made by another process.
            let _ = tokio::time::timeout(Duration::from_secs(30), changes.changed()).await;
        }
    }

    /// Delivers `sub`'s messages in order, forever.
    async fn work(self: Arc<Self>, sub: Subscription) {
        let mut enqueued = self.outbox.watch();
        loop {
            enqueued.mark_unchanged();
            let outbox = Arc::clone(&self.outbox);
            let urn = sub.urn.clone();
            let next = match blocking(move || outbox.next_pending(&urn)).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(subscription = %sub.urn, error = %e, "cannot read the outbox");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(delivery) = next else {
                let _ = tokio::time::timeout(Duration::from_secs(30), enqueued.changed()).await;
                continue;
            };
            let wait = delivery.next_ms - now_ms();
            if wait > 0 {
                tokio::time::sleep(Duration::from_millis(wait as u64)).await;
            }
            let attempt = match self.attempt(&sub, &delivery).await {
                Ok(()) => Attempt::Delivered,
                Err(error) => self.after_failure(&sub, &delivery, error),
            };
            let outcome = match attempt {
                Attempt::Delivered => Outcome::Delivered,
                Attempt::Retry { .. } => Outcome::Retry,
                Attempt::Dead { .. } => Outcome::Dead,
            };
            let outbox = Arc::clone(&self.outbox);
            let (urn, seq) = (sub.urn.clone(), delivery.seq);
            if let Err(e) = blocking(move || outbox.record(&urn, seq, attempt)).await {
                // Not recorded: the delivery stays pending and is repeated.
                tracing::warn!(subscription = %sub.urn, error = %e, "cannot record a delivery");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            (self.on_outcome)(outcome);
        }
    }

    async fn attempt(&self, sub: &Subscription, delivery: &Delivery) -> Result<(), String> {
        let send = async {
            match sub.protocol {
                Protocol::Http | Protocol::Https => {
                    webhook::post(&self.http, sub, delivery, now_ms() / 1000).await
                }
                Protocol::Email => match &self.mailer {
                    Some(mailer) => mailer.send(&sub.endpoint, delivery).await,
                    None => Err("no SMTP relay configured ([smtp] host)".to_owned()),
                },
            }
        };
        // The transports have their own timeouts; this bounds the whole.
        tokio::time::timeout(self.config.timeout + Duration::from_secs(1), send)
            .await
            .unwrap_or_else(|_| Err("timed out".to_owned()))
    }

    fn after_failure(&self, sub: &Subscription, delivery: &Delivery, error: String) -> Attempt {
        let now = now_ms();
        let failing_for = now - delivery.created_ms;
        let error: String = error.chars().take(500).collect();
        if failing_for >= millis(self.config.retry_for) {
            tracing::warn!(subscription = %sub.urn, message = %delivery.message_id,
                error = %error, "delivery given up (dead)");
            return Attempt::Dead { error };
        }
        let wait = backoff(&self.config, delivery.attempts + 1);
        tracing::info!(subscription = %sub.urn, message = %delivery.message_id,
            error = %error, retry_in_ms = wait, "delivery failed; retrying");
        Attempt::Retry {
            next_ms: now + wait,
            error,
        }
    }
}

/// The worker of each subscription; stopped with the delivery (an aborted
/// `run` drops this).
#[derive(Default)]
struct Workers(HashMap<String, JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}

/// Milliseconds to wait after the `failures`-th failure: `first_backoff`
/// doubled per failure, at most `max_backoff`, then a random point in its
/// upper half so that many failing messages do not retry in step.
pub fn backoff(config: &DeliveryConfig, failures: u32) -> i64 {
    let first = millis(config.first_backoff).max(1);
    let full = first
        .saturating_mul(1i64 << failures.saturating_sub(1).min(40))
        .min(millis(config.max_backoff).max(first));
    rand::rng().random_range(full / 2..=full)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SmnError> + Send + 'static,
) -> Result<T, SmnError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| SmnError::Storage(format!("blocking task failed: {e}")))?
}
