//! The attempt index: where each subscription's newest attempt records are, so its first
//! pages are read by sequence instead of by stepping through the stream.
//!
//! JetStream finds a subject's next message by stepping over every message in between: a
//! page of a subscription that owns 1 in 1,000 records of `HERALD_ATTEMPTS` costs the
//! server ~100,000 steps, whatever the page size. The attempt writer learns each record's
//! sequence from its ack; per subscription it keeps the newest [`RING`] in a [`Ring`] and,
//! at most once per flush period when they changed, stores them as one small record on
//! `herald.attempt_index.{project}.{subscription}.{writer}` in `HERALD_ATTEMPT_INDEX`,
//! which keeps one record per subject (like a KV bucket) and expires them with the log.
//! A listing reads every writer's record of the subscription with one `multi_last`
//! direct get, then the attempt records by sequence, pipelined (see `attempts::walk_back`).

use std::collections::VecDeque;

use async_nats::jetstream::{
    self,
    context::PublishAckFuture,
    stream::{DiscardPolicy, RetentionPolicy, StorageType},
};
use serde::{Deserialize, Serialize};

use super::{
    direct::{self, Read},
    errors::classify,
    names::{
        attempt_index_filter, attempt_index_subject, ATTEMPT_INDEX_STREAM, ATTEMPT_INDEX_SUBJECTS,
    },
    Store, StoreError,
};
use crate::domain::ProjectId;

/// Sequences one writer keeps per subscription: a full page (100) and then some.
pub const RING: usize = 128;

/// One writer's index of one subscription, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexRecord {
    /// Sequences in `HERALD_ATTEMPTS`, newest first, as differences: the first is the newest
    /// sequence itself, each next one how far below the one before it is (short numbers).
    #[serde(rename = "d")]
    deltas: Vec<u64>,
    /// Every record this writer wrote for the subscription is here (none fell out).
    #[serde(rename = "c")]
    pub complete: bool,
    /// When it was stored (Unix milliseconds, the writer's clock).
    #[serde(rename = "t", default)]
    pub stored_ms: i64,
}

impl IndexRecord {
    /// The sequences, newest first.
    pub fn seqs(&self) -> impl Iterator<Item = u64> + '_ {
        self.deltas.iter().scan(None, |prev: &mut Option<u64>, &d| {
            let seq = match *prev {
                None => d,
                Some(p) => p.checked_sub(d).filter(|&s| s > 0 && d > 0)?,
            };
            *prev = Some(seq);
            Some(seq)
        })
    }

    /// The oldest sequence held.
    pub fn oldest(&self) -> Option<u64> {
        self.seqs().last()
    }

    /// The newest sequence held.
    pub fn newest(&self) -> Option<u64> {
        self.deltas.first().copied()
    }
}

/// What one writer knows of one subscription's newest records.
#[derive(Debug, Clone)]
pub struct Ring {
    /// Oldest first.
    seqs: VecDeque<u64>,
    complete: bool,
    /// Changed since it was last stored.
    pub dirty: bool,
}

impl Ring {
    /// `complete`: the writer has written no record of the subscription before.
    pub fn new(complete: bool) -> Self {
        Self {
            seqs: VecDeque::new(),
            complete,
            dirty: false,
        }
    }

    /// Adds a written record's sequence (acks may arrive out of order).
    pub fn push(&mut self, seq: u64) {
        match self.seqs.back() {
            Some(&last) if seq < last => {
                let at = self.seqs.partition_point(|&s| s < seq);
                if self.seqs.get(at) == Some(&seq) {
                    return;
                }
                self.seqs.insert(at, seq);
            }
            Some(&last) if seq == last => return,
            _ => self.seqs.push_back(seq),
        }
        if self.seqs.len() > RING {
            self.seqs.pop_front();
            self.complete = false;
        }
        self.dirty = true;
    }

