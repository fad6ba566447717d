//! The user message handlers: who calls on which project at which microversion
//! ([`Scope`]), and list/show/delete/create, each with and without the project in the path
//! (python-cinderclient uses both).

use std::collections::HashMap;

use axum::{
    extract::{FromRequestParts, Path, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use uuid::Uuid;

use super::{
    discovery::base_url,
    list_params::{CinderQuery, ListParams},
    microversion::{LIST_PARAMS_VERSION, MESSAGES_VERSION},
    views::{view, MessageLinkOut, MessageListOut, MessageShowOut},
};
use crate::{
    api::{extract::RawBody, AppState},
    auth::Identity,
    domain::{
        microversion::{Microversion, MIN_VERSION},
        ProjectId,
    },
    error::{ApiError, CinderError, CinderErrorOut},
    store::user_messages::UserMessage,
    user_messages::CreateUserMessage,
};

/// Largest create body.
const MAX_CREATE_BODY: usize = 16 * 1024;

fn resource_not_found() -> CinderError {
    CinderError::not_found("The resource could not be found.")
}

fn message_not_found(id: &str) -> CinderError {
    CinderError::not_found(format!("Message {id} could not be found."))
}

fn policy_forbids(action: &str) -> CinderError {
    CinderError::forbidden(format!(
        "Policy doesn't allow message:{action} to be performed."
    ))
}

/// Who calls, on which project, at which microversion (3.3 or later, else 404).
/// The project is the path's `{project_id}` when present: it must be the caller's own
/// unless the caller is an admin ("Malformed request url" otherwise, as Cinder says).
pub struct Scope {
    pub identity: Identity,
    pub project: ProjectId,
    pub version: Microversion,
    /// The path's `{id}`, for routes that have one.
    pub id: Option<String>,
}

impl FromRequestParts<AppState> for Scope {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, CinderError> {
        let identity = state.auth.resolve(&parts.headers).await?;
        let version = parts
            .extensions
            .get::<Microversion>()
            .copied()
            .unwrap_or(MIN_VERSION);
        if version < MESSAGES_VERSION {
            return Err(resource_not_found());
        }
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| resource_not_found())?;
        let project = match params.get("project_id") {
            None => identity.project.clone(),
            Some(p) if p == identity.project.as_str() => identity.project.clone(),
            Some(p) if identity.is_admin() => ProjectId::parse(p)
                .map_err(|_| CinderError::bad_request("Malformed request url"))?,
            Some(_) => return Err(CinderError::bad_request("Malformed request url")),
        };
        Ok(Self {
            identity,
            project,
            version,
            id: params.get("id").cloned(),
        })
    }
}

impl Scope {
    /// The path's message id as a UUID; anything else cannot exist (404).
    fn message_id(&self) -> Result<Uuid, CinderError> {
        let raw = self.id.as_deref().unwrap_or_default();
        Uuid::parse_str(raw).map_err(|_| message_not_found(raw))
    }
}

/// List the project's messages (3.5+: filters, sort, paging).
#[utoipa::path(get, path = "/v3/{project_id}/messages", tag = "user messages",
    params(("project_id" = String, Path, description = "The caller's project (admins: any)"),
        ("OpenStack-API-Version" = Option<String>, Header, description = "volume 3.3 .. volume 3.71, or latest"),
        ("limit" = Option<usize>, Query, description = "3.5+: 0..1000, default 1000"),
        ("marker" = Option<String>, Query), ("offset" = Option<usize>, Query),
        ("sort" = Option<String>, Query, description = "key[:asc|desc],..., default created_at:desc"),
        ("sort_key" = Option<String>, Query), ("sort_dir" = Option<String>, Query),
        ("resource_uuid" = Option<String>, Query), ("resource_type" = Option<String>, Query),
        ("event_id" = Option<String>, Query), ("request_id" = Option<String>, Query),
        ("message_level" = Option<String>, Query)),
    responses((status = 200, body = MessageListOut), (status = 400, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 406, body = CinderErrorOut),
        (status = 503, body = CinderErrorOut)))]
pub(super) async fn list_messages(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    CinderQuery(query): CinderQuery,
) -> Result<Json<MessageListOut>, CinderError> {
    let params = if scope.version >= LIST_PARAMS_VERSION {
        ListParams::parse(&query, scope.identity.is_admin())?
    } else {
        ListParams::default()
    };
    let all = state.store.list_user_messages(&scope.project).await?;
    let (page, more) = params.page(all)?;
    let base = base_url(&headers, &state.config.public_url);
    let messages_links = match page.last() {
        Some(last) if more => Some(vec![next_link(&base, &scope.project, &query, last)]),
        _ => None,
    };
    Ok(Json(MessageListOut {
        messages: page
            .into_iter()
            .map(|m| view(m, &base, &scope.project))
            .collect(),
        messages_links,
    }))
}

/// The `next` link of a page ending at `last`: the same query with `marker` moved on and
/// `offset` dropped.
fn next_link(
    base: &str,
    project: &ProjectId,
    query: &[(String, String)],
    last: &UserMessage,
) -> MessageLinkOut {
    let mut next = form_urlencoded::Serializer::new(String::new());
    for (k, v) in query.iter().filter(|(k, _)| k != "marker" && k != "offset") {
        next.append_pair(k, v);
    }
    next.append_pair("marker", &last.id.as_hyphenated().to_string());
    MessageLinkOut {
        rel: "next".into(),
        href: format!("{base}/v3/{project}/messages?{}", next.finish()),
    }
}

