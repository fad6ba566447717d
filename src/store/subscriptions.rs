//! Subscriptions: one durable pull consumer per subscription on its topic's stream. The
//! consumer's `metadata` map is the subscription's one home (subscriber, options, ttl,
//! timestamps, confirmation, creator, delegated token): deleting the topic stream deletes
//! its subscriptions with it, and a crash can leave no half-created subscription.

use std::{collections::HashMap, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{pull, AckPolicy, DeliverPolicy},
};
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    errors::{
        classify, is_already_exists, is_consumer_not_found, is_not_found, is_stream_not_found,
        Limit,
    },
    names::{
        changed_subject, replay_subject, stream_name, topic_subject, META_CONFIRMED, META_CREATED,
        META_DISABLED, META_EXPIRES, META_OPTIONS, META_PROJECT, META_SUBSCRIBER, META_TOKEN,
        META_TOPIC, META_TRUST, META_TTL, META_UNSUBSCRIBED, META_USER,
    },
    undecodable::{report_undecodable, RecordKind},
    Store, StoreError,
};
use crate::domain::{subscription_options::SubscriptionOptions, ProjectId, TopicName};

/// How long a changed subscription's consumer stays paused (see
/// [`Store::update_subscription`]): longer than every process needs to hear of the change.
pub const CHANGE_BARRIER: Duration = Duration::from_secs(2);

fn id_taken() -> StoreError {
    StoreError::Conflict("subscription id taken".into())
}

/// Here the consumer limit is the topic's subscription quota: name the stream's own limit
/// when it has one.
fn subscription_quota(e: StoreError, stream: &jetstream::stream::Stream) -> StoreError {
    match e {
        StoreError::LimitReached {
            limit: Limit::Consumers,
            source,
        } => StoreError::LimitReached {
            limit: Limit::Subscriptions {
                max: u64::try_from(stream.cached_info().config.max_consumers)
                    .ok()
                    .filter(|n| *n > 0),
            },
            source,
        },
        other => other,
    }
}

