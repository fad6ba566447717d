//! The REST surface: one module per resource, merged here with the cross-cutting layers
//! (request ids, metrics, body limit, timeouts, JSON errors for every failure).

pub mod extract;
mod messages;
mod ops;
mod subscriptions;
mod topics;
mod user_messages;

use std::{sync::Arc, time::Instant};

use axum::{
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

use crate::{
    auth::Authenticator,
    config::Config,
    delivery::Outbound,
    error::{ApiError, CinderError},
    store::Store,
    user_messages::UserMessages,
};

pub use ops::ApiDoc;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl AppState {
    pub fn new(shared: Shared) -> Self {
        Self(Arc::new(shared))
    }
}

/// Cloning the state per request is one reference count, not a clone of every client.
impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
pub struct Shared {
    pub store: Store,
    pub auth: Authenticator,
    pub config: Arc<Config>,
    pub metrics: PrometheusHandle,
    /// The one create path of user messages (catalog + store).
    pub user_messages: UserMessages,
    /// Outbound clients (subscription confirmations are sent from the API).
    pub outbound: Outbound,
}

/// The request id of the current request (`req-<uuid>`), as Cinder and Zaqar name them.
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub fn router(state: AppState) -> Router {
    let max_body = state.config.max_body_bytes;
    let timeout = state.config.request_timeout();
    Router::new()
        .merge(ops::router())
        .merge(topics::router())
        .merge(user_messages::router())
        .merge(messages::router())
        .merge(subscriptions::router())
        .route_layer(middleware::from_fn(record_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn(json_errors))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(|_| {
            ApiError::Internal(anyhow::anyhow!("handler panicked")).into_response()
        }))
        .layer(middleware::from_fn(user_messages::cinder_headers))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Is this path served with Cinder's error shape?
fn is_cinder_path(path: &str) -> bool {
    path == "/v3" || path.starts_with("/v3/")
}

async fn not_found(req: Request) -> Response {
    if is_cinder_path(req.uri().path()) {
        CinderError::not_found("The resource could not be found.").into_response()
    } else {
        ApiError::not_found().into_response()
    }
}

async fn method_not_allowed(req: Request) -> Response {
    let msg = format!(
        "The method {} is not allowed on this resource.",
        req.method()
    );
    if is_cinder_path(req.uri().path()) {
        CinderError::new(StatusCode::METHOD_NOT_ALLOWED, msg).into_response()
    } else {
        ApiError::MethodNotAllowed(msg).into_response()
    }
}

/// Gives every error response a JSON body of the route family's shape, whatever layer
/// produced it (timeouts, limits, 405s from the router).
async fn json_errors(req: Request, next: Next) -> Response {
    let cinder = is_cinder_path(req.uri().path());
    let res = next.run(req).await;
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return res;
    }
    let msg = status.canonical_reason().unwrap_or("Error").to_owned();
    let (parts, _) = res.into_parts();
    let mut fresh = if cinder {
        CinderError::new(status, msg).into_response()
    } else {
        let e = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge(msg),
            StatusCode::METHOD_NOT_ALLOWED => ApiError::MethodNotAllowed(msg),
            StatusCode::SERVICE_UNAVAILABLE => {
                ApiError::Unavailable("The request did not complete in time; retry later.".into())
            }
            StatusCode::NOT_FOUND => ApiError::not_found(),
            _ => ApiError::BadRequest(msg),
        };
        let mut r = e.into_response();
        *r.status_mut() = status;
        r
    };
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(k.clone(), v.clone());
        }
    }
    fresh
}

/// Request id, tracing span and HTTP metrics for every request.
async fn observe(State(_state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let id = format!("req-{}", uuid::Uuid::new_v4());
    req.extensions_mut().insert(RequestId(id.clone()));
    let method = req.method().clone();
    let slot = RouteSlot::default();
    req.extensions_mut().insert(slot.clone());
    let span = tracing::info_span!("http", request_id = %id, %method, path = %req.uri().path());
    let mut res = {
        let _enter = span.enter();
        tracing::debug!("request");
        drop(_enter);
        tracing::Instrument::instrument(next.run(req), span.clone()).await
    };
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    let route = slot
        .0
        .get()
        .cloned()
        .unwrap_or_else(|| "unmatched".to_owned());
    span.in_scope(|| {
        tracing::info!(status, latency_ms = elapsed.as_secs_f64() * 1e3, "response");
    });
    let labels = [
        ("method", method_label(&method)),
        ("route", route),
        ("status", status.to_string()),
    ];
    metrics::counter!("herald_http_requests_total", &labels).increment(1);
    metrics::histogram!("herald_http_request_duration_seconds", &labels[..2])
        .record(elapsed.as_secs_f64());
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert("x-openstack-request-id", v);
    }
    res
}

/// Carries the matched route template from the router back out to [`observe`], so metrics
/// are labelled by route and not by raw path.
#[derive(Clone, Default)]
struct RouteSlot(Arc<std::sync::OnceLock<String>>);

async fn record_route(req: Request, next: Next) -> Response {
    if let (Some(slot), Some(path)) = (
        req.extensions().get::<RouteSlot>(),
        req.extensions().get::<MatchedPath>(),
    ) {
        let _ = slot.0.set(path.as_str().to_owned());
    }
    next.run(req).await
}

fn method_label(m: &Method) -> String {
    m.as_str().to_owned()
}

/// A 201/204-style empty response with a `Location` header.
pub(crate) fn created_at(status: StatusCode, location: &str) -> Response {
    let mut res = (status, Body::empty()).into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}
