//! Dead letters: messages a subscription gave up on, with the last error, in one stream
//! (`HERALD_DEAD_LETTERS`, limits retention, bounded age). Subject
//! `herald.dead_letters.{project}.{topic stream}.{subscription}`, so one subscription's
//! letters list by subject and a topic's count by wildcard.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    stream::{RetentionPolicy, StorageType},
};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    errors::classify,
    messages::{HEADER_ID, HEADER_TTL},
    names::{
        dead_letter_subject as subject, replay_subject, stream_name, DEAD_LETTERS_STREAM,
        DEAD_LETTERS_SUBJECTS,
    },
    undecodable::{report_undecodable, RecordKind},
    Store, StoreError,
};
use crate::domain::{ProjectId, TopicName};

/// How long dead letters are kept.
const DEAD_LETTER_MAX_AGE: Duration = Duration::from_secs(14 * 86_400);

/// A dead letter as stored and listed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub message_id: String,
    pub body: Value,
    pub attempts: u64,
    pub last_error: String,
    pub failed_at: DateTime<Utc>,
    /// The message TTL it was published with, kept for replays.
    #[serde(default)]
    pub ttl: Option<u64>,
}

/// A stored dead letter with its position (the paging marker).
#[derive(Debug, Clone)]
pub struct StoredDeadLetter {
    pub seq: u64,
    pub letter: DeadLetter,
}

impl Store {
    async fn dead_letter_stream(&self) -> Result<&jetstream::stream::Stream, StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        self.dead_letters
            .get_or_try_init(|| async {
                self.js
                    .get_or_create_stream(jetstream::stream::Config {
                        name: DEAD_LETTERS_STREAM.into(),
                        description: Some("Herald dead letters".into()),
                        subjects: vec![DEAD_LETTERS_SUBJECTS.into()],
                        retention: RetentionPolicy::Limits,
                        storage: StorageType::File,
                        max_age: DEAD_LETTER_MAX_AGE,
                        duplicate_window: Duration::from_secs(120),
                        num_replicas: self.replicas,
                        ..Default::default()
                    })
                    .await
                    .map_err(classify)
            })
            .await
    }

    /// Records a dead letter, idempotent per subscription and topic-stream message
    /// (`source_seq`): not per message id, which publishers choose and may repeat (and a
    /// replayed message that fails again within the duplicate window would be dropped).
    pub async fn add_dead_letter(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        subscription: &str,
        source_seq: u64,
        letter: &DeadLetter,
    ) -> Result<(), StoreError> {
        self.dead_letter_stream().await?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{subscription}:{source_seq}").as_str(),
        );
        let payload = serde_json::to_vec(letter).expect("a dead letter serialises");
        self.js
            .publish_with_headers(
                subject(project, &stream_name(project, topic), subscription),
                headers,
                payload.into(),
            )
            .await
            .map_err(classify)?
            .await
            .map_err(classify)?;
        Ok(())
    }

    /// Up to `limit` dead letters of a subscription after sequence `marker`.
    pub async fn list_dead_letters(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        subscription: &str,
        marker: u64,
        limit: usize,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let stream = self.dead_letter_stream().await?;
        let filter = subject(project, &stream_name(project, topic), subscription);
        let mut out = Vec::new();
        let mut seq = marker + 1;
        while out.len() < limit {
            let next = stream
                .raw_message_builder()
                .next_by_subject(filter.clone())
                .sequence(seq)
                .send()
                .await;
            match next {
                Ok(m) => {
                    seq = m.sequence + 1;
                    match serde_json::from_slice(&m.payload) {
                        Ok(letter) => out.push(StoredDeadLetter {
                            seq: m.sequence,
                            letter,
                        }),
                        Err(e) => report_undecodable(
                            RecordKind::DeadLetter,
                            &format!("{DEAD_LETTERS_STREAM}/{}", m.sequence),
                            &e,
                        ),
                    }
                }
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {
                    break
                }
                Err(e) => return Err(classify(e)),
            }
        }
        Ok(out)
    }

    /// Puts dead letters back on the subscription's replay subject (only its consumer
    /// receives them), then removes them from the dead letters. `keep` chooses which
    /// (by message id, by failure time). Returns how many were replayed.
    pub async fn replay_dead_letters(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        subscription: &str,
        keep: impl Fn(&DeadLetter) -> bool,
    ) -> Result<usize, StoreError> {
        let topic_stream = stream_name(project, topic);
        let mut marker = 0;
        let mut replayed = 0;
        loop {
            let page = self
                .list_dead_letters(project, topic, subscription, marker, 100)
                .await?;
            let Some(last) = page.last() else {
                return Ok(replayed);
            };
            marker = last.seq;
            for stored in page {
                let letter = &stored.letter;
                if !keep(letter) {
                    continue;
                }
                // A record Herald did not write may hold an id no header can carry
                // (async-nats asserts on CR/LF): it stays a dead letter instead.
                let Ok(id) = letter.message_id.parse::<async_nats::HeaderValue>() else {
                    tracing::warn!(
                        seq = stored.seq,
                        "dead letter id cannot be a header; not replayed"
                    );
                    continue;
                };
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(HEADER_ID, id);
                if let Some(ttl) = letter.ttl {
                    headers.insert(HEADER_TTL, format!("{ttl}s").as_str());
                }
                let body = Bytes::from(letter.body.to_string());
                self.js
                    .publish_with_headers(
                        replay_subject(&topic_stream, subscription),
                        headers,
                        body,
                    )
                    .await
                    .map_err(classify)?
                    .await
                    .map_err(classify)?;
                self.dead_letter_stream()
                    .await?
                    .delete_message(stored.seq)
                    .await
                    .map_err(classify)?;
                replayed += 1;
            }
        }
    }

    /// Dead letters across the topic's subscriptions.
    pub async fn count_dead_letters(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<u64, StoreError> {
        let stream = self.dead_letter_stream().await?;
        let filter = subject(project, &stream_name(project, topic), "*");
        let mut info = stream.info_with_subjects(filter).await.map_err(classify)?;
        let mut total = 0;
        while let Some((_, n)) = futures::TryStreamExt::try_next(&mut info)
            .await
            .map_err(classify)?
        {
            total += n as u64;
        }
        Ok(total)
    }

    /// Drops a topic's dead letters (topic deletion).
    pub async fn purge_dead_letters(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<(), StoreError> {
        let stream = self.dead_letter_stream().await?;
        stream
            .purge()
            .filter(subject(project, &stream_name(project, topic), ">"))
            .await
            .map_err(classify)?;
        Ok(())
    }
}