/// Every subscription in `stream` (the topic's), sorted by id.
async fn subscriptions_in(
    stream: &jetstream::stream::Stream,
    project: &ProjectId,
    topic: &TopicName,
) -> Result<Vec<Subscription>, StoreError> {
    let infos: Vec<_> = stream.consumers().try_collect().await.map_err(classify)?;
    let mut subs: Vec<Subscription> = infos
        .iter()
        .filter_map(|i| Subscription::from_consumer(&i.name, &i.config.metadata))
        .filter(|s| &s.project == project && &s.topic == topic)
        .collect();
    subs.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(subs)
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Subscription {
    /// Also the durable consumer's name.
    pub id: String,
    pub project: ProjectId,
    pub topic: TopicName,
    pub subscriber: String,
    pub options: SubscriptionOptions,
    pub ttl: u64,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub confirmed: bool,
    /// Set by `PUT …/confirm {"confirmed": false}`: nothing is delivered until confirmed
    /// again, whatever `require_confirmation` says.
    pub unsubscribed: bool,
    pub source_user: Option<String>,
    /// Token Herald presents to a `trust+` subscriber on the creator's behalf (`noauth`
    /// and `tokens` modes).
    pub delegated_token: Option<String>,
    /// Disabled by hand (`options.enabled = false`) or after failing for `disable_after`:
    /// no worker runs for it and its messages wait in the consumer.
    pub disabled: bool,
    /// The Keystone trust whose token Herald presents to a `trust+` subscriber
    /// (`keystone` mode). Kept here rather than in the options so that a PATCH of the
    /// options cannot point the subscription at another trust.
    pub trust_id: Option<String>,
}

impl Subscription {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at
    }

    /// `options.ordered`: one delivery at a time, in publish order.
    pub fn ordered(&self) -> bool {
        self.options.ordered
    }

    fn metadata(&self) -> HashMap<String, String> {
        let mut m = HashMap::from([
            (META_SUBSCRIBER.to_owned(), self.subscriber.clone()),
            (
                META_OPTIONS.to_owned(),
                Value::Object(self.options.doc().clone()).to_string(),
            ),
            (META_TTL.to_owned(), self.ttl.to_string()),
            (META_CREATED.to_owned(), self.created_at.to_rfc3339()),
            (META_EXPIRES.to_owned(), self.expires_at.to_rfc3339()),
            (META_CONFIRMED.to_owned(), self.confirmed.to_string()),
            (META_PROJECT.to_owned(), self.project.to_string()),
            (META_TOPIC.to_owned(), self.topic.to_string()),
        ]);
        if self.unsubscribed {
            m.insert(META_UNSUBSCRIBED.to_owned(), "true".to_owned());
        }
        if self.disabled {
            m.insert(META_DISABLED.to_owned(), "true".to_owned());
        }
        if let Some(u) = &self.source_user {
            m.insert(META_USER.to_owned(), u.clone());
        }
        if let Some(t) = &self.delegated_token {
            m.insert(META_TOKEN.to_owned(), t.clone());
        }
        if let Some(t) = &self.trust_id {
            m.insert(META_TRUST.to_owned(), t.clone());
        }
        m
    }

    /// Reads a consumer's metadata; `None` for consumers that are not subscriptions, and
    /// for those whose `herald.*` metadata does not decode (reported, see `undecodable`).
    pub fn from_consumer(name: &str, metadata: &HashMap<String, String>) -> Option<Self> {
        match Self::decode_consumer(name, metadata) {
            Decoded::Subscription(sub) => Some(sub),
            Decoded::NotHerald => None,
            Decoded::Undecodable(reason) => {
                report_undecodable(RecordKind::Subscription, name, &reason);
                None
            }
        }
    }

    /// Tells a subscription from another program's consumer (no `herald.*` metadata,
    /// ignored silently) and from a subscription whose metadata is broken.
    pub fn decode_consumer(name: &str, metadata: &HashMap<String, String>) -> Decoded {
        if !metadata.keys().any(|k| k.starts_with("herald.")) {
            return Decoded::NotHerald;
        }
        let get = |k: &'static str| metadata.get(k).ok_or(format!("{k} is missing"));
        let time = |k: &'static str| {
            DateTime::parse_from_rfc3339(get(k)?)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|e| format!("{k}: {e}"))
        };
        let decoded = (|| {
            Ok::<_, String>(Self {
                id: name.to_owned(),
                project: ProjectId::parse(get(META_PROJECT)?).map_err(|e| e.0)?,
                topic: TopicName::parse(get(META_TOPIC)?).map_err(|e| e.0)?,
                subscriber: get(META_SUBSCRIBER)?.clone(),
                options: match serde_json::from_str(get(META_OPTIONS)?) {
                    Ok(Value::Object(m)) => m.into(),
                    Ok(_) => return Err(format!("{META_OPTIONS} is not a JSON object")),
                    Err(e) => return Err(format!("{META_OPTIONS}: {e}")),
                },
                ttl: get(META_TTL)?
                    .parse()
                    .map_err(|e| format!("{META_TTL}: {e}"))?,
                created_at: time(META_CREATED)?,
                expires_at: time(META_EXPIRES)?,
                confirmed: get(META_CONFIRMED)? == "true",
                unsubscribed: metadata.get(META_UNSUBSCRIBED).is_some_and(|v| v == "true"),
                source_user: metadata.get(META_USER).cloned(),
                delegated_token: metadata.get(META_TOKEN).cloned(),
                disabled: metadata.get(META_DISABLED).is_some_and(|v| v == "true"),
                trust_id: metadata.get(META_TRUST).cloned(),
            })
        })();
        match decoded {
            Ok(sub) => Decoded::Subscription(sub),
            Err(reason) => Decoded::Undecodable(reason),
        }
    }
}

/// What a consumer's metadata holds (see [`Subscription::decode_consumer`]).
#[derive(Debug)]
// A short-lived return value, matched at once: boxing the subscription would only add an
// allocation per decode.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    Subscription(Subscription),
    /// Not one of Herald's consumers.
    NotHerald,
    /// Herald metadata that does not decode, and why.
    Undecodable(String),
}

/// How the consumers of subscriptions are configured (from Herald's config).
#[derive(Debug, Clone, Copy)]
pub struct ConsumerLimits {
    /// Longer than any delivery attempt; slow attempts send progress acks.
    pub ack_wait: Duration,
    /// Deliveries in flight per subscription when not ordered.
    pub max_in_flight: usize,
}

/// A UUID-shaped id derived from `parts` (stable across retries of the same request).
pub fn derived_id(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}

/// Outcome of [`Store::create_subscription`].
#[derive(Debug)]
pub enum Created {
    New(Subscription),
    /// The same subscriber already subscribes to the topic.
    Existing(Subscription),
}

