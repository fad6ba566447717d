//! What one delivery step ends in, and why a delivery attempt failed.

use std::time::Duration;

use crate::catalog;

/// The result of [`super::worker::deliver_one`] for one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The subscriber has it; acked.
    Delivered,
    /// Not due yet (delay): NAKed with the remaining time; not an attempt.
    Deferred(Duration),
    /// The attempt failed; NAKed to come back after the delay.
    Retry { attempt: u64, after: Duration },
    /// Given up: terminated on this subscription and recorded as a dead letter.
    DeadLettered { attempts: u64 },
    /// Not delivered on purpose (unconfirmed or expired subscription); acked.
    Skipped,
    /// The subscription's filter policy does not match the message; acked by the pull loop,
    /// no attempt (the label of its counter).
    Filtered,
    /// Herald could not finish its own bookkeeping (NATS down); NAKed, not an attempt.
    Postponed,
}

impl Outcome {
    pub fn label(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Deferred(_) => "deferred",
            Self::Retry { .. } => "retry",
            Self::DeadLettered { .. } => "dead_letter",
            Self::Skipped => "skipped",
            Self::Filtered => "filtered",
            Self::Postponed => "postponed",
        }
    }
}

/// Why an attempt failed; tells retryable failures from permanent ones.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("the subscriber answered HTTP {status}")]
    Status {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the subscriber: {0}")]
    Connect(String),
    /// Herald's own outbound guard refused the address; nothing was sent.
    #[error("not sent: Herald's outbound policy refused the address {0} (loopback, private, link-local and metadata addresses are blocked unless outbound_allow permits them)")]
    Blocked(String),
    /// nats-server refused the delivery connection's publish (its permissions); nothing
    /// was delivered.
    #[error("NATS refused publishing to {0:?}: permissions violation")]
    Refused(String),
    #[error("SMTP relay: {message}")]
    Smtp { message: String, permanent: bool },
    /// The SMS gateway refused (4xx: permanent) or failed (5xx, unreachable: retry).
    #[error("SMS gateway: {message}")]
    Gateway { message: String, permanent: bool },
    #[error("nobody answered the NATS request on {0}")]
    NoReply(String),
    /// Keystone refused a token scoped to the `trust+` subscription's trust (revoked,
    /// deleted, expired, its trustor disabled): no later attempt can succeed.
    #[error("the Keystone trust no longer works: {0}")]
    TrustGone(String),
    /// Keystone could not be asked for the trust's token (unreachable, 5xx): retried.
    #[error("cannot obtain a token for the Keystone trust: {0}")]
    IdentityUnavailable(String),
    /// The subscription cannot be delivered as configured (e.g. no SMTP relay, bad header).
    #[error("{0}")]
    Misconfigured(String),
    /// The message itself cannot be delivered as it is (a header value that cannot become an
    /// HTTP or NATS header, an out-of-range `Herald-Not-Before`, a body email cannot carry).
    /// Retrying would fail the same way forever.
    #[error("undeliverable message: {0}")]
    Undeliverable(String),
}

impl DeliveryError {
    /// Permanent failures go straight to the dead letters.
    pub fn is_permanent(&self) -> bool {
        match self {
            // 408 and 429 are "later", other 4xx are "never".
            Self::Status { status, .. } => {
                (400..500).contains(status) && *status != 408 && *status != 429
            }
            Self::Blocked(_)
            | Self::Refused(_)
            | Self::Misconfigured(_)
            | Self::Undeliverable(_)
            | Self::TrustGone(_) => true,
            Self::Smtp { permanent, .. } | Self::Gateway { permanent, .. } => *permanent,
            Self::Timeout(_)
            | Self::Connect(_)
            | Self::NoReply(_)
            | Self::IdentityUnavailable(_) => false,
        }
    }

    /// Refused by Herald's own outbound policy (address guard, delivery permissions) rather
    /// than by the subscriber: the project hears a different story.
    pub fn refused_by_policy(&self) -> bool {
        matches!(self, Self::Blocked(_) | Self::Refused(_))
    }

    /// The user message a dead letter caused by this error (or, for a retryable error,
    /// by running out of retries) tells the project.
    pub fn dead_letter_event(&self) -> &'static str {
        if self.refused_by_policy() {
            catalog::EVENT_DELIVERY_REFUSED_BY_POLICY
        } else if matches!(self, Self::TrustGone(_)) {
            catalog::EVENT_DELIVERY_TRUST_GONE
        } else if self.is_permanent() {
            catalog::EVENT_DELIVERY_REJECTED
        } else {
            catalog::EVENT_DELIVERY_RETRIES_EXHAUSTED
        }
    }

    /// A delay the subscriber asked for (`Retry-After`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_errors_are_permanent_except_408_and_429() {
        let status = |s| DeliveryError::Status {
            status: s,
            retry_after: None,
        };
        assert!(status(400).is_permanent());
        assert!(status(404).is_permanent());
        assert!(!status(408).is_permanent());
        assert!(!status(429).is_permanent());
        assert!(!status(500).is_permanent());
        assert!(!status(503).is_permanent());
        assert!(!DeliveryError::Timeout(Duration::from_secs(1)).is_permanent());
        assert!(DeliveryError::Blocked("10.0.0.1".into()).is_permanent());
        assert!(DeliveryError::Refused("a.b".into()).is_permanent());
        assert!(DeliveryError::Undeliverable("bad id".into()).is_permanent());
    }

    #[test]
    fn a_dead_trust_is_permanent_with_its_own_event_and_keystone_down_is_retried() {
        let gone = DeliveryError::TrustGone("Keystone answered 404".into());
        assert!(gone.is_permanent());
        assert_eq!(gone.dead_letter_event(), "HERALD_SUBSCRIPTION_001_006");
        let down = DeliveryError::IdentityUnavailable("cannot reach Keystone".into());
        assert!(!down.is_permanent());
        assert_eq!(down.dead_letter_event(), "HERALD_SUBSCRIPTION_001_002");
        let rejected = DeliveryError::Status {
            status: 403,
            retry_after: None,
        };
        assert_eq!(rejected.dead_letter_event(), "HERALD_SUBSCRIPTION_001_001");
        assert_eq!(
            DeliveryError::Blocked("10.0.0.1".into()).dead_letter_event(),
            "HERALD_SUBSCRIPTION_001_007"
        );
    }

    #[test]
    fn only_herald_side_refusals_are_policy_refusals() {
        assert!(DeliveryError::Blocked("127.0.0.1".into()).refused_by_policy());
        assert!(DeliveryError::Refused("a.b".into()).refused_by_policy());
        let rejected = DeliveryError::Status {
            status: 403,
            retry_after: None,
        };
        assert!(!rejected.refused_by_policy());
        assert_eq!(
            DeliveryError::Refused("x".into()).to_string(),
            r#"NATS refused publishing to "x": permissions violation"#
        );
    }
}
