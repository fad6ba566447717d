//! The delivery engine: finds every subscription (durable consumer) and hands it to the
//! pull engine (`pull`), which pulls for all of them over one inbox and delivers. Several
//! processes pull from the same consumers and share the work without double delivery.
//!
//! Discovery: JetStream consumer advisories (created, deleted, leader elected),
//! stream-deleted advisories and Herald's own announcements of changed subscriptions and
//! topics update the pull engine within moments; a full resync at start-up and every
//! [`RESYNC_PERIOD`] is the safety net.
//!
//! Layout: `pull` (the multiplexed pull engine), `worker` (`deliver_one`), `message` (what a
//! delivery reads from a JetStream message), `payload` (what it sends), `outcome`, one module
//! per protocol (`webhook`, `email`, `nats`, `sms`), `confirm` (subscription confirmations),
//! `user_messages` (the dead-letter notice to the project) and `attempt_log` (the attempt
//! records' writer, and auto-disable).

pub mod attempt_log;
pub mod confirm;
pub mod email;
pub mod message;
pub mod nats;
pub mod outcome;
pub mod payload;
pub mod pull;
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

/// Full resync period: the upper bound for noticing an event missed while connected (a
/// slow-consumer drop). It lists every consumer of every topic, so it is the one cost of
/// discovery that grows with the number of subscriptions; events (advisories, Herald's
/// announcements of subscription and topic changes) do the work within moments, and a
/// reconnect, when events may have been missed, resyncs at once.
pub const RESYNC_PERIOD: Duration = Duration::from_secs(300);
/// How often the resync loop looks for a reconnect.
const RECONNECT_CHECK: Duration = Duration::from_secs(1);

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
    /// Keystone (`auth_mode = keystone`): tokens of `trust+` subscriptions' trusts.
    pub keystone: Option<crate::auth::Keystone>,
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
            keystone: None,
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
                if let (Some(trust), Some(keystone)) = (&sub.trust_id, &self.outbound.keystone) {
                    keystone.delete_trust(trust).await;
                }
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, subscription = %sub.id, "expiry postponed"),
        }
    }
}

/// Runs the delivery of this process: discovery keeps the pull engine's list of
/// subscriptions current; the engine pulls and delivers.
#[derive(Clone)]
pub struct Engine {
    deps: Arc<Deps>,
    /// What the pull engine was last told for each subscription: its fingerprint.
    running: Arc<Mutex<HashMap<pull::Key, u64>>>,
    tracker: TaskTracker,
}

/// Discovery, once the pull engine runs.
#[derive(Clone)]
struct Discovery {
    engine: Engine,
    puller: pull::PullHandle,
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
        let (puller, pulling) = loop {
            match pull::start(self.deps.clone(), self.tracker.clone(), shutdown.clone()).await {
                Ok(started) => break started,
                Err(e) => tracing::warn!(error = %e, "pull engine not started yet"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        };
        let discovery = Discovery {
            engine: self.clone(),
            puller,
        };
        let events = tokio::spawn(discovery.clone().listen(shutdown.clone()));
        'resync: loop {
            if let Err(e) = discovery.resync().await {
                tracing::debug!(error = %e, "delivery resync postponed");
            }
            // Events missed while disconnected are caught up at once after a reconnect;
            // otherwise the resync is only a safety net and runs rarely.
            let connects = self.deps.store.connects();
            let due = tokio::time::Instant::now() + RESYNC_PERIOD;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'resync,
                    _ = tokio::time::sleep(RECONNECT_CHECK) => {}
                }
                if self.deps.store.connects() != connects || tokio::time::Instant::now() >= due {
                    continue 'resync;
                }
            }
        }
        let _ = events.await;
        let _ = pulling.await;
        self.tracker.close();
        self.tracker.wait().await;
        self.deps.attempts.close().await;
        self.deps.store.flush(Duration::from_secs(2)).await;
        tracing::info!("delivery engine stopped");
    }
}

impl Discovery {
    /// Reacts to consumer and stream events at once.
    async fn listen(self, shutdown: CancellationToken) {
        let events = self.engine.deps.store.subscription_events().await;
        let mut events = std::pin::pin!(events);
        loop {
            let event = tokio::select! {
                _ = shutdown.cancelled() => return,
                e = events.next() => e,
            };
            let Some(event) = event else { return };
            let discovery = self.clone();
            tokio::spawn(async move {
                if let Err(e) = discovery.refresh(event).await {
                    tracing::debug!(error = %e, "subscription refresh postponed");
                }
            });
        }
    }

