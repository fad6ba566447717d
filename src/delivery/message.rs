//! What a worker reads from a JetStream message before it delivers it: the attempt number,
//! the message id, `Herald-Not-Before`, `Herald-TTL` and the message attributes, each
//! checked so that a hostile publisher's headers cannot stall or break delivery.

use std::time::Duration;

use async_nats::jetstream;
use sha2::{Digest as _, Sha256};

use super::outcome::DeliveryError;
use crate::{
    domain::{
        filter_policy::{Attributes, ATTRIBUTE_HEADER_PREFIX},
        topic_metadata::{MAX_MESSAGE_DELAY_SECS, MAX_MESSAGE_TTL_SECS},
    },
    store::{messages::HEADER_ID, subscriptions::derived_id},
};

/// Longest message id passed on (it becomes the `webhook-id` HTTP header and a NATS header).
pub const MAX_MESSAGE_ID_BYTES: usize = 1024;
/// How far after its publication a message's `Herald-Not-Before` may lie: a topic's longest
/// delay plus a minute of clock skew between Herald processes and nats-server.
pub const MAX_NOT_BEFORE_AHEAD_MS: i64 = (MAX_MESSAGE_DELAY_SECS as i64 + 60) * 1000;

/// The delivery attempt this is (1 = first), not counting the delay NAK a delayed message
/// got when it was first pulled before its time.
pub(crate) fn attempt_number(delivered: i64, published_ms: i64, not_before_ms: Option<i64>) -> u64 {
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

pub(crate) fn header<'a>(message: &'a jetstream::Message, name: &str) -> Option<&'a str> {
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
pub(crate) fn attributes_of(message: &jetstream::Message) -> Attributes {
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

/// The message's id — `Herald-Id`, else `Nats-Msg-Id`, else one derived from its
/// stream position — and whether it can be passed on. An id that cannot is recorded in its
/// printable form.
pub(crate) fn message_id(
    message: &jetstream::Message,
    stream: &str,
    stream_seq: u64,
) -> (String, Result<(), DeliveryError>) {
    let raw_id = header(message, HEADER_ID)
        .or_else(|| header(message, async_nats::header::NATS_MESSAGE_ID.as_ref()))
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .unwrap_or_else(|| derived_id(&[stream, &stream_seq.to_string()]));
    match check_message_id(&raw_id) {
        Ok(()) => (raw_id, Ok(())),
        Err(e) => (printable_id(&raw_id), Err(e)),
    }
}
