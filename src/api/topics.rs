//! Zaqar v2 topics: create, read, list, patch, delete, stats and purge.

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::Response,
    routing::{get, post, put},
    Json, Router,
};
use chrono::Utc;
use serde::Serialize;
use serde_json::{json, Map, Value};
use utoipa::ToSchema;

use super::{
    created_at,
    extract::{QueryPairs, RawBody, TopicPath, V2Identity},
    AppState,
};
use crate::{
    domain::{timestamps, ProjectId, TopicMetadata, TopicName},
    error::ApiError,
    store::topics::{MessageMark, Topic},
};

/// Largest accepted topic metadata document.
const MAX_METADATA_BYTES: usize = 64 * 1024;
const PATCH_MEDIA_TYPE: &str = "application/openstack-messaging-v2.0-json-patch";
const DEFAULT_LIST_LIMIT: usize = 10;
const MAX_LIST_LIMIT: usize = 20;

fn href(topic: &TopicName) -> String {
    format!("/v2/topics/{topic}")
}

/// Loads a topic of the caller's project, or 404.
pub(crate) async fn load_topic(
    state: &AppState,
    project: &ProjectId,
    name: &TopicName,
) -> Result<Topic, ApiError> {
    state
        .store
        .get_topic(project, name)
        .await?
        .ok_or_else(ApiError::topic_not_found)
}

/// Create a topic; the body is its optional metadata.
#[utoipa::path(put, path = "/v2/topics/{name}", tag = "topics",
    params(("name" = String, Path, description = "Topic name, ^[a-zA-Z0-9_.-]{1,64}$")),
    request_body(content = Object, description = "Topic metadata (optional)"),
    responses((status = 201, description = "Created", headers(("Location" = String))),
        (status = 204, description = "Already existed; metadata unchanged"),
        (status = 403, body = ErrorOut, description = "Topic quota of the project exceeded"),
        (status = 400, body = ErrorOut), (status = 413, body = ErrorOut), (status = 503, body = ErrorOut)))]
async fn create_topic(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    body: RawBody,
) -> Result<Response, ApiError> {
    let identity = identity.writer()?;
    let body = body.limit(MAX_METADATA_BYTES)?;
    let metadata = TopicMetadata::parse(body.json_opt()?.unwrap_or_else(|| json!({})))?;
    check_topic_quota(&state, &identity.project, &name).await?;
    let created = state
        .store
        .create_topic(&identity.project, &name, metadata)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::NO_CONTENT
    };
    Ok(created_at(status, &href(&name)))
}

/// Refuses a new topic beyond `max_topics_per_project`. Concurrent creates may overshoot
/// by a few; the quota guards against runaway clients, not exact accounting.
pub(crate) async fn check_topic_quota(
    state: &AppState,
    project: &ProjectId,
    name: &TopicName,
) -> Result<(), ApiError> {
    let quota = state.config.max_topics_per_project;
    if quota == 0 || state.store.get_topic(project, name).await?.is_some() {
        return Ok(());
    }
    if state.store.count_topics(project).await? >= quota {
        return Err(ApiError::Forbidden(format!(
            "Topic quota exceeded: a project may hold at most {quota} topics."
        )));
    }
    Ok(())
}

/// A Zaqar error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorOut {
    pub title: String,
    pub description: String,
}

#[derive(Serialize, ToSchema)]
pub struct TopicOut {
    pub name: String,
    pub href: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Map<String, Value>>,
}

#[derive(Serialize, ToSchema)]
pub struct LinkOut {
    pub rel: String,
    pub href: String,
}

/// The `links` of a page: `next` (built from the page's last item) unless it is empty.
pub(crate) fn next_link<T>(page: &[T], href: impl FnOnce(&T) -> String) -> Vec<LinkOut> {
    page.last()
        .map(|last| LinkOut {
            rel: "next".into(),
            href: href(last),
        })
        .into_iter()
        .collect()
}