    pub fn record(&self, stored_ms: i64) -> IndexRecord {
        let mut prev = None;
        let deltas = self
            .seqs
            .iter()
            .rev()
            .map(|&s| {
                let d = prev.map_or(s, |p: u64| p - s);
                prev = Some(s);
                d
            })
            .collect();
        IndexRecord {
            deltas,
            complete: self.complete,
            stored_ms,
        }
    }
}

impl Store {
    async fn attempt_index_stream(&self) -> Result<&jetstream::stream::Stream, StoreError> {
        let (max_age, max_bytes) = self.attempt_limits;
        self.ensured_stream(&self.attempt_index, || jetstream::stream::Config {
            name: ATTEMPT_INDEX_STREAM.into(),
            description: Some(
                "Herald: where each subscription's newest attempt records are".into(),
            ),
            subjects: vec![ATTEMPT_INDEX_SUBJECTS.into()],
            retention: RetentionPolicy::Limits,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            // Each record replaces the writer's previous one.
            max_messages_per_subject: 1,
            // An index outlives nothing it points to.
            max_age,
            // A record is ~1 KiB per active subscription and writer; an eighth of the log's
            // cap is room for hundreds of thousands.
            max_bytes: if max_bytes > 0 { max_bytes / 8 } else { -1 },
            num_replicas: self.replicas,
            allow_direct: true,
            ..Default::default()
        })
        .await
    }

    /// Stores one writer's index of a subscription without waiting for the ack.
    pub(crate) async fn publish_attempt_index(
        &self,
        project: &ProjectId,
        subscription: &str,
        writer: &str,
        record: &IndexRecord,
    ) -> Result<PublishAckFuture, StoreError> {
        self.attempt_index_stream().await?;
        let payload = serde_json::to_vec(record).expect("an index record serializes");
        self.js
            .publish(
                attempt_index_subject(project, subscription, writer),
                payload.into(),
            )
            .await
            .map_err(classify)
    }

    /// Every writer's index of the subscription; `None` when there is no index stream yet.
    pub(crate) async fn read_attempt_index(
        &self,
        project: &ProjectId,
        subscription: &str,
    ) -> Result<Option<Vec<IndexRecord>>, StoreError> {
        let filter = attempt_index_filter(project, subscription);
        match direct::multi_last(&self.client, ATTEMPT_INDEX_STREAM, &filter).await? {
            Read::NoResponders => Ok(None),
            Read::Found(found) => Ok(Some(
                found
                    .into_iter()
                    .filter_map(|got| serde_json::from_slice(&got.payload).ok())
                    .collect(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ring_keeps_the_newest_in_order_and_knows_when_it_lost_some() {
        let mut ring = Ring::new(true);
        for seq in [10, 30, 20, 30, 40] {
            ring.push(seq);
        }
        let record = ring.record(7);
        assert_eq!(record.seqs().collect::<Vec<_>>(), vec![40, 30, 20, 10]);
        assert!(record.complete && ring.dirty);
        assert_eq!(record.oldest(), Some(10));
        for seq in 100..100 + RING as u64 {
            ring.push(seq);
        }
        let record = ring.record(7);
        assert!(!record.complete);
        assert_eq!(record.seqs().count(), RING);
        assert_eq!(record.seqs().next(), Some(99 + RING as u64));
        assert_eq!(record.oldest(), Some(100));
    }

    #[test]
    fn a_record_reads_back_from_its_json() {
        let mut ring = Ring::new(false);
        ring.push(1_000_000);
        ring.push(1_000_977);
        let json = serde_json::to_string(&ring.record(7)).unwrap();
        assert_eq!(json, r#"{"d":[1000977,977],"c":false,"t":7}"#);
        let back: IndexRecord = serde_json::from_str(&json).unwrap();
        assert_eq!(back.seqs().collect::<Vec<_>>(), vec![1_000_977, 1_000_000]);
        // A corrupt record ends early instead of wrapping around.
        let bad: IndexRecord = serde_json::from_str(r#"{"d":[5,9],"c":true}"#).unwrap();
        assert_eq!(bad.seqs().collect::<Vec<_>>(), vec![5]);
    }
}
