//! Version discovery: the unversioned root (`/`, 300 Multiple Choices) and `/v3/`, with
//! links built from the address the client used.

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    Json,
};
use serde::Serialize;
use utoipa::ToSchema;

use crate::api::AppState;
use crate::domain::microversion::{MAX_VERSION, MIN_VERSION};

/// Date of the newest microversion, as Cinder reports it.
const VERSION_UPDATED: &str = "2023-08-31T00:00:00Z";

/// The request's base URL (`http://host:port`), from `Host` as Cinder does, so links work
/// for the client whatever address it used.
pub(super) fn base_url(headers: &HeaderMap, fallback: &str) -> String {
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
pub(super) async fn list_versions(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = base_url(&headers, &state.config.public_url);
    (StatusCode::MULTIPLE_CHOICES, Json(versions_document(&base))).into_response()
}

/// The v3 API's version document, with its microversion range.
#[utoipa::path(get, path = "/v3/", tag = "user messages",
    responses((status = 200, body = VersionsOut)))]
pub(super) async fn show_v3_version(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Json<VersionsOut> {
    Json(versions_document(&base_url(
        &headers,
        &state.config.public_url,
    )))
}