#[derive(Serialize, ToSchema)]
pub struct TopicListOut {
    pub topics: Vec<TopicOut>,
    pub links: Vec<LinkOut>,
}

/// List the caller's topics, by name, with marker/limit paging and metadata filters.
#[utoipa::path(get, path = "/v2/topics", tag = "topics",
    params(("marker" = Option<String>, Query), ("limit" = Option<usize>, Query, description = "1..20, default 10"),
        ("detailed" = Option<bool>, Query), ("name" = Option<String>, Query, description = "Substring of the name")),
    responses((status = 200, body = TopicListOut), (status = 400, body = ErrorOut), (status = 503, body = ErrorOut)))]
async fn list_topics(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    query: QueryPairs,
) -> Result<Json<TopicListOut>, ApiError> {
    let limit = query.limit(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let detailed = query.flag("detailed")?;
    let marker = query.get("marker").unwrap_or_default();
    let name_filter = query.get("name").unwrap_or_default();
    let meta_filters: Vec<(String, String)> = query
        .0
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "marker" | "limit" | "detailed" | "name"))
        .cloned()
        .collect();

    let topics = state.store.list_topics(&identity.project).await?;
    let page: Vec<Topic> = topics
        .into_iter()
        .filter(|t| t.name.as_str() > marker)
        .filter(|t| t.name.as_str().contains(name_filter))
        .filter(|t| t.metadata.matches(&meta_filters))
        .take(limit)
        .collect();

    let links = next_link(&page, |last| {
        let mut next = url_pairs(&[
            ("marker", last.name.as_str()),
            ("limit", &limit.to_string()),
        ]);
        if detailed {
            next.push_str("&detailed=true");
        }
        if !name_filter.is_empty() {
            next.push('&');
            next.push_str(&url_pairs(&[("name", name_filter)]));
        }
        for (k, v) in &meta_filters {
            next.push('&');
            next.push_str(&url_pairs(&[(k, v)]));
        }
        format!("/v2/topics?{next}")
    });
    let topics = page
        .into_iter()
        .map(|t| TopicOut {
            href: href(&t.name),
            metadata: detailed.then(|| t.metadata.with_defaults()),
            name: t.name.to_string(),
        })
        .collect();
    Ok(Json(TopicListOut { topics, links }))
}

fn url_pairs(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// Get a topic's metadata, reserved defaults filled in.
#[utoipa::path(get, path = "/v2/topics/{name}", tag = "topics",
    params(("name" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = ErrorOut), (status = 503, body = ErrorOut)))]
async fn get_topic(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let topic = load_topic(&state, &identity.project, &name).await?;
    Ok(Json(topic.metadata.with_defaults()))
}

/// Validates one Zaqar JSON-patch operation.
fn check_patch_op(op: &Value) -> Result<(), ApiError> {
    let bad = |m: &str| Err(ApiError::BadRequestBody(m.to_owned()));
    let Some(obj) = op.as_object() else {
        return bad("Each patch operation must be a JSON object.");
    };
    let kind = obj.get("op").and_then(Value::as_str);
    if !matches!(kind, Some("add" | "replace" | "remove")) {
        return bad("Each patch operation needs \"op\": add, replace or remove.");
    }
    let path = obj.get("path").and_then(Value::as_str).unwrap_or_default();
    // One key below /metadata: Zaqar's paths have exactly two segments.
    match path.strip_prefix("/metadata/") {
        Some(key) if !key.is_empty() && !key.contains('/') => {}
        _ => return bad("Each patch operation needs \"path\": \"/metadata/{key}\"."),
    }
    if kind != Some("remove") && !obj.contains_key("value") {
        return bad("Patch operations add and replace need a \"value\".");
    }
    Ok(())
}

/// The key a `replace` operation targets (checked by [`check_patch_op`]).
fn replaced_key(op: &Value) -> Option<&str> {
    if op.get("op").and_then(Value::as_str) != Some("replace") {
        return None;
    }
    op.get("path")?.as_str()?.strip_prefix("/metadata/")
}

