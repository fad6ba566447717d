//! Extractors that validate at the edge and reject with Herald's error types:
//! identity, JSON bodies, path names and query strings.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Path, Query, Request},
    http::{request::Parts, StatusCode},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use crate::{
    auth::{AuthError, Identity},
    domain::TopicName,
    error::ApiError,
};

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingProject | AuthError::InvalidProject(_) => {
                Self::BadRequest(e.to_string())
            }
            AuthError::MissingToken | AuthError::UnknownToken | AuthError::NotProjectScoped => {
                Self::Unauthorized(e.to_string())
            }
            AuthError::NoRole => Self::Forbidden(e.to_string()),
            AuthError::IdentityUnavailable => Self::Unavailable(e.to_string()),
        }
    }
}

/// The caller of a `/v2` route, with Zaqar's `Client-ID` rule applied.
pub struct V2Identity(pub Identity);

impl FromRequestParts<AppState> for V2Identity {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match parts.headers.get("client-id") {
            Some(v) => {
                let ok = v
                    .to_str()
                    .ok()
                    .and_then(|s| uuid::Uuid::parse_str(s.trim()).ok())
                    .is_some();
                if !ok {
                    return Err(ApiError::BadRequest(
                        "Malformed hexadecimal UUID in the Client-ID header.".into(),
                    ));
                }
            }
            None if state.config.require_client_id => {
                return Err(ApiError::BadRequest(
                    "The header Client-ID was missing.".into(),
                ))
            }
            None => {}
        }
        Ok(Self(state.auth.resolve(&parts.headers).await?))
    }
}

impl V2Identity {
    /// Writes need `member` or `admin`; a `reader` gets 403.
    pub fn writer(self) -> Result<Identity, ApiError> {
        if self.0.can_write() {
            Ok(self.0)
        } else {
            Err(ApiError::Forbidden(
                "This action needs the member or admin role.".into(),
            ))
        }
    }
}

/// The raw body, with the size limit turned into a JSON 413. (Not `Body`: that name is
/// `axum::body::Body`.)
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge("The request body is larger than allowed.".into())
                } else {
                    ApiError::BadRequest(format!("Cannot read the request body: {e}"))
                }
            })
    }
}

impl RawBody {
    /// Parses the body as JSON; an empty body is `None`.
    pub fn json_opt<T: DeserializeOwned>(&self) -> Result<Option<T>, ApiError> {
        if self.0.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&self.0)
            .map(Some)
            .map_err(|e| ApiError::BadRequest(format!("Malformed JSON in the request body: {e}")))
    }

    /// Parses the body as JSON; an empty body is a 400.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        self.json_opt()?
            .ok_or_else(|| ApiError::BadRequest("The request body is empty.".into()))
    }

    /// Rejects bodies larger than `limit` bytes (per-route limits below the global one).
    pub fn limit(self, limit: usize) -> Result<Self, ApiError> {
        if self.0.len() > limit {
            Err(ApiError::PayloadTooLarge(format!(
                "The request body is larger than {limit} bytes."
            )))
        } else {
            Ok(self)
        }
    }
}

/// A JSON object's fields as `T`, or `None` for any other JSON value (a derived
/// `Deserialize` would read an array as the fields in order). Bodies are parsed as a
/// [`Value`] first, so a duplicated key is the last one, as before; the caller maps a
/// field's deserialization error to that field's message.
pub fn object_fields<T: DeserializeOwned>(v: Value) -> Option<Result<T, serde_json::Error>> {
    match v {
        Value::Object(_) => Some(serde_json::from_value(v)),
        _ => None,
    }
}

/// The `{name}` path segment of a topic route.
pub struct TopicPath(pub TopicName);

impl<S: Send + Sync> FromRequestParts<S> for TopicPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::BadRequest("Invalid topic identification".into()))?;
        let name = params
            .iter()
            .find(|(k, _)| k == "name")
            .map(|(_, v)| v.as_str())
            .unwrap_or_default();
        Ok(Self(TopicName::parse(name)?))
    }
}

/// The query string as ordered pairs.
pub struct QueryPairs(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::BadRequest(format!("Malformed query string: {e}")))?;
        Ok(Self(pairs))
    }
}

impl QueryPairs {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Zaqar's `limit`: an integer in `1..=max`, `default` when absent.
    pub fn limit(&self, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::BadRequest(format!("limit must be an integer between 1 and {max}."))
                }),
        }
    }

    pub fn flag(&self, key: &str) -> Result<bool, ApiError> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None | Some("false") => Ok(false),
            Some("true") => Ok(true),
            Some(_) => Err(ApiError::BadRequest(format!(
                "{key} must be true or false."
            ))),
        }
    }
}
