//! The delivery engine: finds every subscription (durable consumer) and runs one worker per
//! subscription in this process. Several processes pull from the same consumers and share
//! the work without double delivery.
//!
//! Discovery: JetStream consumer advisories (created/deleted), stream-deleted advisories
//! and Herald's own `herald.internal.subscriptions.changed.>` announcements start, restart
//! or stop a worker within moments; a full resync at start-up and every
//! [`RESYNC_PERIOD`] is the safety net (and picks up topic policy changes).
//!
//! Layout: `worker` (pull loop and `deliver_one`), `message` (what a worker reads from a
//! JetStream message), `payload` (what it sends), `outcome`, one module per protocol
//! (`webhook`, `email`, `nats`, `sms`), `confirm` (subscription confirmations),
//! `user_messages` (the dead-letter notice to the project) and `attempt_log` (the attempt
//! records' writer, and auto-disable).

pub mod attempt_log;
pub mod confirm;
pub mod email;
pub mod message;
pub mod nats;
pub mod outcome;
pub mod payload;
pub mod sms;
pub mod user_messages;
pub mod webhook;
pub mod worker;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    domain::{filter_policy::FilterPolicy, Subscriber},
    store::{
        discovery::{SubscriptionConsumer, SubscriptionEvent},
        names::stream_name,
        subscriptions::{ConsumerLimits, Subscription},
        topics::Topic,
        Store,
    },
};

/// Full resync period: the upper bound for noticing a missed event or a topic policy change.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(10);

/// Outbound clients, built once per process and shared by the API (confirmations) and
/// the workers.
#[derive(Clone)]
pub struct Outbound {
    pub webhook: webhook::WebhookClient,
    pub mailer: Option<email::Mailer>,
    /// The separate NATS connection `nats:` deliveries go out on; only in processes that
    /// run workers (see [`Outbound::connect_nats`]).
    pub nats: Option<nats::NatsTransport>,
    pub sms: Option<sms::SmsGateway>,
}

impl Outbound {
    /// # Errors
    /// When `smtp_url` or `sms_gateway_url` is set but unusable.
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let webhook = webhook::WebhookClient::new(
            webhook::AddressGuard::new(config.outbound_allow.clone()),
            config.delivery_timeout(),
        );
        let mailer = config
            .smtp_url
            .as_deref()
            .map(|url| email::Mailer::new(url, &config.mail_from, config.delivery_timeout()))
            .transpose()?;
        let sms = sms::SmsGateway::from_config(config)?;
        Ok(Self {
            webhook,
            mailer,
            sms,
            nats: None,
        })
    }

    /// Opens the delivery NATS connection (`nats_delivery_*` credentials).
    ///
    /// # Errors
    /// When the credentials file cannot be read.
    pub async fn connect_nats(&mut self, config: &Config) -> anyhow::Result<()> {
        self.nats = Some(nats::NatsTransport::connect(config).await?);
        Ok(())
    }
}

/// The consumer settings subscriptions get from this config.
pub fn consumer_limits(config: &Config) -> ConsumerLimits {
    ConsumerLimits {
        // Comfortably longer than one attempt; slower attempts send progress acks.
        ack_wait: (config.delivery_timeout() * 3).max(Duration::from_secs(3)),
        max_in_flight: config.delivery_max_in_flight,
    }
}

/// What every worker shares.
pub struct Deps {
    pub store: Store,
    pub config: Arc<Config>,
    pub outbound: Outbound,
    pub limits: ConsumerLimits,
    pub attempts: attempt_log::AttemptLog,
}

impl Deps {
    /// Ends an expired subscription: deletes its consumer, and the process that actually
    /// deleted it tells the project.
    pub async fn expire(&self, sub: &Subscription) {
        match self.store.expire_subscription(sub).await {
            Ok(true) => {
                // A subscription that had to be confirmed and never was tells the project
                // that, rather than a plain expiry.
                let unconfirmed = Subscriber::parse(&sub.subscriber).is_ok_and(|s| {
                    s.awaits_confirmation(self.config.require_confirmation, sub.confirmed)
                });
                let event = if unconfirmed {
                    user_messages::EVENT_UNCONFIRMED
                } else {
                    user_messages::EVENT_EXPIRED
                };
                tracing::info!(subscription = %sub.id, event, "subscription expired");
                user_messages::notify(&self.store, sub.project.as_str(), event, &sub.id).await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, subscription = %sub.id, "expiry postponed"),
        }
    }
}