/// Apply a JSON patch (`application/openstack-messaging-v2.0-json-patch`) to the metadata.
#[utoipa::path(patch, path = "/v2/topics/{name}", tag = "topics",
    params(("name" = String, Path)),
    request_body(content = Vec<Object>, content_type = "application/openstack-messaging-v2.0-json-patch"),
    responses((status = 200, body = Object, description = "The new metadata"), (status = 400, body = ErrorOut),
        (status = 404, body = ErrorOut), (status = 409, body = ErrorOut), (status = 415, body = ErrorOut)))]
async fn update_topic(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Json<Map<String, Value>>, ApiError> {
    let identity = identity.writer()?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(str::trim)
        .unwrap_or_default();
    if !content_type.eq_ignore_ascii_case(PATCH_MEDIA_TYPE) {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Accepted media type for PATCH: {PATCH_MEDIA_TYPE}."
        )));
    }
    let ops: Value = body.limit(MAX_METADATA_BYTES)?.json()?;
    let list = ops.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
        ApiError::BadRequest("The patch must be a non-empty list of operations.".into())
    })?;
    list.iter().try_for_each(check_patch_op)?;
    let patch: json_patch::Patch = serde_json::from_value(ops.clone())
        .map_err(|e| ApiError::BadRequest(format!("Invalid patch: {e}")))?;

    let topic = load_topic(&state, &identity.project, &name).await?;
    let defaults = topic.metadata.with_defaults();
    let mut stored = topic.metadata.into_map();
    // Reserved keys always exist (with their defaults), so replacing one never stored works.
    for key in list.iter().filter_map(replaced_key) {
        if let (false, Some(default)) = (stored.contains_key(key), defaults.get(key)) {
            stored.insert(key.to_owned(), default.clone());
        }
    }
    let mut doc = json!({ "metadata": Value::Object(stored) });
    json_patch::patch(&mut doc, &patch)
        .map_err(|e| ApiError::Conflict(format!("The patch cannot be applied: {e}.")))?;
    let metadata = TopicMetadata::parse(doc["metadata"].take())?;
    let out = metadata.with_defaults();
    state
        .store
        .update_topic_metadata(&identity.project, &name, metadata, topic.revision)
        .await?;
    Ok(Json(out))
}

/// Delete a topic with its messages and subscriptions (204 also when absent).
#[utoipa::path(delete, path = "/v2/topics/{name}", tag = "topics",
    params(("name" = String, Path)),
    responses((status = 204), (status = 503, body = ErrorOut)))]
async fn delete_topic(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
) -> Result<StatusCode, ApiError> {
    let identity = identity.writer()?;
    super::subscriptions::service(&state)
        .delete_topic(&identity.project, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, ToSchema)]
pub struct MessageMarkOut {
    /// Seconds since the message was published.
    pub age: i64,
    pub created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub href: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageStatsOut {
    pub claimed: u64,
    pub free: u64,
    pub total: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub oldest: Option<MessageMarkOut>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub newest: Option<MessageMarkOut>,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionStatsOut {
    pub count: u64,
    pub pending: u64,
    pub dead_letters: u64,
}

#[derive(Serialize, ToSchema)]
pub struct TopicStatsOut {
    pub messages: MessageStatsOut,
    pub subscriptions: SubscriptionStatsOut,
}

/// Message and subscription counts of a topic.
#[utoipa::path(get, path = "/v2/topics/{name}/stats", tag = "topics",
    params(("name" = String, Path)),
    responses((status = 200, body = TopicStatsOut), (status = 404, body = ErrorOut), (status = 503, body = ErrorOut)))]
