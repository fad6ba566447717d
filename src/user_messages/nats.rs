//! The NATS transport of user message creation: [`serve_nats`] answers [`CREATE_SUBJECT`]
//! in the [`QUEUE_GROUP`], so any number of Herald processes share the requests, and
//! replies `{"id"}` or `{"error": {"code", "message"}}`.

use futures::StreamExt;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{invalid, CreateError, CreateUserMessage, UserMessages};
use crate::store::{Store, StoreError};

/// Public contract: NATS request/reply subject that creates a user message.
pub use crate::store::names::USER_MESSAGES_CREATE_SUBJECT as CREATE_SUBJECT;
/// Queue group shared by every Herald process answering [`CREATE_SUBJECT`].
pub const QUEUE_GROUP: &str = "herald";
/// Requests handled at once by one process.
const MAX_IN_FLIGHT: usize = 256;

impl UserMessages {
    /// Handles one NATS request body and returns the reply body.
    pub async fn handle_request(&self, payload: &[u8]) -> serde_json::Value {
        let result = match serde_json::from_slice::<CreateUserMessage>(payload) {
            Ok(req) => self.create(req).await,
            Err(e) => Err(invalid(format!("Malformed request: {e}"))),
        };
        match result {
            Ok(m) => json!({ "id": m.id }),
            Err(e) => {
                let message = match &e {
                    CreateError::Store(StoreError::Unavailable(_)) => {
                        "NATS JetStream is not reachable right now; nothing was stored.".to_owned()
                    }
                    other => other.to_string(),
                };
                json!({ "error": { "code": e.code(), "message": message } })
            }
        }
    }
}

/// Answers [`CREATE_SUBJECT`] in the [`QUEUE_GROUP`] until `shutdown`; requests already
/// received are finished before it returns.
pub async fn serve_nats(service: UserMessages, store: Store, shutdown: CancellationToken) {
    // The responder is a transport: it serves on the store's connection.
    let client = store.client().clone();
    let subscriber = match client
        .queue_subscribe(CREATE_SUBJECT, QUEUE_GROUP.to_owned())
        .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, subject = CREATE_SUBJECT, "cannot subscribe; NATS user message creation is off");
            return;
        }
    };
    tracing::info!(subject = CREATE_SUBJECT, "serving user message creation");
    subscriber
        .take_until(shutdown.cancelled_owned())
        .for_each_concurrent(MAX_IN_FLIGHT, |msg| {
            let (service, client) = (service.clone(), client.clone());
            async move {
                let reply = service.handle_request(&msg.payload).await;
                if let Some(to) = msg.reply {
                    let body = serde_json::to_vec(&reply).expect("JSON serializes");
                    if let Err(e) = client.publish(to, body.into()).await {
                        tracing::warn!(error = %e, "cannot send the create reply");
                    }
                }
            }
        })
        .await;
    let _ = client.flush().await;
    tracing::info!(
        subject = CREATE_SUBJECT,
        "stopped serving user message creation"
    );
}
