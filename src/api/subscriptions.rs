//! Zaqar v2 subscriptions on topics: create, list, get, patch, delete, confirm, and
//! Herald's dead letters (list, replay).

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    extract::{object_fields, QueryPairs, RawBody, TopicPath, V2Identity},
    topics::{next_link, ErrorOut, LinkOut},
    with_location, AppState,
};
use crate::{
    domain::{signed_url::SignedUrl, timestamps, ProjectId, TopicName},
    error::ApiError,
    store::subscriptions::Subscription,
    subscriptions::{not_found, SubscriptionDoc, Subscriptions},
};

const DEFAULT_LIST_LIMIT: usize = 10;
const MAX_LIST_LIMIT: usize = 20;
/// Largest accepted subscription document.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// The `{id}` path segment of a subscription route.
pub struct SubscriptionPath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for SubscriptionPath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        params
            .into_iter()
            .find(|(k, _)| k == "id")
            .map(|(_, v)| Self(v))
            .ok_or_else(not_found)
    }
}

/// The caller's `X-Auth-Token`: a keystone-mode `trust+` subscription's trust is
/// created with it.
fn caller_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

fn href(topic: &TopicName, id: &str) -> String {
    format!("/v2/topics/{topic}/subscriptions/{id}")
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionCreatedOut {
    pub subscription_id: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionOut {
    pub id: String,
    /// The topic.
    pub source: String,
    /// `http(s)://…`, `mailto:…`, `trust+http(s)://…`, `nats:{subject}` or `sms:+{E.164}`.
    pub subscriber: String,
    pub ttl: u64,
    /// Seconds since creation.
    pub age: i64,
    pub confirmed: bool,
    #[schema(value_type = Object)]
    pub options: Map<String, Value>,
}

impl From<&Subscription> for SubscriptionOut {
    fn from(s: &Subscription) -> Self {
        Self {
            id: s.id.clone(),
            source: s.topic.to_string(),
            subscriber: s.subscriber.clone(),
            ttl: s.ttl,
            age: (Utc::now() - s.created_at).num_seconds().max(0),
            confirmed: s.confirmed,
            options: s.options.doc().clone(),
        }
    }
}

/// One subscription with its health (`GET …/subscriptions/{id}`).
#[derive(Serialize, ToSchema)]
pub struct SubscriptionDetailOut {
    #[serde(flatten)]
    pub subscription: SubscriptionOut,
    /// `disabled` (by hand or after failing for `disable_after`), `unconfirmed` (waiting
    /// for its subscriber's confirmation, or unsubscribed), else `active`.
    #[schema(value_type = String, example = "active")]
    pub status: &'static str,
    /// The newest delivered attempt among the newest 1,000 attempts.
    pub last_delivered_at: Option<String>,
    /// The newest failed attempt (`retry` or `failed`) among the newest 1,000 attempts.
    pub last_failed_at: Option<String>,
    /// That attempt's error.
    pub last_error: Option<String>,
    /// Messages waiting for it: not yet delivered plus in flight.
    pub pending: u64,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionListOut {
    pub subscriptions: Vec<SubscriptionOut>,
    pub links: Vec<LinkOut>,
}

/// The subscriptions service for this request.
pub(super) fn service(state: &AppState) -> Subscriptions<'_> {
    Subscriptions {
        store: &state.store,
        config: &state.config,
        outbound: &state.outbound,
    }
}

/// Subscribe to a topic.
#[utoipa::path(post, path = "/v2/topics/{name}/subscriptions", tag = "subscriptions",
    params(("name" = String, Path)),
    request_body(content = Object, description = "{\"subscriber\": uri, \"ttl\"?: seconds, \"options\"?: {\"_retry_policy\"?, \"post_headers\"?, \"post_data\"?, \"secret\"?, \"ordered\"?, \"from\"?, \"subject\"?, \"sms_template\"?, \"filter_policy\"?: SNS filter policy, \"filter_policy_scope\"?: \"MessageAttributes\" | \"MessageBody\"}}. Subscriber schemes (protocol for `_allowed_subscribe_protocols`): `http(s)://…` (webhook), `mailto:…` (email), `trust+http(s)://…` (trust), `nats:{subject}` (nats), `sms:+{E.164}` (sms: `+` then 8 to 15 digits, the first not 0; not allowed unless the topic lists `sms`; text from `options.sms_template` with `$zaqar_message$`, else the body)."),
    responses((status = 201, body = SubscriptionCreatedOut, headers(("Location" = String))),
        (status = 400, body = ErrorOut), (status = 403, body = ErrorOut), (status = 404, body = ErrorOut),
        (status = 409, body = ErrorOut), (status = 503, body = ErrorOut)))]
