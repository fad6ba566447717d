//! Cinder v3 user messages: version discovery (`/`, `/v3/`), microversion negotiation
//! and headers for every `/v3` response, and list/show/delete/create of messages, each
//! with and without the project in the path (python-cinderclient uses both).

use std::{cmp::Ordering, collections::HashMap};

use axum::{
    extract::{FromRequestParts, Path, Query, Request, State},
    http::{header, request::Parts, HeaderMap, HeaderValue, StatusCode},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde::Serialize;
use utoipa::ToSchema;
use uuid::Uuid;

use super::{extract::RawBody, is_cinder_path, AppState, RequestId};
use crate::{
    auth::{AuthError, Identity},
    domain::ProjectId,
    error::{ApiError, CinderError},
    store::user_messages::UserMessage,
    user_messages::{CreateError, CreateUserMessage},
};

/// Header carrying the microversion, in requests and responses.
pub const VERSION_HEADER: &str = "OpenStack-API-Version";
/// Oldest and newest microversions (Cinder's range; python-cinderclient's maximum).
pub const MIN_VERSION: Microversion = Microversion::new(3, 0);
pub const MAX_VERSION: Microversion = Microversion::new(3, 71);
/// First microversion with user messages, and with list parameters.
const MESSAGES_VERSION: Microversion = Microversion::new(3, 3);
const LIST_PARAMS_VERSION: Microversion = Microversion::new(3, 5);
/// Date of the newest microversion, as Cinder reports it.
const VERSION_UPDATED: &str = "2023-08-31T00:00:00Z";
/// Default and largest page (Cinder's `osapi_max_limit`).
const MAX_LIMIT: usize = 1000;
/// Largest create body.
const MAX_CREATE_BODY: usize = 16 * 1024;
/// Timestamps without an offset, as Cinder prints them (always UTC).
const DATE_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6f";

/// A negotiated microversion `3.x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion {
    pub major: u32,
    pub minor: u32,
}

/// Why a requested microversion cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum VersionError {
    /// 400: not `Major.Minor`.
    Malformed(String),
    /// 406: outside `MIN_VERSION..=MAX_VERSION`.
    Unsupported(Microversion),
}

impl Microversion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Cinder's `^([1-9]\d*)\.([1-9]\d*|0)$`, or `latest`.
    fn parse(s: &str) -> Result<Self, VersionError> {
        if s.eq_ignore_ascii_case("latest") {
            return Ok(MAX_VERSION);
        }
        let number = |p: &str| {
            let ok = !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            ok.then(|| p.parse::<u32>().ok()).flatten()
        };
        let parsed = s
            .split_once('.')
            .and_then(|(a, b)| Some(Self::new(number(a)?, number(b)?)))
            .filter(|v| v.major > 0);
        parsed.ok_or_else(|| VersionError::Malformed(s.to_owned()))
    }

    /// The version a request asks for: the `volume` entry of `OpenStack-API-Version`
    /// (entries for other services are ignored); 3.0 when there is none.
    pub fn from_header(value: Option<&str>) -> Result<Self, VersionError> {
        let Some(value) = value else {
            return Ok(MIN_VERSION);
        };
        let mut found = None;
        for entry in value.split(',') {
            let mut words = entry.split_whitespace();
            if words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("volume"))
            {
                let rest: Vec<&str> = words.collect();
                found = Some(rest.join(" "));
            }
        }
        let Some(requested) = found else {
            return Ok(MIN_VERSION);
        };
        let v = Self::parse(requested.trim())?;
        if v < MIN_VERSION || v > MAX_VERSION {
            return Err(VersionError::Unsupported(v));
        }
        Ok(v)
    }
}

impl std::fmt::Display for Microversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl From<VersionError> for CinderError {
    fn from(e: VersionError) -> Self {
        match e {
            VersionError::Malformed(s) => CinderError::bad_request(format!(
                "API Version String {s} is of invalid format. Must be of format MajorNum.MinorNum."
            )),
            VersionError::Unsupported(v) => CinderError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "Version {v} is not supported by the API. Minimum is {MIN_VERSION} and maximum is {MAX_VERSION}."
                ),
            ),
        }
    }
}

