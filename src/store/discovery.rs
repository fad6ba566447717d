//! How delivery finds subscriptions: the events that say one changed, the subscription
//! consumers of every topic stream (the pull requests themselves are in `pull`). Delivery asks
//! here and never lists streams or decodes JetStream subjects itself.

use std::collections::HashMap;

use futures::{Stream, StreamExt, TryStreamExt};

use super::{
    errors::{classify, is_consumer_not_found, is_stream_not_found},
    names::{
        ADVISORY_CONSUMER_CREATED, ADVISORY_CONSUMER_DELETED, ADVISORY_CONSUMER_LEADER_ELECTED,
        ADVISORY_STREAM_DELETED, CHANGED_SUBJECT_PREFIX, TOPIC_CHANGED_SUBJECT_PREFIX,
        TOPIC_STREAM_PREFIX,
    },
    Store, StoreError,
};

/// Something changed about a topic stream's subscriptions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionEvent {
    /// The topic's stream is gone, and every subscription with it.
    StreamDeleted { stream: String },
    /// This subscription's consumer was created, deleted or changed: look it up again.
    Consumer { stream: String, consumer: String },
    /// The topic's metadata (its policies) changed: every subscription of it is looked up
    /// again.
    TopicChanged { stream: String },
    /// This consumer has a new leader: pull requests sent to the old one are lost.
    LeaderElected { stream: String, consumer: String },
}

impl SubscriptionEvent {
    /// Reads an advisory or change-announcement subject; `None` for anything that is not
    /// about a topic stream.
    fn from_subject(subject: &str) -> Option<Self> {
        let tokens: Vec<&str> = subject.split('.').collect();
        let event = match tokens.as_slice() {
            ["$JS", "EVENT", "ADVISORY", "STREAM", "DELETED", stream] => Self::StreamDeleted {
                stream: (*stream).to_owned(),
            },
            ["herald", "internal", "topics", "changed", stream] => Self::TopicChanged {
                stream: (*stream).to_owned(),
            },
            ["$JS", "EVENT", "ADVISORY", "CONSUMER", "LEADER_ELECTED", stream, consumer] => {
                Self::LeaderElected {
                    stream: (*stream).to_owned(),
                    consumer: (*consumer).to_owned(),
                }
            }
            [.., stream, consumer] => Self::Consumer {
                stream: (*stream).to_owned(),
                consumer: (*consumer).to_owned(),
            },
            _ => return None,
        };
        let stream = match &event {
            Self::StreamDeleted { stream }
            | Self::TopicChanged { stream }
            | Self::Consumer { stream, .. }
            | Self::LeaderElected { stream, .. } => stream,
        };
        stream.starts_with(TOPIC_STREAM_PREFIX).then_some(event)
    }
}

/// A consumer on a topic stream as JetStream lists it: its name and the metadata a
/// [`Subscription`](super::subscriptions::Subscription) is decoded from.
#[derive(Debug, Clone)]
pub struct SubscriptionConsumer {
    pub stream: String,
    pub name: String,
    pub metadata: HashMap<String, String>,
}

impl Store {
    /// Every subscription change as it happens: JetStream's consumer and stream advisories
    /// and Herald's own change announcements. A subject that cannot be watched is logged
    /// and left out (the periodic resync covers it).
    pub async fn subscription_events(&self) -> impl Stream<Item = SubscriptionEvent> {
        let subjects = [
            ADVISORY_CONSUMER_CREATED.to_owned(),
            ADVISORY_CONSUMER_DELETED.to_owned(),
            ADVISORY_CONSUMER_LEADER_ELECTED.to_owned(),
            ADVISORY_STREAM_DELETED.to_owned(),
            format!("{CHANGED_SUBJECT_PREFIX}.>"),
            format!("{TOPIC_CHANGED_SUBJECT_PREFIX}.>"),
        ];
        let mut subs = Vec::new();
        for s in subjects {
            match self.client.subscribe(s).await {
                Ok(sub) => subs.push(sub),
                Err(e) => tracing::warn!(error = %e, "cannot watch subscription events"),
            }
        }
        futures::stream::select_all(subs)
            .filter_map(|m| std::future::ready(SubscriptionEvent::from_subject(m.subject.as_str())))
    }

