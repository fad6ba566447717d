//! Topic messages: `POST /v2/topics/{name}/messages`. Answers 201 only after JetStream acked
//! every message of the batch; the publishes of a batch are pipelined.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::{
    extract::{RawBody, TopicPath, V2Identity},
    AppState,
};
use crate::{
    auth::Identity,
    domain::{
        filter_policy::Attributes,
        topic_metadata::{
            TopicMetadata, MAX_MESSAGE_DELAY_SECS, MAX_MESSAGE_TTL_SECS, MIN_MESSAGE_TTL_SECS,
        },
        TopicName,
    },
    error::ApiError,
    store::{messages::OutgoingMessage, subscriptions::derived_id, topics::Topic},
};

/// The 503 of a batch JetStream did not fully confirm (the fault suite saw such batches
/// delivered).
const PUBLISH_UNCONFIRMED: &str = "NATS JetStream did not confirm every message; some may \
    have been published. Retry with the same Idempotency-Key to publish each message once.";

/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY_LEN: usize = 256;

#[derive(Serialize, ToSchema)]
pub struct MessagesPostOut {
    /// `/v2/topics/{name}/messages/{id}` for each message, in order.
    pub resources: Vec<String>,
}

fn int_field(
    m: &serde_json::Map<String, Value>,
    key: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, ApiError> {
    match m.get(key) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .filter(|n| (min..=max).contains(n))
            .map(Some)
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "The {key} of a message must be an integer between {min} and {max}."
                ))
            }),
    }
}

/// The `messages` list of a publish body: present, a list, not empty.
fn message_list(doc: &Value) -> Result<&Vec<Value>, ApiError> {
    let list = doc
        .as_object()
        .and_then(|o| o.get("messages"))
        .ok_or_else(|| ApiError::BadRequest("Missing parameter messages in body.".into()))?
        .as_array()
        .ok_or_else(|| ApiError::BadRequest("messages must be a list.".into()))?;
    if list.is_empty() {
        return Err(ApiError::BadRequest("No messages to post.".into()));
    }
    Ok(list)
}

/// The `Idempotency-Key` header, if sent: 1 to 256 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    headers
        .get("idempotency-key")
        .map(|v| {
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 256 visible ASCII characters.".into(),
                    )
                })
        })
        .transpose()
}

/// The messages to publish, with the topic's default ttl and delay; `id(i)` names the
/// `i`-th, derived from an `Idempotency-Key` when `idempotent`.
fn outgoing(
    list: &[Value],
    meta: &TopicMetadata,
    now_ms: i64,
    idempotent: bool,
    id: impl Fn(usize) -> String,
) -> Result<Vec<OutgoingMessage>, ApiError> {
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let m = m
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("Each message must be a JSON object.".into()))?;
        let body = m
            .get("body")
            .ok_or_else(|| ApiError::BadRequest("Missing parameter body in a message.".into()))?;
        let ttl = int_field(m, "ttl", MIN_MESSAGE_TTL_SECS, MAX_MESSAGE_TTL_SECS)?
            .unwrap_or_else(|| meta.default_message_ttl());
        let delay = int_field(m, "delay", 0, MAX_MESSAGE_DELAY_SECS)?
            .unwrap_or_else(|| meta.default_message_delay());
        let attributes = m
            .get("attributes")
            .map(Attributes::parse)
            .transpose()?
            .unwrap_or_default();
        out.push(OutgoingMessage {
            id: id(i),
            idempotent,
            body: Bytes::from(body.to_string()),
            ttl_secs: ttl,
            not_before_ms: (delay > 0).then(|| now_ms + delay as i64 * 1000),
            attributes,
        });
    }
    Ok(out)
}

/// Post messages to a topic; every subscription receives each of them.
#[utoipa::path(post, path = "/v2/topics/{name}/messages", tag = "topics",
    params(("name" = String, Path), ("Idempotency-Key" = Option<String>, Header,
        description = "A retried POST with the same key returns the same ids without publishing twice (2-minute window)")),
    request_body(content = Object, description = "{\"messages\": [{\"body\": any, \"ttl\"?: 60..1209600, \"delay\"?: 0..900, \"attributes\"?: {name: string | number | [string | number]} (at most 10)}]}"),
    responses((status = 201, body = MessagesPostOut, headers(("Location" = String))),
        (status = 400, body = super::topics::ErrorOut), (status = 403, body = super::topics::ErrorOut),
        (status = 404, body = super::topics::ErrorOut), (status = 413, body = super::topics::ErrorOut),
        (status = 503, body = super::topics::ErrorOut)))]
