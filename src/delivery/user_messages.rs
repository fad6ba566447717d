//! Tells the project why a subscription lost a message: creates a user message through the
//! NATS request `herald.user_messages.create` (served by the user-messages feature), so
//! any Herald process creates it.

use std::time::Duration;

use serde_json::json;

use crate::store::Store;

/// The built-in event ids delivery reports, defined once with their catalog entries.
pub use crate::catalog::{
    EVENT_CONFIRMATION_NEVER_COMPLETED as EVENT_UNCONFIRMED,
    EVENT_DELIVERY_REFUSED_BY_POLICY as EVENT_REFUSED_BY_POLICY,
    EVENT_DELIVERY_REJECTED as EVENT_REJECTED, EVENT_DELIVERY_RETRIES_EXHAUSTED as EVENT_EXHAUSTED,
    EVENT_SUBSCRIPTION_DISABLED as EVENT_DISABLED, EVENT_SUBSCRIPTION_EXPIRED as EVENT_EXPIRED,
};
pub use crate::store::names::USER_MESSAGES_CREATE_SUBJECT as CREATE_SUBJECT;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// Creates the user message; failures are logged, never fatal to delivery.
pub async fn notify(store: &Store, project: &str, event_id: &str, subscription: &str) {
    let body = json!({
        "project_id": project,
        "event_id": event_id,
        "resource_type": "SUBSCRIPTION",
        "resource_uuid": subscription,
    });
    match store
        .request_user_message(body.to_string().into(), REQUEST_TIMEOUT)
        .await
    {
        Ok(reply) => {
            let answer: serde_json::Value = serde_json::from_slice(&reply).unwrap_or_default();
            if answer.get("error").is_some() {
                tracing::warn!(%answer, event_id, subscription, "user message refused");
            }
        }
        Err(e) => tracing::warn!(error = %e, event_id, subscription, "user message not created"),
    }
}
