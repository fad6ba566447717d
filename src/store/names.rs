//! Every name Herald gives things in NATS, in one place: subjects (public and internal),
//! stream and bucket names, KV keys and subject filters, consumer and stream metadata keys,
//! and the reserved subjects Herald listens on. The rest of `store` builds names only
//! through this module, and no store module needs another one's names.
//!
//! Project ids and topic names are checked to be token safe by
//! [`domain::names`](crate::domain::names); this module only puts them together.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::domain::{ProjectId, TopicName};

// Topics ------------------------------------------------------------------------------------

/// Bucket holding topic metadata, key [`topic_key`].
pub const TOPICS_BUCKET: &str = "herald_topics";
/// Prefix of every topic stream's name.
pub const TOPIC_STREAM_PREFIX: &str = "HERALD_TOPIC_";

/// The subject a topic's messages are published on (public contract).
pub fn topic_subject(project: &ProjectId, topic: &TopicName) -> String {
    format!("{}.{topic}", topic_subject_prefix(project))
}

/// What every topic subject of `project` starts with.
pub fn topic_subject_prefix(project: &ProjectId) -> String {
    format!("herald.topics.{project}")
}

/// Stream names cannot hold dots and are length-limited, so they are a digest of
/// (project, topic); the stream's metadata names both for operators.
pub fn stream_name(project: &ProjectId, topic: &TopicName) -> String {
    let digest = Sha256::digest(format!("{project}/{topic}"));
    format!("{TOPIC_STREAM_PREFIX}{}", hex::encode_upper(&digest[..16]))
}

/// The topic's key in [`TOPICS_BUCKET`].
pub fn topic_key(project: &ProjectId, topic: &TopicName) -> String {
    format!("{project}.{topic}")
}

// Subscriptions -----------------------------------------------------------------------------

/// The subject a dead letter of `subscription` is replayed on: only its consumer sees it.
/// (`subscription` may be `*`: the topic stream takes every subscription's replays.)
pub fn replay_subject(stream: &str, subscription: &str) -> String {
    format!("herald.replay.{stream}.{subscription}")
}

/// Core NATS subject on which the API announces a changed subscription, so every
/// process's delivery engine picks it up at once: `...{stream}.{consumer}`.
pub const CHANGED_SUBJECT_PREFIX: &str = "herald.internal.subscriptions.changed";

/// The announcement subject of subscription (consumer) `id` of topic stream `stream`.
pub fn changed_subject(stream: &str, id: &str) -> String {
    format!("{CHANGED_SUBJECT_PREFIX}.{stream}.{id}")
}

/// Core NATS subject on which the API announces a changed topic (its policies reach every
/// subscription's delivery): `...{stream}`.
pub const TOPIC_CHANGED_SUBJECT_PREFIX: &str = "herald.internal.topics.changed";

/// The announcement subject of a change to topic stream `stream`.
pub fn topic_changed_subject(stream: &str) -> String {
    format!("{TOPIC_CHANGED_SUBJECT_PREFIX}.{stream}")
}

/// JetStream advisories the delivery engine watches: `...{stream}.{consumer}`.
pub const ADVISORY_CONSUMER_CREATED: &str = "$JS.EVENT.ADVISORY.CONSUMER.CREATED.>";
/// See [`ADVISORY_CONSUMER_CREATED`].
pub const ADVISORY_CONSUMER_DELETED: &str = "$JS.EVENT.ADVISORY.CONSUMER.DELETED.>";
/// A consumer got a new leader (cluster failover): pull requests waiting at the old leader
/// are gone, so the engine asks again at once: `...{stream}.{consumer}`.
pub const ADVISORY_CONSUMER_LEADER_ELECTED: &str = "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.>";
/// JetStream advisory of a deleted stream: `...{stream}`.
pub const ADVISORY_STREAM_DELETED: &str = "$JS.EVENT.ADVISORY.STREAM.DELETED.>";

/// Metadata keys: a topic stream's owner (also in its subscriptions' consumers), and the
/// rest of a subscription's consumer metadata (see `subscriptions`).
pub const META_PROJECT: &str = "herald.project";
pub const META_TOPIC: &str = "herald.topic";
pub const META_SUBSCRIBER: &str = "herald.subscriber";
pub const META_OPTIONS: &str = "herald.options";
pub const META_TTL: &str = "herald.ttl";
pub const META_CREATED: &str = "herald.created_at";
pub const META_EXPIRES: &str = "herald.expires_at";
pub const META_CONFIRMED: &str = "herald.confirmed";
pub const META_UNSUBSCRIBED: &str = "herald.unsubscribed";
pub const META_USER: &str = "herald.source_user";
pub const META_TOKEN: &str = "herald.delegated_token";
/// Set (`"true"`) while the subscription is disabled (by hand or auto-disable).
pub const META_DISABLED: &str = "herald.disabled";
/// The Keystone trust a `trust+` subscription delivers under (`auth_mode = keystone`).
pub const META_TRUST: &str = "herald.trust_id";

