//! One delivery: [`deliver_one`], the testable step that delivers a message and acks, NAKs
//! with the retry policy's delay, or dead-letters it (the pull engine, `delivery::pull`,
//! hands it the messages). Nothing sleeps on a retry: JetStream redelivers after the NAK
//! delay.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use bytes::Bytes;
use chrono::Utc;
use reqwest::{header::HeaderValue, Url};
use serde_json::Value;

use super::{
    attempt_log::Entry,
    email::{Email, DEFAULT_SUBJECT},
    message::{attempt_number, header, message_id, not_before, parse_ttl, remaining_delay},
    outcome::{DeliveryError, Outcome},
    payload::{apply_template, notification, signature_headers},
    sms, user_messages,
    webhook::{self, Reply},
    Deps,
};
use crate::{
    domain::{
        filter_policy::{Attributes, FilterPolicy},
        RetryPolicy, Subscriber, TopicName,
    },
    store::{
        attempts::{Attempt, AttemptOutcome},
        dead_letters::DeadLetter,
        messages::{HEADER_NOT_BEFORE, HEADER_TTL},
        subscriptions::Subscription,
    },
};

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
    /// `options.filter_policy`, compiled once.
    pub filter: Option<FilterPolicy>,
    /// Messages still waiting for this subscription (consumer lag), updated on every
    /// delivery; registered on the first one, so an idle subscription costs no series.
    pub lag: std::sync::OnceLock<metrics::Gauge>,
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

    /// The subscription's delivery window: `max`, or 1 when ordered.
    pub(crate) fn in_flight(&self, max: usize) -> usize {
        if self.sub.ordered() {
            1
        } else {
            max
        }
    }
}

/// Settles a message the subscription's filter policy does not match: acked, counted and
/// recorded as a `filtered` attempt.
pub(crate) async fn settle_filtered(deps: &Deps, target: &Target, message: &jetstream::Message) {
    let _ = message.ack().await;
    target.metrics.filtered.increment(1);
    if let Ok(info) = message.info() {
        let (id, _) = message_id(message, &target.stream, info.stream_sequence);
        let attempt = u64::try_from(info.delivered.max(1)).unwrap_or(1);
        let facts = Facts::none(Utc::now());
        record(
            deps,
            target,
            &id,
            attempt,
            AttemptOutcome::Filtered,
            facts,
            None,
            None,
        );
    }
}

/// What an attempt record says about the try itself.
struct Facts {
    started_at: chrono::DateTime<Utc>,
    duration_ms: u64,
    reply: Reply,
}

impl Facts {
    /// Nothing was sent.
    fn none(at: chrono::DateTime<Utc>) -> Self {
        Self {
            started_at: at,
            duration_ms: 0,
            reply: Reply::default(),
        }
    }
}

