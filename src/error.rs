//! The API's error types: [`ApiError`] for `/v2` (Zaqar's `{"title", "description"}`) and
//! [`CinderError`] for `/v3` (`{"itemNotFound": {"code", "message"}}`). Each maps to a status
//! and a stable body; internal failures are logged once here and answered opaquely.

use std::collections::HashMap;

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use serde_json::json;
use utoipa::ToSchema;

use crate::{
    auth::AuthError,
    domain::microversion::{VersionError, MAX_VERSION, MIN_VERSION},
    domain::Invalid,
    store::{errors::Limit, StoreError},
    user_messages::CreateError,
};

/// An error of the Zaqar-style `/v2` API (and of the operations routes).
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A request document that is well-formed JSON but not a valid one (Zaqar's
    /// `HTTPBadRequestBody`, e.g. a bad JSON-patch operation).
    #[error("{0}")]
    BadRequestBody(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    HeadersTooLarge(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) | Self::BadRequestBody(_) => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Self::HeadersTooLarge(_) => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Zaqar's titles.
    pub fn title(&self) -> &'static str {
        match self {
            Self::BadRequest(_) => "Invalid API request",
            Self::BadRequestBody(_) => "Invalid request body",
            Self::Unauthorized(_) | Self::Forbidden(_) => "Not authorized",
            Self::NotFound(_) => "Not found",
            Self::MethodNotAllowed(_) => "Method not allowed",
            Self::RequestTimeout(_) => "Request timeout",
            Self::HeadersTooLarge(_) => "Request headers too large",
            Self::Conflict(_) => "Resource conflict",
            Self::PayloadTooLarge(_) => "Request body too large",
            Self::UnsupportedMediaType(_) => "Unsupported media type",
            Self::Unavailable(_) => "Service temporarily unavailable",
            Self::Internal(_) => "Internal server error",
        }
    }

    pub fn not_found() -> Self {
        Self::NotFound("The requested resource could not be found.".into())
    }

    pub fn topic_not_found() -> Self {
        Self::NotFound("Topic could not be found.".into())
    }
}

impl From<Invalid> for ApiError {
    fn from(e: Invalid) -> Self {
        Self::BadRequest(e.0)
    }
}

/// The status a store failure answers with: only real unavailability is "not reachable";
/// a JetStream refusal says what JetStream said. Never 500.
pub fn store_error_status(e: &StoreError) -> StatusCode {
    match e {
        StoreError::NotFound => StatusCode::NOT_FOUND,
        StoreError::Conflict(_) => StatusCode::CONFLICT,
        StoreError::LimitReached {
            limit: Limit::Consumers,
            ..
        } => StatusCode::SERVICE_UNAVAILABLE,
        StoreError::LimitReached { .. } => StatusCode::FORBIDDEN,
        StoreError::Unavailable(_) | StoreError::Exhausted(_) | StoreError::Refused { .. } => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => Self::not_found(),
            StoreError::Conflict(msg) => Self::Conflict(msg),
            StoreError::Unavailable(_) => {
                tracing::warn!(error.cause_chain = ?e, error.message = %e, "store unavailable");
                Self::Unavailable(
                    "NATS JetStream is not reachable right now; nothing was changed. Retry later."
                        .into(),
                )
            }
            StoreError::LimitReached {
                limit: Limit::Consumers,
                ..
            } => {
                tracing::warn!(error.cause_chain = ?e, error.message = %e, "JetStream limit");
                Self::Unavailable(
                    "JetStream refused: maximum consumers limit reached. Retry later.".into(),
                )
            }
            StoreError::LimitReached { ref limit, .. } => {
                tracing::info!(error.cause_chain = ?e, error.message = %e, "JetStream limit");
                Self::Forbidden(match limit {
                    Limit::Subscriptions { max: Some(n) } => format!(
                        "Subscription quota exceeded: a topic may hold at most {n} subscriptions."
                    ),
                    Limit::Subscriptions { max: None } | Limit::Consumers => {
                        "Subscription quota exceeded: the topic holds as many subscriptions as \
                         JetStream allows (maximum consumers)."
                            .into()
                    }
                    Limit::Streams => "Topic quota exceeded: the NATS account holds as many \
                                       streams as JetStream allows (maximum streams)."
                        .into(),
                    Limit::Storage => "Storage quota exceeded: JetStream refused the request \
                                       (storage limit reached)."
                        .into(),
                })
            }
            StoreError::Exhausted(_) => {
                tracing::warn!(error.cause_chain = ?e, error.message = %e, "JetStream exhausted");
                Self::Unavailable("JetStream refused: insufficient resources. Retry later.".into())
            }
            StoreError::Refused { .. } => {
                tracing::warn!(error.cause_chain = ?e, error.message = %e, "JetStream refused");
                Self::Unavailable(format!("{e}."))
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let description = match &self {
            Self::Internal(e) => {
                tracing::error!(error.cause_chain = ?e, error.message = %e, "internal error");
                "An unexpected error prevented the server from fulfilling your request.".to_owned()
            }
            other => other.to_string(),
        };
        let body = json!({ "title": self.title(), "description": description });
        (self.status(), Json(body)).into_response()
    }
}

/// An error of the Cinder-style `/v3` API.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CinderError {
    pub status: StatusCode,
    pub message: String,
}