/// Negotiates the microversion of every `/v3` request and stamps Cinder's headers on
/// every `/v3` response, errors included: `OpenStack-API-Version`, `Vary`,
/// `x-compute-request-id` (same id as `x-openstack-request-id`).
pub(super) async fn cinder_headers(mut req: Request, next: Next) -> Response {
    if !is_cinder_path(req.uri().path()) {
        return next.run(req).await;
    }
    let request_id = req.extensions().get::<RequestId>().cloned();
    let header = req
        .headers()
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let (version, mut res) = match Microversion::from_header(header) {
        Ok(v) => {
            req.extensions_mut().insert(v);
            (v, next.run(req).await)
        }
        Err(e) => (MIN_VERSION, CinderError::from(e).into_response()),
    };
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("volume {version}")) {
        headers.insert(VERSION_HEADER, v);
    }
    headers.insert(header::VARY, HeaderValue::from_static(VERSION_HEADER));
    if let Some(id) = request_id.and_then(|r| HeaderValue::from_str(&r.0).ok()) {
        headers.insert("x-compute-request-id", id);
    }
    res
}

/// The request's base URL (`http://host:port`), from `Host` as Cinder does, so links work
/// for the client whatever address it used.
fn base_url(headers: &HeaderMap, fallback: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && !h.contains(['/', ' ']));
    match host {
        Some(host) => {
            let proto = headers
                .get("x-forwarded-proto")
                .and_then(|h| h.to_str().ok())
                .filter(|p| matches!(*p, "http" | "https"))
                .unwrap_or("http");
            format!("{proto}://{host}")
        }
        None => fallback.trim_end_matches('/').to_owned(),
    }
}

// ---------------------------------------------------------------- version discovery

#[derive(Serialize, ToSchema)]
pub struct VersionLinkOut {
    pub rel: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub href: String,
}

#[derive(Serialize, ToSchema)]
pub struct MediaTypeOut {
    pub base: String,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Serialize, ToSchema)]
pub struct VersionOut {
    pub id: String,
    pub status: String,
    pub version: String,
    pub min_version: String,
    pub updated: String,
    pub links: Vec<VersionLinkOut>,
    #[serde(rename = "media-types")]
    pub media_types: Vec<MediaTypeOut>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionsOut {
    pub versions: Vec<VersionOut>,
}

fn versions_document(base: &str) -> VersionsOut {
    VersionsOut {
        versions: vec![VersionOut {
            id: "v3.0".into(),
            status: "CURRENT".into(),
            version: MAX_VERSION.to_string(),
            min_version: MIN_VERSION.to_string(),
            updated: VERSION_UPDATED.into(),
            links: vec![
                VersionLinkOut {
                    rel: "describedby".into(),
                    kind: Some("text/html".into()),
                    href: "https://docs.openstack.org/".into(),
                },
                VersionLinkOut {
                    rel: "self".into(),
                    kind: None,
                    href: format!("{base}/v3/"),
                },
            ],
            media_types: vec![MediaTypeOut {
                base: "application/json".into(),
                kind: "application/vnd.openstack.volume+json;version=3".into(),
            }],
        }],
    }
}

/// Every API version (Cinder's unversioned root answers 300 Multiple Choices).
#[utoipa::path(get, path = "/", tag = "user messages",
    responses((status = 300, description = "The available versions", body = VersionsOut)))]
async fn list_versions(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&headers, &state.config.public_url);
    (StatusCode::MULTIPLE_CHOICES, Json(versions_document(&base))).into_response()
}

/// The v3 API's version document, with its microversion range.
#[utoipa::path(get, path = "/v3/", tag = "user messages",
    responses((status = 200, body = VersionsOut)))]
async fn show_v3_version(State(state): State<AppState>, headers: HeaderMap) -> Json<VersionsOut> {
    Json(versions_document(&base_url(
        &headers,
        &state.config.public_url,
    )))
}

// ---------------------------------------------------------------- identity and scope

impl From<AuthError> for CinderError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingProject | AuthError::InvalidProject(_) => {
                CinderError::bad_request(e.to_string())
            }
            AuthError::MissingToken | AuthError::UnknownToken | AuthError::NotProjectScoped => {
                CinderError::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            AuthError::NoRole => CinderError::forbidden(e.to_string()),
            AuthError::IdentityUnavailable => {
                CinderError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

impl From<CreateError> for CinderError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Invalid(msg) => CinderError::bad_request(msg),
            CreateError::Store(e) => e.into(),
        }
    }
}

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