struct Running {
    fingerprint: String,
    cancel: CancellationToken,
}

/// Runs the workers of this process.
#[derive(Clone)]
pub struct Engine {
    deps: Arc<Deps>,
    running: Arc<Mutex<HashMap<(String, String), Running>>>,
    tracker: TaskTracker,
}

impl Engine {
    pub fn new(store: Store, config: Arc<Config>, outbound: Outbound) -> Self {
        let limits = consumer_limits(&config);
        let attempts = attempt_log::AttemptLog::start(store.clone(), config.clone());
        Self {
            deps: Arc::new(Deps {
                store,
                config,
                outbound,
                limits,
                attempts,
            }),
            running: Arc::default(),
            tracker: TaskTracker::new(),
        }
    }

    /// Runs until `shutdown`; then stops pulling and waits for in-flight deliveries.
    pub async fn run(self, shutdown: CancellationToken) {
        let events = tokio::spawn(self.clone().listen(shutdown.clone()));
        loop {
            if let Err(e) = self.resync(&shutdown).await {
                tracing::debug!(error = %e, "delivery resync postponed");
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(RESYNC_PERIOD) => {}
            }
        }
        let _ = events.await;
        for (_, r) in self.running.lock().expect("workers lock").drain() {
            r.cancel.cancel();
        }
        self.tracker.close();
        self.tracker.wait().await;
        self.deps.attempts.close().await;
        tracing::info!("delivery engine stopped");
    }

    /// Reacts to consumer and stream events at once.
    async fn listen(self, shutdown: CancellationToken) {
        let events = self.deps.store.subscription_events().await;
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.next() => e,
            };
            let Some(event) = event else { return };
            let engine = self.clone();
            let token = shutdown.clone();
            tokio::spawn(async move {
                if let Err(e) = engine.refresh(event, &token).await {
                    tracing::debug!(error = %e, "subscription refresh postponed");
                }
            });
        }
    }

    /// Brings one subscription's worker (or a whole deleted stream's) up to date.
    async fn refresh(
        &self,
        event: SubscriptionEvent,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (stream, consumer) = match event {
            SubscriptionEvent::StreamDeleted { stream } => {
                self.stop_where(|(s, _)| *s == stream);
                return Ok(());
            }
            SubscriptionEvent::Consumer { stream, consumer } => (stream, consumer),
        };
        match self
            .deps
            .store
            .subscription_consumer(&stream, &consumer)
            .await?
        {
            Some(c) => self.ensure(&c, shutdown).await,
            None => {
                self.stop_where(|(s, c)| *s == stream && *c == consumer);
                Ok(())
            }
        }
    }

    /// Lists every subscription and makes the running workers match.
    async fn resync(&self, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let consumers = self.deps.store.subscription_consumers().await?;
        let mut seen = std::collections::HashSet::new();
        for c in consumers {
            seen.insert((c.stream.clone(), c.name.clone()));
            self.ensure(&c, shutdown).await?;
        }
        self.stop_where(|key| !seen.contains(key));
        Ok(())
    }

    fn stop_where(&self, pred: impl Fn(&(String, String)) -> bool) {
        let mut running = self.running.lock().expect("workers lock");
        running.retain(|k, r| {
            if pred(k) {
                r.cancel.cancel();
                false
            } else {
                true
            }
        });
    }

    /// Starts the worker of a subscription, or restarts it when it changed.
    async fn ensure(
        &self,
        found: &SubscriptionConsumer,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let (stream, consumer, metadata) =
            (found.stream.as_str(), found.name.as_str(), &found.metadata);
        let Some(sub) = Subscription::from_consumer(consumer, metadata) else {
            return Ok(());
        };
        if stream_name(&sub.project, &sub.topic) != stream {
            return Ok(());
        }
        let key = (stream.to_owned(), consumer.to_owned());
        if sub.is_expired(chrono::Utc::now()) {
            self.stop_where(|k| *k == key);
            self.deps.expire(&sub).await;
            return Ok(());
        }
        // Disabled: no worker, no pulls; its messages wait in the consumer until enabled
        // (expiry, checked first, still ends it).
        if sub.disabled {
            self.stop_where(|k| *k == key);
            return Ok(());
        }
        let Some(topic) = self.deps.store.get_topic(&sub.project, &sub.topic).await? else {
            return Ok(());
        };
        let fingerprint = fingerprint(metadata, topic.revision);
        if self.is_running(&key, &fingerprint) {
            return Ok(());
        }
        let Some(target) = target_of(sub, &topic, stream) else {
            return Ok(());
        };
        let handle = self
            .deps
            .store
            .pull_consumer(stream, consumer)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open consumer {consumer}: {e}"))?;
        let cancel = shutdown.child_token();
        if !self.register(key, fingerprint, cancel.clone()) {
            return Ok(());
        }
        self.tracker.spawn(worker::run(
            self.deps.clone(),
            target,
            handle,
            cancel,
            self.tracker.clone(),
        ));
        Ok(())
    }

    /// Whether a worker for `key` already runs this version of the subscription.
    fn is_running(&self, key: &(String, String), fingerprint: &str) -> bool {
        self.running
            .lock()
            .expect("workers lock")
            .get(key)
            .is_some_and(|r| r.fingerprint == fingerprint)
    }

    /// Records the new worker of `key`, cancelling the one it replaces; `false` (nothing
    /// recorded) when a concurrent refresh already started this version.
    fn register(
        &self,
        key: (String, String),
        fingerprint: String,
        cancel: CancellationToken,
    ) -> bool {
        let mut running = self.running.lock().expect("workers lock");
        if running
            .get(&key)
            .is_some_and(|r| r.fingerprint == fingerprint)
        {
            return false;
        }
        if let Some(old) = running.insert(
            key,
            Running {
                fingerprint,
                cancel,
            },
        ) {
            old.cancel.cancel();
        }
        true
    }
}

