//! Zaqar v2 subscriptions on topics: create, list, get, patch, delete, confirm, and
//! Herald's dead letters (list, replay).

use axum::{
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
    Json, Router,
};
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::{
    created_at,
    extract::{QueryPairs, RawBody, TopicPath, V2Identity},
    messages::acl_allows,
    topics::{load_topic, ErrorOut, LinkOut},
    AppState,
};
use crate::{
    auth::Identity,
    config::{AuthMode, NatsSubscriberScope},
    delivery::{confirm, consumer_limits},
    domain::{signed_url::SignedUrl, subscriber, ProjectId, RetryPolicy, Subscriber, TopicName},
    error::ApiError,
    store::{
        subscriptions::{Created, Subscription},
        topics::Topic,
    },
};

const DEFAULT_TTL_SECS: u64 = 3600;
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

fn href(topic: &TopicName, id: &str) -> String {
    format!("/v2/topics/{topic}/subscriptions/{id}")
}

fn not_found() -> ApiError {
    ApiError::NotFound("Subscription could not be found.".into())
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
            options: s.options.clone(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionListOut {
    pub subscriptions: Vec<SubscriptionOut>,
    pub links: Vec<LinkOut>,
}

fn parse_subscriber(
    state: &AppState,
    project: &ProjectId,
    v: &Value,
) -> Result<Subscriber, ApiError> {
    let s = v
        .as_str()
        .ok_or_else(|| ApiError::BadRequest("subscriber must be a string.".into()))?;
    let subscriber = Subscriber::parse(s)?;
    if let Subscriber::Nats { subject } = &subscriber {
        if state.config.nats_subscriber_scope == NatsSubscriberScope::Project
            && !subscriber::nats_subject_in_project(subject, project.as_str())
        {
            return Err(ApiError::BadRequest(format!(
                "Invalid subscriber {s:?}: nats_subscriber_scope is project, so the subject must be under {project}. (the project's own NATS namespace).",
                project = project.as_str()
            )));
        }
    }
    Ok(subscriber)
}

fn parse_ttl(state: &AppState, v: &Value) -> Result<u64, ApiError> {
    let min = state.config.min_subscription_ttl;
    v.as_u64()
        .filter(|t| *t >= min && *t <= i32::MAX as u64)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("ttl must be an integer of at least {min} seconds."))
        })
}

fn parse_options(v: &Value) -> Result<Map<String, Value>, ApiError> {
    let bad = |m: &str| ApiError::BadRequest(m.to_owned());
    let options = v
        .as_object()
        .ok_or_else(|| bad("options must be a JSON object."))?;
    if let Some(p) = options.get("_retry_policy") {
        RetryPolicy::parse(p)?;
    }
    crate::domain::filter_policy::FilterPolicy::from_options(options)?;
    if let Some(h) = options.get("post_headers") {
        let ok = h.as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| {
                axum::http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                    && v.as_str()
                        .is_some_and(|v| axum::http::HeaderValue::from_str(v).is_ok())
            })
        });
        if !ok {
            return Err(bad(
                "options.post_headers must be an object of valid header names and string values.",
            ));
        }
    }
    for key in ["secret", "from", "subject"] {
        if options.get(key).is_some_and(|v| !v.is_string()) {
            return Err(ApiError::BadRequest(format!(
                "options.{key} must be a string."
            )));
        }
    }
    if options.get("ordered").is_some_and(|v| !v.is_boolean()) {
        return Err(bad("options.ordered must be a boolean."));
    }
    Ok(options.clone())
}

/// The subscribe ACL of the topic: projects, users and protocol.
fn check_subscribe(
    topic: &Topic,
    identity: &Identity,
    subscriber: &Subscriber,
) -> Result<(), ApiError> {
    if !acl_allows(&topic.metadata, "subscribe", identity) {
        return Err(ApiError::Forbidden(
            "You are not allowed to subscribe to this topic.".into(),
        ));
    }
    let protocol = subscriber.protocol();
    if !topic.metadata.allows_protocol(protocol) {
        return Err(ApiError::Forbidden(format!(
            "The protocol {} is not allowed by this topic.",
            protocol.as_str()
        )));
    }
    Ok(())
}

/// The credential Herald presents to a `trust+` subscriber on the creator's behalf.
fn delegation(state: &AppState, identity: &Identity) -> Result<String, ApiError> {
    match state.config.auth_mode {
        AuthMode::Tokens => identity.delegable_token.clone().ok_or_else(|| {
            ApiError::Forbidden(
                "trust subscriptions need a token marked \"delegable\" in the tokens file.".into(),
            )
        }),
        // Keystone trusts (design.md, issue 12 part 2) are not built yet: refuse rather than
        // hand the caller's own, short-lived token to a subscriber.
        AuthMode::Keystone => Err(ApiError::Forbidden(
            "trust subscriptions are not yet supported with auth_mode = keystone.".into(),
        )),
        // Cinder's noauth token form.
        AuthMode::Noauth => Ok(format!(
            "{}:{}",
            identity.user_id.as_deref().unwrap_or("herald"),
            identity.project
        )),
    }
}