impl Store {
    async fn stream_of(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<jetstream::stream::Stream, StoreError> {
        match self.js.get_stream(stream_name(project, topic)).await {
            Ok(s) => Ok(s),
            Err(e) if is_stream_not_found(&e) => Err(StoreError::NotFound),
            Err(e) => Err(classify(e)),
        }
    }

    fn consumer_config(&self, sub: &Subscription, limits: ConsumerLimits) -> pull::Config {
        let stream = stream_name(&sub.project, &sub.topic);
        pull::Config {
            durable_name: Some(sub.id.clone()),
            description: Some(format!("Herald subscription {}", sub.subscriber)),
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: limits.ack_wait,
            // Attempts are counted and stopped by the worker (the topic's policy can change
            // after the consumer exists, and delay NAKs are not attempts).
            max_deliver: -1,
            max_ack_pending: if sub.ordered() {
                1
            } else {
                limits.max_in_flight as i64
            },
            filter_subjects: vec![
                topic_subject(&sub.project, &sub.topic),
                replay_subject(&stream, &sub.id),
            ],
            metadata: sub.metadata(),
            ..Default::default()
        }
    }

    /// Announces a created/changed/deleted subscription to every delivery engine.
    async fn announce(&self, project: &ProjectId, topic: &TopicName, id: &str) {
        let subject = changed_subject(&stream_name(project, topic), id);
        // Best effort: the engines' periodic resync catches a lost announcement.
        let _ = self.client.publish(subject, bytes::Bytes::new()).await;
    }

    /// Every subscription of the topic (expired ones included), sorted by id.
    pub async fn list_subscriptions(
        &self,
        project: &ProjectId,
        topic: &TopicName,
    ) -> Result<Vec<Subscription>, StoreError> {
        let stream = match self.stream_of(project, topic).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        subscriptions_in(&stream, project, topic).await
    }

    pub async fn get_subscription(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        id: &str,
    ) -> Result<Option<Subscription>, StoreError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(None);
        }
        let stream = match self.stream_of(project, topic).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        match stream.consumer_info(id).await {
            Ok(info) => Ok(
                Subscription::from_consumer(&info.name, &info.config.metadata)
                    .filter(|s| &s.project == project && &s.topic == topic),
            ),
            Err(e) if is_consumer_not_found(&e) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Messages waiting for the subscription: not yet pulled plus pulled and not acked.
    pub async fn subscription_pending(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        id: &str,
    ) -> Result<u64, StoreError> {
        let stream = self.stream_of(project, topic).await?;
        match stream.consumer_info(id).await {
            Ok(info) => Ok(info.num_pending + info.num_ack_pending as u64),
            Err(e) if is_consumer_not_found(&e) => Err(StoreError::NotFound),
            Err(e) => Err(classify(e)),
        }
    }

    /// Creates the subscription unless the same subscriber already subscribes.
    pub async fn create_subscription(
        &self,
        mut sub: Subscription,
        limits: ConsumerLimits,
    ) -> Result<Created, StoreError> {
        let stream = self.stream_of(&sub.project, &sub.topic).await?;
        let now = Utc::now();
        // The stream handle just read serves the listing too (one stream info, not two).
        let existing = subscriptions_in(&stream, &sub.project, &sub.topic)
            .await?
            .into_iter()
            .find(|s| s.subscriber == sub.subscriber);
        if let Some(existing) = existing {
            if !existing.is_expired(now) {
                return Ok(Created::Existing(existing));
            }
            self.delete_subscription(&sub.project, &sub.topic, &existing.id)
                .await?;
        }
        // A name derived from the subscriber makes two concurrent creates collide in
        // JetStream instead of producing duplicates.
        sub.id = derived_id(&[sub.project.as_str(), sub.topic.as_str(), &sub.subscriber]);
        for attempt in 0..2 {
            match stream
                .create_consumer_strict(self.consumer_config(&sub, limits))
                .await
            {
                Ok(_) => {
                    self.announce(&sub.project, &sub.topic, &sub.id).await;
                    return Ok(Created::New(sub));
                }
                Err(e) if is_already_exists(&e) => {
                    match self
                        .get_subscription(&sub.project, &sub.topic, &sub.id)
                        .await?
                    {
                        Some(s) if s.subscriber == sub.subscriber => {
                            return Ok(Created::Existing(s))
                        }
                        // The derived name belongs to a subscription whose subscriber was
                        // changed since: fall back to a random id.
                        _ if attempt == 0 => sub.id = uuid::Uuid::new_v4().to_string(),
                        _ => return Err(id_taken()),
                    }
                }
                Err(e) => return Err(subscription_quota(classify(e), &stream)),
            }
        }
        Err(id_taken())
    }

    /// Rewrites a subscription's metadata (and limits, e.g. `ordered`).
    pub async fn update_subscription(
        &self,
        sub: &Subscription,
        limits: ConsumerLimits,
    ) -> Result<(), StoreError> {
        let stream = self.stream_of(&sub.project, &sub.topic).await?;
        // The change barrier: paused, the consumer hands nothing to any worker of any
        // process, so a message published after this call returns cannot reach a worker
        // that still holds the old subscription; they all learn of the change (announced
        // below) well within the pause, which then ends by itself. (A config update does
        // not pause; the pause API must come first.)
        // A disabled subscription stays paused until enabled: a pull request still waiting
        // on the server from before must not be handed its messages (each hand-back would
        // count as a delivery and spend its retries).
        let until = if sub.disabled {
            time::OffsetDateTime::now_utc() + time::Duration::days(365 * 100)
        } else {
            time::OffsetDateTime::now_utc() + CHANGE_BARRIER
        };
        match stream.pause_consumer(&sub.id, until).await {
            Ok(_) => {}
            Err(e) if is_not_found(&e) => return Err(StoreError::NotFound),
            Err(e) => return Err(classify(e)),
        }
        let mut config = self.consumer_config(sub, limits);
        config.pause_until = Some(until);
        match stream.update_consumer(config).await {
            Ok(_) => {
                self.announce(&sub.project, &sub.topic, &sub.id).await;
                Ok(())
            }
            Err(e) if is_not_found(&e) => Err(StoreError::NotFound),
            Err(e) => Err(classify(e)),
        }
    }

    /// Deletes a subscription; absent is fine.
    pub async fn delete_subscription(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        id: &str,
    ) -> Result<(), StoreError> {
        if uuid::Uuid::parse_str(id).is_err() {
            return Ok(());
        }
        let stream = match self.stream_of(project, topic).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Ok(()),
            Err(e) => return Err(e),
        };
        match stream.delete_consumer(id).await {
            Ok(_) => {}
            Err(e) if is_consumer_not_found(&e) => {}
            Err(e) => return Err(classify(e)),
        }
        self.announce(project, topic, id).await;
        Ok(())
    }
}

