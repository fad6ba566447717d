//! Microversion negotiation: which `3.x` a `/v3` request asks for (parsed by
//! [`Microversion`] in `domain`), and the headers Cinder stamps on every `/v3` response.

use axum::{
    extract::Request,
    http::{header, HeaderValue},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{
    api::{is_cinder_path, RequestId},
    domain::microversion::{Microversion, MIN_VERSION},
    error::CinderError,
};

/// Header carrying the microversion, in requests and responses.
pub const VERSION_HEADER: &str = "OpenStack-API-Version";
/// First microversion with user messages, and with list parameters.
pub(super) const MESSAGES_VERSION: Microversion = Microversion::new(3, 3);
pub(super) const LIST_PARAMS_VERSION: Microversion = Microversion::new(3, 5);

/// Negotiates the microversion of every `/v3` request and stamps Cinder's headers on
/// every `/v3` response, errors included: `OpenStack-API-Version`, `Vary`,
/// `x-compute-request-id` (same id as `x-openstack-request-id`).
pub(in crate::api) async fn cinder_headers(mut req: Request, next: Next) -> Response {
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