// Dead letters ------------------------------------------------------------------------------

pub const DEAD_LETTERS_STREAM: &str = "HERALD_DEAD_LETTERS";
/// Every dead letter's subject (the stream's subjects).
pub const DEAD_LETTERS_SUBJECTS: &str = "herald.dead_letters.>";

/// The subject of `subscription`'s dead letters (`*` or `>` for all of the topic's).
pub fn dead_letter_subject(project: &ProjectId, stream: &str, subscription: &str) -> String {
    format!("herald.dead_letters.{project}.{stream}.{subscription}")
}

/// Delivery leases (`store::leases`), key `{stream}.{consumer}`.
pub const LEASES_BUCKET: &str = "herald_leases";

// Attempts ----------------------------------------------------------------------------------

/// Every delivery attempt, one record each (design.md "Attempts, health and control").
pub const ATTEMPTS_STREAM: &str = "HERALD_ATTEMPTS";
/// Every attempt record's subject (the stream's subjects).
pub const ATTEMPTS_SUBJECTS: &str = "herald.attempts.>";

/// The subject of `subscription`'s attempt records (public contract).
pub fn attempt_subject(project: &ProjectId, subscription: &str) -> String {
    format!("herald.attempts.{project}.{subscription}")
}

/// Where each subscription's newest attempt records are (`store::attempt_index`).
pub const ATTEMPT_INDEX_STREAM: &str = "HERALD_ATTEMPT_INDEX";
/// Every attempt index record's subject (the stream's subjects).
pub const ATTEMPT_INDEX_SUBJECTS: &str = "herald.attempt_index.>";

/// The subject of one attempt writer's index of `subscription`'s records.
pub fn attempt_index_subject(project: &ProjectId, subscription: &str, writer: &str) -> String {
    format!("herald.attempt_index.{project}.{subscription}.{writer}")
}

/// Every writer's index of `subscription`'s records.
pub fn attempt_index_filter(project: &ProjectId, subscription: &str) -> String {
    format!("herald.attempt_index.{project}.{subscription}.*")
}

/// Bucket holding, per failing subscription, when its current run of failures began
/// (auto-disable), key [`health_key`].
pub const HEALTH_BUCKET: &str = "herald_subscription_health";

/// The subscription's key in [`HEALTH_BUCKET`].
pub fn health_key(project: &ProjectId, subscription: &str) -> String {
    format!("{project}.{subscription}")
}

// User messages -----------------------------------------------------------------------------

/// Bucket holding user messages, key [`user_message_key`].
pub const USER_MESSAGES_BUCKET: &str = "herald_user_messages";
/// Public contract: NATS request/reply subject that creates a user message.
pub const USER_MESSAGES_CREATE_SUBJECT: &str = "herald.user_messages.create";

/// The message's key in [`USER_MESSAGES_BUCKET`].
pub fn user_message_key(project: &ProjectId, id: &Uuid) -> String {
    format!("{project}.{}", id.as_hyphenated())
}

// KV buckets --------------------------------------------------------------------------------

/// The stream behind KV bucket `bucket`.
pub fn kv_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// What precedes a key in the subjects of `bucket`'s stream.
pub fn kv_subject_prefix(bucket: &str) -> String {
    format!("$KV.{bucket}.")
}

/// The subject filter of every key of `project` in `bucket` (keys `{project}.…`).
pub fn kv_project_filter(bucket: &str, project: &ProjectId) -> String {
    format!("$KV.{bucket}.{project}.>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_published_shapes() {
        let (p, t) = (
            ProjectId::parse("p1").unwrap(),
            TopicName::parse("a.b").unwrap(),
        );
        assert_eq!(topic_subject(&p, &t), "herald.topics.p1.a.b");
        let stream = stream_name(&p, &t);
        assert!(stream.starts_with(TOPIC_STREAM_PREFIX));
        assert_eq!(stream.len(), TOPIC_STREAM_PREFIX.len() + 32);
        assert_eq!(
            replay_subject(&stream, "*"),
            format!("herald.replay.{stream}.*")
        );
        assert_eq!(
            changed_subject(&stream, "c"),
            format!("herald.internal.subscriptions.changed.{stream}.c")
        );
        assert_eq!(
            dead_letter_subject(&p, &stream, "s"),
            format!("herald.dead_letters.p1.{stream}.s")
        );
        assert_eq!(topic_key(&p, &t), "p1.a.b");
        assert_eq!(attempt_subject(&p, "s"), "herald.attempts.p1.s");
        assert_eq!(health_key(&p, "s"), "p1.s");
        assert_eq!(kv_stream(TOPICS_BUCKET), "KV_herald_topics");
        assert_eq!(
            kv_project_filter(TOPICS_BUCKET, &p),
            format!("{}p1.>", kv_subject_prefix(TOPICS_BUCKET))
        );
    }
}