    /// One consumer of a topic stream; `None` when it or its stream does not exist.
    pub async fn subscription_consumer(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<Option<SubscriptionConsumer>, StoreError> {
        let s = match self.js.get_stream(stream).await {
            Ok(s) => s,
            Err(e) if is_stream_not_found(&e) => return Ok(None),
            Err(e) => return Err(classify(e)),
        };
        match s.consumer_info(consumer).await {
            Ok(info) => Ok(Some(SubscriptionConsumer {
                stream: stream.to_owned(),
                name: info.name,
                metadata: info.config.metadata,
            })),
            Err(e) if is_consumer_not_found(&e) => Ok(None),
            Err(e) => Err(classify(e)),
        }
    }

    /// Every consumer of every topic stream. A stream deleted while listing is skipped.
    pub async fn subscription_consumers(&self) -> Result<Vec<SubscriptionConsumer>, StoreError> {
        let mut all = Vec::new();
        for stream in self.topic_stream_names().await? {
            all.extend(self.subscription_consumers_of(&stream).await?);
        }
        Ok(all)
    }

    /// Every consumer of one topic stream; none when the stream does not exist.
    pub async fn subscription_consumers_of(
        &self,
        stream: &str,
    ) -> Result<Vec<SubscriptionConsumer>, StoreError> {
        let Ok(s) = self.js.get_stream(stream).await else {
            return Ok(Vec::new());
        };
        let infos: Vec<_> = s.consumers().try_collect().await.map_err(classify)?;
        Ok(infos
            .into_iter()
            .map(|info| SubscriptionConsumer {
                stream: stream.to_owned(),
                name: info.name,
                metadata: info.config.metadata,
            })
            .collect())
    }

    /// The names of every topic stream.
    pub(super) async fn topic_stream_names(&self) -> Result<Vec<String>, StoreError> {
        let names: Vec<String> = self
            .js
            .stream_names()
            .try_collect()
            .await
            .map_err(classify)?;
        Ok(names
            .into_iter()
            .filter(|n| n.starts_with(TOPIC_STREAM_PREFIX))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisories_and_announcements_name_the_topic_stream_and_consumer() {
        let stream = format!("{TOPIC_STREAM_PREFIX}abc");
        assert_eq!(
            SubscriptionEvent::from_subject(&format!(
                "$JS.EVENT.ADVISORY.CONSUMER.CREATED.{stream}.sub1"
            )),
            Some(SubscriptionEvent::Consumer {
                stream: stream.clone(),
                consumer: "sub1".into()
            })
        );
        assert_eq!(
            SubscriptionEvent::from_subject(&format!("$JS.EVENT.ADVISORY.STREAM.DELETED.{stream}")),
            Some(SubscriptionEvent::StreamDeleted {
                stream: stream.clone()
            })
        );
        assert_eq!(
            SubscriptionEvent::from_subject(&format!("herald.internal.topics.changed.{stream}")),
            Some(SubscriptionEvent::TopicChanged {
                stream: stream.clone()
            })
        );
        assert_eq!(
            SubscriptionEvent::from_subject(&format!(
                "$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.{stream}.sub3"
            )),
            Some(SubscriptionEvent::LeaderElected {
                stream: stream.clone(),
                consumer: "sub3".into()
            })
        );
        assert_eq!(
            SubscriptionEvent::from_subject(&format!("{CHANGED_SUBJECT_PREFIX}.{stream}.sub2")),
            Some(SubscriptionEvent::Consumer {
                stream,
                consumer: "sub2".into()
            })
        );
    }

    #[test]
    fn events_about_other_streams_are_ignored() {
        assert_eq!(
            SubscriptionEvent::from_subject("$JS.EVENT.ADVISORY.CONSUMER.CREATED.KV_x.c"),
            None
        );
        assert_eq!(
            SubscriptionEvent::from_subject(
                "$JS.EVENT.ADVISORY.STREAM.DELETED.herald_dead_letters"
            ),
            None
        );
        assert_eq!(SubscriptionEvent::from_subject("x"), None);
    }
}