/// List the caller's messages (project from the identity).
#[utoipa::path(get, path = "/v3/messages", tag = "user messages",
    params(("OpenStack-API-Version" = Option<String>, Header),
        ("limit" = Option<usize>, Query), ("marker" = Option<String>, Query),
        ("offset" = Option<usize>, Query), ("sort" = Option<String>, Query)),
    responses((status = 200, body = MessageListOut), (status = 400, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(super) async fn list_own_messages(
    state: State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    query: CinderQuery,
) -> Result<Json<MessageListOut>, CinderError> {
    list_messages(state, scope, headers, query).await
}

/// Show one message.
#[utoipa::path(get, path = "/v3/{project_id}/messages/{id}", tag = "user messages",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 200, body = MessageShowOut), (status = 400, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(super) async fn show_message(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
) -> Result<Json<MessageShowOut>, CinderError> {
    let id = scope.message_id()?;
    let message = state
        .store
        .get_user_message(&scope.project, &id)
        .await?
        .ok_or_else(|| message_not_found(&id.to_string()))?;
    let base = base_url(&headers, &state.config.public_url);
    Ok(Json(MessageShowOut {
        message: view(message, &base, &scope.project),
    }))
}

/// Show one of the caller's messages (project from the identity).
#[utoipa::path(get, path = "/v3/messages/{id}", tag = "user messages",
    params(("id" = String, Path), ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 200, body = MessageShowOut), (status = 404, body = CinderErrorOut),
        (status = 503, body = CinderErrorOut)))]
pub(super) async fn show_own_message(
    state: State<AppState>,
    scope: Scope,
    headers: HeaderMap,
) -> Result<Json<MessageShowOut>, CinderError> {
    show_message(state, scope, headers).await
}

/// Delete one message (`member` or `admin`).
#[utoipa::path(delete, path = "/v3/{project_id}/messages/{id}", tag = "user messages",
    params(("project_id" = String, Path), ("id" = String, Path),
        ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = 400, body = CinderErrorOut),
        (status = 403, body = CinderErrorOut), (status = 404, body = CinderErrorOut),
        (status = 503, body = CinderErrorOut)))]
pub(super) async fn delete_message(
    State(state): State<AppState>,
    scope: Scope,
) -> Result<StatusCode, CinderError> {
    let id = scope.message_id()?;
    if !scope.identity.can_write() {
        // As Cinder: an absent message is 404 before the policy check.
        return match state.store.get_user_message(&scope.project, &id).await? {
            Some(_) => Err(policy_forbids("delete")),
            None => Err(message_not_found(&id.to_string())),
        };
    }
    if state.store.delete_user_message(&scope.project, &id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(message_not_found(&id.to_string()))
    }
}

/// Delete one of the caller's messages (project from the identity).
#[utoipa::path(delete, path = "/v3/messages/{id}", tag = "user messages",
    params(("id" = String, Path), ("OpenStack-API-Version" = Option<String>, Header)),
    responses((status = 204, description = "Deleted"), (status = 403, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(super) async fn delete_own_message(
    state: State<AppState>,
    scope: Scope,
) -> Result<StatusCode, CinderError> {
    delete_message(state, scope).await
}

/// Create a message from the permitted messages catalog (`admin` only; *Herald*).
#[utoipa::path(post, path = "/v3/{project_id}/messages", tag = "user messages",
    params(("project_id" = String, Path), ("OpenStack-API-Version" = Option<String>, Header)),
    request_body = CreateUserMessage,
    responses((status = 201, body = MessageShowOut, headers(("Location" = String))),
        (status = 400, body = CinderErrorOut), (status = 403, body = CinderErrorOut),
        (status = 413, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
pub(super) async fn create_message(
    State(state): State<AppState>,
    scope: Scope,
    headers: HeaderMap,
    body: Result<RawBody, ApiError>,
) -> Result<Response, CinderError> {
    if !scope.identity.is_admin() {
        return Err(policy_forbids("create"));
    }
    let doc: serde_json::Value = body?.limit(MAX_CREATE_BODY)?.json()?;
    if let Some((key, _)) = doc
        .as_object()
        .and_then(|o| o.iter().find(|(_, v)| !(v.is_string() || v.is_null())))
    {
        return Err(CinderError::bad_request(format!("{key} must be a string.")));
    }
    let mut req: CreateUserMessage = serde_json::from_value(doc)
        .map_err(|e| CinderError::bad_request(format!("Invalid user message: {e}.")))?;
    match &req.project_id {
        Some(p) if p != scope.project.as_str() => {
            return Err(CinderError::bad_request(
                "project_id in the body does not match the project in the URL.",
            ))
        }
        _ => req.project_id = Some(scope.project.to_string()),
    }
    let message = state.user_messages.create(req).await?;
    let base = base_url(&headers, &state.config.public_url);
    let out = view(message, &base, &scope.project);
    let location = out.links[0].href.clone();
    let mut res = (StatusCode::CREATED, Json(MessageShowOut { message: out })).into_response();
    if let Ok(v) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    Ok(res)
}
