//! What a delivery sends: the Zaqar-shaped notification, `post_data` templates and the
//! Standard Webhooks signature headers.

use base64::{engine::general_purpose::STANDARD as B64, Engine as _};
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;
use sha2::Sha256;

use super::{message::printable_id, outcome::DeliveryError};
use crate::domain::filter_policy::Attributes;

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