impl Store {
    /// Deletes an expired subscription. `true` when this call deleted it (so exactly one
    /// process reports the expiry).
    pub async fn expire_subscription(&self, sub: &Subscription) -> Result<bool, StoreError> {
        let stream = match self.stream_of(&sub.project, &sub.topic).await {
            Ok(s) => s,
            Err(StoreError::NotFound) => return Ok(false),
            Err(e) => return Err(e),
        };
        match stream.delete_consumer(&sub.id).await {
            Ok(_) => Ok(true),
            Err(e) if is_consumer_not_found(&e) => Ok(false),
            Err(e) => Err(classify(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscription_round_trips_through_consumer_metadata() {
        let now = Utc::now();
        let sub = Subscription {
            id: derived_id(&["p", "t", "http://x"]),
            project: ProjectId::parse("p").unwrap(),
            topic: TopicName::parse("t.x").unwrap(),
            subscriber: "http://x".into(),
            options: serde_json::json!({"ordered": true})
                .as_object()
                .unwrap()
                .clone()
                .into(),
            ttl: 3600,
            created_at: DateTime::parse_from_rfc3339(&now.to_rfc3339())
                .unwrap()
                .with_timezone(&Utc),
            expires_at: DateTime::parse_from_rfc3339(&now.to_rfc3339())
                .unwrap()
                .with_timezone(&Utc),
            confirmed: false,
            unsubscribed: true,
            source_user: Some("u".into()),
            delegated_token: None,
            disabled: true,
            trust_id: Some("0123456789abcdef0123456789abcdef".into()),
        };
        let back = Subscription::from_consumer(&sub.id, &sub.metadata()).unwrap();
        assert_eq!(back, sub);
        assert!(back.ordered());
        assert!(Subscription::from_consumer("x", &HashMap::new()).is_none());
    }

    #[test]
    fn broken_herald_metadata_is_undecodable_and_other_consumers_are_not_herald() {
        let mut metadata = HashMap::from([
            (META_PROJECT.to_owned(), "p".to_owned()),
            (META_OPTIONS.to_owned(), "{broken".to_owned()),
        ]);
        match Subscription::decode_consumer("c", &metadata) {
            Decoded::Undecodable(reason) => assert!(!reason.is_empty()),
            other => panic!("{other:?}"),
        }
        metadata.clear();
        metadata.insert("owner".into(), "someone else".into());
        assert!(matches!(
            Subscription::decode_consumer("c", &metadata),
            Decoded::NotHerald
        ));
    }

    #[test]
    fn derived_ids_are_stable_uuids() {
        let a = derived_id(&["p", "t", "k"]);
        assert_eq!(a, derived_id(&["p", "t", "k"]));
        assert_ne!(a, derived_id(&["p", "tk", ""]));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