async fn post_messages(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let identity = identity.writer()?;
    let topic = sending_topic(&state, &identity, &name).await?;
    let body = body.limit(topic.metadata.max_messages_post_size() as usize)?;
    let doc: Value = body.json()?;
    let list = message_list(&doc)?;
    let key = idempotency_key(&headers)?;
    let ids = publish(&state, &identity, &name, &topic.metadata, list, key).await?;
    let base = format!("/v2/topics/{name}/messages");
    let resources = ids.iter().map(|id| format!("{base}/{id}")).collect();
    let mut res = (StatusCode::CREATED, Json(MessagesPostOut { resources })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{base}?ids={}", ids.join(","))) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

/// The caller's topic `name` when the caller may send to it (404, 403 otherwise).
pub(crate) async fn sending_topic(
    state: &AppState,
    identity: &Identity,
    name: &TopicName,
) -> Result<Arc<Topic>, ApiError> {
    let topic = state
        .store
        .get_topic_cached(&identity.project, name)
        .await?
        .ok_or_else(ApiError::topic_not_found)?;
    if !identity.allowed_by(&topic.metadata, "sending") {
        return Err(ApiError::Forbidden(
            "You are not allowed to send messages to this topic.".into(),
        ));
    }
    Ok(topic)
}

/// Publishes `list` (a publish body's `messages`) to topic `name`, waiting for every
/// JetStream ack; returns the message ids in order. The REST route and the console share it.
pub(crate) async fn publish(
    state: &AppState,
    identity: &Identity,
    name: &TopicName,
    metadata: &TopicMetadata,
    list: &[Value],
    key: Option<&str>,
) -> Result<Vec<String>, ApiError> {
    let out = outgoing(
        list,
        metadata,
        Utc::now().timestamp_millis(),
        key.is_some(),
        |i| match key {
            Some(k) => derived_id(&[identity.project.as_str(), name.as_str(), k, &i.to_string()]),
            None => uuid::Uuid::new_v4().to_string(),
        },
    )?;
    let published = state
        .store
        .publish_messages(&identity.project, name, &out)
        .await;
    if let Err(e) = published {
        // The cached topic may have been deleted by another process in the last second:
        // its stream is gone, so the publish found no responder. Say so instead of 503.
        if let Ok(None) = state.store.get_topic(&identity.project, name).await {
            return Err(ApiError::topic_not_found());
        }
        return Err(match ApiError::from(e) {
            // Publishes that reached JetStream before the connection broke are stored even
            // though their acks never came back: "nothing was changed" would be false here.
            ApiError::Unavailable(_) => ApiError::Unavailable(PUBLISH_UNCONFIRMED.into()),
            other => other,
        });
    }
    metrics::counter!("herald_messages_published_total", "source" => "api")
        .increment(out.len() as u64);
    Ok(out.into_iter().map(|m| m.id).collect())
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v2/topics/{name}/messages", post(post_messages))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(e: ApiError) -> String {
        match e {
            ApiError::BadRequest(m) => m,
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn the_batch_must_be_a_non_empty_messages_list() {
        let cases = [
            (json!([]), "Missing parameter messages in body."),
            (json!({"x": 1}), "Missing parameter messages in body."),
            (json!({"messages": {}}), "messages must be a list."),
            (json!({"messages": []}), "No messages to post."),
        ];
        for (doc, want) in cases {
            assert_eq!(message(message_list(&doc).unwrap_err()), want, "{doc}");
        }
        assert_eq!(message_list(&json!({"messages": [1]})).unwrap().len(), 1);
    }

    #[test]
    fn idempotency_keys_are_1_to_256_characters() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers).unwrap(), None);
        headers.insert("idempotency-key", HeaderValue::from_static("k1"));
        assert_eq!(idempotency_key(&headers).unwrap(), Some("k1"));
        for bad in [String::new(), "k".repeat(257)] {
            headers.insert("idempotency-key", HeaderValue::from_str(&bad).unwrap());
            assert_eq!(
                message(idempotency_key(&headers).unwrap_err()),
                "Idempotency-Key must be 1 to 256 visible ASCII characters."
            );
        }
    }

    #[test]
    fn each_message_is_checked_and_gets_the_topic_defaults() {
        let meta = TopicMetadata::default();
        let bad =
            |m: Value| message(outgoing(&[m], &meta, 0, false, |i| i.to_string()).unwrap_err());
        assert_eq!(bad(json!(1)), "Each message must be a JSON object.");
        assert_eq!(
            bad(json!({"ttl": 60})),
            "Missing parameter body in a message."
        );
        assert_eq!(
            bad(json!({"body": 1, "ttl": 59})),
            format!("The ttl of a message must be an integer between {MIN_MESSAGE_TTL_SECS} and {MAX_MESSAGE_TTL_SECS}.")
        );
        assert_eq!(
            bad(json!({"body": 1, "delay": -1})),
            format!(
                "The delay of a message must be an integer between 0 and {MAX_MESSAGE_DELAY_SECS}."
            )
        );

        let list = [
            json!({"body": {"a": 1}}),
            json!({"body": "x", "ttl": 120, "delay": 2}),
        ];
        let out = outgoing(&list, &meta, 1_000, false, |i| format!("id{i}")).unwrap();
        assert_eq!(out[0].id, "id0");
        assert_eq!(out[0].ttl_secs, meta.default_message_ttl());
        assert_eq!(out[0].not_before_ms, None);
        assert_eq!(&out[0].body[..], br#"{"a":1}"#);
        assert_eq!((out[1].ttl_secs, out[1].not_before_ms), (120, Some(3_000)));
    }
}
