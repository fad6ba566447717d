//! Domain types that parse and validate once, at the edge of the API.

pub mod filter_policy;
pub mod microversion;
mod names;
mod retry_policy;
pub mod signed_url;
pub mod subscriber;
pub mod subscription_options;
pub mod timestamps;
pub mod topic_metadata;

pub use names::{ProjectId, TopicName};
pub use retry_policy::{BackoffFunction, RetryPolicy};
pub use subscriber::Subscriber;
pub use topic_metadata::{Protocol, TopicMetadata};

/// A validation failure, with a message meant for the API caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }
}

/// For `#[serde(default, deserialize_with = "present")]`: a field that is present is
/// `Some`, `null` included (`{"ttl": null}` is a bad ttl, not a missing one).
pub fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}
