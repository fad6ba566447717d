//! The attempt log: one record per delivery attempt in `HERALD_ATTEMPTS` (limits
//! retention, bounded by age and bytes, oldest dropped first), subject
//! `herald.attempts.{project}.{subscription}`; and the health bucket, which holds when a
//! failing subscription's current run of failures began (auto-disable).
//!
//! Listing one subscription reads its records newest first by sequence, from the attempt
//! index (`attempt_index`) and, for the last few seconds the index may not hold yet, a
//! direct get of the subject from that time on. Below what the index holds (deep pages,
//! records written before it existed), and for several subscriptions at once, it walks
//! the stream: JetStream has no reverse subject walk, so it reads forward through windows
//! that end where the previous one began, each sized from the subjects' share of the
//! stream and doubling until the page is full. A window of one subject is a batched
//! direct get (no consumer); of several, an ordered consumer.

use std::{
    collections::{BTreeMap, BTreeSet},
    ops::ControlFlow,
    time::Duration,
};

use async_nats::jetstream::{
    self,
    consumer::{pull, DeliverPolicy, ReplayPolicy},
    context::PublishAckFuture,
    kv,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde::{Deserialize, Serialize};

use super::{
    attempt_index::IndexRecord,
    direct::{self, Read},
    errors::classify,
    names::{attempt_subject, health_key, ATTEMPTS_STREAM, ATTEMPTS_SUBJECTS, HEALTH_BUCKET},
    scan::DeleteOnDrop,
    undecodable::{report_undecodable, RecordKind},
    Store, StoreError,
};
use crate::domain::ProjectId;

/// What one attempt ended in (design.md's `outcome`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum AttemptOutcome {
    Delivered,
    /// Failed; it will be tried again at `next_attempt_at`.
    Retry,
    /// Failed for good: the message is now a dead letter.
    Failed,
    /// The subscription's filter policy does not match the message.
    Filtered,
    /// Not sent on purpose (the subscription is unconfirmed or expired).
    Skipped,
}