fn needs_confirmation(state: &AppState, sub: &Subscription) -> bool {
    state.config.require_confirmation
        && Subscriber::parse(&sub.subscriber).is_ok_and(|s| s.needs_confirmation())
}

fn send_confirmation(state: &AppState, sub: Subscription, unsubscribe: bool) {
    let (outbound, config) = (state.outbound.clone(), state.config.clone());
    tokio::spawn(async move { confirm::send(&outbound, &config, &sub, unsubscribe).await });
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
    body: RawBody,
) -> Result<Response, ApiError> {
    let identity = identity.writer()?;
    let doc: Value = body.limit(MAX_BODY_BYTES)?.json()?;
    let doc = doc
        .as_object()
        .ok_or_else(|| ApiError::BadRequest("The subscription must be a JSON object.".into()))?;
    let subscriber = parse_subscriber(
        &state,
        &identity.project,
        doc.get("subscriber")
            .ok_or_else(|| ApiError::BadRequest("Missing parameter subscriber in body.".into()))?,
    )?;
    let ttl = doc
        .get("ttl")
        .map(|v| parse_ttl(&state, v))
        .transpose()?
        .unwrap_or(DEFAULT_TTL_SECS);
    let options = doc
        .get("options")
        .map(parse_options)
        .transpose()?
        .unwrap_or_default();
    let topic = load_topic(&state, &identity.project, &name).await?;
    check_subscribe(&topic, &identity, &subscriber)?;
    let delegated_token = match subscriber.protocol() {
        crate::domain::Protocol::Trust => Some(delegation(&state, &identity)?),
        _ => None,
    };
    let now = Utc::now();
    let sub = Subscription {
        id: String::new(),
        project: identity.project.clone(),
        topic: name.clone(),
        subscriber: doc["subscriber"].as_str().unwrap_or_default().to_owned(),
        options,
        ttl,
        created_at: now,
        expires_at: now + Duration::seconds(ttl as i64),
        confirmed: false,
        unsubscribed: false,
        source_user: identity.user_id.clone(),
        delegated_token,
    };
    let limits = consumer_limits(&state.config);
    let sub = match state.store.create_subscription(sub, limits).await? {
        Created::New(sub) => sub,
        Created::Existing(sub) if sub.confirmed => return Err(subscription_exists()),
        Created::Existing(sub) => sub,
    };
    if needs_confirmation(&state, &sub) {
        send_confirmation(&state, sub.clone(), false);
    }
    let mut res = created_at(StatusCode::CREATED, &href(&name, &sub.id));
    let location = res.headers().clone();
    res = (
        StatusCode::CREATED,
        Json(SubscriptionCreatedOut {
            subscription_id: sub.id,
        }),
    )
        .into_response();
    res.headers_mut().extend(location);
    Ok(res)
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
    load_topic(&state, &identity.project, &name).await?;
    let now = Utc::now();
    let page: Vec<Subscription> = state
        .store
        .list_subscriptions(&identity.project, &name)
        .await?
        .into_iter()
        .filter(|s| !s.is_expired(now) && s.id.as_str() > marker)
        .take(limit)
        .collect();
    let links = page
        .last()
        .map(|last| LinkOut {
            rel: "next".into(),
            href: format!(
                "/v2/topics/{name}/subscriptions?marker={}&limit={limit}",
                last.id
            ),
        })
        .into_iter()
        .collect();
    Ok(Json(SubscriptionListOut {
        subscriptions: page.iter().map(SubscriptionOut::from).collect(),
        links,
    }))
}

async fn load_subscription(
    state: &AppState,
    project: &ProjectId,
    topic: &TopicName,
    id: &str,
) -> Result<Subscription, ApiError> {
    state
        .store
        .get_subscription(project, topic, id)
        .await?
        .filter(|s| !s.is_expired(Utc::now()))
        .ok_or_else(not_found)
}

/// Get one subscription.
#[utoipa::path(get, path = "/v2/topics/{name}/subscriptions/{id}", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path)),
    responses((status = 200, body = SubscriptionOut), (status = 404, body = ErrorOut)))]
