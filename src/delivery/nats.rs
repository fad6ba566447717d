//! `nats:{subject}` delivery: a NATS request; any reply acks it, no reply or no
//! responders is a failed attempt.

use std::time::Duration;

use async_nats::{client::RequestErrorKind, Client, HeaderMap};
use bytes::Bytes;

use super::outcome::DeliveryError;

/// Sends one message as a request and waits for any reply.
///
/// # Errors
/// [`DeliveryError::NoReply`] on no responders or timeout (retryable).
pub async fn request(
    client: &Client,
    subject: &str,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let request = async_nats::Request::new()
        .headers(headers)
        .payload(body)
        .timeout(Some(timeout));
    match client.send_request(subject.to_owned(), request).await {
        Ok(_) => Ok(()),
        Err(e) => match e.kind() {
            RequestErrorKind::TimedOut => Err(DeliveryError::Timeout(timeout)),
            RequestErrorKind::NoResponders => Err(DeliveryError::NoReply(subject.to_owned())),
            _ => Err(DeliveryError::Connect(e.to_string())),
        },
    }
}
