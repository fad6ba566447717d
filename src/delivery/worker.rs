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
use sha2::Sha256;
use tokio::sync::Semaphore;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    email::{Email, DEFAULT_SUBJECT},
    nats,
    outcome::{DeliveryError, Outcome},
    sms, user_messages, webhook, Deps,
};
use crate::{
    domain::{RetryPolicy, Subscriber, TopicName},
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
    latency: metrics::Histogram,
}

impl DeliveryMetrics {
    pub fn new(protocol: &'static str) -> Self {
        Self {
            delivered: metrics::counter!("herald_deliveries_total",
                "protocol" => protocol, "outcome" => Outcome::Delivered.label()),
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
                    let (deps, target) = (deps.clone(), target.clone());
                    tracker.spawn(async move {
                        deliver_one(&deps, &target, &message).await;
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
        Err(e) => !e.to_string().contains("consumer not found"),
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
    (delivered.max(1) as u64).saturating_sub(delay_naks).max(1)
}

fn header<'a>(message: &'a jetstream::Message, name: &str) -> Option<&'a str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str())
}

/// `"3600s"`, `"1h"`-less: Herald writes seconds; integers are seconds too.
fn parse_ttl(v: &str) -> Option<u64> {
    v.trim().trim_end_matches('s').parse().ok()
}

/// The JSON sent to subscribers: Zaqar's shape plus `topic_name` and `message_id`.
pub fn notification(body: &[u8], ttl: u64, topic: &str, id: &str) -> String {
    let body_json = if serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok() {
        String::from_utf8_lossy(body).into_owned()
    } else {
        Value::String(String::from_utf8_lossy(body).into_owned()).to_string()
    };
    let topic = Value::String(topic.to_owned()).to_string();
    let id = Value::String(id.to_owned()).to_string();
    format!(
        r#"{{"body":{body_json},"ttl":{ttl},"queue_name":{topic},"Message_Type":"Notification","topic_name":{topic},"message_id":{id}}}"#
    )
}

/// Zaqar's `post_data`: the template with the string `"$zaqar_message$"` replaced by the
/// message.
pub fn apply_template(template: &Value, message: &str) -> String {
    template.to_string().replace("\"$zaqar_message$\"", message)
}

/// Standard Webhooks signature headers. A `whsec_`-prefixed secret is base64; any other
/// secret is used as raw bytes.
pub fn signature_headers(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> HeaderMap {
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|b| B64.decode(b).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("any key length");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    let sig = B64.encode(mac.finalize().into_bytes());
    let mut h = HeaderMap::new();
    let value = |s: String| HeaderValue::from_str(&s).expect("ASCII header value");
    h.insert("webhook-id", value(id.to_owned()));
    h.insert("webhook-timestamp", value(timestamp.to_string()));
    h.insert("webhook-signature", value(format!("v1,{sig}")));
    h
}

/// Delivers one message to the target's subscriber and settles it with JetStream.
#[tracing::instrument(name = "deliver_one", level = "debug", skip_all, fields(subscription = %target.sub.id, message_id))]
pub async fn deliver_one(deps: &Deps, target: &Target, message: &jetstream::Message) -> Outcome {
    let outcome = settle(deps, target, message).await;
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

async fn settle(deps: &Deps, target: &Target, message: &jetstream::Message) -> Outcome {
    let now = Utc::now();
    let Ok(info) = message.info() else {
        let _ = message.ack_with(AckKind::Term).await;
        return Outcome::Skipped;
    };
    let published_ms = (info.published.unix_timestamp_nanos() / 1_000_000) as i64;
    let (stream_seq, delivered) = (info.stream_sequence, info.delivered);
    target.lag.set(info.pending as f64);
    let id = header(message, HEADER_ID)
        .or_else(|| header(message, async_nats::header::NATS_MESSAGE_ID.as_ref()))
        .map(str::to_owned)
        .unwrap_or_else(|| derived_id(&[&target.stream, &stream_seq.to_string()]));
    tracing::Span::current().record("message_id", id.as_str());

    if target.sub.is_expired(now)
        || target.sub.unsubscribed
        || (deps.config.require_confirmation
            && target.subscriber.needs_confirmation()
            && !target.sub.confirmed)
    {
        let _ = message.ack().await;
        return Outcome::Skipped;
    }
    let not_before = header(message, HEADER_NOT_BEFORE).and_then(|v| v.parse::<i64>().ok());
    if let Some(nb) = not_before {
        let wait = nb - now.timestamp_millis();
        if wait > 0 {
            let wait = Duration::from_millis(wait as u64);
            let _ = message.ack_with(AckKind::Nak(Some(wait))).await;
            return Outcome::Deferred(wait);
        }
    }
    let attempt = attempt_number(delivered, published_ms, not_before);
    let ttl = header(message, HEADER_TTL)
        .and_then(parse_ttl)
        .unwrap_or(target.default_ttl);
    let payload = notification(&message.payload, ttl, target.topic.as_str(), &id);

    let result = with_progress_acks(deps, message, send(deps, target, &id, payload)).await;
    match result {
        Ok(()) => {
            let _ = message.ack().await;
            let latency = (now.timestamp_millis() - published_ms).max(0) as f64 / 1e3;
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
        .add_dead_letter(&sub.project, &sub.topic, &sub.id, &letter)
        .await
    {
        tracing::warn!(error = %e, "dead letter not recorded yet; message kept");
        let _ = message.ack_with(AckKind::Nak(Some(POSTPONE))).await;
        return Outcome::Postponed;
    }
    // Double ack: the message must not come back once it is a dead letter.
    let _ = message.double_ack_with(AckKind::Term).await;
    let event = if error.is_permanent() {
        user_messages::EVENT_REJECTED
    } else {
        user_messages::EVENT_EXHAUSTED
    };
    tracing::info!(error = %error, attempts = attempt, event, "message dead-lettered");
    let (client, project, sub_id) = (
        deps.store.client().clone(),
        sub.project.to_string(),
        sub.id.clone(),
    );
    tokio::spawn(async move {
        user_messages::notify(&client, &project, event, &sub_id).await;
    });
    Outcome::DeadLettered { attempts: attempt }
}

/// One attempt, by protocol.
async fn send(
    deps: &Deps,
    target: &Target,
    id: &str,
    payload: String,
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
            if let Some(secret) = options.get("secret").and_then(Value::as_str) {
                headers.extend(signature_headers(secret, id, Utc::now().timestamp(), &body));
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
                .or_else(|| options.get("subject").and_then(Value::as_str))
                .unwrap_or(DEFAULT_SUBJECT);
            let pretty = serde_json::from_str::<Value>(&payload)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or(payload);
            mailer
                .send(Email {
                    to: address,
                    from: options.get("from").and_then(Value::as_str),
                    subject,
                    body: pretty,
                })
                .await
        }
        Subscriber::Nats { subject } => {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(HEADER_ID, id);
            nats::request(
                deps.store.client(),
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
        let n: Value =
            serde_json::from_str(&notification(br#"{"a":1}"#, 60, "t.x", "id1")).unwrap();
        assert_eq!(
            n,
            json!({"body": {"a": 1}, "ttl": 60, "queue_name": "t.x", "Message_Type": "Notification",
                   "topic_name": "t.x", "message_id": "id1"})
        );
        let raw: Value = serde_json::from_str(&notification(b"not json", 60, "t", "i")).unwrap();
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
        );
        assert_eq!(
            h["webhook-signature"],
            "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
        );
    }
}
