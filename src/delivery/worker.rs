//! One subscription's worker: a pull loop ([`run`]) and one testable step
//! ([`deliver_one`]) that delivers a message and acks, NAKs with the retry policy's delay,
//! or dead-letters it. Workers never sleep on a retry: JetStream redelivers after the NAK
//! delay.

use std::{sync::Arc, time::Duration};

use async_nats::jetstream::{
    self,
    consumer::{pull, pull::MessagesErrorKind, Consumer},
    AckKind,
};
use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    email::{Email, DEFAULT_SUBJECT},
    outcome::{DeliveryError, Outcome},
    sms, user_messages, webhook, Deps,
};
use crate::{
    domain::{
        filter_policy::{Attributes, FilterPolicy, ATTRIBUTE_HEADER_PREFIX},
        topic_metadata::{MAX_MESSAGE_DELAY_SECS, MAX_MESSAGE_TTL_SECS},
        RetryPolicy, Subscriber, TopicName,
    },
    store::{
        dead_letters::DeadLetter,
        messages::{HEADER_ID, HEADER_NOT_BEFORE, HEADER_TTL},
        subscriptions::{derived_id, Subscription},
    },
};

/// Longest wait for a pull before it is renewed.
const PULL_EXPIRES: Duration = Duration::from_secs(30);
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// Retry of Herald's own bookkeeping when NATS is briefly away (not an attempt).
const POSTPONE: Duration = Duration::from_secs(1);
/// Longest message id passed on (it becomes the `webhook-id` HTTP header and a NATS header).
pub const MAX_MESSAGE_ID_BYTES: usize = 1024;
/// How far after its publication a message's `Herald-Not-Before` may lie: a topic's longest
/// delay plus a minute of clock skew between Herald processes and nats-server.
pub const MAX_NOT_BEFORE_AHEAD_MS: i64 = (MAX_MESSAGE_DELAY_SECS as i64 + 60) * 1000;

/// Everything a worker knows about its subscription, fixed for the worker's lifetime
/// (the engine restarts the worker when any of it changes).
#[derive(Debug)]
pub struct Target {
    pub sub: Subscription,
    pub subscriber: Subscriber,
    pub topic: TopicName,
    /// The topic's stream name.
    pub stream: String,
    pub policy: RetryPolicy,
    /// `policy.schedule()`, computed once per worker.
    pub schedule: Vec<Duration>,
    /// Topic's `_default_message_ttl`, for messages published without `Nats-TTL`.
    pub default_ttl: u64,
    /// `options.filter_policy`, compiled once.
    pub filter: Option<FilterPolicy>,
    /// Messages still waiting for this subscription (consumer lag), updated on every pull;
    /// the handle is built once so the hot path does not allocate labels.
    pub lag: metrics::Gauge,
    /// Handles for the common outcome, built once per worker (a labelled `counter!` per
    /// delivery hashes and looks up its key every time).
    pub metrics: DeliveryMetrics,
}

/// The per-delivery metrics of one protocol.
#[derive(Debug, Clone)]
pub struct DeliveryMetrics {
    delivered: metrics::Counter,
    /// Messages a filter policy kept from the subscriber: as common as deliveries.
    filtered: metrics::Counter,
    latency: metrics::Histogram,
}

impl DeliveryMetrics {
    pub fn new(protocol: &'static str) -> Self {
        Self {
            delivered: metrics::counter!("herald_deliveries_total",
                "protocol" => protocol, "outcome" => Outcome::Delivered.label()),
            filtered: metrics::counter!("herald_deliveries_total",
                "protocol" => protocol, "outcome" => Outcome::Filtered.label()),
            latency: metrics::histogram!("herald_delivery_latency_seconds", "protocol" => protocol),
        }
    }
}

impl Target {
    /// The effective retry policy: the subscription's `_retry_policy` overrides the topic's
    /// unless either sets `ignore_subscription_override`.
    pub fn effective_policy(
        topic: RetryPolicy,
        options: &serde_json::Map<String, Value>,
    ) -> RetryPolicy {
        match options.get("_retry_policy").map(RetryPolicy::parse) {
            Some(Ok(own))
                if !topic.ignore_subscription_override && !own.ignore_subscription_override =>
            {
                own
            }
            _ => topic,
        }
    }