// ---------------------------------------------------------------- views

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageLinkOut {
    pub rel: String,
    pub href: String,
}

/// A user message as Cinder shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    pub event_id: String,
    pub user_message: String,
    pub message_level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uuid: Option<String>,
    /// UTC, `%Y-%m-%dT%H:%M:%S.%6f`.
    pub created_at: String,
    /// `created_at` + the message TTL.
    pub guaranteed_until: String,
    pub request_id: String,
    pub links: Vec<MessageLinkOut>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageShowOut {
    pub message: MessageOut,
}

#[derive(Serialize, ToSchema)]
pub struct MessageListOut {
    pub messages: Vec<MessageOut>,
    /// Only when another page exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_links: Option<Vec<MessageLinkOut>>,
}

/// The inside of a Cinder error body.
#[derive(Serialize, ToSchema)]
pub struct CinderFaultOut {
    pub code: u16,
    pub message: String,
}

/// A Cinder error body keyed by the fault name, e.g.
/// `{"itemNotFound": {"code": 404, "message": "..."}}`.
#[derive(Serialize, ToSchema)]
pub struct CinderErrorOut(pub HashMap<String, CinderFaultOut>);

pub fn format_date(d: &chrono::DateTime<chrono::Utc>) -> String {
    d.format(DATE_FORMAT).to_string()
}

fn view(m: UserMessage, base: &str, project: &ProjectId) -> MessageOut {
    let id = m.id.as_hyphenated().to_string();
    MessageOut {
        links: vec![
            MessageLinkOut {
                rel: "self".into(),
                href: format!("{base}/v3/{project}/messages/{id}"),
            },
            MessageLinkOut {
                rel: "bookmark".into(),
                href: format!("{base}/{project}/messages/{id}"),
            },
        ],
        id,
        event_id: m.event_id,
        user_message: m.user_message,
        message_level: m.message_level,
        resource_type: m.resource_type.filter(|s| !s.is_empty()),
        resource_uuid: m.resource_uuid.filter(|s| !s.is_empty()),
        created_at: format_date(&m.created_at),
        guaranteed_until: format_date(&m.guaranteed_until),
        request_id: m.request_id,
    }
}

// ---------------------------------------------------------------- list parameters

/// A message field usable as a sort key or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    EventId,
    UserMessage,
    MessageLevel,
    ResourceType,
    ResourceUuid,
    CreatedAt,
    GuaranteedUntil,
    RequestId,
}

impl Field {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "id" => Self::Id,
            "event_id" => Self::EventId,
            "user_message" => Self::UserMessage,
            "message_level" => Self::MessageLevel,
            "resource_type" => Self::ResourceType,
            "resource_uuid" => Self::ResourceUuid,
            "created_at" => Self::CreatedAt,
            "guaranteed_until" => Self::GuaranteedUntil,
            "request_id" => Self::RequestId,
            _ => return None,
        })
    }

    /// Filters a non-admin may use (Cinder's resource_filters for `message`).
    fn is_filter(self) -> bool {
        matches!(
            self,
            Self::ResourceUuid
                | Self::ResourceType
                | Self::EventId
                | Self::RequestId
                | Self::MessageLevel
        )
    }

    fn text(self, m: &UserMessage) -> Option<String> {
        Some(match self {
            Self::Id => m.id.as_hyphenated().to_string(),
            Self::EventId => m.event_id.clone(),
            Self::UserMessage => m.user_message.clone(),
            Self::MessageLevel => m.message_level.clone(),
            Self::ResourceType => m.resource_type.clone()?,
            Self::ResourceUuid => m.resource_uuid.clone()?,
            Self::CreatedAt => format_date(&m.created_at),
            Self::GuaranteedUntil => format_date(&m.guaranteed_until),
            Self::RequestId => m.request_id.clone(),
        })
    }

    fn cmp(self, a: &UserMessage, b: &UserMessage) -> Ordering {
        match self {
            Self::CreatedAt => a.created_at.cmp(&b.created_at),
            Self::GuaranteedUntil => a.guaranteed_until.cmp(&b.guaranteed_until),
            Self::Id => a.id.cmp(&b.id),
            // A missing value sorts first, as NULL does in Cinder's database.
            _ => self.text(a).cmp(&self.text(b)),
        }
    }
}

