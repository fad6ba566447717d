//! Tells the project why a subscription lost a message: creates a user message through the
//! NATS request `herald.user_messages.create` (served by the user-messages feature).
//! One small function, so it can later become a direct call.

use std::time::Duration;

use async_nats::Client;
use serde_json::json;

pub const CREATE_SUBJECT: &str = "herald.user_messages.create";
/// Delivery rejected by the subscriber (permanent failure).
pub const EVENT_REJECTED: &str = "HERALD_SUBSCRIPTION_001_001";
/// Delivery retries exhausted.
pub const EVENT_EXHAUSTED: &str = "HERALD_SUBSCRIPTION_001_002";
/// Delivery refused by Herald's own outbound policy (address guard or the delivery
/// connection's NATS permissions), not by the subscriber. (`001_006` is reserved.)
pub const EVENT_REFUSED_BY_POLICY: &str = "HERALD_SUBSCRIPTION_001_007";
/// Subscription expired.
pub const EVENT_EXPIRED: &str = "HERALD_SUBSCRIPTION_002_003";
/// Subscription expired without ever being confirmed.
pub const EVENT_UNCONFIRMED: &str = "HERALD_SUBSCRIPTION_003_004";

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Creates the user message; failures are logged, never fatal to delivery.
pub async fn notify(client: &Client, project: &str, event_id: &str, subscription: &str) {
    let body = json!({
        "project_id": project,
        "event_id": event_id,
        "resource_type": "SUBSCRIPTION",
        "resource_uuid": subscription,
    });
    let request = async_nats::Request::new()
        .payload(body.to_string().into())
        .timeout(Some(REQUEST_TIMEOUT));
    match client.send_request(CREATE_SUBJECT, request).await {
        Ok(reply) => {
            let answer: serde_json::Value =
                serde_json::from_slice(&reply.payload).unwrap_or_default();
            if answer.get("error").is_some() {
                tracing::warn!(%answer, event_id, subscription, "user message refused");
            }
        }
        Err(e) => tracing::warn!(error = %e, event_id, subscription, "user message not created"),
    }
}
