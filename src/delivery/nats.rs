//! `nats:{subject}` delivery: a NATS request; any reply acks it, no reply or no
//! responders is a failed attempt.
//!
//! Deliveries go out on a connection of their own ([`NatsTransport`]), authenticated as the
//! delivery user (`nats_delivery_*`), whose server permissions should allow publishing only
//! where subscribers may be reached: a mistake in subject validation then still cannot
//! write into JetStream, KV buckets or Herald's own subjects. nats-server reports a
//! publish it refuses as an asynchronous `-ERR 'Permissions Violation for Publish to
//! "subj"'` on the connection, not as an error of the publish; the transport records those
//! and turns the request's timeout into a permanent [`DeliveryError::Refused`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::{client::RequestErrorKind, Client, Event, HeaderMap, ServerError};
use bytes::Bytes;

use super::{message::printable_id, outcome::DeliveryError};
use crate::{
    config::Config,
    domain::filter_policy::{Attributes, ATTRIBUTE_HEADER_PREFIX},
    store::messages::HEADER_ID,
};

/// Refused subjects remembered at most (the oldest half is dropped beyond).
const MAX_REMEMBERED_REFUSALS: usize = 4096;

/// Subjects nats-server refused to let this connection publish to, with when it said so.
type Refusals = Arc<Mutex<HashMap<String, Instant>>>;

/// The connection `nats:` deliveries are published on, cheap to clone.
#[derive(Clone)]
pub struct NatsTransport {
    client: Client,
    refused: Refusals,
}

impl NatsTransport {
    /// Opens the delivery connection: the `nats_delivery_*` credentials when any is set,
    /// else the main connection's. Returns at once even when NATS is down (the client keeps
    /// trying, like the store's).
    ///
    /// # Errors
    /// When the credentials file cannot be read.
    pub async fn connect(config: &Config) -> Result<Self, async_nats::ConnectError> {
        let refused: Refusals = Arc::default();
        let seen = refused.clone();
        let mut opts = async_nats::ConnectOptions::new()
            .name("herald-delivery")
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(move |event| {
                let seen = seen.clone();
                async move {
                    match &event {
                        Event::ServerError(ServerError::Other(text)) => {
                            match refused_subject(text) {
                                Some(subject) => {
                                    tracing::warn!(subject, "NATS refused a delivery publish");
                                    remember(&seen, subject);
                                }
                                // E.g. the delivery user may not subscribe to its reply
                                // inbox: every request would time out.
                                None => tracing::warn!(%event, "nats delivery connection error"),
                            }
                        }
                        _ => tracing::info!(%event, "nats delivery connection event"),
                    }
                }
            });
        let own = config.nats_delivery_user.is_some()
            || config.nats_delivery_password.is_some()
            || config.nats_delivery_token.is_some()
            || config.nats_delivery_creds.is_some();
        let (user, password, token, creds) = if own {
            (
                &config.nats_delivery_user,
                &config.nats_delivery_password,
                &config.nats_delivery_token,
                &config.nats_delivery_creds,
            )
        } else {
            (
                &config.nats_user,
                &config.nats_password,
                &config.nats_token,
                &config.nats_creds,
            )
        };
        if let (Some(user), Some(password)) = (user, password) {
            opts = opts.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = token {
            opts = opts.token(token.clone());
        }
        if let Some(creds) = creds {
            opts = opts.credentials_file(creds).await?;
        }
        let urls: Vec<&str> = config.nats_url.split(',').map(str::trim).collect();
        let client = opts.connect(urls).await?;
        Ok(Self { client, refused })
    }

    /// Sends one message as a request and waits for any reply.
    ///
    /// # Errors
    /// [`DeliveryError::Refused`] (permanent) when nats-server refused the publish;
    /// [`DeliveryError::NoReply`] or [`DeliveryError::Timeout`] (retryable) otherwise.
    pub async fn request(
        &self,
        subject: &str,
        headers: HeaderMap,
        body: Bytes,
        timeout: Duration,
    ) -> Result<(), DeliveryError> {
        let started = Instant::now();
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(body)
            .timeout(Some(timeout));
        let error = match self.client.send_request(subject.to_owned(), request).await {
            Ok(_) => return Ok(()),
            Err(e) => e,
        };
        // The server answers a refused publish at once, long before the request times out.
        if self.refused_since(subject, started) {
            return Err(DeliveryError::Refused(subject.to_owned()));
        }
        Err(match error.kind() {
            RequestErrorKind::TimedOut => DeliveryError::Timeout(timeout),
            RequestErrorKind::NoResponders => DeliveryError::NoReply(subject.to_owned()),
            _ => DeliveryError::Connect(error.to_string()),
        })
    }

    /// Whether nats-server refused a publish to `subject` at or after `since`.
    fn refused_since(&self, subject: &str, since: Instant) -> bool {
        self.refused
            .lock()
            .expect("refusals lock")
            .get(subject)
            .is_some_and(|at| *at >= since)
    }
}

fn remember(refused: &Refusals, subject: String) {
    let mut map = refused.lock().expect("refusals lock");
    if map.len() >= MAX_REMEMBERED_REFUSALS && !map.contains_key(&subject) {
        let mut ages: Vec<Instant> = map.values().copied().collect();
        ages.sort();
        let cutoff = ages[ages.len() / 2];
        map.retain(|_, at| *at > cutoff);
    }
    map.insert(subject, Instant::now());
}

/// The subject of nats-server's `Permissions Violation for Publish to "subj"` (Go `%q`
/// quoting), if that is what `text` says.
fn refused_subject(text: &str) -> Option<String> {
    let quoted = text
        .trim()
        .strip_prefix("Permissions Violation for Publish to ")?
        .strip_prefix('"')?
        .strip_suffix('"')?;
    let mut subject = String::with_capacity(quoted.len());
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            subject.push(chars.next()?);
        } else {
            subject.push(c);
        }
    }
    Some(subject)
}

