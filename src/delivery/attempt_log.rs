//! Writes the attempt log without slowing delivery, and disables subscriptions that keep
//! failing.
//!
//! Workers hand each record to [`AttemptLog::record`], a `try_send` on a bounded channel:
//! a full channel drops the record (counted), never waits. One background writer per
//! process publishes the records pipelined, keeping up to [`ACK_WINDOW`] JetStream acks
//! outstanding; a failed publish is counted and delivery goes on.
//!
//! The attempt index (`store::attempt_index`): each ack carries the record's sequence; the
//! writer keeps each subscription's newest sequences and stores those that changed once
//! per [`FLUSH_PERIOD`], pipelined like the records. Rings idle for [`RING_IDLE`] are
//! forgotten, so memory follows the subscriptions being delivered to, not all of them.
//!
//! Auto-disable: the writer also sees every outcome. The health bucket holds, per failing
//! subscription, when its current run of failures began; every process watches it. A
//! failure of a subscription not known to be failing records the start (create: the
//! earliest stays); a delivery of one known to be failing ends the run (purge). At most
//! one such write per subscription per [`FLUSH_PERIOD`] and process, and none while
//! things go well. Once a run is older than `disable_after`, the process that wins the
//! purge-by-revision disables the subscription and tells the project.

use std::{
    collections::{HashMap, HashSet},
    future::IntoFuture,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use futures::{stream::FuturesUnordered, Future, FutureExt, Stream, StreamExt};
use tokio::{sync::mpsc, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::{consumer_limits, user_messages};
use crate::{
    config::Config,
    domain::{ProjectId, TopicName},
    store::{
        attempt_index::Ring,
        attempts::{Attempt, AttemptOutcome},
        names::health_key,
        Store, StoreError,
    },
};

/// Records waiting for the writer; beyond this they are dropped (counted).
const QUEUE: usize = 64 * 1024;
/// JetStream acks the writer waits for at once.
const ACK_WINDOW: usize = 1024;
/// How often the writer updates the health bucket, checks for subscriptions to disable and
/// stores the attempt index (listings read the stream itself past the newest sequence of
/// every ring stored within the last three of these).
const FLUSH_PERIOD: Duration = Duration::from_secs(1);
/// A subscription's ring of sequences is forgotten after this long without a record.
const RING_IDLE: Duration = Duration::from_secs(600);

/// One record on its way, with where it belongs.
#[derive(Debug)]
pub struct Entry {
    pub project: ProjectId,
    pub topic: TopicName,
    pub record: Attempt,
}

/// The workers' handle on the writer; cheap to clone.
#[derive(Clone)]
pub struct AttemptLog {
    tx: mpsc::Sender<Entry>,
    response_bytes: usize,
    dropped: metrics::Counter,
    stop: CancellationToken,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl AttemptLog {
    /// Starts the writer (on the current runtime).
    pub fn start(store: Store, config: Arc<Config>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let stop = CancellationToken::new();
        let response_bytes = if config.attempt_log {
            config.attempt_log_response_bytes
        } else {
            0
        };
        let writer = Writer {
            publish: config.attempt_log,
            health: Health::new(config.disable_after()),
            index: Index::new(),
            store,
            config,
            written: metrics::counter!("herald_attempt_log_written_total"),
            dropped: dropped_counter(),
        };
        let task = tokio::spawn(writer.run(rx, stop.clone()));
        Self {
            tx,
            response_bytes,
            dropped: dropped_counter(),
            stop,
            task: Arc::new(Mutex::new(Some(task))),
        }
    }

    /// Bytes of a reply body to keep in a record (0: none).
    pub fn response_bytes(&self) -> usize {
        self.response_bytes
    }

    /// Hands a record to the writer; never waits.
    pub fn record(&self, entry: Entry) {
        if self.tx.try_send(entry).is_err() {
            self.dropped.increment(1);
        }
    }

    /// Writes what is queued, waits for its acks, and stops the writer.
    pub async fn close(&self) {
        self.stop.cancel();
        let task = self.task.lock().expect("attempt log lock").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

fn dropped_counter() -> metrics::Counter {
    metrics::counter!("herald_attempt_log_dropped_total")
}

type Ack = Result<
    async_nats::jetstream::publish::PublishAck,
    async_nats::jetstream::context::PublishError,
>;
/// A record's ack, with the subscription it belongs to (`None`: an index record's).
type AckFuture = Pin<Box<dyn Future<Output = (Option<RingKey>, Ack)> + Send>>;
type RingKey = (ProjectId, String);

struct Writer {
    store: Store,
    config: Arc<Config>,
    /// `attempt_log`: off, records only feed auto-disable.
    publish: bool,
    health: Health,
    index: Index,
    written: metrics::Counter,
    dropped: metrics::Counter,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Entry>, stop: CancellationToken) {
        let mut acks: FuturesUnordered<AckFuture> = FuturesUnordered::new();
        let mut tick = tokio::time::interval(FLUSH_PERIOD);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = None;
        loop {
            tokio::select! {
                Some((key, ack)) = acks.next(), if !acks.is_empty() => self.acked(key, ack),
                entry = rx.recv() => match entry {
                    Some(entry) => self.write(entry, &mut acks).await,
                    None => break,
                },
                event = next_event(&mut watch) => match event {
                    Some(Ok((key, since))) => self.health.failing_changed(key, since),
                    _ => {
                        // Lost (NATS away): re-read from scratch at the next tick.
                        watch = None;
                        self.health.failing.clear();
                    }
                },
                _ = tick.tick() => {
                    if watch.is_none() {
                        watch = self.store.watch_failing().await.ok().map(|w| Box::pin(w) as Watch);
                    }
                    self.health.flush(&self.store, &self.config).await;
                    self.index.flush(&self.store, &mut acks).await;
                }
                _ = stop.cancelled() => {
                    while let Ok(entry) = rx.try_recv() {
                        self.write(entry, &mut acks).await;
                    }
                    break;
                }
            }
        }
        // The records' acks, then the index that names them.
        while let Some((key, ack)) = acks.next().await {
            self.acked(key, ack);
        }
        self.index.flush(&self.store, &mut acks).await;
        while let Some((key, ack)) = acks.next().await {
            self.acked(key, ack);
        }
    }

    async fn write(&mut self, entry: Entry, acks: &mut FuturesUnordered<AckFuture>) {
        self.health.observe(&entry);
        if !self.publish {
            return;
        }
        if acks.len() >= ACK_WINDOW {
            if let Some((key, ack)) = acks.next().await {
                self.acked(key, ack);
            }
        }
        let payload = match serde_json::to_vec(&entry.record) {
            Ok(p) => p,
            Err(_) => return self.dropped.increment(1),
        };
        match self
            .store
            .publish_attempt(
                &entry.project,
                &entry.record.subscription_id,
                payload.into(),
            )
            .await
        {
            Ok(ack) => {
                let key = (entry.project, entry.record.subscription_id);
                acks.push(Box::pin(ack.into_future().map(|ack| (Some(key), ack))));
            }
            Err(e) => {
                tracing::debug!(error = %e, "attempt record not written");
                self.dropped.increment(1);
            }
        }
    }

    fn acked(&mut self, key: Option<RingKey>, ack: Ack) {
        match (key, ack) {
            (Some(key), Ok(ack)) => {
                self.written.increment(1);
                self.index.written(key, ack.sequence);
            }
            (Some(_), Err(_)) => self.dropped.increment(1),
            (None, ack) => self.index.stored(ack.is_ok()),
        }
    }
}

/// The attempt index this process writes (see the module doc).
struct Index {
    /// This process's name in index subjects: a new one per start, so writers never
    /// overwrite each other's rings.
    writer: String,
    rings: HashMap<RingKey, (Ring, Instant)>,
    /// A ring was forgotten: a new ring may miss records this process wrote before.
    forgot: bool,
    failed: metrics::Counter,
}

impl Index {
    fn new() -> Self {
        Self {
            writer: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
            rings: HashMap::new(),
            forgot: false,
            failed: metrics::counter!("herald_attempt_index_failed_total"),
        }
    }

    fn written(&mut self, key: RingKey, seq: u64) {
        let forgot = self.forgot;
        let (ring, touched) = self
            .rings
            .entry(key)
            .or_insert_with(|| (Ring::new(!forgot), Instant::now()));
        ring.push(seq);
        *touched = Instant::now();
    }

    fn stored(&mut self, ok: bool) {
        if !ok {
            // The previous ring stays in NATS; listings fall back to walking the stream
            // for what it lacks.
            self.failed.increment(1);
        }
    }

    /// Stores every ring that changed; forgets those idle for [`RING_IDLE`].
    async fn flush(&mut self, store: &Store, acks: &mut FuturesUnordered<AckFuture>) {
        let mut idle = false;
        let now_ms = Utc::now().timestamp_millis();
        for ((project, subscription), (ring, touched)) in self.rings.iter_mut() {
            if !ring.dirty {
                idle |= touched.elapsed() >= RING_IDLE;
                continue;
            }
            match store
                .publish_attempt_index(project, subscription, &self.writer, &ring.record(now_ms))
                .await
            {
                Ok(ack) => {
                    ring.dirty = false;
                    acks.push(Box::pin(ack.into_future().map(|ack| (None, ack))));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "attempt index not stored yet");
                    self.failed.increment(1);
                    // NATS is away: try again at the next flush.
                    break;
                }
            }
        }
        if idle {
            self.rings
                .retain(|_, (ring, touched)| ring.dirty || touched.elapsed() < RING_IDLE);
            self.forgot = true;
        }
    }
}

type Watch =
    Pin<Box<dyn Stream<Item = Result<(String, Option<(DateTime<Utc>, u64)>), StoreError>> + Send>>;

/// The next health bucket change; pending forever without a watch.
async fn next_event(
    watch: &mut Option<Watch>,
) -> Option<Result<(String, Option<(DateTime<Utc>, u64)>), StoreError>> {
    match watch {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

/// A subscription this process saw fail.
#[derive(Debug, Clone)]
struct Candidate {
    project: ProjectId,
    topic: TopicName,
    subscription: String,
}

/// Auto-disable bookkeeping of one process (see the module doc).
#[derive(Debug, Default)]
struct Health {
    disable_after: Duration,
    /// Every failing subscription (the health bucket, watched): key → (since, revision).
    failing: HashMap<String, (DateTime<Utc>, u64)>,
    /// Failed here, not yet recorded as failing: key → when the run began.
    to_mark: HashMap<String, DateTime<Utc>>,
    /// Delivered here while recorded as failing.
    to_clear: HashSet<String>,
    /// Subscriptions that failed here, which this process may have to disable.
    candidates: HashMap<String, Candidate>,
}

impl Health {
    fn new(disable_after: Duration) -> Self {
        Self {
            disable_after,
            ..Default::default()
        }
    }

    fn failing_changed(&mut self, key: String, since: Option<(DateTime<Utc>, u64)>) {
        match since {
            Some(s) => {
                self.failing.insert(key, s);
            }
            None => {
                self.failing.remove(&key);
            }
        }
    }

    fn observe(&mut self, entry: &Entry) {
        let outcome = entry.record.outcome;
        if outcome == AttemptOutcome::Delivered {
            // The common case costs nothing while no subscription is failing.
            if self.failing.is_empty() && self.candidates.is_empty() {
                return;
            }
            let key = health_key(&entry.project, &entry.record.subscription_id);
            self.to_mark.remove(&key);
            self.candidates.remove(&key);
            if self.failing.contains_key(&key) {
                self.to_clear.insert(key);
            }
        } else if outcome.is_failure() {
            let key = health_key(&entry.project, &entry.record.subscription_id);
            self.to_clear.remove(&key);
            if !self.failing.contains_key(&key) {
                self.to_mark
                    .entry(key.clone())
                    .or_insert(entry.record.started_at);
            }
            self.candidates.entry(key).or_insert_with(|| Candidate {
                project: entry.project.clone(),
                topic: entry.topic.clone(),
                subscription: entry.record.subscription_id.clone(),
            });
        }
    }

    /// The failing subscriptions this process should try to disable at `now`.
    fn due(&self, now: DateTime<Utc>) -> Vec<(String, u64)> {
        let window =
            chrono::Duration::from_std(self.disable_after).unwrap_or(chrono::Duration::MAX);
        self.candidates
            .keys()
            .filter_map(|key| {
                let (since, revision) = self.failing.get(key)?;
                (now - *since >= window).then(|| (key.clone(), *revision))
            })
            .collect()
    }

    async fn flush(&mut self, store: &Store, config: &Config) {
        for key in std::mem::take(&mut self.to_clear) {
            if let Err(e) = store.clear_failing(&key).await {
                tracing::debug!(error = %e, key, "failure run not cleared yet");
                self.to_clear.insert(key);
            }
        }
        for (key, since) in std::mem::take(&mut self.to_mark) {
            if let Err(e) = store.mark_failing(&key, since).await {
                tracing::debug!(error = %e, key, "failure run not recorded yet");
                self.to_mark.insert(key, since);
            }
        }
        for (key, revision) in self.due(Utc::now()) {
            let Some(candidate) = self.candidates.remove(&key) else {
                continue;
            };
            match store.claim_failing(&key, revision).await {
                Ok(true) => disable(store, config, &candidate).await,
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(error = %e, key, "auto-disable postponed");
                    self.candidates.insert(key, candidate);
                }
            }
        }
        // Runs that ended elsewhere: this process marks again on its next failure.
        let failing = &self.failing;
        let to_mark = &self.to_mark;
        self.candidates
            .retain(|key, _| failing.contains_key(key) || to_mark.contains_key(key));
    }
}

/// Disables the subscription everywhere and tells its project.
async fn disable(store: &Store, config: &Config, c: &Candidate) {
    let sub = match store
        .get_subscription(&c.project, &c.topic, &c.subscription)
        .await
    {
        Ok(Some(sub)) if !sub.disabled => sub,
        Ok(_) => return,
        Err(e) => {
            tracing::warn!(error = %e, subscription = c.subscription, "auto-disable failed");
            return;
        }
    };
    let mut sub = sub;
    sub.disabled = true;
    if let Err(e) = store
        .update_subscription(&sub, consumer_limits(config))
        .await
    {
        tracing::warn!(error = %e, subscription = c.subscription, "auto-disable failed");
        return;
    }
    tracing::info!(
        subscription = c.subscription,
        "subscription disabled after failing for disable_after"
    );
    user_messages::notify(
        store,
        c.project.as_str(),
        user_messages::EVENT_DISABLED,
        &c.subscription,
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(sub: &str, outcome: AttemptOutcome, at: DateTime<Utc>) -> Entry {
        Entry {
            project: ProjectId::parse("p").unwrap(),
            topic: TopicName::parse("t").unwrap(),
            record: Attempt {
                id: "i".into(),
                message_id: "m".into(),
                subscription_id: sub.into(),
                attempt: 1,
                started_at: at,
                duration_ms: 1,
                outcome,
                status_code: None,
                response: None,
                error: None,
                next_attempt_at: None,
            },
        }
    }

    #[test]
    fn a_run_of_failures_is_marked_once_and_ended_by_a_delivery() {
        let mut h = Health::new(Duration::from_secs(60));
        let t0 = Utc::now();
        h.observe(&entry("s", AttemptOutcome::Delivered, t0));
        assert!(
            h.to_mark.is_empty() && h.to_clear.is_empty(),
            "healthy: no writes"
        );
        h.observe(&entry("s", AttemptOutcome::Retry, t0));
        h.observe(&entry(
            "s",
            AttemptOutcome::Failed,
            t0 + chrono::Duration::seconds(5),
        ));
        assert_eq!(
            h.to_mark.get("p.s"),
            Some(&t0),
            "the earliest failure starts the run"
        );
        h.observe(&entry("s", AttemptOutcome::Filtered, t0));
        h.failing_changed("p.s".into(), Some((t0, 7)));
        assert!(h.due(t0 + chrono::Duration::seconds(59)).is_empty());
        assert_eq!(
            h.due(t0 + chrono::Duration::seconds(60)),
            vec![("p.s".to_owned(), 7)]
        );
        h.observe(&entry("s", AttemptOutcome::Delivered, t0));
        assert!(h.to_clear.contains("p.s"));
        assert!(h.due(t0 + chrono::Duration::seconds(600)).is_empty());
    }

    #[test]
    fn only_subscriptions_that_failed_here_are_disabled_here() {
        let mut h = Health::new(Duration::from_secs(1));
        let t0 = Utc::now() - chrono::Duration::seconds(10);
        h.failing_changed("p.other".into(), Some((t0, 1)));
        assert!(h.due(Utc::now()).is_empty());
        h.observe(&entry("other", AttemptOutcome::Retry, Utc::now()));
        assert!(h.to_mark.is_empty(), "already recorded as failing");
        assert_eq!(h.due(Utc::now()).len(), 1);
    }
}
