//! All access to NATS JetStream: connection, buckets and streams. Nothing outside `store`
//! talks to NATS for state; handlers and workers call the functions here.

// Only the names are public: the bench and the tests build subjects and stream names with
// them; everything else is reached through `Store`'s methods.
pub(crate) mod attempt_index;
pub(crate) mod attempts;
pub(crate) mod dead_letters;
mod direct;
pub(crate) mod discovery;
pub(crate) mod errors;
pub(crate) mod leases;
pub(crate) mod messages;
pub mod names;
pub(crate) mod pull;
mod scan;
pub(crate) mod subscriptions;
pub(crate) mod topic_cache;
pub(crate) mod topics;
mod undecodable;
pub(crate) mod user_messages;

use std::{sync::Arc, time::Duration};

use async_nats::{
    jetstream::{self, kv},
    Client,
};
use tokio::sync::OnceCell;

use crate::config::Config;
use errors::classify;

pub use scan::{scan_latest, scan_latest_headers};

pub use names::TOPICS_BUCKET;
/// The stream configuration of a topic, for the bench's raw-JetStream baseline and the
/// tests that recreate a topic stream by hand.
pub use topics::topic_stream_config;

/// Publishes awaiting their JetStream ack, across the process (see [`Store::connect`]).
const MAX_PUBLISHES_IN_FLIGHT: usize = 1 << 20;

/// A failure of the store, already classified for the API (see [`errors::classify`]).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// NATS or JetStream did not answer (not connected, timeout, no responders) or said it
    /// cannot serve right now: the caller may retry.
    #[error("NATS JetStream is unavailable: {0}")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("not found")]
    NotFound,
    /// A compare-and-set lost against a concurrent writer, or the resource already exists.
    #[error("conflict: {0}")]
    Conflict(String),
    /// A JetStream limit (a quota) refused the request.
    #[error("JetStream limit reached: {limit}")]
    LimitReached {
        limit: errors::Limit,
        #[source]
        source: jetstream::Error,
    },
    /// JetStream lacks the resources to take the request now.
    #[error("JetStream refused: insufficient resources")]
    Exhausted(#[source] jetstream::Error),
    /// Any other refusal by the JetStream API.
    #[error("JetStream refused the request (code {code}): {description}")]
    Refused { code: u64, description: String },
}

/// Handles on the buckets, created on first use so Herald starts while NATS is down.
#[derive(Clone)]
struct Buckets {
    topics: kv::Store,
    topics_stream: jetstream::stream::Stream,
    user_messages: kv::Store,
    user_messages_stream: jetstream::stream::Stream,
}

/// The JetStream-backed store, cheap to clone.
#[derive(Clone)]
pub struct Store {
    client: Client,
    js: jetstream::Context,
    replicas: usize,
    /// Topic streams' `max_consumers` (`max_subscriptions_per_topic`).
    max_subscriptions: i32,
    buckets: Arc<OnceCell<Buckets>>,
    dead_letters: Arc<OnceCell<jetstream::stream::Stream>>,
    leases: Arc<OnceCell<kv::Store>>,
    attempts: Arc<OnceCell<jetstream::stream::Stream>>,
    attempt_index: Arc<OnceCell<jetstream::stream::Stream>>,
    health: Arc<OnceCell<kv::Store>>,
    /// `HERALD_ATTEMPTS`' limits: age and bytes.
    attempt_limits: (Duration, i64),
    topic_cache: topic_cache::TopicCache,
}