async fn get_subscription(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
) -> Result<Json<SubscriptionOut>, ApiError> {
    let sub = load_subscription(&state, &identity.project, &name, &id).await?;
    Ok(Json(SubscriptionOut::from(&sub)))
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
    body: RawBody,
) -> Result<StatusCode, ApiError> {
    let identity = identity.writer()?;
    let doc: Value = body.limit(MAX_BODY_BYTES)?.json()?;
    let doc = doc.as_object().filter(|d| !d.is_empty()).ok_or_else(|| {
        ApiError::BadRequest(
            "The patch must be a JSON object with subscriber, ttl or options.".into(),
        )
    })?;
    if let Some(k) = doc
        .keys()
        .find(|k| !matches!(k.as_str(), "subscriber" | "ttl" | "options"))
    {
        return Err(ApiError::BadRequest(format!(
            "Unknown field {k}: only subscriber, ttl and options can be changed."
        )));
    }
    let subscriber = doc
        .get("subscriber")
        .map(|v| parse_subscriber(&state, &identity.project, v))
        .transpose()?;
    let ttl = doc.get("ttl").map(|v| parse_ttl(&state, v)).transpose()?;
    let options = doc.get("options").map(parse_options).transpose()?;
    let topic = load_topic(&state, &identity.project, &name).await?;
    let mut sub = load_subscription(&state, &identity.project, &name, &id).await?;
    if let Some(subscriber) = subscriber {
        check_subscribe(&topic, &identity, &subscriber)?;
        let raw = doc["subscriber"].as_str().unwrap_or_default().to_owned();
        if raw != sub.subscriber {
            let taken = state
                .store
                .list_subscriptions(&identity.project, &name)
                .await?
                .iter()
                .any(|s| s.subscriber == raw && s.id != sub.id);
            if taken {
                return Err(subscription_exists());
            }
            if subscriber.protocol() == crate::domain::Protocol::Trust {
                sub.delegated_token = Some(delegation(&state, &identity)?);
            }
            sub.subscriber = raw;
        }
    }
    if let Some(ttl) = ttl {
        sub.ttl = ttl;
        sub.expires_at = Utc::now() + Duration::seconds(ttl as i64);
    }
    if let Some(options) = options {
        sub.options = options;
    }
    state
        .store
        .update_subscription(&sub, consumer_limits(&state.config))
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound => not_found(),
            e => e.into(),
        })?;
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
    state
        .store
        .delete_subscription(&identity.project, &name, &id)
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
    let confirmed = doc
        .get("confirmed")
        .and_then(Value::as_bool)
        .ok_or_else(|| ApiError::BadRequest("confirmed must be a boolean.".into()))?;
    let mut sub = load_subscription(&state, &project, &name, &id).await?;
    if sub.confirmed != confirmed || sub.unsubscribed == confirmed {
        sub.confirmed = confirmed;
        sub.unsubscribed = !confirmed;
        state
            .store
            .update_subscription(&sub, consumer_limits(&state.config))
            .await?;
    }
    if !confirmed && needs_confirmation(&state, &sub) {
        send_confirmation(&state, sub, true);
    }
    Ok(StatusCode::NO_CONTENT)
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

fn format_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
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
    load_subscription(&state, &identity.project, &name, &id).await?;
    let page = state
        .store
        .list_dead_letters(&identity.project, &name, &id, marker, limit)
        .await?;
    let links = page
        .last()
        .map(|last| LinkOut {
            rel: "next".into(),
            href: format!(
                "/v2/topics/{name}/subscriptions/{id}/dead_letters?marker={}&limit={limit}",
                last.seq
            ),
        })
        .into_iter()
        .collect();
    let dead_letters = page
        .into_iter()
        .map(|d| DeadLetterOut {
            message_id: d.letter.message_id,
            body: d.letter.body,
            attempts: d.letter.attempts,
            last_error: d.letter.last_error,
            failed_at: format_time(d.letter.failed_at),
        })
        .collect();
    Ok(Json(DeadLetterListOut {
        dead_letters,
        links,
    }))
}

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
        Some(doc) => {
            let obj = doc
                .as_object()
                .ok_or_else(|| ApiError::BadRequest("The body must be a JSON object.".into()))?;
            match obj.get("ids") {
                None => None,
                Some(v) => Some(
                    v.as_array()
                        .and_then(|l| {
                            l.iter()
                                .map(|i| i.as_str().map(str::to_owned))
                                .collect::<Option<Vec<_>>>()
                        })
                        .ok_or_else(|| {
                            ApiError::BadRequest("ids must be a list of message ids.".into())
                        })?,
                ),
            }
        }
    };
    load_subscription(&state, &identity.project, &name, &id).await?;
    let replayed = state
        .store
        .replay_dead_letters(&identity.project, &name, &id, ids.as_deref())
        .await?;
    Ok((StatusCode::ACCEPTED, Json(ReplayOut { replayed })).into_response())
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
}

/// Zaqar's 409 for a second subscription of the same subscriber to a topic.
fn subscription_exists() -> ApiError {
    ApiError::Conflict(
        "Such subscription already exists. Subscriptions are unique by project + topic + subscriber URI.".into(),
    )
}