impl CinderError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, message)
    }

    /// Cinder's fault names by status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            400 => "badRequest",
            401 => "unauthorized",
            403 => "forbidden",
            404 => "itemNotFound",
            405 => "badMethod",
            406 => "notAcceptable",
            409 => "conflictingRequest",
            413 => "overLimit",
            415 => "badMediaType",
            503 => "serviceUnavailable",
            _ => "computeFault",
        }
    }
}

/// Through [`ApiError`], so a store failure gets the same status, text and log line on
/// both families, and any 500 is logged once, in `From<ApiError>`.
impl From<StoreError> for CinderError {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

/// The one place a `/v3` 500 is made: its cause is logged here, once, and the caller gets
/// Cinder's opaque text.
impl From<ApiError> for CinderError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Internal(e) => {
                tracing::error!(error.cause_chain = ?e, error.message = %e, "internal error");
                Self::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "The server has either erred or is incapable of performing the requested operation.",
                )
            }
            other => Self::new(other.status(), other.to_string()),
        }
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

impl IntoResponse for CinderError {
    fn into_response(self) -> Response {
        let body =
            json!({ self.kind(): { "code": self.status.as_u16(), "message": self.message } });
        (self.status, Json(body)).into_response()
    }
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

#[cfg(test)]
mod tests {
    use async_nats::jetstream;

    use super::*;

    fn consumer_limit() -> jetstream::Error {
        serde_json::from_value(json!({"code": 400, "err_code": 10026,
            "description": "maximum consumers limit reached"}))
        .unwrap()
    }

    #[test]
    fn a_subscription_quota_is_403_naming_the_limit_and_an_internal_consumer_limit_is_503() {
        let quota = ApiError::from(StoreError::LimitReached {
            limit: Limit::Subscriptions { max: Some(3) },
            source: consumer_limit(),
        });
        assert_eq!(quota.status(), StatusCode::FORBIDDEN);
        assert_eq!(
            quota.to_string(),
            "Subscription quota exceeded: a topic may hold at most 3 subscriptions."
        );
        let internal = ApiError::from(StoreError::LimitReached {
            limit: Limit::Consumers,
            source: consumer_limit(),
        });
        assert_eq!(internal.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(!internal.to_string().contains("not reachable"));
    }

    #[test]
    fn a_refusal_is_503_with_its_code_and_never_not_reachable() {
        let e = StoreError::Refused {
            code: 10110,
            description: "stream purge not permitted".into(),
        };
        assert_eq!(store_error_status(&e), StatusCode::SERVICE_UNAVAILABLE);
        let api = ApiError::from(e);
        assert_eq!(
            api.to_string(),
            "JetStream refused the request (code 10110): stream purge not permitted."
        );
    }
}
