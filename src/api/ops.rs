//! Operations routes: liveness, readiness, Zaqar's ping, Prometheus metrics and the
//! OpenAPI document generated from the handlers' annotations.

use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use serde_json::json;
use utoipa::OpenApi;

use super::AppState;
use crate::error::ApiError;

#[derive(OpenApi)]
#[openapi(
    info(title = "Herald", description = "Topics, subscriptions and user messages on NATS JetStream"),
    paths(
        healthz, readyz, ping, metrics_text,
        super::topics::create_topic, super::topics::list_topics, super::topics::get_topic,
        super::topics::update_topic, super::topics::delete_topic, super::topics::topic_stats,
        super::topics::purge_topic,
        super::messages::post_messages,
        super::subscriptions::create_subscription, super::subscriptions::list_subscriptions,
        super::subscriptions::get_subscription, super::subscriptions::update_subscription,
        super::subscriptions::delete_subscription, super::subscriptions::confirm_subscription,
        super::subscriptions::list_dead_letters, super::subscriptions::replay_dead_letters,
        super::user_messages::list_versions, super::user_messages::show_v3_version,
        super::user_messages::list_messages, super::user_messages::list_own_messages,
        super::user_messages::show_message, super::user_messages::show_own_message,
        super::user_messages::delete_message, super::user_messages::delete_own_message,
        super::user_messages::create_message,
    ),
    tags((name = "topics", description = "Zaqar v2 topics"),
        (name = "subscriptions", description = "Zaqar v2 subscriptions on topics, dead letters"),
        (name = "operations"),
        (name = "user messages", description = "Cinder v3 user messages"))
)]
pub struct ApiDoc;

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = Object)))]
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// NATS is connected and JetStream answers.
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, body = Object), (status = 503, body = super::topics::ErrorOut)))]
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.store.ping().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// Zaqar's health ping.
#[utoipa::path(get, path = "/v2/ping", tag = "operations", responses((status = 204)))]
async fn ping() -> StatusCode {
    StatusCode::NO_CONTENT
}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, content_type = "text/plain", body = String)))]
async fn metrics_text(State(state): State<AppState>) -> Response {
    metrics::gauge!("herald_nats_connected").set(if state.store.is_connected() {
        1.0
    } else {
        0.0
    });
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/v2/ping", get(ping).head(ping))
        .route("/metrics", get(metrics_text))
        .route("/openapi.json", get(openapi))
}
