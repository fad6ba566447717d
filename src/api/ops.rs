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
        super::subscriptions::recover_subscription,
        super::attempts::list_attempts, super::attempts::list_message_attempts,
        super::cinder::discovery::list_versions, super::cinder::discovery::show_v3_version,
        super::cinder::handlers::list_messages, super::cinder::handlers::list_own_messages,
        super::cinder::handlers::show_message, super::cinder::handlers::show_own_message,
        super::cinder::handlers::delete_message, super::cinder::handlers::delete_own_message,
        super::cinder::handlers::create_message,
    ),
    modifiers(&FamilyResponses),
    tags((name = "topics", description = "Zaqar v2 topics"),
        (name = "subscriptions", description = "Zaqar v2 subscriptions on topics, dead letters, delivery attempts, recover"),
        (name = "operations"),
        (name = "user messages", description = "Cinder v3 user messages"))
)]
pub struct ApiDoc;

/// Completes every operation with the answers that its route family gives whatever the
/// handler does, so the document tells the truth (schemathesis checks it against the running
/// service): `/v2` identity errors (400, 401), a reader writing (403), unknown topics (404),
/// body limits and slow bodies (413, 408) and NATS outages or timeouts (503); `/v3`
/// microversion errors (400, 404, 406) the same way in Cinder's shape. It also states the
/// path parameters' syntax. A handler's own entry for a status wins.
struct FamilyResponses;

/// `^[a-zA-Z0-9_.-]{1,64}$`, as `TopicName::parse` checks it.
const TOPIC_NAME_PATTERN: &str = "^[a-zA-Z0-9_.-]{1,64}$";
/// `[A-Za-z0-9_-]{1,256}`, as `ProjectId::parse` checks it.
const PROJECT_ID_PATTERN: &str = "^[A-Za-z0-9_-]{1,256}$";

impl utoipa::Modify for FamilyResponses {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::path::HttpMethod;
        for (path, item) in doc.paths.paths.iter_mut() {
            let v2 = path.starts_with("/v2/topics");
            let v3 = path.starts_with("/v3");
            if !(v2 || v3) {
                continue;
            }
            let schema = if v2 { "ErrorOut" } else { "CinderErrorOut" };
            let methods = [
                (HttpMethod::Get, &mut item.get),
                (HttpMethod::Put, &mut item.put),
                (HttpMethod::Post, &mut item.post),
                (HttpMethod::Patch, &mut item.patch),
                (HttpMethod::Delete, &mut item.delete),
            ];
            for (method, op) in methods {
                let Some(op) = op.as_mut() else { continue };
                let writes = method != HttpMethod::Get;
                let statuses = family_statuses(path, v3, writes, op.request_body.is_some());
                add_error_responses(op, &statuses, schema);
                constrain_path_parameters(op);
            }
        }
    }
}

/// The error statuses every operation of a family can answer, with their descriptions.
fn family_statuses(path: &str, v3: bool, writes: bool, has_body: bool) -> Vec<(u16, &'static str)> {
    let mut statuses = vec![
        (
            400,
            "Invalid request (identity headers, path, query or body)",
        ),
        (401, "Missing or unknown token (auth_mode = tokens)"),
        (
            503,
            "NATS unavailable or the request took too long; retry later",
        ),
    ];
    if !v3 && writes {
        statuses.push((403, "The caller may not change this resource"));
    }
    if v3 || path.contains("{name}") {
        statuses.push((404, "Not found"));
    }
    if v3 {
        statuses.push((406, "Microversion above the maximum"));
    }
    if has_body {
        statuses.push((408, "The request body did not arrive in time"));
        statuses.push((413, "Request body too large"));
    }
    statuses
}

/// Adds each status the operation does not document yet, with the family's error body.
fn add_error_responses(
    op: &mut utoipa::openapi::path::Operation,
    statuses: &[(u16, &str)],
    schema: &str,
) {
    use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
    for (status, description) in statuses {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| {
                ResponseBuilder::new()
                    .description(*description)
                    .content(
                        "application/json",
                        ContentBuilder::new()
                            .schema(Some(Ref::from_schema_name(schema)))
                            .build(),
                    )
                    .build()
                    .into()
            });
    }
}

/// The topic-name and project-id path parameters, with the patterns their parsers check.
fn constrain_path_parameters(op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::{
        path::ParameterIn,
        schema::{ObjectBuilder, Type},
    };
    for param in op.parameters.iter_mut().flatten() {
        let pattern = match (&param.parameter_in, param.name.as_str()) {
            (ParameterIn::Path, "name") => TOPIC_NAME_PATTERN,
            (ParameterIn::Path, "project_id") => PROJECT_ID_PATTERN,
            _ => continue,
        };
        param.schema = Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(pattern))
                .into(),
        );
    }
}

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