/// Hands the attempt's record to the attempt log (never waits).
#[allow(clippy::too_many_arguments)]
fn record(
    deps: &Deps,
    target: &Target,
    id: &str,
    attempt: u64,
    outcome: AttemptOutcome,
    facts: Facts,
    error: Option<&DeliveryError>,
    next_attempt_in: Option<Duration>,
) {
    let record = Attempt {
        id: uuid::Uuid::new_v4().to_string(),
        message_id: id.to_owned(),
        subscription_id: target.sub.id.clone(),
        attempt,
        started_at: facts.started_at,
        duration_ms: facts.duration_ms,
        outcome,
        status_code: facts.reply.status,
        response: facts.reply.excerpt,
        error: error.map(ToString::to_string),
        next_attempt_at: next_attempt_in
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .map(|d| Utc::now() + d),
    };
    deps.attempts.record(Entry {
        project: target.sub.project.clone(),
        topic: target.sub.topic.clone(),
        record,
    });
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
    target
        .lag
        .get_or_init(|| {
            metrics::gauge!("herald_subscription_lag_messages",
                "topic" => target.topic.to_string(), "subscription" => target.sub.id.clone())
        })
        .set(info.pending as f64);
    let (id, id_ok) = message_id(message, &target.stream, stream_seq);
    tracing::Span::current().record("message_id", id.as_str());
    if !receives_now(deps, target, now) {
        let _ = message.ack().await;
        let attempt = attempt_number(delivered, published_ms, None);
        let facts = Facts::none(now);
        record(
            deps,
            target,
            &id,
            attempt,
            AttemptOutcome::Skipped,
            facts,
            None,
            None,
        );
        return Outcome::Skipped;
    }
    let ttl = header(message, HEADER_TTL)
        .and_then(parse_ttl)
        .unwrap_or(target.default_ttl);
    let not_before = match not_before(header(message, HEADER_NOT_BEFORE), published_ms) {
        Ok(nb) => nb,
        Err(e) => {
            let attempt = attempt_number(delivered, published_ms, None);
            let facts = Facts::none(now);
            return fail(deps, target, message, &id, attempt, ttl, e, facts).await;
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
        return fail(
            deps,
            target,
            message,
            &id,
            attempt,
            ttl,
            e,
            Facts::none(now),
        )
        .await;
    }
    let payload = notification(
        &message.payload,
        ttl,
        target.topic.as_str(),
        &id,
        attributes,
    );

    let started = std::time::Instant::now();
    let (result, reply) =
        with_progress_acks(deps, message, send(deps, target, &id, payload, attributes)).await;
    let facts = Facts {
        started_at: now,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        reply,
    };
    match result {
        Ok(()) => {
            let _ = message.ack().await;
            let latency = now.timestamp_millis().saturating_sub(published_ms).max(0) as f64 / 1e3;
            target.metrics.latency.record(latency);
            record(
                deps,
                target,
                &id,
                attempt,
                AttemptOutcome::Delivered,
                facts,
                None,
                None,
            );
            Outcome::Delivered
        }
        Err(error) => fail(deps, target, message, &id, attempt, ttl, error, facts).await,
    }
}

/// Whether the subscription takes deliveries now: not expired, not unsubscribed, not
/// awaiting confirmation. A message it does not take is acked undelivered.
fn receives_now(deps: &Deps, target: &Target, now: chrono::DateTime<Utc>) -> bool {
    !(target.sub.is_expired(now)
        || target.sub.unsubscribed
        || target
            .subscriber
            .awaits_confirmation(deps.config.require_confirmation, target.sub.confirmed))
}

/// Runs `send`, telling JetStream we are still working every third of `ack_wait`, so a slow
/// subscriber never gets a concurrent duplicate.
async fn with_progress_acks<F, T>(deps: &Deps, message: &jetstream::Message, send: F) -> T
where
    F: std::future::Future<Output = T>,
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

#[allow(clippy::too_many_arguments)]
async fn fail(
    deps: &Deps,
    target: &Target,
    message: &jetstream::Message,
    id: &str,
    attempt: u64,
    ttl: u64,
    error: DeliveryError,
    facts: Facts,
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
            let outcome = AttemptOutcome::Retry;
            record(
                deps,
                target,
                id,
                attempt,
                outcome,
                facts,
                Some(&error),
                Some(delay),
            );
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
        let outcome = AttemptOutcome::Retry;
        record(
            deps,
            target,
            id,
            attempt,
            outcome,
            facts,
            Some(&error),
            Some(POSTPONE),
        );
        return Outcome::Postponed;
    }
    // Double ack: the message must not come back once it is a dead letter.
    let _ = message.double_ack_with(AckKind::Term).await;
    record(
        deps,
        target,
        id,
        attempt,
        AttemptOutcome::Failed,
        facts,
        Some(&error),
        None,
    );
    let event = error.dead_letter_event();
    tracing::info!(error = %error, attempts = attempt, event, "message dead-lettered");
    let (store, project, sub_id) = (deps.store.clone(), sub.project.to_string(), sub.id.clone());
    tokio::spawn(async move {
        user_messages::notify(&store, &project, event, &sub_id).await;
    });
    Outcome::DeadLettered { attempts: attempt }
}

/// One attempt, by protocol, with what the subscriber answered (webhooks).
async fn send(
    deps: &Deps,
    target: &Target,
    id: &str,
    payload: String,
    attributes: &Attributes,
) -> (Result<(), DeliveryError>, Reply) {
    if let Subscriber::Webhook { url } | Subscriber::Trust { url } = &target.subscriber {
        return send_webhook(deps, target, url, id, payload).await;
    }
    (
        send_other(deps, target, id, payload, attributes).await,
        Reply::default(),
    )
}