/// What a worker delivers `sub` with, under its topic's policies; `None` (logged) when the
/// stored subscriber or filter policy cannot be read.
fn target_of(sub: Subscription, topic: &Topic, stream: &str) -> Option<Arc<worker::Target>> {
    let Ok(subscriber) = Subscriber::parse(&sub.subscriber) else {
        tracing::warn!(subscription = %sub.id, "unreadable subscriber; not delivering");
        return None;
    };
    let filter = match FilterPolicy::from_options(sub.options.doc()) {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(subscription = %sub.id, error = %e, "unreadable filter policy; not delivering");
            return None;
        }
    };
    let policy = worker::Target::effective_policy(topic.metadata.retry_policy(), sub.options.doc());
    Some(Arc::new(worker::Target {
        lag: metrics::gauge!("herald_subscription_lag_messages",
            "topic" => sub.topic.to_string(), "subscription" => sub.id.clone()),
        metrics: worker::DeliveryMetrics::new(subscriber.protocol().as_str()),
        schedule: policy.schedule(),
        policy,
        default_ttl: topic.metadata.default_message_ttl(),
        filter,
        topic: sub.topic.clone(),
        stream: stream.to_owned(),
        subscriber,
        sub,
    }))
}

/// What a running worker depends on: the subscription's own metadata and the topic's
/// revision. nats-server adds `_nats.*` keys (server version, API level) to consumer
/// metadata in info responses but not in every other source; counting them made the first
/// resync restart every worker, and a restart strands the messages already pulled for the
/// old worker until `ack_wait` (a 30 s delivery stall).
fn fingerprint(metadata: &HashMap<String, String>, topic_revision: u64) -> String {
    let mut own: Vec<_> = metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("_nats."))
        .collect();
    own.sort();
    format!("{own:?}/{topic_revision}")
}

#[cfg(test)]
mod fingerprint_tests {
    use super::*;

    #[test]
    fn server_added_metadata_does_not_restart_a_worker() {
        let mine = HashMap::from([("herald.subscriber".to_owned(), "http://x".to_owned())]);
        let mut from_info = mine.clone();
        from_info.insert("_nats.ver".into(), "2.12.8".into());
        from_info.insert("_nats.level".into(), "2".into());
        assert_eq!(fingerprint(&mine, 7), fingerprint(&from_info, 7));
        assert_ne!(
            fingerprint(&mine, 7),
            fingerprint(&mine, 8),
            "a topic change restarts"
        );
        let mut changed = mine.clone();
        changed.insert("herald.subscriber".into(), "http://y".into());
        assert_ne!(fingerprint(&mine, 7), fingerprint(&changed, 7));
    }
}