async fn topic_stats(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
) -> Result<Json<TopicStatsOut>, ApiError> {
    load_topic(&state, &identity.project, &name).await?;
    let stats = state.store.topic_stats(&identity.project, &name).await?;
    let mark = |m: MessageMark| MessageMarkOut {
        age: (Utc::now() - m.created).num_seconds().max(0),
        created: timestamps::zaqar_seconds(m.created),
        href: m
            .id
            .as_ref()
            .map(|id| format!("{}/messages/{id}", href(&name))),
        id: m.id,
    };
    Ok(Json(TopicStatsOut {
        messages: MessageStatsOut {
            claimed: 0,
            free: stats.messages,
            total: stats.messages,
            oldest: stats.oldest.map(mark),
            newest: stats.newest.map(mark),
        },
        subscriptions: SubscriptionStatsOut {
            count: stats.subscriptions,
            pending: stats.pending,
            dead_letters: stats.dead_letters,
        },
    }))
}

/// Purge a topic's messages and/or subscriptions.
#[utoipa::path(post, path = "/v2/topics/{name}/purge", tag = "topics",
    params(("name" = String, Path)),
    request_body(content = Object, description = "{\"resource_types\": [\"messages\", \"subscriptions\"]} (≤ 64 KiB)"),
    responses((status = 204), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn purge_topic(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    let identity = identity.writer()?;
    let (mut messages, mut subscriptions) = (true, true);
    if let Some(body) = body.limit(MAX_METADATA_BYTES)?.json_opt::<Value>()? {
        let types = body
            .as_object()
            .ok_or_else(|| ApiError::BadRequest("The purge body must be a JSON object.".into()))?
            .get("resource_types");
        if let Some(types) = types {
            let list = types.as_array().filter(|l| !l.is_empty()).ok_or_else(|| {
                ApiError::BadRequest("resource_types must be a non-empty list.".into())
            })?;
            (messages, subscriptions) = (false, false);
            for t in list {
                match t.as_str() {
                    Some("messages") => messages = true,
                    Some("subscriptions") => subscriptions = true,
                    _ => {
                        return Err(ApiError::BadRequest(format!(
                            "Invalid resource type {t}: expected messages or subscriptions."
                        )))
                    }
                }
            }
        }
    }
    load_topic(&state, &identity.project, &name).await?;
    state
        .store
        .purge_topic(&identity.project, &name, messages, subscriptions)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/v2/topics", get(list_topics))
        .route(
            "/v2/topics/{name}",
            put(create_topic)
                .get(get_topic)
                .patch(update_topic)
                .delete(delete_topic),
        )
        .route("/v2/topics/{name}/stats", get(topic_stats))
        .route("/v2/topics/{name}/purge", post(purge_topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patch_operations_are_checked_before_applying() {
        for ok in [
            json!({"op": "add", "path": "/metadata/k", "value": 1}),
            json!({"op": "replace", "path": "/metadata/k", "value": null}),
            json!({"op": "remove", "path": "/metadata/k"}),
        ] {
            check_patch_op(&ok).unwrap();
        }
        for bad in [
            json!("add"),
            json!({"op": "move", "path": "/metadata/k", "from": "/metadata/j"}),
            json!({"op": "add", "path": "/name", "value": 1}),
            json!({"op": "add", "path": "/metadata/", "value": 1}),
            json!({"op": "add", "path": "/metadata/k"}),
        ] {
            assert!(check_patch_op(&bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn json_patch_refuses_replacing_a_missing_key() {
        let mut doc = json!({"metadata": {"a": 1}});
        let p: json_patch::Patch =
            serde_json::from_value(json!([{"op": "replace", "path": "/metadata/b", "value": 2}]))
                .unwrap();
        assert!(json_patch::patch(&mut doc, &p).is_err());
        let p: json_patch::Patch =
            serde_json::from_value(json!([{"op": "add", "path": "/metadata/b", "value": 2}, {"op": "remove", "path": "/metadata/a"}])).unwrap();
        json_patch::patch(&mut doc, &p).unwrap();
        assert_eq!(doc, json!({"metadata": {"b": 2}}));
    }
}