    fn in_flight(&self, max: usize) -> usize {
        if self.sub.ordered() {
            1
        } else {
            max
        }
    }
}

/// Pulls from the subscription's consumer until cancelled or the consumer disappears.
pub async fn run(
    deps: Arc<Deps>,
    target: Arc<Target>,
    consumer: Consumer<pull::Config>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let in_flight = target.in_flight(deps.config.delivery_max_in_flight);
    let permits = Arc::new(Semaphore::new(in_flight));
    let mut backoff = Duration::from_millis(100);
    let expiry = (target.sub.expires_at - Utc::now())
        .to_std()
        .unwrap_or_default();
    let expires = tokio::time::sleep(expiry);
    tokio::pin!(expires);
    tracing::debug!(subscription = %target.sub.id, "worker started");
    'outer: loop {
        let stream = consumer
            .stream()
            .max_messages_per_batch(in_flight.min(256))
            .heartbeat(PULL_HEARTBEAT)
            .expires(PULL_EXPIRES)
            .messages()
            .await;
        let mut messages = match stream {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(error = %e, subscription = %target.sub.id, "pull failed");
                if !consumer_exists(&consumer).await {
                    break 'outer;
                }
                tokio::select! {
                    _ = cancel.cancelled() => break 'outer,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        loop {
            let permit = tokio::select! {
                _ = cancel.cancelled() => {
                    nak_buffered(&mut messages).await;
                    break 'outer;
                }
                _ = &mut expires => {
                    deps.expire(&target.sub).await;
                    break 'outer;
                }
                p = permits.clone().acquire_owned() => p.expect("semaphore is never closed"),
            };
            let next = tokio::select! {
                _ = cancel.cancelled() => {
                    nak_buffered(&mut messages).await;
                    break 'outer;
                }
                _ = &mut expires => {
                    deps.expire(&target.sub).await;
                    break 'outer;
                }
                m = messages.next() => m,
            };
            match next {
                Some(Ok(message)) => {
                    backoff = Duration::from_millis(100);
                    // A message the filter policy does not match is settled here: no task,
                    // no permit held, no attempt (with many filtered subscriptions on a
                    // topic almost every message a worker pulls is one of these).
                    let attributes = attributes_of(&message);
                    if target
                        .filter
                        .as_ref()
                        .is_some_and(|f| !f.matches(&attributes, &message.payload))
                    {
                        let _ = message.ack().await;
                        target.metrics.filtered.increment(1);
                        drop(permit);
                        continue;
                    }
                    let (deps, target) = (deps.clone(), target.clone());
                    tracker.spawn(async move {
                        deliver_one(&deps, &target, &message, &attributes).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    drop(permit);
                    let gone = e.kind() == MessagesErrorKind::ConsumerDeleted;
                    tracing::debug!(error = %e, subscription = %target.sub.id, "pull interrupted");
                    if gone || !consumer_exists(&consumer).await {
                        break 'outer;
                    }
                    // The pull stream recovers by itself from a missed heartbeat (a busy
                    // machine, a NATS reconnect). Re-creating it would drop the messages it
                    // already holds, and JetStream would redeliver them only after
                    // `ack_wait`: a 30 s stall for no reason.
                    if e.kind() == MessagesErrorKind::MissingHeartbeat {
                        continue;
                    }
                    nak_buffered(&mut messages).await;
                    tokio::select! {
                        _ = cancel.cancelled() => break 'outer,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue 'outer;
                }
                None => continue 'outer,
            }
        }
    }
    tracing::debug!(subscription = %target.sub.id, "worker stopped");
}

async fn consumer_exists(consumer: &Consumer<pull::Config>) -> bool {
    match consumer.get_info().await {
        Ok(_) => true,
        Err(e) => !crate::store::errors::is_consumer_not_found(&e),
    }
}

/// On shutdown, hands back messages already pulled but not started.
async fn nak_buffered(messages: &mut pull::Stream) {
    while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::ZERO, messages.next()).await {
        let _ = m.ack_with(AckKind::Nak(None)).await;
    }
}

/// The delivery attempt this is (1 = first), not counting the delay NAK a delayed message
/// got when it was first pulled before its time.
fn attempt_number(delivered: i64, published_ms: i64, not_before_ms: Option<i64>) -> u64 {
    let delay_naks = u64::from(not_before_ms.is_some_and(|nb| nb > published_ms));
    u64::try_from(delivered.max(1))
        .unwrap_or(1)
        .saturating_sub(delay_naks)
        .max(1)
}

/// A message id that came in a header (`Herald-Id`, `Nats-Msg-Id`, set by any native
/// publisher) is passed on as the `webhook-id` HTTP header and as a NATS header: control
/// characters (a lone CR would even make async-nats panic) and huge ids cannot be.
pub fn check_message_id(id: &str) -> Result<(), DeliveryError> {
    if id.len() > MAX_MESSAGE_ID_BYTES {
        return Err(DeliveryError::Undeliverable(format!(
            "the message id is {} bytes long (at most {MAX_MESSAGE_ID_BYTES})",
            id.len()
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(DeliveryError::Undeliverable(format!(
            "the message id {:?} contains control characters",
            printable_id(id)
        )));
    }
    Ok(())
}

/// An id that is safe to record and show (dead letters, logs): control characters escaped,
/// at most [`MAX_MESSAGE_ID_BYTES`]. A cut id ends in a digest of the whole one, so two long
/// ids that share a prefix stay apart (dead letters are deduplicated by id).
pub fn printable_id(id: &str) -> String {
    const DIGEST_CHARS: usize = 17;
    let mut escaped = String::with_capacity(id.len());
    for c in id.chars() {
        if c.is_control() {
            escaped.extend(c.escape_default());
        } else {
            escaped.push(c);
        }
    }
    if escaped.len() <= MAX_MESSAGE_ID_BYTES {
        return escaped;
    }
    let mut cut = MAX_MESSAGE_ID_BYTES - DIGEST_CHARS;
    while !escaped.is_char_boundary(cut) {
        cut -= 1;
    }
    let digest = Sha256::digest(id.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}~{hex}", &escaped[..cut])
}

/// `Herald-Not-Before` (Unix milliseconds): `Ok(None)` when absent. Herald writes at most
/// the topic's longest delay after publication; anything unparseable or further ahead (a
/// native publisher's value) cannot be honoured and makes the message undeliverable rather
/// than parking it for centuries or delivering it early.
pub fn not_before(value: Option<&str>, published_ms: i64) -> Result<Option<i64>, DeliveryError> {
    let Some(value) = value else { return Ok(None) };
    let nb = value.trim().parse::<i64>().map_err(|_| {
        DeliveryError::Undeliverable(format!(
            "Herald-Not-Before {:?} is not a Unix time in milliseconds",
            printable_id(value)
        ))
    })?;
    if nb.saturating_sub(published_ms) > MAX_NOT_BEFORE_AHEAD_MS {
        return Err(DeliveryError::Undeliverable(format!(
            "Herald-Not-Before {nb} is more than {} s after publication",
            MAX_NOT_BEFORE_AHEAD_MS / 1000
        )));
    }
    Ok(Some(nb))
}

/// How long a message must still wait (zero when due), bounded by the largest delay.
pub fn remaining_delay(not_before_ms: i64, now_ms: i64) -> Duration {
    let wait = not_before_ms
        .saturating_sub(now_ms)
        .clamp(0, MAX_NOT_BEFORE_AHEAD_MS);
    Duration::from_millis(wait.unsigned_abs())
}

fn header<'a>(message: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

/// `Nats-TTL`: Herald writes `"3600s"`; native publishers may also send plain seconds or
/// `m`/`h` units. Bounded by the largest topic TTL (the value is shown to subscribers and
/// written back as `Nats-TTL` on replay); `never` and anything else fall back to the topic's.
pub fn parse_ttl(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, unit) = match v.char_indices().last() {
        Some((i, 's')) => (&v[..i], 1),
        Some((i, 'm')) => (&v[..i], 60),
        Some((i, 'h')) => (&v[..i], 3600),
        _ => (v, 1),
    };
    let n: u64 = digits.parse().ok()?;
    Some(n.saturating_mul(unit).min(MAX_MESSAGE_TTL_SECS))
}

/// The message's `Herald-Attr-*` headers; nothing is allocated when it has none.
fn attributes_of(message: &jetstream::Message) -> Attributes {
    let Some(headers) = message.headers.as_ref() else {
        return Attributes::default();
    };
    let prefix = ATTRIBUTE_HEADER_PREFIX.as_bytes();
    let has = headers.iter().any(|(k, _)| {
        AsRef::<str>::as_ref(k)
            .as_bytes()
            .get(..prefix.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(prefix))
    });
    if !has {
        return Attributes::default();
    }
    Attributes::from_headers(
        headers
            .iter()
            .filter_map(|(k, v)| v.first().map(|v| (AsRef::<str>::as_ref(k), v.as_str()))),
    )
}

/// The JSON sent to subscribers: Zaqar's shape plus `topic_name`, `message_id` and, when
/// the message has any, `attributes`.
pub fn notification(
    body: &[u8],
    ttl: u64,
    topic: &str,
    id: &str,
    attributes: &Attributes,
) -> String {
    let body_json = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        String::from_utf8_lossy(body).into_owned()
    } else {
        Value::String(String::from_utf8_lossy(body).into_owned()).to_string()
    };
    let topic = Value::String(topic.to_owned()).to_string();
    let id = Value::String(id.to_owned()).to_string();
    let attributes = if attributes.is_empty() {
        String::new()
    } else {
        format!(r#","attributes":{}"#, attributes.to_json())
    };
    format!(
        r#"{{"body":{body_json},"ttl":{ttl},"queue_name":{topic},"Message_Type":"Notification","topic_name":{topic},"message_id":{id}{attributes}}}"#
    )
}

/// Zaqar's `post_data`: the template with the string `"$zaqar_message$"` replaced by the
/// message. Zaqar's own form is a string, in which the literal `"$zaqar_message$"` (quotes
/// included) is replaced and the result sent as it is; Herald also takes a JSON value.
pub fn apply_template(template: &Value, message: &str) -> String {
    const PLACEHOLDER: &str = "\"$zaqar_message$\"";
    match template {
        Value::String(text) => text.replace(PLACEHOLDER, message),
        other => other.to_string().replace(PLACEHOLDER, message),
    }
}

/// Standard Webhooks signature headers. A `whsec_`-prefixed secret is base64; any other
/// secret is used as raw bytes.
///
/// # Errors
/// [`DeliveryError::Undeliverable`] when the message id cannot be an HTTP header value.
pub fn signature_headers(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<HeaderMap, DeliveryError> {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    // HMAC takes keys of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let sig = B64.encode(mac.finalize().into_bytes());
    let webhook_id = HeaderValue::from_str(id).map_err(|_| {
        DeliveryError::Undeliverable(format!(
            "the message id {:?} cannot be a webhook-id header",
            printable_id(id)
        ))
    })?;
    let mut h = HeaderMap::new();
    h.insert("webhook-id", webhook_id);
    // Digits and base64 are always valid header values.
    h.insert("webhook-timestamp", HeaderValue::from(timestamp));
    h.insert(
        "webhook-signature",
        HeaderValue::from_str(&format!("v1,{sig}")).expect("base64 is a valid header value"),
    );
    Ok(h)
}

/// What the message itself must satisfy for this subscriber, checked before any attempt.
fn check_deliverable(target: &Target, body: &[u8]) -> Result<(), DeliveryError> {
    if matches!(target.subscriber, Subscriber::Email { .. }) && std::str::from_utf8(body).is_err() {
        return Err(DeliveryError::Undeliverable(
            "the message body is not UTF-8 text and cannot be sent by email".into(),
        ));
    }
    Ok(())
}

/// Delivers one message the subscription's filter policy matched (the pull loop settles
/// the others) to the target's subscriber and settles it with JetStream. `attributes` are
/// the message's, read once by the pull loop.
#[tracing::instrument(name = "deliver_one", level = "debug", skip_all, fields(subscription = %target.sub.id, message_id))]
pub async fn deliver_one(
    deps: &Deps,
    target: &Target,
    message: &jetstream::Message,
    attributes: &Attributes,
) -> Outcome {
    let outcome = settle(deps, target, message, attributes).await;
    if matches!(outcome, Outcome::Delivered) {
        target.metrics.delivered.increment(1);
        return outcome;
    }
    let protocol = target.subscriber.protocol().as_str();
    metrics::counter!("herald_deliveries_total", "protocol" => protocol, "outcome" => outcome.label())
        .increment(1);
    match &outcome {
        Outcome::Retry { .. } => {
            metrics::counter!("herald_delivery_retries_total", "protocol" => protocol).increment(1)
        }
        Outcome::DeadLettered { .. } => {
            metrics::counter!("herald_dead_letters_total", "protocol" => protocol).increment(1)
        }
        _ => {}
    }
    outcome
}

async fn settle(
    deps: &Deps,
    target: &Target,
    message: &jetstream::Message,
    attributes: &Attributes,
) -> Outcome {
    let now = Utc::now();
    let Ok(info) = message.info() else {
        let _ = message.ack_with(AckKind::Term).await;
        return Outcome::Skipped;
    };
    let published_ms =
        i64::try_from(info.published.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let (stream_seq, delivered) = (info.stream_sequence, info.delivered);
    target.lag.set(info.pending as f64);
    let raw_id = header(message, HEADER_ID)
        .or_else(|| header(message, async_nats::header::NATS_MESSAGE_ID.as_ref()))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| derived_id(&[&target.stream, &stream_seq.to_string()]));
    // An id that cannot be passed on is recorded in its printable form.
    let (id, id_ok) = match check_message_id(&raw_id) {
        Ok(()) => (raw_id, Ok(())),
        Err(e) => (printable_id(&raw_id), Err(e)),
    };
    tracing::Span::current().record("message_id", id.as_str());

    if target.sub.is_expired(now)
        || target.sub.unsubscribed
        || crate::subscriptions::awaiting_confirmation(
            deps.config.require_confirmation,
            &target.subscriber,
            &target.sub,
        )
    {
        let _ = message.ack().await;
        return Outcome::Skipped;
    }
    let ttl = header(message, HEADER_TTL)
        .and_then(parse_ttl)
        .unwrap_or(target.default_ttl);
    let not_before = match not_before(header(message, HEADER_NOT_BEFORE), published_ms) {
        Ok(nb) => nb,
        Err(e) => {
            let attempt = attempt_number(delivered, published_ms, None);
            return fail(deps, target, message, &id, attempt, ttl, e).await;
        }
    };
    if let Some(nb) = not_before {
        let wait = remaining_delay(nb, now.timestamp_millis());
        if !wait.is_zero() {
            let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
            return Outcome::Deferred(wait);
        }
    }
    let attempt = attempt_number(delivered, published_ms, not_before);
    if let Err(e) = id_ok.and_then(|()| check_deliverable(target, &message.payload)) {
        return fail(deps, target, message, &id, attempt, ttl, e).await;
    }
    let payload = notification(
        &message.payload,
        ttl,
        target.topic.as_str(),
        &id,
        attributes,
    );

    let result =
        with_progress_acks(deps, message, send(deps, target, &id, payload, attributes)).await;
    match result {
        Ok(()) => {
            let _ = message.ack().await;
            let latency = now.timestamp_millis().saturating_sub(published_ms).max(0) as f64 / 1e3;
            target.metrics.latency.record(latency);
            Outcome::Delivered
        }
        Err(error) => fail(deps, target, message, &id, attempt, ttl, error).await,
    }
}

/// Runs `send`, telling JetStream we are still working every third of `ack_wait`, so a slow
/// subscriber never gets a concurrent duplicate.
async fn with_progress_acks<F>(
    deps: &Deps,
    message: &jetstream::Message,
    send: F,
) -> Result<(), DeliveryError>
where
    F: std::future::Future<Output = Result<(), DeliveryError>>,
{
    tokio::pin!(send);
    let period = deps.limits.ack_wait / 3;
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    loop {
        tokio::select! {
            r = &mut send => return r,
            _ = tick.tick() => { let _ = message.ack_with(AckKind::Progress).await; }
        }
    }
}

async fn fail(
    deps: &Deps,
    target: &Target,
    message: &jetstream::Message,
    id: &str,
    attempt: u64,
    ttl: u64,
    error: DeliveryError,
) -> Outcome {
    tracing::debug!(error = %error, attempt, "delivery attempt failed");
    if !error.is_permanent() {
        let delay = target.policy.delay_in(
            &target.schedule,
            attempt,
            deps.config.retry_delay_unit(),
            rand::random::<f64>(),
        );
        if let Some(delay) = delay {
            let delay = error.retry_after().map_or(delay, |ra| ra.max(delay));
            let nak = if delay.is_zero() { None } else { Some(delay) };
            let _ = message.ack_with(AckKind::Nak(nak)).await;
            return Outcome::Retry {
                attempt,
                after: delay,
            };
        }
    }
    let source_seq = message.info().map_or(0, |i| i.stream_sequence);
    let letter = DeadLetter {
        message_id: id.to_owned(),
        body: serde_json::from_slice(&message.payload).unwrap_or_else(|_| {
            Value::String(String::from_utf8_lossy(&message.payload).into_owned())
        }),
        attempts: attempt,
        last_error: error.to_string(),
        failed_at: Utc::now(),
        ttl: Some(ttl),
    };
    let sub = &target.sub;
    if let Err(e) = deps
        .store
        .add_dead_letter(&sub.project, &sub.topic, &sub.id, source_seq, &letter)
        .await
    {
        tracing::warn!(error = %e, "dead letter not recorded yet; message kept");
        let _ = message.ack_with(AckKind::Nak(Some(POSTPONE))).await;
        return Outcome::Postponed;
    }
    // Double ack: the message must not come back once it is a dead letter.
    let _ = message.double_ack_with(AckKind::Term).await;
    let event = if error.refused_by_policy() {
        user_messages::EVENT_REFUSED_BY_POLICY
    } else if error.is_permanent() {
        user_messages::EVENT_REJECTED
    } else {
        user_messages::EVENT_EXHAUSTED
    };
    tracing::info!(error = %error, attempts = attempt, event, "message dead-lettered");
    let (store, project, sub_id) = (deps.store.clone(), sub.project.to_string(), sub.id.clone());
    tokio::spawn(async move {
        user_messages::notify(&store, &project, event, &sub_id).await;
    });
    Outcome::DeadLettered { attempts: attempt }
}

/// One attempt, by protocol.
async fn send(
    deps: &Deps,
    target: &Target,
    id: &str,
    payload: String,
    attributes: &Attributes,
) -> Result<(), DeliveryError> {
    let options = &target.sub.options;
    match &target.subscriber {
        Subscriber::Webhook { url } | Subscriber::Trust { url } => {
            let body = match options.get("post_data") {
                Some(template) => apply_template(template, &payload),
                None => payload,
            };
            let body = Bytes::from(body);
            let mut headers = webhook::extra_headers(options.get("post_headers"))?;
            if let Some(secret) = options.secret.as_deref() {
                headers.extend(signature_headers(
                    secret,
                    id,
                    Utc::now().timestamp(),
                    &body,
                )?);
            }
            if matches!(target.subscriber, Subscriber::Trust { .. }) {
                let token = target.sub.delegated_token.as_deref().ok_or_else(|| {
                    DeliveryError::Misconfigured(
                        "no delegated token for this trust subscription".into(),
                    )
                })?;
                headers.insert(
                    "x-auth-token",
                    HeaderValue::from_str(token).map_err(|_| {
                        DeliveryError::Misconfigured(
                            "the delegated token is not a valid header".into(),
                        )
                    })?,
                );
            }
            deps.outbound.webhook.post(url, headers, body).await
        }
        Subscriber::Email { address, subject } => {
            let mailer = deps.outbound.mailer.as_ref().ok_or_else(|| {
                DeliveryError::Misconfigured("no SMTP relay configured (HERALD_SMTP_URL)".into())
            })?;
            let subject = subject
                .as_deref()
                .or(options.subject.as_deref())
                .unwrap_or(DEFAULT_SUBJECT);
            let pretty = serde_json::from_str::<Value>(&payload)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(payload);
            mailer
                .send(Email {
                    to: address,
                    from: options.from.as_deref(),
                    subject,
                    body: pretty,
                })
                .await
        }
        Subscriber::Nats { subject } => {
            let headers = super::nats::headers(id, attributes)?;
            let transport = deps.outbound.nats.as_ref().ok_or_else(|| {
                DeliveryError::Misconfigured("no NATS delivery connection in this process".into())
            })?;
            transport
                .request(
                    subject,
                    headers,
                    Bytes::from(payload),
                    deps.config.delivery_timeout(),
                )
                .await
        }
        Subscriber::Sms { number } => {
            let gateway = deps.outbound.sms.as_ref().ok_or_else(|| {
                DeliveryError::Misconfigured(
                    "no SMS gateway configured (HERALD_SMS_GATEWAY_URL)".into(),
                )
            })?;
            let text = sms::text(options.get("sms_template"), &payload)?;
            gateway.send(number, &text).await
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_notification_has_zaqars_shape_plus_topic_name_and_message_id() {
        let n: Value = serde_json::from_str(&notification(
            br#"{"a":1}"#,
            60,
            "t.x",
            "id1",
            &Attributes::default(),
        ))
        .unwrap();
        assert_eq!(
            n,
            json!({"body": {"a": 1}, "ttl": 60, "queue_name": "t.x", "Message_Type": "Notification",
                   "topic_name": "t.x", "message_id": "id1"})
        );
        let raw: Value = serde_json::from_str(&notification(
            b"not json",
            60,
            "t",
            "i",
            &Attributes::default(),
        ))
        .unwrap();
        assert_eq!(raw["body"], "not json");
    }

    #[test]
    fn post_data_templates_embed_the_message() {
        let t = json!({"wrapped": "$zaqar_message$", "k": "v"});
        let out: Value = serde_json::from_str(&apply_template(&t, r#"{"body":1}"#)).unwrap();
        assert_eq!(out, json!({"wrapped": {"body": 1}, "k": "v"}));
    }

    #[test]
    fn delay_naks_are_not_counted_as_attempts() {
        assert_eq!(attempt_number(1, 1000, None), 1);
        assert_eq!(attempt_number(3, 1000, None), 3);
        assert_eq!(attempt_number(1, 1000, Some(5000)), 1);
        assert_eq!(attempt_number(2, 1000, Some(5000)), 1);
        assert_eq!(attempt_number(4, 1000, Some(5000)), 3);
    }

    #[test]
    fn subscription_policies_override_unless_ignored() {
        let own = json!({"_retry_policy": {"retries_with_no_delay": 1}});
        let own = own.as_object().unwrap();
        let topic = RetryPolicy::default();
        assert_eq!(
            Target::effective_policy(topic.clone(), own).retries_with_no_delay,
            1
        );
        let strict = RetryPolicy {
            ignore_subscription_override: true,
            ..RetryPolicy::default()
        };
        assert_eq!(
            Target::effective_policy(strict, own).retries_with_no_delay,
            3
        );
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // Vector from the Standard Webhooks reference implementation.
        let h = signature_headers(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "msg_p5jXN8AQM9LWM0D4loKWxJek",
            1614265330,
            br#"{"test": 2432232314}"#,
        )
        .unwrap();
        assert_eq!(
            h["webhook-signature"],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }

    #[test]
    fn a_string_post_data_is_zaqars_form_and_is_sent_as_it_is() {
        let t = json!(r#"{"event": "$zaqar_message$", "note": "raw"}"#);
        let out: Value = serde_json::from_str(&apply_template(&t, r#"{"body":1}"#)).unwrap();
        assert_eq!(out, json!({"event": {"body": 1}, "note": "raw"}));
        assert_eq!(
            apply_template(&json!("no placeholder"), "{}"),
            "no placeholder"
        );
    }

    #[test]
    fn message_ids_with_control_characters_are_undeliverable_not_a_panic() {
        for bad in ["a\u{1}b", "tab\there", "lone\rcr", "nl\nx", "del\u{7f}"] {
            let err = check_message_id(bad).unwrap_err();
            assert!(err.is_permanent(), "{bad:?}");
            assert!(err.to_string().contains("control characters"), "{err}");
            assert!(!printable_id(bad).chars().any(char::is_control));
        }
        check_message_id("order-42").unwrap();
        check_message_id("заказ-42").unwrap();
        assert!(check_message_id(&"x".repeat(MAX_MESSAGE_ID_BYTES + 1)).is_err());
        let (long_a, long_b) = ("x".repeat(2000) + "a", "x".repeat(2000) + "b");
        assert_ne!(printable_id(&long_a), printable_id(&long_b));
        assert!(printable_id(&long_a).len() <= MAX_MESSAGE_ID_BYTES);
        assert_eq!(printable_id("a\u{1}b"), "a\\u{1}b");
        assert!(signature_headers("s", "a\u{1}b", 1, b"{}").is_err());
    }

    #[test]
    fn not_before_beyond_the_longest_delay_or_unparseable_is_undeliverable() {
        let published = 1_700_000_000_000;
        assert_eq!(not_before(None, published).unwrap(), None);
        assert_eq!(
            not_before(Some("1700000005000"), published).unwrap(),
            Some(1_700_000_005_000)
        );
        for bad in [
            "9223372036854775807",
            "abc",
            "",
            "1e9",
            "99999999999999999999",
        ] {
            let err = not_before(Some(bad), published).unwrap_err();
            assert!(err.is_permanent(), "{bad:?}");
        }
        // Far in the past is simply due.
        let past = not_before(Some("-9223372036854775808"), published).unwrap();
        assert_eq!(remaining_delay(past.unwrap(), published), Duration::ZERO);
        assert_eq!(
            remaining_delay(i64::MAX, i64::MIN),
            Duration::from_millis(960_000)
        );
    }

    #[test]
    fn nats_ttl_values_are_parsed_and_bounded() {
        assert_eq!(parse_ttl("3600s"), Some(3600));
        assert_eq!(parse_ttl("120"), Some(120));
        assert_eq!(parse_ttl("2h"), Some(7200));
        assert_eq!(parse_ttl("never"), None);
        assert_eq!(
            parse_ttl("18446744073709551615h"),
            Some(MAX_MESSAGE_TTL_SECS)
        );
        assert_eq!(parse_ttl(""), None);
    }

    mod props {
        use proptest::prelude::*;

        use super::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]

            #[test]
            fn signature_headers_never_panic_and_sign_every_acceptable_id(
                secret in ".*", id in ".*", ts in any::<i64>(), body in proptest::collection::vec(any::<u8>(), 0..256)
            ) {
                match signature_headers(&secret, &id, ts, &body) {
                    Ok(h) => {
                        prop_assert_eq!(h["webhook-id"].as_bytes(), id.as_bytes());
                        prop_assert!(h["webhook-signature"].to_str().unwrap().starts_with("v1,"));
                    }
                    Err(e) => prop_assert!(e.is_permanent()),
                }
                if check_message_id(&id).is_ok() {
                    prop_assert!(signature_headers(&secret, &id, ts, &body).is_ok());
                    prop_assert!(id.parse::<async_nats::HeaderValue>().is_ok());
                }
                prop_assert!(check_message_id(&printable_id(&id)).is_ok());
            }

            #[test]
            fn notifications_are_always_json_with_the_given_fields(
                body in proptest::collection::vec(any::<u8>(), 0..256), ttl in any::<u64>(), topic in ".*", id in ".*"
            ) {
                let n: Value = serde_json::from_str(&notification(&body, ttl, &topic, &id, &Attributes::default())).unwrap();
                prop_assert_eq!(n["ttl"].as_u64(), Some(ttl));
                prop_assert_eq!(n["topic_name"].as_str(), Some(topic.as_str()));
                prop_assert_eq!(n["message_id"].as_str(), Some(id.as_str()));
                let templated = apply_template(&json!({"m": "$zaqar_message$"}), &n.to_string());
                prop_assert!(serde_json::from_str::<Value>(&templated).is_ok());
            }

            #[test]
            fn not_before_never_overflows_and_never_parks_beyond_the_longest_delay(
                value in prop_oneof![any::<i64>().prop_map(|v| v.to_string()), ".*"],
                published in any::<i64>(), now in any::<i64>()
            ) {
                match not_before(Some(&value), published) {
                    Ok(Some(nb)) => {
                        prop_assert!(nb.saturating_sub(published) <= MAX_NOT_BEFORE_AHEAD_MS);
                        prop_assert!(remaining_delay(nb, now) <= Duration::from_millis(MAX_NOT_BEFORE_AHEAD_MS as u64));
                        let _ = attempt_number(now, published, Some(nb));
                    }
                    Ok(None) => prop_assert!(false, "a present header is never absent"),
                    Err(e) => prop_assert!(e.is_permanent()),
                }
            }

            #[test]
            fn ttl_and_attempt_arithmetic_never_panic(value in ".*", delivered in any::<i64>(), published in any::<i64>()) {
                if let Some(ttl) = parse_ttl(&value) {
                    prop_assert!(ttl <= MAX_MESSAGE_TTL_SECS);
                }
                prop_assert!(attempt_number(delivered, published, None) >= 1);
            }
        }
    }
}
