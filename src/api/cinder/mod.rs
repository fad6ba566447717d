//! Cinder v3 user messages: version discovery (`/`, `/v3/`), microversion negotiation
//! and headers for every `/v3` response, and list/show/delete/create of messages, each
//! with and without the project in the path (python-cinderclient uses both).
//!
//! Layout: [`microversion`] negotiates versions and stamps headers, [`discovery`] answers
//! the version documents, [`list_params`] filters, sorts and pages lists, [`views`] shows
//! messages as Cinder does and [`handlers`] holds the message routes. Error conversions
//! and error bodies live with [`CinderError`](crate::error::CinderError).

pub(super) mod discovery;
pub(super) mod handlers;
mod list_params;
pub(crate) mod microversion;
mod views;

use axum::{routing::get, Router};

pub(super) use self::microversion::cinder_headers;
use self::{
    discovery::{list_versions, show_v3_version},
    handlers::{
        create_message, delete_message, delete_own_message, list_messages, list_own_messages,
        show_message, show_own_message,
    },
};
use super::AppState;

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