/// A validated 3.5+ list query.
#[derive(Debug, PartialEq)]
struct ListParams {
    limit: usize,
    marker: Option<String>,
    offset: usize,
    /// Sort keys with `true` for ascending; `created_at` and `id` end every list.
    sort: Vec<(Field, bool)>,
    filters: Vec<(Field, String)>,
}

impl Default for ListParams {
    fn default() -> Self {
        Self {
            limit: MAX_LIMIT,
            marker: None,
            offset: 0,
            sort: vec![(Field::CreatedAt, false), (Field::Id, false)],
            filters: Vec::new(),
        }
    }
}

fn parse_direction(d: &str) -> Result<bool, CinderError> {
    match d.trim().to_ascii_lowercase().as_str() {
        "" | "desc" => Ok(false),
        "asc" => Ok(true),
        _ => Err(CinderError::bad_request(
            "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'.",
        )),
    }
}

fn parse_sort_key(k: &str) -> Result<Field, CinderError> {
    Field::parse(k.trim()).ok_or_else(|| {
        CinderError::bad_request(format!("Invalid input received: Invalid sort key {k}."))
    })
}

impl ListParams {
    /// Cinder's rules for `limit`, `marker`, `offset`, `sort`/`sort_key`/`sort_dir` and
    /// the message filters (unknown filters: 400 for non-admins, ignored for admins).
    fn parse(pairs: &[(String, String)], is_admin: bool) -> Result<Self, CinderError> {
        let get = |k: &str| {
            pairs
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.trim())
        };
        let mut p = Self::default();
        if let Some(l) = get("limit") {
            let n: i64 = l
                .parse()
                .map_err(|_| CinderError::bad_request("limit param must be an integer"))?;
            if n < 0 {
                return Err(CinderError::bad_request("limit param must be positive"));
            }
            p.limit = usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
        }
        p.marker = get("marker").map(str::to_owned);
        if let Some(o) = get("offset") {
            let n: i64 = o
                .parse()
                .map_err(|_| CinderError::bad_request("offset must be an integer."))?;
            p.offset =
                usize::try_from(n).map_err(|_| CinderError::bad_request("offset must be >= 0."))?;
        }
        let (sort, key, dir) = (get("sort"), get("sort_key"), get("sort_dir"));
        let mut keys: Vec<(Field, bool)> = Vec::new();
        if let Some(sort) = sort {
            if key.is_some() || dir.is_some() {
                return Err(CinderError::bad_request(
                    "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
                ));
            }
            for item in sort.split(',') {
                let (k, d) = item.split_once(':').unwrap_or((item, ""));
                keys.push((parse_sort_key(k)?, parse_direction(d)?));
            }
        } else if key.is_some() || dir.is_some() {
            keys.push((
                parse_sort_key(key.unwrap_or("created_at"))?,
                parse_direction(dir.unwrap_or("desc"))?,
            ));
        }
        if !keys.is_empty() {
            let first_dir = keys[0].1;
            for tie in [Field::CreatedAt, Field::Id] {
                if !keys.iter().any(|(f, _)| *f == tie) {
                    keys.push((tie, first_dir));
                }
            }
            p.sort = keys;
        }
        // `all_tenants` is ignored as Cinder does (cinderclient's find sends it); the
        // list stays scoped to one project.
        let reserved = [
            "limit",
            "marker",
            "offset",
            "sort",
            "sort_key",
            "sort_dir",
            "all_tenants",
        ];
        let mut invalid = Vec::new();
        for (k, v) in pairs {
            if reserved.contains(&k.as_str()) {
                continue;
            }
            match Field::parse(k).filter(|f| f.is_filter()) {
                Some(f) => p.filters.push((f, v.clone())),
                None if is_admin => {}
                None => invalid.push(k.as_str()),
            }
        }
        if !invalid.is_empty() {
            return Err(CinderError::bad_request(format!(
                "Invalid filters {} are found in query options.",
                invalid.join(",")
            )));
        }
        Ok(p)
    }

    fn order(&self, a: &UserMessage, b: &UserMessage) -> Ordering {
        for (field, asc) in &self.sort {
            let o = field.cmp(a, b);
            let o = if *asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    fn matches(&self, m: &UserMessage) -> bool {
        self.filters
            .iter()
            .all(|(f, v)| f.text(m).as_deref() == Some(v.as_str()))
    }

    /// Filters, sorts and cuts one page; also says whether another page follows.
    fn page(&self, all: Vec<UserMessage>) -> Result<(Vec<UserMessage>, bool), CinderError> {
        let marker = match &self.marker {
            None => None,
            Some(id) => Some(
                all.iter()
                    .find(|m| m.id.as_hyphenated().to_string() == *id)
                    .cloned()
                    .ok_or_else(|| {
                        CinderError::not_found(format!("Marker {id} could not be found."))
                    })?,
            ),
        };
        let mut list: Vec<UserMessage> = all
            .into_iter()
            .filter(|m| self.matches(m))
            .filter(|m| {
                marker
                    .as_ref()
                    .is_none_or(|mk| self.order(m, mk) == Ordering::Greater)
            })
            .collect();
        list.sort_by(|a, b| self.order(a, b));
        let rest: Vec<UserMessage> = list.into_iter().skip(self.offset).collect();
        let more = rest.len() > self.limit;
        Ok((rest.into_iter().take(self.limit).collect(), more))
    }
}

/// The query string as pairs, rejected in Cinder's shape when malformed.
pub struct CinderQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for CinderQuery {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, CinderError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| CinderError::bad_request(format!("Malformed query string: {e}")))
    }
}

