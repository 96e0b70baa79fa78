//! The delivery workers: one task per subscription, so a slow or dead
//! endpoint holds back only its own messages. A worker attempts the
//! oldest pending delivery of its subscription (order is kept), waits with
//! exponential backoff and jitter after a failure, and gives a message up
//! (`dead`) once it has been failing for `retry_for`. Tasks only await:
//! every SQLite call runs on a blocking thread.
//!
//! At-least-once: a delivery is marked after the endpoint answered, so a
//! crash in between repeats it (receivers drop repeats by message id).
//!
//! **Several nodes** (PostgreSQL): a subscription's worker runs only on the
//! node that holds its lease (`cts-consumer`, consumer [`CONSUMER`], key the
//! subscription URN). Every node tries to claim the subscriptions it does
//! not work at every lease renewal interval; a worker checks its lease
//! before each attempt and stops once it lost it; and its records are
//! fenced by the lease ([`Fence`]): a node that lost it cannot mark a
//! message delivered, retried or dead. A killed holder's subscriptions are
//! taken over after the lease time plus one renewal interval (15 + 5 s by
//! default), from the first message it had not recorded. Workers of other
//! nodes' enqueues poll the outbox every [`SHARED_POLL`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cts_consumer::ConsumerStore;
use rand::Rng;
use tokio::task::JoinHandle;

use crate::db::now_ms;
use crate::email::{Mailer, SmtpConfig};
use crate::error::SmnError;
use crate::model::{Protocol, Subscription};
use crate::outbox::{Attempt, Delivery, Fence, Outbox};
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

/// The delivery's name in the consumer leases: one lease per subscription.
pub const CONSUMER: &str = "smn-delivery";

/// Longest wait of an idle worker for messages other nodes enqueued.
pub const SHARED_POLL: Duration = Duration::from_secs(1);

/// Rescan of the subscriptions on the embedded node, where every change
/// comes through this process and wakes the delivery at once.
const EMBEDDED_RESCAN: Duration = Duration::from_secs(30);

/// The running delivery of one server.
pub struct Deliverer {
    topics: Arc<TopicStore>,
    outbox: Arc<Outbox>,
    config: DeliveryConfig,
    http: reqwest::Client,
    mailer: Option<Mailer>,
    on_outcome: OnOutcome,
    /// Whose leases say which node works which subscription.
    leases: Arc<ConsumerStore>,
}

impl Deliverer {
    /// Checks the SMTP settings (the sender must be a mailbox). `leases`
    /// is the consumer state that holds the subscriptions' leases (the
    /// caller renews them, as it does every consumer's).
    pub fn new(
        topics: Arc<TopicStore>,
        outbox: Arc<Outbox>,
        leases: Arc<ConsumerStore>,
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
            leases,
        })
    }

    /// Serves every subscription whose lease this node holds or takes,
    /// until the task is aborted: starts a worker for each, and stops those
    /// of removed subscriptions and lost leases.
    pub async fn run(self: Arc<Self>) {
        let mut changes = self.topics.watch();
        let mut workers = Workers::default();
        let rescan = self.leases.renew_every().unwrap_or(EMBEDDED_RESCAN);
        loop {
            changes.mark_unchanged();
            let topics = Arc::clone(&self.topics);
            match blocking(move || topics.all_subscriptions()).await {
                Ok(subs) => self.serve(&mut workers, subs).await,
                Err(e) => tracing::warn!(error = %e, "cannot read the subscriptions; retrying"),
            }
            // A periodic rescan too: a change made through another node,
            // a lease another node let go.
            let _ = tokio::time::timeout(rescan, changes.changed()).await;
        }
    }

    /// Stops the workers of subscriptions gone (dropping their leases) or
    /// whose lease was lost, and starts one for each subscription whose
    /// lease this node takes.
    async fn serve(self: &Arc<Self>, workers: &mut Workers, subs: Vec<Subscription>) {
        let mut gone = Vec::new();
        workers.0.retain(|urn, task| {
            let exists = subs.iter().any(|s| &s.urn == urn);
            if !exists {
                task.abort();
                gone.push(urn.clone());
            }
            exists && !task.is_finished()
        });
        for urn in gone {
            let leases = Arc::clone(&self.leases);
            let forgotten = blocking(move || Ok(leases.forget(CONSUMER, &urn)?)).await;
            if let Err(e) = forgotten {
                tracing::warn!(error = %e, "the lease of a removed subscription stays");
            }
        }
        for sub in subs {
            if workers.0.contains_key(&sub.urn) {
                continue;
            }
            let leases = Arc::clone(&self.leases);
            let urn = sub.urn.clone();
            match blocking(move || Ok(leases.claim(CONSUMER, &urn)?)).await {
                Ok(true) => {
                    let me = Arc::clone(self);
                    workers
                        .0
                        .insert(sub.urn.clone(), tokio::spawn(me.work(sub)));
                }
                Ok(false) => {} // Another node delivers it.
                Err(e) => tracing::warn!(subscription = %sub.urn, error = %e,
                    "cannot claim a subscription's delivery; retrying"),
            }
        }
    }

    /// Delivers `sub`'s messages in order while this node holds its lease.
    async fn work(self: Arc<Self>, sub: Subscription) {
        let mut enqueued = self.outbox.watch();
        let idle = if self.outbox.is_shared() {
            SHARED_POLL
        } else {
            EMBEDDED_RESCAN
        };
        loop {
            enqueued.mark_unchanged();
            let (outbox, leases) = (Arc::clone(&self.outbox), Arc::clone(&self.leases));
            let urn = sub.urn.clone();
            let next = blocking(move || {
                if !leases.claim(CONSUMER, &urn)? {
                    return Ok(None);
                }
                Ok(Some(outbox.next_pending(&urn)?))
            })
            .await;
            let next = match next {
                Ok(Some(next)) => next,
                Ok(None) => {
                    tracing::info!(subscription = %sub.urn, "lease lost: another node delivers");
                    return;
                }
                Err(e) => {
                    tracing::warn!(subscription = %sub.urn, error = %e, "cannot read the outbox");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let Some(delivery) = next else {
                let _ = tokio::time::timeout(idle, enqueued.changed()).await;
                continue;
            };
            let wait = delivery.next_ms - now_ms();
            if wait > 0 {
                // At most an idle wait: the lease is checked in between.
                tokio::time::sleep(Duration::from_millis(wait as u64).min(idle)).await;
                if delivery.next_ms > now_ms() {
                    continue;
                }
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
            let (outbox, leases) = (Arc::clone(&self.outbox), Arc::clone(&self.leases));
            let (urn, seq) = (sub.urn.clone(), delivery.seq);
            let recorded = blocking(move || {
                let holder = leases.node();
                let fence = holder.map(|holder| Fence {
                    consumer: CONSUMER,
                    holder,
                });
                outbox.record(&urn, seq, attempt, fence.as_ref())
            })
            .await;
            match recorded {
                Ok(()) => (self.on_outcome)(outcome),
                Err(SmnError::LeaseLost(_)) => {
                    tracing::info!(subscription = %sub.urn, "lease lost: another node delivers");
                    return;
                }
                Err(e) => {
                    // Not recorded: the delivery stays pending and is repeated.
                    tracing::warn!(subscription = %sub.urn, error = %e, "cannot record a delivery");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
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
