//! The REST surface: one module per resource, merged here with the cross-cutting layers
//! (request ids, metrics, body limit, timeouts, JSON errors for every failure).

pub(crate) mod attempts;
pub(crate) mod cinder;
pub mod extract;
pub(crate) mod messages;
mod ops;
mod subscriptions;
pub(crate) mod topics;

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::Instant,
};

use axum::{
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{header, HeaderValue, Method, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    Router,
};
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

use crate::{
    auth::Authenticator,
    config::Config,
    console::Console,
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
    /// The web console's sessions and metrics history.
    pub console: Console,
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
        .merge(cinder::router())
        .merge(messages::router())
        .merge(subscriptions::router())
        .merge(attempts::router())
        .merge(crate::console::router())
        .route_layer(middleware::from_fn(record_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(DefaultBodyLimit::max(max_body))
        // A bare 500: `json_errors` gives it the route family's shape and logs it once.
        .layer(CatchPanicLayer::custom(|_| {
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }))
        .layer(middleware::from_fn(json_errors))
        .layer(middleware::map_response_with_state(
            state.clone(),
            www_authenticate,
        ))
        .layer(middleware::from_fn(cinder::cinder_headers))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Every 401 tells the client where to authenticate (`auth_mode = keystone`), as
/// keystonemiddleware does.
async fn www_authenticate(State(state): State<AppState>, mut res: Response) -> Response {
    if res.status() == StatusCode::UNAUTHORIZED {
        if let Some(keystone) = state.auth.keystone() {
            res.headers_mut()
                .insert(header::WWW_AUTHENTICATE, keystone.challenge().clone());
        }
    }
    res
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

/// Largest total size of a request's header names and values. Beyond it Herald answers 431
/// with a JSON body; beyond hyper's own buffer (about 400 KiB, or more than 100 headers)
/// hyper answers a bare 431 and closes the connection before Herald sees the request.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// Gives every error response a JSON body of the route family's shape, whatever layer
/// produced it (timeouts, limits, panics, 405s from the router). It sits outside the
/// timeout layer, so it also sees that layer's bare 503: when the request body had not
/// fully arrived by then, the client was too slow (408, connection closed); otherwise
/// Herald was (503).
async fn json_errors(req: Request, next: Next) -> Response {
    // The console answers its errors with HTML pages of its own.
    if crate::console::is_console_path(req.uri().path()) {
        return next.run(req).await;
    }
    let cinder = is_cinder_path(req.uri().path());
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        let e = ApiError::HeadersTooLarge(format!(
            "The request headers are larger than {MAX_HEADER_BYTES} bytes."
        ));
        return family_response(cinder, e);
    }
    let (req, body_done) = track_body(req);
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
    let (parts, _) = res.into_parts();
    let body_timed_out =
        status == StatusCode::SERVICE_UNAVAILABLE && !body_done.load(Ordering::Acquire);
    let e = replacement_error(status, body_timed_out);
    let status = e.status();
    let mut fresh = family_response(cinder, e);
    for (k, v) in parts.headers.iter() {
        if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
            fresh.headers_mut().insert(k.clone(), v.clone());
        }
    }
    if status == StatusCode::REQUEST_TIMEOUT {
        // The rest of the body is never read: tell the client the connection ends here.
        fresh
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    fresh
}

/// The error body of the route family: Cinder's shape under `/v3`, Zaqar's elsewhere.
fn family_response(cinder: bool, e: ApiError) -> Response {
    if cinder {
        CinderError::from(e).into_response()
    } else {
        e.into_response()
    }
}

/// The JSON error that replaces a bodiless error response of `status`.
fn replacement_error(status: StatusCode, body_timed_out: bool) -> ApiError {
    match status {
        _ if body_timed_out => ApiError::RequestTimeout(
            "The request body did not arrive in time; the connection is closed.".into(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::PayloadTooLarge("The request body is larger than allowed.".into())
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            ApiError::MethodNotAllowed("The method is not allowed on this resource.".into())
        }
        StatusCode::SERVICE_UNAVAILABLE => {
            ApiError::Unavailable("The request did not complete in time; retry later.".into())
        }
        StatusCode::NOT_FOUND => ApiError::not_found(),
        StatusCode::INTERNAL_SERVER_ERROR => {
            ApiError::Internal(anyhow::anyhow!("a handler panicked"))
        }
        _ => ApiError::BadRequest(status.canonical_reason().unwrap_or("Error").to_owned()),
    }
}

/// Wraps the request body so that [`json_errors`] can tell whether it arrived in full.
fn track_body(req: Request) -> (Request, Arc<AtomicBool>) {
    let (parts, body) = req.into_parts();
    let done = Arc::new(AtomicBool::new(body.is_end_stream()));
    let tracked = TrackedBody {
        inner: body,
        done: done.clone(),
    };
    (Request::from_parts(parts, Body::new(tracked)), done)
}

/// A request body that flags its end once read.
struct TrackedBody {
    inner: Body,
    done: Arc<AtomicBool>,
}

impl HttpBody for TrackedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.done.store(true, Ordering::Release);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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
    with_location((status, Body::empty()).into_response(), location)
}

/// `res` with a `Location` header (none when `location` is not a valid header value).
pub(crate) fn with_location(mut res: Response, location: &str) -> Response {
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(header::LOCATION, v);
    }
    res
}
