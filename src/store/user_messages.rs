//! User messages in the `herald_user_messages` KV bucket: key `{project}.{id}`, value the
//! message JSON, per-key TTL (`Nats-TTL`) so JetStream itself expires them.
//!
//! A project's messages are listed through a subject filter on `{project}.>`, so a list
//! reads that project's keys only. Deleting purges the key with a short-lived marker, so
//! neither expired nor deleted messages leave anything behind.

use std::time::Duration;

use async_nats::jetstream::kv;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    errors::classify,
    scan_latest,
    undecodable::{report_undecodable, RecordKind},
    Store, StoreError,
};
use crate::domain::ProjectId;

/// Bucket holding user messages, key `{project}.{id}`.
pub use super::names::USER_MESSAGES_BUCKET;
use super::names::USER_MESSAGES_CREATE_SUBJECT;
/// How long the bucket keeps the markers of expired and purged keys.
pub const MARKER_TTL: Duration = Duration::from_secs(60);
/// Largest stored message document.
pub const MAX_VALUE_BYTES: i32 = 16 * 1024;

/// A stored user message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserMessage {
    pub id: Uuid,
    pub project_id: String,
    pub event_id: String,
    pub user_message: String,
    pub message_level: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource_uuid: Option<String>,
    pub request_id: String,
    pub created_at: DateTime<Utc>,
    pub guaranteed_until: DateTime<Utc>,
}

impl UserMessage {
    /// Past its TTL (JetStream removes it about now; it is never shown meanwhile).
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.guaranteed_until <= now
    }
}

fn key(project: &ProjectId, id: &Uuid) -> String {
    format!("{project}.{}", id.as_hyphenated())
}

/// The bucket's configuration: per-key TTL enabled through limit markers.
pub(super) fn bucket_config() -> kv::Config {
    kv::Config {
        bucket: USER_MESSAGES_BUCKET.into(),
        description: "Herald user messages, key {project}.{id}, per-key TTL".into(),
        history: 1,
        max_value_size: MAX_VALUE_BYTES,
        limit_markers: Some(MARKER_TTL),
        ..Default::default()
    }
}

/// Decodes a stored message; a value that does not decode is reported and `None`.
fn decode(key: &str, value: &[u8]) -> Option<UserMessage> {
    serde_json::from_slice(value)
        .map_err(|e| report_undecodable(RecordKind::UserMessage, key, &e))
        .ok()
}

impl Store {
    /// Asks whichever Herald process serves [`USER_MESSAGES_CREATE_SUBJECT`] to create a
    /// user message from `request` (the NATS contract's JSON) and returns its JSON answer.
    ///
    /// # Errors
    /// `Unavailable` when no process answers within `timeout`.
    pub async fn request_user_message(
        &self,
        request: bytes::Bytes,
        timeout: Duration,
    ) -> Result<bytes::Bytes, StoreError> {
        let request = async_nats::Request::new()
            .payload(request)
            .timeout(Some(timeout));
        self.client
            .send_request(USER_MESSAGES_CREATE_SUBJECT, request)
            .await
            .map(|reply| reply.payload)
            .map_err(classify)
    }

    /// Stores a new message that JetStream deletes after `ttl`.
    ///
    /// # Errors
    /// `Unavailable` when NATS does not answer; `Conflict` if the id already exists.
    pub async fn create_user_message(
        &self,
        project: &ProjectId,
        message: &UserMessage,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let bucket = &self.buckets().await?.user_messages;
        let value = serde_json::to_vec(message).expect("a user message serializes");
        match bucket
            .create_with_ttl(key(project, &message.id), value.into(), ttl)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Err(StoreError::Conflict(
                format!("message {} already exists", message.id),
            )),
            Err(e) => Err(classify(e)),
        }
    }

    /// The live message `id` of `project`, if any.
    pub async fn get_user_message(
        &self,
        project: &ProjectId,
        id: &Uuid,
    ) -> Result<Option<UserMessage>, StoreError> {
        let bucket = &self.buckets().await?.user_messages;
        let key = key(project, id);
        let Some(value) = bucket.get(key.clone()).await.map_err(classify)? else {
            return Ok(None);
        };
        let message = decode(&key, &value);
        Ok(message.filter(|m| !m.is_expired(Utc::now())))
    }

    /// Every live message of `project`, in no particular order. Reads only the project's
    /// keys.
    pub async fn list_user_messages(
        &self,
        project: &ProjectId,
    ) -> Result<Vec<UserMessage>, StoreError> {
        let stream = &self.buckets().await?.user_messages_stream;
        let filter = super::names::kv_project_filter(USER_MESSAGES_BUCKET, project);
        let now = Utc::now();
        let mut out = Vec::new();
        let prefix = super::names::kv_subject_prefix(USER_MESSAGES_BUCKET);
        for m in scan_latest(stream, filter).await? {
            let key = m.subject.strip_prefix(&prefix).unwrap_or(&m.subject);
            if let Some(message) = decode(key, &m.payload) {
                if !message.is_expired(now) {
                    out.push(message);
                }
            }
        }
        Ok(out)
    }

    /// Deletes message `id` of `project`; `false` when there was none (or only an expired
    /// one). A value that does not decode is deleted too.
    pub async fn delete_user_message(
        &self,
        project: &ProjectId,
        id: &Uuid,
    ) -> Result<bool, StoreError> {
        let bucket = &self.buckets().await?.user_messages;
        let Some(value) = bucket.get(key(project, id)).await.map_err(classify)? else {
            return Ok(false);
        };
        let undecodable_or_live = serde_json::from_slice::<UserMessage>(&value)
            .map_or(true, |m| !m.is_expired(Utc::now()));
        if !undecodable_or_live {
            return Ok(false);
        }
        bucket
            .purge_with_ttl(key(project, id), MARKER_TTL)
            .await
            .map_err(classify)?;
        Ok(true)
    }
}