async fn create_subscription(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    headers: HeaderMap,
    body: RawBody,
) -> Result<Response, ApiError> {
    let identity = identity.writer()?;
    let doc = SubscriptionDoc::for_create(body.limit(MAX_BODY_BYTES)?.json()?)?;
    let sub = service(&state)
        .create(&identity, caller_token(&headers), &name, doc)
        .await?;
    let out = Json(SubscriptionCreatedOut {
        subscription_id: sub.id.clone(),
    });
    let res = (StatusCode::CREATED, out).into_response();
    Ok(with_location(res, &href(&name, &sub.id)))
}

/// List a topic's subscriptions.
#[utoipa::path(get, path = "/v2/topics/{name}/subscriptions", tag = "subscriptions",
    params(("name" = String, Path), ("marker" = Option<String>, Query), ("limit" = Option<usize>, Query, description = "1..20, default 10")),
    responses((status = 200, body = SubscriptionListOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn list_subscriptions(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
    query: QueryPairs,
) -> Result<Json<SubscriptionListOut>, ApiError> {
    let limit = query.limit(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let marker = query.get("marker").unwrap_or_default();
    let page = service(&state)
        .list(&identity.project, &name, marker, limit)
        .await?;
    let links = next_link(&page, |last| {
        format!(
            "/v2/topics/{name}/subscriptions?marker={}&limit={limit}",
            last.id
        )
    });
    Ok(Json(SubscriptionListOut {
        subscriptions: page.iter().map(SubscriptionOut::from).collect(),
        links,
    }))
}

/// Attempts the health fields look through (newest first).
const HEALTH_SCAN: usize = 1000;

/// Get one subscription, with its health.
#[utoipa::path(get, path = "/v2/topics/{name}/subscriptions/{id}", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SubscriptionDetailOut), (status = 404, body = ErrorOut)))]
async fn get_subscription(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
) -> Result<Json<SubscriptionDetailOut>, ApiError> {
    let sub = service(&state).get(&identity.project, &name, &id).await?;
    let (last, pending) = tokio::try_join!(
        state
            .store
            .last_attempts(&identity.project, &sub.id, HEALTH_SCAN),
        state
            .store
            .subscription_pending(&identity.project, &name, &sub.id),
    )?;
    let status = service(&state).status(&sub);
    Ok(Json(SubscriptionDetailOut {
        subscription: SubscriptionOut::from(&sub),
        status,
        last_delivered_at: last.delivered.map(timestamps::zaqar_micros),
        last_failed_at: last.failed.map(timestamps::zaqar_micros),
        last_error: last.error,
        pending,
    }))
}

/// Change a subscription's subscriber, ttl or options.
#[utoipa::path(patch, path = "/v2/topics/{name}/subscriptions/{id}", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "{\"subscriber\"?, \"ttl\"?, \"options\"?}"),
    responses((status = 204), (status = 400, body = ErrorOut), (status = 403, body = ErrorOut),
        (status = 404, body = ErrorOut), (status = 409, body = ErrorOut)))]
async fn update_subscription(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    let identity = identity.writer()?;
    let doc = SubscriptionDoc::for_patch(body.limit(MAX_BODY_BYTES)?.json()?)?;
    service(&state)
        .update(&identity, caller_token(&headers), &name, &id, doc)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete a subscription (204 also when absent).
#[utoipa::path(delete, path = "/v2/topics/{name}/subscriptions/{id}", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 204), (status = 503, body = ErrorOut)))]
async fn delete_subscription(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
) -> Result<StatusCode, ApiError> {
    let identity = identity.writer()?;
    service(&state)
        .delete(&identity.project, &name, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The project a confirmation acts on: from pre-signed URL headers when present (a bad
/// signature is a 404), else from the caller's identity.
async fn confirm_project(
    state: &AppState,
    headers: &HeaderMap,
    path: &str,
) -> Result<ProjectId, ApiError> {
    let h = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).map(str::trim);
    let Some(signature) = h("url-signature") else {
        return Ok(state.auth.resolve(headers).await?.project);
    };
    let secret = state
        .config
        .signed_url_secret
        .as_deref()
        .ok_or_else(not_found)?;
    let list = |k: &str| -> Vec<String> {
        h(k).unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    };
    let signed = SignedUrl {
        paths: list("url-paths"),
        methods: list("url-methods"),
        project: h("x-project-id").unwrap_or_default().to_owned(),
        expires: h("url-expires").unwrap_or_default().to_owned(),
        signature: signature.to_owned(),
    };
    if !signed.allows(secret, "PUT", path, Utc::now()) {
        return Err(not_found());
    }
    ProjectId::parse(&signed.project).map_err(|_| not_found())
}

/// Confirm (`true`) or unsubscribe (`false`) a subscription; also by pre-signed URL.
#[utoipa::path(put, path = "/v2/topics/{name}/subscriptions/{id}/confirm", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "{\"confirmed\": bool}"),
    responses((status = 204), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn confirm_subscription(
    State(state): State<AppState>,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
    headers: HeaderMap,
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    let path = format!("/v2/topics/{name}/subscriptions/{id}/confirm");
    let project = confirm_project(&state, &headers, &path).await?;
    let doc: Value = body.limit(MAX_BODY_BYTES)?.json()?;
    let confirmed = match object_fields::<ConfirmIn>(doc) {
        Some(Ok(doc)) => doc.confirmed,
        _ => return Err(ApiError::BadRequest("confirmed must be a boolean.".into())),
    };
    service(&state)
        .confirm(&project, &name, &id, confirmed)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The `PUT …/confirm` body.
#[derive(Deserialize)]
struct ConfirmIn {
    confirmed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterOut {
    pub message_id: String,
    #[schema(value_type = Object)]
    pub body: Value,
    pub attempts: u64,
    pub last_error: String,
    pub failed_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterListOut {
    pub dead_letters: Vec<DeadLetterOut>,
    pub links: Vec<LinkOut>,
}

/// Messages this subscription gave up on, with the last error.
#[utoipa::path(get, path = "/v2/topics/{name}/subscriptions/{id}/dead_letters", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path), ("marker" = Option<u64>, Query), ("limit" = Option<usize>, Query, description = "1..20, default 10")),
    responses((status = 200, body = DeadLetterListOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn list_dead_letters(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
    query: QueryPairs,
) -> Result<Json<DeadLetterListOut>, ApiError> {
    let limit = query.limit(DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT)?;
    let marker = match query.get("marker") {
        None => 0,
        Some(m) => m
            .parse::<u64>()
            .map_err(|_| ApiError::BadRequest("marker must be a non-negative integer.".into()))?,
    };
    service(&state).get(&identity.project, &name, &id).await?;
    let page = state
        .store
        .list_dead_letters(&identity.project, &name, &id, marker, limit)
        .await?;
    let links = next_link(&page, |last| {
        format!(
            "/v2/topics/{name}/subscriptions/{id}/dead_letters?marker={}&limit={limit}",
            last.seq
        )
    });
    let dead_letters = page
        .into_iter()
        .map(|d| DeadLetterOut {
            message_id: d.letter.message_id,
            body: d.letter.body,
            attempts: d.letter.attempts,
            last_error: d.letter.last_error,
            failed_at: timestamps::zaqar_micros(d.letter.failed_at),
        })
        .collect();
    Ok(Json(DeadLetterListOut {
        dead_letters,
        links,
    }))
}

/// The optional `POST …/dead_letters/replay` body.
#[derive(Deserialize)]
struct ReplayIn {
    #[serde(default, deserialize_with = "crate::domain::present")]
    ids: Option<Vec<String>>,
}

const IDS_NOT_A_LIST: &str = "ids must be a list of message ids.";

#[derive(Serialize, ToSchema)]
pub struct ReplayOut {
    /// Dead letters put back for delivery.
    pub replayed: usize,
}

/// Deliver dead letters again (all, or those named by `ids`), to this subscription only.
#[utoipa::path(post, path = "/v2/topics/{name}/subscriptions/{id}/dead_letters/replay", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "optional {\"ids\": [message_id, ...]}"),
    responses((status = 202, body = ReplayOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn replay_dead_letters(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
    body: RawBody,
) -> Result<Response, ApiError> {
    let identity = identity.writer()?;
    let ids = match body.limit(MAX_BODY_BYTES)?.json_opt::<Value>()? {
        None => None,
        Some(doc) => match object_fields::<ReplayIn>(doc) {
            None => {
                return Err(ApiError::BadRequest(
                    "The body must be a JSON object.".into(),
                ))
            }
            Some(Err(_)) => return Err(ApiError::BadRequest(IDS_NOT_A_LIST.into())),
            Some(Ok(doc)) => doc.ids,
        },
    };
    service(&state).get(&identity.project, &name, &id).await?;
    let replayed = state
        .store
        .replay_dead_letters(&identity.project, &name, &id, |letter| {
            ids.as_ref()
                .is_none_or(|ids| ids.contains(&letter.message_id))
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayOut { replayed })).into_response())
}

/// The `POST …/recover` body.
#[derive(Deserialize)]
struct RecoverIn {
    since: String,
    #[serde(default)]
    until: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RecoverOut {
    /// Dead letters of the window put back for delivery.
    pub recovered: usize,
}

const RECOVER_BODY: &str =
    "The body must be {\"since\": RFC 3339 date-time, \"until\"?: RFC 3339 date-time}.";

fn rfc3339(field: &str, v: &str) -> Result<chrono::DateTime<Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| ApiError::BadRequest(format!("{field} must be an RFC 3339 date-time.")))
}

/// Deliver again every dead letter that failed in the window (`since` ≤ failed < `until`).
#[utoipa::path(post, path = "/v2/topics/{name}/subscriptions/{id}/recover", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path)),
    request_body(content = Object, description = "{\"since\": RFC 3339, \"until\"?: RFC 3339 (default now)}"),
    responses((status = 202, body = RecoverOut), (status = 400, body = ErrorOut), (status = 404, body = ErrorOut)))]
async fn recover_subscription(
    State(state): State<AppState>,
    identity: V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
    body: RawBody,
) -> Result<Response, ApiError> {
    let identity = identity.writer()?;
    let doc: Value = body.limit(MAX_BODY_BYTES)?.json()?;
    let window = match object_fields::<RecoverIn>(doc) {
        Some(Ok(w)) => w,
        _ => return Err(ApiError::BadRequest(RECOVER_BODY.into())),
    };
    let since = rfc3339("since", &window.since)?;
    let until = window
        .until
        .as_deref()
        .map(|u| rfc3339("until", u))
        .transpose()?;
    service(&state).get(&identity.project, &name, &id).await?;
    let recovered = state
        .store
        .replay_dead_letters(&identity.project, &name, &id, |letter| {
            letter.failed_at >= since && until.is_none_or(|u| letter.failed_at < u)
        })
        .await?;
    Ok((StatusCode::ACCEPTED, Json(RecoverOut { recovered })).into_response())
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v2/topics/{name}/subscriptions",
            post(create_subscription).get(list_subscriptions),
        )
        .route(
            "/v2/topics/{name}/subscriptions/{id}",
            get(get_subscription)
                .patch(update_subscription)
                .delete(delete_subscription),
        )
        .route(
            "/v2/topics/{name}/subscriptions/{id}/confirm",
            put(confirm_subscription),
        )
        .route(
            "/v2/topics/{name}/subscriptions/{id}/dead_letters",
            get(list_dead_letters),
        )
        .route(
            "/v2/topics/{name}/subscriptions/{id}/dead_letters/replay",
            post(replay_dead_letters),
        )
        .route(
            "/v2/topics/{name}/subscriptions/{id}/recover",
            post(recover_subscription),
        )
}