/// The headers a `nats:` delivery carries: the message id and one per message attribute.
///
/// # Errors
/// [`DeliveryError::Undeliverable`] when the id cannot be a NATS header value.
pub fn headers(id: &str, attributes: &Attributes) -> Result<HeaderMap, DeliveryError> {
    let value = id.parse::<async_nats::HeaderValue>().map_err(|_| {
        DeliveryError::Undeliverable(format!(
            "the message id {:?} cannot be a NATS header",
            printable_id(id)
        ))
    })?;
    let mut headers = HeaderMap::new();
    headers.insert(HEADER_ID, value);
    for (name, value) in &attributes.0 {
        headers.insert(
            format!("{ATTRIBUTE_HEADER_PREFIX}{name}").as_str(),
            value.header_value().as_str(),
        );
    }
    Ok(headers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_permission_violations_name_their_subject() {
        assert_eq!(
            refused_subject(r#"Permissions Violation for Publish to "acme.orders""#).as_deref(),
            Some("acme.orders")
        );
        assert_eq!(
            refused_subject(r#"Permissions Violation for Publish to "a\"b\\c""#).as_deref(),
            Some(r#"a"b\c"#)
        );
        assert_eq!(
            refused_subject(r#"Permissions Violation for Subscription to "x""#),
            None
        );
        assert_eq!(refused_subject("Maximum Payload Violation"), None);
    }

    #[test]
    fn remembered_refusals_stay_bounded() {
        let refused: Refusals = Arc::default();
        for i in 0..(MAX_REMEMBERED_REFUSALS + 10) {
            remember(&refused, format!("s.{i}"));
        }
        let map = refused.lock().unwrap();
        assert!(map.len() <= MAX_REMEMBERED_REFUSALS);
        assert!(map.contains_key(&format!("s.{}", MAX_REMEMBERED_REFUSALS + 9)));
    }
}
