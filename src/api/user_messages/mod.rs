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

mod discovery;
mod handlers;
mod list_params;
mod microversion;
mod scope;
mod views;

pub(crate) use discovery::*;
pub(crate) use handlers::*;
pub(crate) use list_params::*;
pub(crate) use microversion::*;
pub(crate) use scope::*;
pub(crate) use views::*;