// ---------------------------------------------------------------- handlers

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
async fn list_messages(
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
        Some(last) if more => {
            let mut next = form_urlencoded::Serializer::new(String::new());
            for (k, v) in query.iter().filter(|(k, _)| k != "marker" && k != "offset") {
                next.append_pair(k, v);
            }
            next.append_pair("marker", &last.id.as_hyphenated().to_string());
            Some(vec![MessageLinkOut {
                rel: "next".into(),
                href: format!("{base}/v3/{}/messages?{}", scope.project, next.finish()),
            }])
        }
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

/// List the caller's messages (project from the identity).
#[utoipa::path(get, path = "/v3/messages", tag = "user messages",
    params(("OpenStack-API-Version" = Option<String>, Header),
        ("limit" = Option<usize>, Query), ("marker" = Option<String>, Query),
        ("offset" = Option<usize>, Query), ("sort" = Option<String>, Query)),
    responses((status = 200, body = MessageListOut), (status = 400, body = CinderErrorOut),
        (status = 404, body = CinderErrorOut), (status = 503, body = CinderErrorOut)))]
async fn list_own_messages(
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
async fn show_message(
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
async fn show_own_message(
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
async fn delete_message(
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
async fn delete_own_message(
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
async fn create_message(
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

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(list_versions))
        .route("/v3", get(show_v3_version))
        .route("/v3/", get(show_v3_version))
        .route("/v3/messages", get(list_own_messages))
        .route(
            "/v3/messages/{id}",
            get(show_own_message).delete(delete_own_message),
        )
        .route(
            "/v3/{project_id}/messages",
            get(list_messages).post(create_message),
        )
        .route(
            "/v3/{project_id}/messages/{id}",
            get(show_message).delete(delete_message),
        )
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn microversions_are_negotiated_as_cinder_does() {
        let v = |h: Option<&str>| Microversion::from_header(h);
        assert_eq!(v(None), Ok(MIN_VERSION));
        assert_eq!(v(Some("volume 3.5")), Ok(Microversion::new(3, 5)));
        assert_eq!(v(Some("volume latest")), Ok(MAX_VERSION));
        assert_eq!(v(Some("compute 2.1")), Ok(MIN_VERSION), "another service");
        assert_eq!(
            v(Some("compute 2.1, volume 3.40")),
            Ok(Microversion::new(3, 40))
        );
        assert_eq!(
            v(Some("volume 3.72")),
            Err(VersionError::Unsupported(Microversion::new(3, 72)))
        );
        assert_eq!(
            v(Some("volume 2.0")),
            Err(VersionError::Unsupported(Microversion::new(2, 0)))
        );
        for bad in [
            "volume 3",
            "volume 3.x",
            "volume 3.05",
            "volume",
            "volume 0.1",
        ] {
            assert!(
                matches!(v(Some(bad)), Err(VersionError::Malformed(_))),
                "{bad} is malformed"
            );
        }
    }

    #[test]
    fn dates_have_microseconds_and_no_offset() {
        let d =
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(7);
        assert_eq!(format_date(&d), "2026-01-02T03:04:05.000007");
    }

    #[test]
    fn list_parameters_follow_cinders_rules() {
        let p = ListParams::parse(&pairs(&[]), false).unwrap();
        assert_eq!(p, ListParams::default());

        let p = ListParams::parse(
            &pairs(&[
                ("limit", "5000"),
                ("offset", "2"),
                ("marker", "m"),
                ("event_id", "E"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(p.limit, MAX_LIMIT, "capped");
        assert_eq!(p.offset, 2);
        assert_eq!(p.marker.as_deref(), Some("m"));
        assert_eq!(p.filters, vec![(Field::EventId, "E".to_owned())]);

        let p = ListParams::parse(&pairs(&[("sort", "event_id:asc,created_at")]), false).unwrap();
        assert_eq!(
            p.sort,
            vec![
                (Field::EventId, true),
                (Field::CreatedAt, false),
                (Field::Id, true)
            ]
        );
        let p = ListParams::parse(&pairs(&[("sort_key", "request_id")]), false).unwrap();
        assert_eq!(p.sort[0], (Field::RequestId, false));

        for bad in [
            vec![("limit", "x")],
            vec![("limit", "-1")],
            vec![("offset", "-3")],
            vec![("sort", "nope")],
            vec![("sort", "created_at:up")],
            vec![("sort", "id"), ("sort_key", "id")],
            vec![("sort_dir", "sideways")],
            vec![("project_id", "p")],
        ] {
            let err = ListParams::parse(&pairs(&bad), false).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let err = ListParams::parse(&pairs(&[("foo", "1"), ("bar", "2")]), false).unwrap_err();
        assert_eq!(
            err.message,
            "Invalid filters foo,bar are found in query options."
        );
        assert!(
            ListParams::parse(&pairs(&[("foo", "1")]), true).is_ok(),
            "admins may pass other filters"
        );
    }

    fn message(n: u8, event: &str) -> UserMessage {
        let created = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, n.into()).unwrap();
        UserMessage {
            id: Uuid::from_bytes([n; 16]),
            project_id: "p".into(),
            event_id: event.into(),
            user_message: "m".into(),
            message_level: "ERROR".into(),
            resource_type: Some("SUBSCRIPTION".into()),
            resource_uuid: None,
            request_id: format!("req-{n}"),
            created_at: created,
            guaranteed_until: created + chrono::Duration::days(30),
        }
    }

    #[test]
    fn pages_follow_the_sort_order_the_marker_and_the_offset() {
        let all: Vec<UserMessage> = (1..=5).map(|n| message(n, "E")).collect();
        let ids = |v: &[UserMessage]| v.iter().map(|m| m.id.as_bytes()[0]).collect::<Vec<_>>();

        let p = ListParams::parse(&pairs(&[("limit", "2")]), false).unwrap();
        let (page, more) = p.page(all.clone()).unwrap();
        assert_eq!(ids(&page), vec![5, 4], "newest first by default");
        assert!(more);

        let marker = Uuid::from_bytes([4; 16]).to_string();
        let p = ListParams::parse(
            &pairs(&[("limit", "2"), ("marker", &marker), ("offset", "1")]),
            false,
        )
        .unwrap();
        let (page, more) = p.page(all.clone()).unwrap();
        assert_eq!(ids(&page), vec![2, 1]);
        assert!(!more);

        let p = ListParams::parse(&pairs(&[("sort", "created_at:asc"), ("limit", "5")]), false)
            .unwrap();
        let (page, more) = p.page(all.clone()).unwrap();
        assert_eq!(ids(&page), vec![1, 2, 3, 4, 5]);
        assert!(!more, "exactly one full page: no next link");

        let p = ListParams::parse(&pairs(&[("marker", "unknown")]), false).unwrap();
        assert_eq!(
            p.page(all).unwrap_err().status,
            StatusCode::NOT_FOUND,
            "unknown marker"
        );
    }
}
