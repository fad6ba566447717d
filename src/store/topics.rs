//! Topics: metadata in the `herald_topics` KV bucket (its one home, revision-checked),
//! messages in one JetStream stream per topic.
//!
//! Crash consistency comes from ordering: create writes the record, then the stream;
//! delete removes the stream, then the record. So a stream never outlives its record
//! except for a moment, and a record without a stream is repaired (stream re-created)
//! by the next PUT and by start-up reconciliation.

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::{
    self, kv,
    stream::{RetentionPolicy, StorageType},
};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{
    errors::{classify, is_stream_not_found},
    messages::HEADER_ID,
    names::{
        kv_project_filter, kv_subject_prefix, replay_subject, topic_key as key, META_PROJECT,
        META_TOPIC, TOPICS_BUCKET,
    },
    scan_latest, scan_latest_headers,
    undecodable::{report_undecodable, RecordKind},
    Store, StoreError,
};
use crate::domain::{topic_metadata::MAX_MESSAGE_TTL_SECS, ProjectId, TopicMetadata, TopicName};

use super::names::{stream_name, topic_changed_subject, topic_subject};

/// How long JetStream remembers `Nats-Msg-Id`s for idempotent publishing.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The stream of a topic: interest retention (a message stays until every subscription
/// has it), file storage, per-message TTL, dedup window for `Nats-Msg-Id`.
pub fn topic_stream_config(
    project: &ProjectId,
    topic: &TopicName,
    replicas: usize,
    max_consumers: i32,
) -> jetstream::stream::Config {
    jetstream::stream::Config {
        name: stream_name(project, topic),
        description: Some(format!("Herald topic {project}/{topic}")),
        subjects: vec![
            topic_subject(project, topic),
            replay_subject(&stream_name(project, topic), "*"),
        ],
        retention: RetentionPolicy::Interest,
        storage: StorageType::File,
        max_age: Duration::from_secs(MAX_MESSAGE_TTL_SECS),
        allow_message_ttl: true,
        duplicate_window: DUPLICATE_WINDOW,
        num_replicas: replicas,
        // Explicit: nats-server 2.15 otherwise caps a stream at 1,000 consumers.
        max_consumers,
        metadata: HashMap::from([
            (META_PROJECT.to_owned(), project.to_string()),
            (META_TOPIC.to_owned(), topic.to_string()),
        ]),
        ..Default::default()
    }
}

/// What the bucket stores for a topic.
#[derive(Debug, Serialize, Deserialize)]
struct TopicRecord {
    project: String,
    name: String,
    metadata: Map<String, Value>,
}

/// A topic as read from the store, with the revision needed to update it.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: TopicName,
    pub metadata: TopicMetadata,
    pub revision: u64,
}

/// One end of a topic's message range.
#[derive(Debug, Clone, Serialize)]
pub struct MessageMark {
    pub id: Option<String>,
    pub created: DateTime<Utc>,
}

/// What [`Store::topic_counts`] knows of one topic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicCounts {
    pub messages: u64,
    /// Consumers of the topic stream: its subscriptions.
    pub subscriptions: usize,
}

#[derive(Debug, Clone, Default)]
pub struct TopicStats {
    pub messages: u64,
    pub oldest: Option<MessageMark>,
    pub newest: Option<MessageMark>,
    pub subscriptions: u64,
    /// Messages not yet acked by each subscription, summed.
    pub pending: u64,
    /// Messages given up on, across the topic's subscriptions.
    pub dead_letters: u64,
}

fn to_chrono(t: time::OffsetDateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_nanos(t.unix_timestamp_nanos() as i64)
}

fn encode(project: &ProjectId, topic: &TopicName, metadata: TopicMetadata) -> Vec<u8> {
    let record = TopicRecord {
        project: project.to_string(),
        name: topic.to_string(),
        metadata: metadata.into_map(),
    };
    serde_json::to_vec(&record).expect("a JSON map serialises")
}

/// Reads a stored record; `Err` names why it does not decode (see `undecodable`).
fn parse_record(payload: &[u8], revision: u64) -> Result<Topic, String> {
    let record: TopicRecord = serde_json::from_slice(payload).map_err(|e| e.to_string())?;
    Ok(Topic {
        name: TopicName::parse(&record.name).map_err(|e| e.0)?,
        metadata: TopicMetadata::parse(Value::Object(record.metadata)).map_err(|e| e.0)?,
        revision,
    })
}

