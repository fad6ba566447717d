//! The wire side of delivery's multiplexed pull engine: pull requests
//! (`$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}`) for any number of consumers, all
//! answered onto one inbox subscription of this process. Each request's reply subject is
//! `{inbox}.{slot}.{request}`: a status ending a request arrives on it, so it says which
//! consumer and request it ends. A message arrives under its own stream subject; its ack
//! subject names its consumer. What to pull, when, and for whom
//! is decided in `delivery::pull`; this module only speaks the protocol.

use std::time::Duration;

use async_nats::{jetstream, StatusCode, Subject};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::Store;

/// A pull request's JSON body (the fields JetStream's `MSG.NEXT` takes that Herald uses).
#[derive(Serialize)]
struct NextRequest {
    batch: usize,
    /// Nanoseconds, as JetStream expects.
    expires: u64,
}

/// What arrived on the shared inbox.
#[derive(Debug)]
// Short-lived and moved once into its handler; boxing the message would add an allocation
// per delivery.
#[allow(clippy::large_enum_variant)]
pub enum Pulled {
    /// A message for one of the consumers pulled for (its ack subject says which).
    Message(jetstream::Message),
    /// JetStream ended `request` of `slot` (expired, consumer deleted, leadership change,
    /// too many waiting requests, no responders): `pending` of its messages will not come.
    Ended {
        slot: u64,
        request: u64,
        status: StatusCode,
        description: Option<String>,
        pending: Option<usize>,
    },
}

/// One process's inbox for every pull request it sends.
pub struct PullInbox {
    prefix: String,
    subscriber: async_nats::Subscriber,
    js: jetstream::Context,
}

/// The subject a pull request for `consumer` of `stream` is sent to.
pub fn next_subject(stream: &str, consumer: &str) -> String {
    format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}")
}

impl Store {
    /// Subscribes this process's pull inbox (`_INBOX.{unique}.*.*`).
    ///
    /// # Errors
    /// When NATS refuses the subscription (not connected yet is not an error: the client
    /// subscribes once it connects).
    pub async fn pull_inbox(&self) -> Result<PullInbox, async_nats::SubscribeError> {
        let prefix = self.client.new_inbox();
        let subscriber = self.client.subscribe(format!("{prefix}.*.*")).await?;
        Ok(PullInbox {
            prefix,
            subscriber,
            js: self.js.clone(),
        })
    }

    /// How many times the connection was (re)established: a change means every pull
    /// request sent before it may be gone.
    pub fn connects(&self) -> u64 {
        self.client
            .statistics()
            .connects
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Sends one pull request; its messages and its end arrive on `inbox`. Only queued on
    /// the connection: no round trip is awaited.
    pub async fn request_pull(
        &self,
        inbox: &PullInbox,
        next_subject: &str,
        slot: u64,
        request: u64,
        batch: usize,
        expires: Duration,
    ) -> bool {
        let body = NextRequest {
            batch,
            expires: u64::try_from(expires.as_nanos()).unwrap_or(u64::MAX),
        };
        let Ok(body) = serde_json::to_vec(&body) else {
            return false;
        };
        let reply = Subject::from(format!("{}.{slot}.{request}", inbox.prefix));
        self.client
            .publish_with_reply(next_subject.to_owned(), reply, Bytes::from(body))
            .await
            .is_ok()
    }
}

impl PullInbox {
    /// The next thing that arrived; `None` once the inbox is closed. Anything that is not
    /// the answer to one of this inbox's requests is dropped.
    pub async fn next(&mut self) -> Option<Pulled> {
        loop {
            let message = self.subscriber.next().await?;
            if let Some(pulled) = self.classify(message) {
                return Some(pulled);
            }
        }
    }

    /// What already arrived, without waiting (for shutdown).
    pub fn try_next(&mut self) -> Option<Pulled> {
        use futures::FutureExt;
        loop {
            let message = self.subscriber.next().now_or_never()??;
            if let Some(pulled) = self.classify(message) {
                return Some(pulled);
            }
        }
    }

    /// Stops the server from sending more: waiting requests find no interest and end.
    pub async fn close(&mut self) {
        let _ = self.subscriber.unsubscribe().await;
    }

    fn classify(&self, message: async_nats::Message) -> Option<Pulled> {
        match message.status {
            None | Some(StatusCode::OK) => Some(Pulled::Message(jetstream::Message {
                message,
                context: self.js.clone(),
            })),
            // Heartbeats are never asked for; one that comes anyway says nothing.
            Some(StatusCode::IDLE_HEARTBEAT) => None,
            Some(status) => {
                let (slot, request) = parse_reply(&self.prefix, message.subject.as_str())?;
                let pending = message
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Pending-Messages"))
                    .and_then(|v| v.as_str().parse().ok());
                Some(Pulled::Ended {
                    slot,
                    request,
                    status,
                    description: message.description,
                    pending,
                })
            }
        }
    }
}

/// `{prefix}.{slot}.{request}` → (slot, request).
fn parse_reply(prefix: &str, subject: &str) -> Option<(u64, u64)> {
    let rest = subject.strip_prefix(prefix)?.strip_prefix('.')?;
    let (slot, request) = rest.split_once('.')?;
    Some((slot.parse().ok()?, request.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_subjects_name_slot_and_request() {
        assert_eq!(parse_reply("_INBOX.abc", "_INBOX.abc.7.42"), Some((7, 42)));
        assert_eq!(parse_reply("_INBOX.abc", "_INBOX.abcd.7.42"), None);
        assert_eq!(parse_reply("_INBOX.abc", "_INBOX.abc.7"), None);
        assert_eq!(parse_reply("_INBOX.abc", "_INBOX.abc.x.1"), None);
        assert_eq!(parse_reply("_INBOX.abc", "_INBOX.abc.1.2.3"), None);
    }

    #[test]
    fn pull_requests_go_to_the_consumers_next_subject() {
        assert_eq!(
            next_subject("HERALD_TOPIC_x", "sub1"),
            "$JS.API.CONSUMER.MSG.NEXT.HERALD_TOPIC_x.sub1"
        );
    }
}