/// An email, NATS or SMS attempt.
async fn send_other(
    deps: &Deps,
    target: &Target,
    id: &str,
    payload: String,
    attributes: &Attributes,
) -> Result<(), DeliveryError> {
    let options = &target.sub.options;
    match &target.subscriber {
        Subscriber::Webhook { .. } | Subscriber::Trust { .. } => Err(DeliveryError::Misconfigured(
            "a webhook goes through send_webhook".into(),
        )),
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
            let timeout = deps.config.delivery_timeout();
            transport
                .request(subject, headers, Bytes::from(payload), timeout)
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

/// A webhook or trust-webhook attempt: the `post_data` template, the subscriber's extra
/// headers, the signature when a secret is set, and the delegated token for `trust+` (a
/// Keystone trust's token, see [`send_with_trust`], or the token kept with the
/// subscription).
async fn send_webhook(
    deps: &Deps,
    target: &Target,
    url: &Url,
    id: &str,
    payload: String,
) -> (Result<(), DeliveryError>, Reply) {
    let request = match webhook_request(target, id, payload) {
        Ok(r) => r,
        Err(e) => return (Err(e), Reply::default()),
    };
    let (headers, body) = request;
    let excerpt = deps.attempts.response_bytes();
    if let (Subscriber::Trust { .. }, Some(trust_id)) =
        (&target.subscriber, target.sub.trust_id.as_deref())
    {
        return send_with_trust(deps, trust_id, url, headers, body, excerpt).await;
    }
    deps.outbound
        .webhook
        .post_with_reply(url, headers, body, excerpt)
        .await
}

/// The headers and body of a webhook attempt.
fn webhook_request(
    target: &Target,
    id: &str,
    payload: String,
) -> Result<(reqwest::header::HeaderMap, Bytes), DeliveryError> {
    let options = &target.sub.options;
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
    // A Keystone trust's token is added by `send_with_trust`.
    if matches!(target.subscriber, Subscriber::Trust { .. }) && target.sub.trust_id.is_none() {
        let token = target.sub.delegated_token.as_deref().ok_or_else(|| {
            DeliveryError::Misconfigured("no delegated token for this trust subscription".into())
        })?;
        headers.insert(
            "x-auth-token",
            HeaderValue::from_str(token).map_err(|_| {
                DeliveryError::Misconfigured("the delegated token is not a valid header".into())
            })?,
        );
    }
    Ok((headers, body))
}

/// A `trust+` attempt under a Keystone trust: the trust's (cached) token as
/// `X-Auth-Token`. A subscriber's 401 may mean the cached token was revoked with its
/// trust: Herald asks Keystone again once, which tells a dead trust (permanent) from a
/// token that merely needed renewing.
async fn send_with_trust(
    deps: &Deps,
    trust_id: &str,
    url: &Url,
    mut headers: reqwest::header::HeaderMap,
    body: Bytes,
    excerpt: usize,
) -> (Result<(), DeliveryError>, Reply) {
    let Some(keystone) = deps.outbound.keystone.as_ref() else {
        let e = DeliveryError::Misconfigured(
            "a Keystone trust subscription needs auth_mode = keystone".into(),
        );
        return (Err(e), Reply::default());
    };
    let token = match keystone.trust_token(trust_id).await {
        Ok(t) => t,
        Err(e) => return (Err(trust_error(e)), Reply::default()),
    };
    headers.insert("x-auth-token", token);
    let webhook = &deps.outbound.webhook;
    match webhook
        .post_with_reply(url, headers.clone(), body.clone(), excerpt)
        .await
    {
        (Err(DeliveryError::Status { status: 401, .. }), reply) => {
            keystone.forget_trust_token(trust_id).await;
            let fresh = match keystone.trust_token(trust_id).await {
                Ok(t) => t,
                Err(e) => return (Err(trust_error(e)), reply),
            };
            headers.insert("x-auth-token", fresh);
            webhook.post_with_reply(url, headers, body, excerpt).await
        }
        other => other,
    }
}

fn trust_error(e: std::sync::Arc<crate::auth::TrustTokenError>) -> DeliveryError {
    match &*e {
        crate::auth::TrustTokenError::Gone(_) => DeliveryError::TrustGone(e.to_string()),
        crate::auth::TrustTokenError::Keystone(k) => {
            DeliveryError::IdentityUnavailable(k.to_string())
        }
    }
}

#[cfg(test)]
mod tests;