impl AttemptOutcome {
    pub const ALL: [Self; 5] = [
        Self::Delivered,
        Self::Retry,
        Self::Failed,
        Self::Filtered,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Retry => "retry",
            Self::Failed => "failed",
            Self::Filtered => "filtered",
            Self::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// A failed try of the subscriber (what auto-disable and `last_failed_at` count).
    pub fn is_failure(self) -> bool {
        matches!(self, Self::Retry | Self::Failed)
    }
}

/// One attempt record, as stored and listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub id: String,
    pub message_id: String,
    pub subscription_id: String,
    pub attempt: u64,
    pub started_at: DateTime<Utc>,
    pub duration_ms: u64,
    pub outcome: AttemptOutcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The first `attempt_log_response_bytes` of the reply body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A stored record with its position (the paging marker).
#[derive(Debug, Clone)]
pub struct StoredAttempt {
    pub seq: u64,
    pub attempt: Attempt,
}

/// What a listing keeps.
#[derive(Debug, Clone, Default)]
pub struct AttemptFilter {
    /// Only records before this sequence (the previous page's marker).
    pub before: Option<u64>,
    pub outcome: Option<AttemptOutcome>,
    /// Only records started at or after this time.
    pub since: Option<DateTime<Utc>>,
}

/// The newest delivered and failed attempts (the subscription's health).
#[derive(Debug, Clone, Default)]
pub struct LastAttempts {
    pub delivered: Option<DateTime<Utc>>,
    pub failed: Option<DateTime<Utc>>,
    /// The newest failed attempt's error.
    pub error: Option<String>,
}

/// Windows start at least this many sequences wide.
const MIN_WINDOW: u64 = 64;
/// A writer that stored a ring this recently may hold records it has not stored yet (it
/// stores within a second, its flush period, of an ack; the rest is margin).
const UNINDEXED_TAIL: chrono::Duration = chrono::Duration::seconds(3);

/// What the attempt index left to walk.
enum Indexed {
    /// Nothing: every record asked for was visited, or `visit` stopped.
    Done,
    /// The records below this sequence.
    Below(u64),
    /// All of them: the index does not cover the subscription.
    Unknown,
}

impl Store {
    pub(crate) async fn attempt_stream(&self) -> Result<&jetstream::stream::Stream, StoreError> {
        let (max_age, max_bytes) = self.attempt_limits;
        self.ensured_stream(&self.attempts, || jetstream::stream::Config {
            name: ATTEMPTS_STREAM.into(),
            description: Some("Herald delivery attempts".into()),
            subjects: vec![ATTEMPTS_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            max_age,
            max_bytes,
            // Records are never published twice on purpose; the window must not exceed
            // `max_age`.
            duplicate_window: max_age.min(Duration::from_secs(120)),
            num_replicas: self.replicas,
            // Listing reads by direct get.
            allow_direct: true,
            ..Default::default()
        })
        .await
    }

    /// Publishes one record without waiting for JetStream's ack: the caller awaits the
    /// returned future (the attempt log keeps a bounded window of them).
    pub(crate) async fn publish_attempt(
        &self,
        project: &ProjectId,
        subscription: &str,
        payload: Bytes,
    ) -> Result<PublishAckFuture, StoreError> {
        self.attempt_stream().await?;
        self.js
            .publish(attempt_subject(project, subscription), payload)
            .await
            .map_err(classify)
    }

    /// Up to `limit` of the subscription's records, newest first, matching `filter`.
    pub async fn list_attempts(
        &self,
        project: &ProjectId,
        subscription: &str,
        filter: &AttemptFilter,
        limit: usize,
    ) -> Result<Vec<StoredAttempt>, StoreError> {
        let mut out = Vec::with_capacity(limit);
        self.walk_back(project, subscription, filter.before, limit, |stored| {
            if filter.since.is_some_and(|s| stored.attempt.started_at < s) {
                return ControlFlow::Break(());
            }
            if filter.outcome.is_none_or(|o| o == stored.attempt.outcome) {
                out.push(stored);
                if out.len() >= limit {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
        .await?;
        Ok(out)
    }

    /// The newest delivered and failed attempts among the newest `max_scanned`.
    pub async fn last_attempts(
        &self,
        project: &ProjectId,
        subscription: &str,
        max_scanned: usize,
    ) -> Result<LastAttempts, StoreError> {
        let mut last = LastAttempts::default();
        let mut scanned = 0;
        self.walk_back(project, subscription, None, 16, |stored| {
            let a = stored.attempt;
            if a.outcome == AttemptOutcome::Delivered && last.delivered.is_none() {
                last.delivered = Some(a.started_at);
            } else if a.outcome.is_failure() && last.failed.is_none() {
                last.failed = Some(a.started_at);
                last.error = a.error;
            }
            scanned += 1;
            let done = last.delivered.is_some() && last.failed.is_some();
            if done || scanned >= max_scanned {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        Ok(last)
    }

    /// Visits the subscription's records newest first (before sequence `before`) until
    /// `visit` breaks or none are left. `expect` is how many records the caller probably
    /// needs (it sizes the first window).
    pub async fn walk_back(
        &self,
        project: &ProjectId,
        subscription: &str,
        before: Option<u64>,
        expect: usize,
        mut visit: impl FnMut(StoredAttempt) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let subject = attempt_subject(project, subscription);
        let below = match self
            .walk_index(project, subscription, &subject, before, expect, &mut visit)
            .await?
        {
            Indexed::Done => return Ok(()),
            Indexed::Below(seq) => Some(seq),
            Indexed::Unknown => before,
        };
        self.walk_back_subjects(vec![subject], below, expect, visit)
            .await
    }

    /// Visits what the attempt index knows of the subscription's records before `before`,
    /// newest first, and says what is left to walk.
    async fn walk_index(
        &self,
        project: &ProjectId,
        subscription: &str,
        subject: &str,
        before: Option<u64>,
        expect: usize,
        visit: &mut impl FnMut(StoredAttempt) -> ControlFlow<()>,
    ) -> Result<Indexed, StoreError> {
        let stream = self.attempt_stream().await?;
        let (index, count) = tokio::join!(
            self.read_attempt_index(project, subscription),
            subject_count(stream, subject),
        );
        // The index only saves work: when any of it cannot be read, walk the stream.
        let (Ok(Some(index)), Ok((state, count))) = (index, count) else {
            return Ok(Indexed::Unknown);
        };
        if count == 0 {
            return Ok(Indexed::Done);
        }
        // What no ring holds yet is newer than the newest seq of every writer still
        // storing rings (a writer stores within a second of an ack); a writer silent for
        // longer is idle or gone, and does not hold the search back.
        let fresh_ms = (Utc::now() - UNINDEXED_TAIL).timestamp_millis();
        let newest = |fresh: bool| {
            index
                .iter()
                .filter(move |r| !fresh || r.stored_ms >= fresh_ms)
                .filter_map(IndexRecord::newest)
        };
        let tail_from = newest(true)
            .min()
            .or_else(|| newest(false).max())
            .map_or(state.first_sequence, |s| s + 1);
        let tail = match direct::range(&self.client, ATTEMPTS_STREAM, subject, tail_from, u64::MAX)
            .await
        {
            Ok(Read::Found(tail)) => tail,
            _ => return Ok(Indexed::Unknown),
        };
        let first = state.first_sequence;
        // Below `floor` some writer's ring let records go: the index is whole only above it.
        let floor = index
            .iter()
            .filter(|r| !r.complete)
            .filter_map(IndexRecord::oldest)
            .max()
            .unwrap_or(0)
            .max(first);
        let mut seqs: BTreeSet<u64> = index
            .iter()
            .flat_map(IndexRecord::seqs)
            .filter(|&s| s >= floor)
            .collect();
        let mut fetched: BTreeMap<u64, Bytes> = BTreeMap::new();
        for got in tail {
            seqs.insert(got.seq);
            fetched.insert(got.seq, got.payload);
        }
        if floor == first && (seqs.len() as u64) < count {
            // Records no index names: written before it existed, or by a writer that
            // stopped before storing its ring.
            return Ok(Indexed::Unknown);
        }
        let hi = before.unwrap_or(u64::MAX);
        let wanted: Vec<u64> = seqs.range(..hi).rev().copied().collect();
        let mut chunk = expect.clamp(16, 256);
        let mut at = 0;
        while at < wanted.len() {
            let part = &wanted[at..(at + chunk).min(wanted.len())];
            at += part.len();
            chunk = chunk.saturating_mul(2);
            let missing: Vec<u64> = part
                .iter()
                .copied()
                .filter(|s| !fetched.contains_key(s))
                .collect();
            for got in direct::by_seq(&self.client, ATTEMPTS_STREAM, &missing)
                .await?
                .into_iter()
                .flatten()
            {
                // Only this subject's records, whatever an index record says.
                if got.subject.as_deref() == Some(subject) {
                    fetched.insert(got.seq, got.payload);
                }
            }
            for seq in part {
                let Some(stored) = fetched.get(seq).and_then(|p| decode(*seq, p)) else {
                    continue;
                };
                if visit(stored).is_break() {
                    return Ok(Indexed::Done);
                }
            }
        }
        Ok(if floor > first {
            Indexed::Below(floor.min(hi))
        } else {
            Indexed::Done
        })
    }

    /// [`Self::walk_back`] over several subscriptions' subjects at once.
    async fn walk_back_subjects(
        &self,
        subjects: Vec<String>,
        before: Option<u64>,
        expect: usize,
        mut visit: impl FnMut(StoredAttempt) -> ControlFlow<()>,
    ) -> Result<(), StoreError> {
        let stream = self.attempt_stream().await?;
        let counts =
            futures::future::try_join_all(subjects.iter().map(|s| subject_count(stream, s)))
                .await?;
        let Some((state, _)) = counts.first() else {
            return Ok(());
        };
        let mine: u64 = counts.iter().map(|(_, n)| n).sum();
        if mine == 0 || state.messages == 0 {
            return Ok(());
        }
        let first = state.first_sequence.max(1);
        let mut hi = before.unwrap_or(u64::MAX).min(state.last_sequence + 1);
        // Sequences per record of these subjects, so a window holds about `expect` of them.
        let stride = (state.messages / mine).max(1);
        let mut window = (stride.saturating_mul(expect as u64 + 1) * 5 / 4).max(MIN_WINDOW);
        while hi > first {
            let lo = hi.saturating_sub(window).max(first);
            let batch = match subjects.as_slice() {
                [one] => match direct::range(&self.client, ATTEMPTS_STREAM, one, lo, hi).await? {
                    Read::Found(raw) => raw
                        .into_iter()
                        .filter_map(|got| decode(got.seq, &got.payload))
                        .collect(),
                    // A stream made before direct get was allowed, not yet updated.
                    Read::NoResponders => read_window(stream, &subjects, lo, hi).await?,
                },
                _ => read_window(stream, &subjects, lo, hi).await?,
            };
            for stored in batch.into_iter().rev() {
                if visit(stored).is_break() {
                    return Ok(());
                }
            }
            hi = lo;
            window = window.saturating_mul(2);
        }
        Ok(())
    }

    /// The records of `subscriptions` (e.g. a topic's) for which `keep` holds, oldest
    /// first, among their newest `max_scanned` records.
    pub async fn scan_attempts(
        &self,
        project: &ProjectId,
        subscriptions: &[String],
        max_scanned: usize,
        keep: impl Fn(&Attempt) -> bool,
    ) -> Result<Vec<StoredAttempt>, StoreError> {
        if subscriptions.is_empty() {
            return Ok(Vec::new());
        }
        let subjects = subscriptions
            .iter()
            .map(|s| attempt_subject(project, s))
            .collect();
        let mut out = Vec::new();
        let mut scanned = 0;
        self.walk_back_subjects(subjects, None, 1000, |stored| {
            if keep(&stored.attempt) {
                out.push(stored);
            }
            scanned += 1;
            if scanned >= max_scanned {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
        .await?;
        out.reverse();
        Ok(out)
    }

    async fn health_bucket(&self) -> Result<&kv::Store, StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        self.health
            .get_or_try_init(|| {
                self.kv_bucket(kv::Config {
                    bucket: HEALTH_BUCKET.into(),
                    description: "Herald: when a failing subscription's failures began, key {project}.{subscription}".into(),
                    history: 1,
                    ..Default::default()
                })
            })
            .await
    }

    /// Records that subscription `key` ([`health_key`]) has been failing since `since`,
    /// unless a run of failures is already recorded.
    pub(crate) async fn mark_failing(
        &self,
        key: &str,
        since: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let kv = self.health_bucket().await?;
        match kv.create(key, since.to_rfc3339().into()).await {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Ends subscription `key`'s run of failures (a delivery succeeded).
    pub(crate) async fn clear_failing(&self, key: &str) -> Result<(), StoreError> {
        let kv = self.health_bucket().await?;
        kv.purge(key).await.map_err(classify)
    }

    /// Forgets the subscription's failures (re-enabled: the disable window starts over).
    pub async fn forget_failures(
        &self,
        project: &ProjectId,
        subscription: &str,
    ) -> Result<(), StoreError> {
        self.clear_failing(&health_key(project, subscription)).await
    }

    /// Takes the run of failures at `revision` for this process, so exactly one process
    /// disables a subscription and tells the project. `false` when another did first.
    pub(crate) async fn claim_failing(&self, key: &str, revision: u64) -> Result<bool, StoreError> {
        let kv = self.health_bucket().await?;
        match kv.purge_expect_revision(key, Some(revision)).await {
            Ok(()) => Ok(true),
            Err(e) => match classify(e) {
                StoreError::Conflict(_) => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Every failing subscription now, then every change: `(key, Some((since,
    /// revision)))` when a run of failures is recorded, `(key, None)` when it ended.
    pub(crate) async fn watch_failing(
        &self,
    ) -> Result<
        impl futures::Stream<Item = Result<(String, Option<(DateTime<Utc>, u64)>), StoreError>>,
        StoreError,
    > {
        let kv = self.health_bucket().await?;
        let watch = kv.watch_with_history(">").await.map_err(classify)?;
        Ok(watch.map(|entry| {
            let entry = entry.map_err(classify)?;
            let since = (entry.operation == kv::Operation::Put)
                .then(|| std::str::from_utf8(&entry.value).ok())
                .flatten()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| (t.with_timezone(&Utc), entry.revision));
            Ok((entry.key, since))
        }))
    }
}

/// The stream's state and how many records it holds on `subject`, in one request.
async fn subject_count(
    stream: &jetstream::stream::Stream,
    subject: &str,
) -> Result<(jetstream::stream::State, u64), StoreError> {
    let mut info = stream.info_with_subjects(subject).await.map_err(classify)?;
    let state = info.info.state.clone();
    let mut total = 0;
    while let Some((_, n)) = info.try_next().await.map_err(classify)? {
        total += n as u64;
    }
    Ok((state, total))
}

/// The records of `subjects` with sequences in `lo..hi`, oldest first.
async fn read_window(
    stream: &jetstream::stream::Stream,
    subjects: &[String],
    lo: u64,
    hi: u64,
) -> Result<Vec<StoredAttempt>, StoreError> {
    let (filter_subject, filter_subjects) = match subjects {
        [one] => (one.clone(), Vec::new()),
        many => (String::new(), many.to_vec()),
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject,
            filter_subjects,
            deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: lo },
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(classify)?;
    let _cleanup = DeleteOnDrop::new(stream, consumer.cached_info().name.clone());
    let mut out = Vec::new();
    if consumer.cached_info().num_pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(classify)?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(classify)?;
        let info = message.info().map_err(StoreError::Unavailable)?;
        let (seq, remaining) = (info.stream_sequence, info.pending);
        if seq >= hi {
            break;
        }
        if let Some(stored) = decode(seq, &message.payload) {
            out.push(stored);
        }
        if remaining == 0 {
            break;
        }
    }
    Ok(out)
}

fn decode(seq: u64, payload: &[u8]) -> Option<StoredAttempt> {
    match serde_json::from_slice(payload) {
        Ok(attempt) => Some(StoredAttempt { seq, attempt }),
        Err(e) => {
            report_undecodable(RecordKind::Attempt, &format!("{ATTEMPTS_STREAM}/{seq}"), &e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcomes_read_back_from_their_names() {
        for o in AttemptOutcome::ALL {
            assert_eq!(AttemptOutcome::parse(o.as_str()), Some(o));
            assert_eq!(
                serde_json::to_value(o).unwrap(),
                serde_json::json!(o.as_str())
            );
        }
        assert_eq!(AttemptOutcome::parse("dead_letter"), None);
        assert!(AttemptOutcome::Retry.is_failure() && AttemptOutcome::Failed.is_failure());
        assert!(!AttemptOutcome::Filtered.is_failure());
    }

    #[test]
    fn a_record_keeps_only_the_fields_it_has() {
        let record = Attempt {
            id: "a".into(),
            message_id: "m".into(),
            subscription_id: "s".into(),
            attempt: 1,
            started_at: Utc::now(),
            duration_ms: 3,
            outcome: AttemptOutcome::Delivered,
            status_code: Some(200),
            response: None,
            error: None,
            next_attempt_at: None,
        };
        let v = serde_json::to_value(&record).unwrap();
        assert_eq!(v["status_code"], 200);
        assert!(v.get("response").is_none() && v.get("next_attempt_at").is_none());
        let back: Attempt = serde_json::from_value(v).unwrap();
        assert_eq!(back, record);
    }
}
