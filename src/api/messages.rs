//! Topic messages: `POST /v2/topics/{name}/messages`. Answers 201 only after JetStream acked
//! every message of the batch; the publishes of a batch are pipelined.

use axum::{
    extract::State,
    http::{header, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
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
    domain::{
        filter_policy::Attributes,
        topic_metadata::{
            acl_allows, MAX_MESSAGE_DELAY_SECS, MAX_MESSAGE_TTL_SECS, MIN_MESSAGE_TTL_SECS,
        },
    },
    error::ApiError,
    store::{messages::OutgoingMessage, subscriptions::derived_id},
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
    let topic = state
        .store
        .get_topic_cached(&identity.project, &name)
        .await?
        .ok_or_else(ApiError::topic_not_found)?;
    if !acl_allows(&topic.metadata, "sending", &identity) {
        return Err(ApiError::Forbidden(
            "You are not allowed to send messages to this topic.".into(),
        ));
    }
    let body = body.limit(topic.metadata.max_messages_post_size() as usize)?;
    let doc: Value = body.json()?;
    let list = doc
        .as_object()
        .and_then(|o| o.get("messages"))
        .ok_or_else(|| ApiError::BadRequest("Missing parameter messages in body.".into()))?
        .as_array()
        .ok_or_else(|| ApiError::BadRequest("messages must be a list.".into()))?;
    if list.is_empty() {
        return Err(ApiError::BadRequest("No messages to post.".into()));
    }
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY_LEN)
                .ok_or_else(|| {
                    ApiError::BadRequest(
                        "Idempotency-Key must be 1 to 256 visible ASCII characters.".into(),
                    )
                })?,
        ),
    };
    let now_ms = Utc::now().timestamp_millis();
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let m = m
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("Each message must be a JSON object.".into()))?;
        let body = m
            .get("body")
            .ok_or_else(|| ApiError::BadRequest("Missing parameter body in a message.".into()))?;
        let ttl = int_field(m, "ttl", MIN_MESSAGE_TTL_SECS, MAX_MESSAGE_TTL_SECS)?
            .unwrap_or_else(|| topic.metadata.default_message_ttl());
        let delay = int_field(m, "delay", 0, MAX_MESSAGE_DELAY_SECS)?
            .unwrap_or_else(|| topic.metadata.default_message_delay());
        let attributes = m
            .get("attributes")
            .map(Attributes::parse)
            .transpose()?
            .unwrap_or_default();
        let id = match key {
            Some(k) => derived_id(&[identity.project.as_str(), name.as_str(), k, &i.to_string()]),
            None => uuid::Uuid::new_v4().to_string(),
        };
        out.push(OutgoingMessage {
            id,
            body: Bytes::from(body.to_string()),
            ttl_secs: ttl,
            not_before_ms: (delay > 0).then(|| now_ms + delay as i64 * 1000),
            attributes,
        });
    }
    let published = state
        .store
        .publish_messages(&identity.project, &name, &out)
        .await;
    if let Err(e) = published {
        // The cached topic may have been deleted by another process in the last second:
        // its stream is gone, so the publish found no responder. Say so instead of 503.
        if let Ok(None) = state.store.get_topic(&identity.project, &name).await {
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
    let base = format!("/v2/topics/{name}/messages");
    let ids: Vec<&str> = out.iter().map(|m| m.id.as_str()).collect();
    let resources = ids.iter().map(|id| format!("{base}/{id}")).collect();
    let mut res = (StatusCode::CREATED, Json(MessagesPostOut { resources })).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("{base}?ids={}", ids.join(","))) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}

pub(super) fn router() -> Router<AppState> {
    Router::new().route("/v2/topics/{name}/messages", post(post_messages))
}