impl Store {
    /// Connects to NATS. Returns at once even when NATS is down: the client keeps trying,
    /// `/readyz` reports it and API calls answer 503 meanwhile.
    pub async fn connect(config: &Config) -> Result<Self, async_nats::ConnectError> {
        let mut opts = async_nats::ConnectOptions::new()
            .name("herald")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .request_timeout(Some(config.nats_timeout()))
            .event_callback(|event| async move {
                tracing::info!(%event, "nats connection event");
            });
        if let (Some(user), Some(password)) = (&config.nats_user, &config.nats_password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &config.nats_token {
            opts = opts.token(token.clone());
        }
        if let Some(creds) = &config.nats_creds {
            opts = opts.credentials_file(creds).await?;
        }
        let urls: Vec<&str> = config.nats_url.split(',').map(str::trim).collect();
        let client = opts.connect(urls).await?;
        // async-nats holds a permit per publish until its ack future is awaited, and by
        // default *waits* for a permit when 5,000 are out. A request publishes its whole
        // batch before awaiting acks, so one large batch (or a few concurrent ones) would
        // wait on permits only they can free: a deadlock that stalls every publisher.
        // A large pool that fails fast (503) instead of waiting cannot deadlock.
        let js = jetstream::ContextBuilder::new()
            .timeout(config.nats_timeout())
            .max_ack_inflight(MAX_PUBLISHES_IN_FLIGHT)
            .backpressure_on_inflight(false)
            .build(client.clone());
        Ok(Self {
            client,
            js,
            replicas: config.replicas,
            max_subscriptions: i32::try_from(config.max_subscriptions_per_topic)
                .unwrap_or(i32::MAX),
            buckets: Arc::new(OnceCell::new()),
            dead_letters: Arc::new(OnceCell::new()),
            leases: Arc::new(OnceCell::new()),
            attempts: Arc::new(OnceCell::new()),
            attempt_index: Arc::new(OnceCell::new()),
            health: Arc::new(OnceCell::new()),
            attempt_limits: (
                config.attempt_log_max_age(),
                i64::try_from(config.attempt_log_max_bytes).unwrap_or(i64::MAX),
            ),
            topic_cache: topic_cache::TopicCache::default(),
        })
    }

    /// The connection, for Herald's NATS transports (the user-message responder); state
    /// goes through the methods of `store`.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Waits until everything published so far (acks above all) has reached the server, for
    /// at most `within`: on shutdown, an ack still in the client's buffer would be lost and
    /// its message delivered again.
    pub async fn flush(&self, within: Duration) {
        let _ = tokio::time::timeout(within, self.client.flush()).await;
    }

    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// Readiness: connected, and JetStream answers an account request.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        self.js.query_account().await.map_err(classify)?;
        self.buckets().await?;
        Ok(())
    }

    async fn buckets(&self) -> Result<&Buckets, StoreError> {
        if !self.is_connected() {
            // Fail fast instead of waiting for the request timeout.
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        self.buckets
            .get_or_try_init(|| async {
                let topics = self
                    .kv_bucket(kv::Config {
                        bucket: TOPICS_BUCKET.into(),
                        description: "Herald topic metadata, key {project}.{topic}".into(),
                        history: 1,
                        ..Default::default()
                    })
                    .await?;
                let topics_stream = self
                    .js
                    .get_stream(names::kv_stream(TOPICS_BUCKET))
                    .await
                    .map_err(classify)?;
                let user_messages = self.kv_bucket(user_messages::bucket_config()).await?;
                let user_messages_stream = self
                    .js
                    .get_stream(names::kv_stream(names::USER_MESSAGES_BUCKET))
                    .await
                    .map_err(classify)?;
                Ok(Buckets {
                    topics,
                    topics_stream,
                    user_messages,
                    user_messages_stream,
                })
            })
            .await
    }

    /// The stream `cell` holds, created (or its limits updated) with `config` on first use.
    async fn ensured_stream<'a>(
        &self,
        cell: &'a OnceCell<jetstream::stream::Stream>,
        config: impl FnOnce() -> jetstream::stream::Config,
    ) -> Result<&'a jetstream::stream::Stream, StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        cell.get_or_try_init(|| async {
            let config = config();
            let name = config.name.clone();
            self.js
                .create_or_update_stream(config)
                .await
                .map_err(classify)?;
            self.js.get_stream(name).await.map_err(classify)
        })
        .await
    }

    /// Gets a bucket, creating it with `config` when missing.
    async fn kv_bucket(&self, mut config: kv::Config) -> Result<kv::Store, StoreError> {
        match self.js.get_key_value(config.bucket.clone()).await {
            Ok(store) => Ok(store),
            Err(e) if e.kind() == jetstream::context::KeyValueErrorKind::GetBucket => {
                config.num_replicas = self.replicas;
                config.storage = jetstream::stream::StorageType::File;
                self.js.create_key_value(config).await.map_err(classify)
            }
            Err(e) => Err(classify(e)),
        }
    }
}