impl Store {
    /// Creates the topic's stream if it is missing (idempotent repair step).
    async fn ensure_topic_stream(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<(), StoreError> {
        self.js
            .get_or_create_stream(topic_stream_config(
                project,
                topic,
                self.replicas,
                self.max_subscriptions,
            ))
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Creates a topic. Returns `false` when it already existed (its metadata unchanged).
    pub async fn create_topic(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        metadata: TopicMetadata,
    ) -> Result<bool, StoreError> {
        let kv = &self.buckets().await?.topics;
        let payload = encode(project, topic, metadata);
        let created = match kv.create(key(project, topic), payload.into()).await {
            Ok(_) => true,
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => false,
            Err(e) => return Err(classify(e)),
        };
        if let Err(e) = self.ensure_topic_stream(project, topic).await {
            if created {
                // Undo so the caller's retry starts clean; if this fails too,
                // reconciliation creates the stream later.
                let _ = kv.purge(key(project, topic)).await;
            }
            return Err(e);
        }
        Ok(created)
    }

    pub async fn get_topic(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<Option<Topic>, StoreError> {
        let kv = &self.buckets().await?.topics;
        let k = key(project, topic);
        match kv.entry(k.clone()).await.map_err(classify)? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                match parse_record(&entry.value, entry.revision) {
                    Ok(topic) => Ok(Some(topic)),
                    Err(reason) => {
                        report_undecodable(RecordKind::Topic, &k, &reason);
                        Ok(None)
                    }
                }
            }
            _ => Ok(None),
        }
    }

    /// [`Store::get_topic`] through a per-process cache (see `topic_cache`): for the publish
    /// path only, where a KV round trip per request is the largest avoidable cost.
    pub async fn get_topic_cached(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<Option<std::sync::Arc<Topic>>, StoreError> {
        let k = key(project, topic);
        if let Some(t) = self.topic_cache.get(&k) {
            return Ok(Some(t));
        }
        let found = self
            .get_topic(project, topic)
            .await?
            .map(std::sync::Arc::new);
        if let Some(t) = &found {
            self.topic_cache.put(k, t.clone());
        }
        Ok(found)
    }

    /// Every topic of `project`, sorted by name. Reads only that project's keys.
    pub async fn list_topics(&self, project: &ProjectId) -> Result<Vec<Topic>, StoreError> {
        let buckets = self.buckets().await?;
        let prefix = kv_subject_prefix(TOPICS_BUCKET);
        let filter = kv_project_filter(TOPICS_BUCKET, project);
        let messages = scan_latest(&buckets.topics_stream, filter).await?;
        let mut topics: Vec<Topic> = messages
            .iter()
            .filter_map(|m| {
                let k = m
                    .subject
                    .strip_prefix(prefix.as_str())
                    .unwrap_or(&m.subject);
                let revision = m.info().map(|i| i.stream_sequence).unwrap_or(0);
                parse_record(&m.payload, revision)
                    .map_err(|reason| report_undecodable(RecordKind::Topic, k, &reason))
                    .ok()
            })
            .collect();
        topics.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(topics)
    }

    /// How many topics `project` has (keys only; cost grows with the project's topics).
    pub async fn count_topics(&self, project: &ProjectId) -> Result<usize, StoreError> {
        let buckets = self.buckets().await?;
        let filter = kv_project_filter(TOPICS_BUCKET, project);
        Ok(scan_latest_headers(&buckets.topics_stream, filter)
            .await?
            .len())
    }

    /// Replaces the metadata if the topic is still at `revision`.
    pub async fn update_topic_metadata(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        metadata: TopicMetadata,
        revision: u64,
    ) -> Result<(), StoreError> {
        let kv = &self.buckets().await?.topics;
        let payload = encode(project, topic, metadata);
        let k = key(project, topic);
        let result = kv.update(k.clone(), payload.into(), revision).await;
        // After the write, so a concurrent reader cannot re-cache the old record.
        self.topic_cache.invalidate(&k);
        match result {
            Ok(_) => {
                // Every delivery engine takes the new policies at once (best effort: the
                // periodic resync catches a lost announcement).
                let subject = topic_changed_subject(&stream_name(project, topic));
                if let Err(e) = self.client.publish(subject, bytes::Bytes::new()).await {
                    tracing::debug!(error = %e, "topic change not announced");
                }
                Ok(())
            }
            Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => Err(
                StoreError::Conflict("the topic was updated concurrently; retry".into()),
            ),
            Err(e) => Err(classify(e)),
        }
    }

    /// Deletes a topic and everything under it. Absent topics are fine.
    pub async fn delete_topic(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<(), StoreError> {
        let kv = &self.buckets().await?.topics;
        self.delete_stream_if_present(&stream_name(project, topic))
            .await?;
        self.purge_dead_letters(project, topic).await?;
        kv.purge(key(project, topic)).await.map_err(classify)?;
        self.topic_cache.invalidate(&key(project, topic));
        Ok(())
    }

    async fn delete_stream_if_present(&self, name: &str) -> Result<(), StoreError> {
        match self.js.delete_stream(name).await {
            Ok(_) => Ok(()),
            Err(e) if is_stream_not_found(&e) => Ok(()),
            Err(e) => Err(classify(e)),
        }
    }

    /// Message and subscription (consumer) counts of every topic of `project`, keyed by
    /// topic stream name: one paged `STREAM.LIST` filtered on the project's subjects, so a
    /// few requests however many topics (the console's topic list and overview).
    pub async fn topic_counts(
        &self,
        project: &ProjectId,
    ) -> Result<HashMap<String, TopicCounts>, StoreError> {
        #[derive(Deserialize)]
        struct Page {
            total: usize,
            #[serde(default)]
            streams: Option<Vec<jetstream::stream::Info>>,
        }
        let subject = format!("{}.>", super::names::topic_subject_prefix(project));
        let mut out = HashMap::new();
        let mut offset = 0;
        loop {
            let page: jetstream::response::Response<Page> = self
                .js
                .request(
                    "STREAM.LIST",
                    &serde_json::json!({"offset": offset, "subject": subject}),
                )
                .await
                .map_err(classify)?;
            let page = match page {
                jetstream::response::Response::Ok(page) => page,
                jetstream::response::Response::Err { error } => {
                    return Err(super::errors::classify_refusal(error))
                }
            };
            let streams = page.streams.unwrap_or_default();
            if streams.is_empty() {
                return Ok(out);
            }
            offset += streams.len();
            for info in streams {
                out.insert(
                    info.config.name,
                    TopicCounts {
                        messages: info.state.messages,
                        subscriptions: info.state.consumer_count,
                    },
                );
            }
            if offset >= page.total {
                return Ok(out);
            }
        }
    }

    async fn topic_stream(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<Option<jetstream::stream::Stream>, StoreError> {
        match self.js.get_stream(stream_name(project, topic)).await {
            Ok(s) => Ok(Some(s)),
            Err(e) if is_stream_not_found(&e) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Drops the topic's messages and/or subscriptions (consumers).
    pub async fn purge_topic(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        messages: bool,
        subscriptions: bool,
    ) -> Result<(), StoreError> {
        let Some(stream) = self.topic_stream(project, topic).await? else {
            // Record without stream: repair, and there is nothing to purge.
            return self.ensure_topic_stream(project, topic).await;
        };
        if subscriptions {
            let names: Vec<String> = stream
                .consumer_names()
                .try_collect()
                .await
                .map_err(classify)?;
            for name in names {
                stream.delete_consumer(&name).await.map_err(classify)?;
            }
        }
        if messages {
            stream.purge().await.map_err(classify)?;
        }
        Ok(())
    }

    pub async fn topic_stats(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<TopicStats, StoreError> {
        let Some(mut stream) = self.topic_stream(project, topic).await? else {
            return Ok(TopicStats::default());
        };
        let state = stream.info().await.map_err(classify)?.state.clone();
        let mut stats = TopicStats {
            messages: state.messages,
            ..Default::default()
        };
        if state.messages > 0 {
            stats.oldest = self
                .mark(&stream, state.first_sequence, state.first_timestamp)
                .await;
            stats.newest = self
                .mark(&stream, state.last_sequence, state.last_timestamp)
                .await;
        }
        let mut consumers = stream.consumers();
        while let Some(info) = consumers.try_next().await.map_err(classify)? {
            stats.subscriptions += 1;
            stats.pending += info.num_pending + info.num_ack_pending as u64;
        }
        stats.dead_letters = self.count_dead_letters(project, topic).await?;
        Ok(stats)
    }

    async fn mark(
        &self,
        stream: &jetstream::stream::Stream,
        seq: u64,
        fallback: time::OffsetDateTime,
    ) -> Option<MessageMark> {
        match stream.get_raw_message(seq).await {
            Ok(m) => Some(MessageMark {
                // `Nats-Msg-Id` alone: messages of native publishers, and Herald's before
                // it sent `Nats-Msg-Id` only for an `Idempotency-Key`.
                id: m
                    .headers
                    .get(HEADER_ID)
                    .or_else(|| m.headers.get(async_nats::header::NATS_MESSAGE_ID))
                    .map(|v| v.to_string()),
                created: to_chrono(m.time),
            }),
            Err(_) => Some(MessageMark {
                id: None,
                created: to_chrono(fallback),
            }),
        }
    }

    /// Start-up repair: every topic record gets its stream; streams with no record
    /// (left by a crash during delete) are removed.
    pub async fn reconcile_topics(&self) -> Result<(usize, usize), StoreError> {
        let buckets = self.buckets().await?;
        let prefix = kv_subject_prefix(TOPICS_BUCKET);
        let records = scan_latest(&buckets.topics_stream, format!("{prefix}>")).await?;
        let mut wanted = std::collections::HashSet::new();
        let mut repaired = 0;
        for m in &records {
            let k = m
                .subject
                .strip_prefix(prefix.as_str())
                .unwrap_or(&m.subject);
            let record = match serde_json::from_slice::<TopicRecord>(&m.payload) {
                Ok(record) => record,
                Err(e) => {
                    // Left alone, and so is its stream (`is_orphan_stream` sees the key).
                    report_undecodable(RecordKind::Topic, k, &e);
                    continue;
                }
            };
            let (Ok(project), Ok(topic)) = (
                ProjectId::parse(&record.project),
                TopicName::parse(&record.name),
            ) else {
                continue;
            };
            let name = stream_name(&project, &topic);
            match self.topic_stream(&project, &topic).await? {
                None => {
                    self.ensure_topic_stream(&project, &topic).await?;
                    repaired += 1;
                }
                Some(stream) => {
                    if self.upgrade_topic_stream(stream, &project, &topic).await? {
                        repaired += 1;
                    }
                }
            }
            wanted.insert(name);
        }
        let mut removed = 0;
        for name in self.topic_stream_names().await? {
            if !wanted.contains(&name) && self.is_orphan_stream(&name).await? {
                self.delete_stream_if_present(&name).await?;
                removed += 1;
            }
        }
        Ok((repaired, removed))
    }

    /// Brings a stream made by an older Herald up to the current settings: streams created
    /// before `max_subscriptions_per_topic` have no `max_consumers` (2.15 reads that as its
    /// default of 1,000). `true` when it was updated.
    async fn upgrade_topic_stream(
        &self,
        stream: jetstream::stream::Stream,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<bool, StoreError> {
        let current = stream.cached_info().config.clone();
        if current.max_consumers == self.max_subscriptions {
            return Ok(false);
        }
        let config = jetstream::stream::Config {
            max_consumers: self.max_subscriptions,
            ..current
        };
        self.js.update_stream(config).await.map_err(classify)?;
        tracing::info!(%project, %topic, max_consumers = self.max_subscriptions,
            "topic stream upgraded");
        Ok(true)
    }

    /// Whether the bucket holds a record under the topic's key, readable or not.
    async fn topic_record_exists(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<bool, StoreError> {
        let kv = &self.buckets().await?.topics;
        let entry = kv.entry(key(project, topic)).await.map_err(classify)?;
        Ok(entry.is_some_and(|e| e.operation == kv::Operation::Put))
    }

    /// Checks again, just before deleting, that no record owns the stream: a topic created
    /// by another process after the scan must survive.
    async fn is_orphan_stream(&self, name: &str) -> Result<bool, StoreError> {
        let mut stream = match self.js.get_stream(name).await {
            Ok(s) => s,
            Err(_) => return Ok(false),
        };
        let meta = stream
            .info()
            .await
            .map_err(classify)?
            .config
            .metadata
            .clone();
        let owner = meta
            .get(META_PROJECT)
            .and_then(|p| ProjectId::parse(p).ok())
            .zip(meta.get(META_TOPIC).and_then(|t| TopicName::parse(t).ok()));
        match owner {
            Some((project, topic)) => Ok(!self.topic_record_exists(&project, &topic).await?),
            None => Ok(false),
        }
    }
}