    /// Brings one subscription (or a whole deleted or changed stream) up to date.
    async fn refresh(&self, event: SubscriptionEvent) -> anyhow::Result<()> {
        let store = &self.engine.deps.store;
        let (stream, consumer) = match event {
            SubscriptionEvent::StreamDeleted { stream } => {
                self.stop_where(|(s, _)| *s == stream);
                return Ok(());
            }
            SubscriptionEvent::LeaderElected { stream, consumer } => {
                self.puller.repull((stream, consumer));
                return Ok(());
            }
            SubscriptionEvent::TopicChanged { stream } => {
                let consumers = store.subscription_consumers_of(&stream).await?;
                let mut topics = HashMap::new();
                for c in consumers {
                    self.ensure(&c, &mut topics).await?;
                }
                return Ok(());
            }
            SubscriptionEvent::Consumer { stream, consumer } => (stream, consumer),
        };
        match store.subscription_consumer(&stream, &consumer).await? {
            Some(c) => self.ensure(&c, &mut HashMap::new()).await,
            None => {
                self.stop_where(|(s, c)| *s == stream && *c == consumer);
                Ok(())
            }
        }
    }

    /// Lists every subscription and makes the pull engine's list match.
    async fn resync(&self) -> anyhow::Result<()> {
        let consumers = self.engine.deps.store.subscription_consumers().await?;
        let mut seen = std::collections::HashSet::new();
        // One topic read per topic, not per subscription.
        let mut topics = HashMap::new();
        for c in consumers {
            seen.insert((c.stream.clone(), c.name.clone()));
            self.ensure(&c, &mut topics).await?;
        }
        self.stop_where(|key| !seen.contains(key));
        Ok(())
    }

    fn stop_where(&self, pred: impl Fn(&pull::Key) -> bool) {
        let mut running = self.engine.running.lock().expect("workers lock");
        running.retain(|k, _| {
            if pred(k) {
                self.puller.remove(k.clone());
                false
            } else {
                true
            }
        });
    }

    /// Hands the pull engine a subscription, or its new version when it changed.
    async fn ensure(
        &self,
        found: &SubscriptionConsumer,
        topics: &mut HashMap<String, Option<Arc<Topic>>>,
    ) -> anyhow::Result<()> {
        let deps = &self.engine.deps;
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
            deps.expire(&sub).await;
            return Ok(());
        }
        // Disabled: no pulls; its messages wait in the (paused) consumer until enabled.
        if sub.disabled {
            self.stop_where(|k| *k == key);
            return Ok(());
        }
        let topic = match topics.get(stream) {
            Some(t) => t.clone(),
            None => {
                let t = deps
                    .store
                    .get_topic(&sub.project, &sub.topic)
                    .await?
                    .map(Arc::new);
                topics.insert(stream.to_owned(), t.clone());
                t
            }
        };
        let Some(topic) = topic else {
            return Ok(());
        };
        let fingerprint = fingerprint(metadata, topic.revision);
        if self.is_running(&key, fingerprint) {
            return Ok(());
        }
        let Some(target) = target_of(sub, &topic, stream) else {
            return Ok(());
        };
        self.engine
            .running
            .lock()
            .expect("workers lock")
            .insert(key.clone(), fingerprint);
        self.puller.upsert(key, target);
        Ok(())
    }

    /// Whether the engine already delivers this version of the subscription.
    fn is_running(&self, key: &pull::Key, fingerprint: u64) -> bool {
        self.engine
            .running
            .lock()
            .expect("workers lock")
            .get(key)
            .is_some_and(|f| *f == fingerprint)
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
        lag: std::sync::OnceLock::new(),
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
fn fingerprint(metadata: &HashMap<String, String>, topic_revision: u64) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut own: Vec<_> = metadata
        .iter()
        .filter(|(k, _)| !k.starts_with("_nats."))
        .collect();
    own.sort();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    own.hash(&mut h);
    topic_revision.hash(&mut h);
    h.finish()
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
