//! Herald's delivery attempts: one subscription's attempts (newest first, paged, filtered)
//! and one message's attempts across the topic's subscriptions.

use axum::{extract::State, Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{
    extract::{QueryPairs, TopicPath, V2Identity},
    subscriptions::{service, SubscriptionPath},
    topics::{next_link, LinkOut},
    AppState,
};
use crate::{
    domain::timestamps,
    error::ApiError,
    store::attempts::{AttemptFilter, AttemptOutcome, StoredAttempt},
};

const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;
/// Most records one message view reads (the newest of the topic's subscriptions).
const MESSAGE_VIEW_MAX_SCANNED: usize = 100_000;

/// One delivery attempt.
#[derive(Serialize, ToSchema)]
pub struct AttemptOut {
    pub id: String,
    pub message_id: String,
    pub subscription_id: String,
    /// 1 for the first try of the message.
    pub attempt: u64,
    pub started_at: String,
    pub duration_ms: u64,
    pub outcome: AttemptOutcome,
    /// The subscriber's HTTP status (webhooks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_code: Option<u16>,
    /// The start of the subscriber's reply body (`attempt_log_response_bytes`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the message is tried again (`retry`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
}

impl From<StoredAttempt> for AttemptOut {
    fn from(s: StoredAttempt) -> Self {
        let a = s.attempt;
        Self {
            id: a.id,
            message_id: a.message_id,
            subscription_id: a.subscription_id,
            attempt: a.attempt,
            started_at: timestamps::zaqar_micros(a.started_at),
            duration_ms: a.duration_ms,
            outcome: a.outcome,
            status_code: a.status_code,
            response: a.response,
            error: a.error,
            next_attempt_at: a.next_attempt_at.map(timestamps::zaqar_micros),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AttemptListOut {
    pub attempts: Vec<AttemptOut>,
    pub links: Vec<LinkOut>,
}

/// The `outcome` and `since` query parameters.
fn filter_of(query: &QueryPairs) -> Result<AttemptFilter, ApiError> {
    let outcome = query
        .get("outcome")
        .map(|o| {
            AttemptOutcome::parse(o).ok_or_else(|| {
                ApiError::BadRequest(
                    "outcome must be one of delivered, retry, failed, filtered, skipped.".into(),
                )
            })
        })
        .transpose()?;
    let since = query
        .get("since")
        .map(|s| {
            DateTime::parse_from_rfc3339(s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| ApiError::BadRequest("since must be an RFC 3339 date-time.".into()))
        })
        .transpose()?;
    let before = query
        .get("marker")
        .map(|m| {
            m.parse::<u64>()
                .map_err(|_| ApiError::BadRequest("marker must be a non-negative integer.".into()))
        })
        .transpose()?;
    Ok(AttemptFilter {
        before,
        outcome,
        since,
    })
}

/// The query of the next page: the same filters after the page's last record.
fn next_query(filter: &AttemptFilter, marker: u64, limit: usize) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("marker", &marker.to_string());
    q.append_pair("limit", &limit.to_string());
    if let Some(o) = filter.outcome {
        q.append_pair("outcome", o.as_str());
    }
    if let Some(s) = filter.since {
        q.append_pair("since", &s.to_rfc3339());
    }
    q.finish()
}

/// A subscription's delivery attempts, newest first.
#[utoipa::path(get, path = "/v2/topics/{name}/subscriptions/{id}/attempts", tag = "subscriptions",
    params(("name" = String, Path), ("id" = String, Path),
        ("marker" = Option<u64>, Query, description = "the `links` next page's marker"),
        ("limit" = Option<usize>, Query, description = "1..100, default 20"),
        ("outcome" = Option<String>, Query, description = "delivered | retry | failed | filtered | skipped"),
        ("since" = Option<String>, Query, description = "RFC 3339: only attempts started at or after it")),
    responses((status = 200, body = AttemptListOut), (status = 400, body = super::topics::ErrorOut),
        (status = 404, body = super::topics::ErrorOut)))]
pub(super) async fn list_attempts(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
    SubscriptionPath(id): SubscriptionPath,
    query: QueryPairs,
) -> Result<Json<AttemptListOut>, ApiError> {
    let limit = query.limit(DEFAULT_LIMIT, MAX_LIMIT)?;
    let filter = filter_of(&query)?;
    // Another project's (or topic's) subscription is a 404 like a missing one.
    service(&state).get(&identity.project, &name, &id).await?;
    let page = state
        .store
        .list_attempts(&identity.project, &id, &filter, limit)
        .await?;
    let links = if page.len() < limit {
        Vec::new()
    } else {
        next_link(&page, |last| {
            format!(
                "/v2/topics/{name}/subscriptions/{id}/attempts?{}",
                next_query(&filter, last.seq, limit)
            )
        })
    };
    Ok(Json(AttemptListOut {
        attempts: page.into_iter().map(AttemptOut::from).collect(),
        links,
    }))
}

/// The `{message_id}` path segment.
pub struct MessagePath(pub String);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for MessagePath {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        let axum::extract::Path(params) =
            axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
                .await
                .map_err(|_| ApiError::not_found())?;
        params
            .into_iter()
            .find(|(k, _)| k == "message_id")
            .map(|(_, v)| Self(v))
            .ok_or_else(ApiError::not_found)
    }
}

#[derive(Serialize, ToSchema)]
pub struct MessageAttemptsOut {
    /// Oldest first, across the topic's subscriptions.
    pub attempts: Vec<AttemptOut>,
}

/// One message's delivery attempts across the topic's subscriptions.
#[utoipa::path(get, path = "/v2/topics/{name}/messages/{message_id}/attempts", tag = "topics",
    params(("name" = String, Path), ("message_id" = String, Path)),
    responses((status = 200, body = MessageAttemptsOut), (status = 404, body = super::topics::ErrorOut)))]
pub(super) async fn list_message_attempts(
    State(state): State<AppState>,
    V2Identity(identity): V2Identity,
    TopicPath(name): TopicPath,
    MessagePath(message_id): MessagePath,
) -> Result<Json<MessageAttemptsOut>, ApiError> {
    let subscriptions: Vec<String> = service(&state)
        .list(&identity.project, &name, "", usize::MAX)
        .await?
        .into_iter()
        .map(|s| s.id)
        .collect();
    let found = state
        .store
        .scan_attempts(
            &identity.project,
            &subscriptions,
            MESSAGE_VIEW_MAX_SCANNED,
            |a| a.message_id == message_id,
        )
        .await?;
    Ok(Json(MessageAttemptsOut {
        attempts: found.into_iter().map(AttemptOut::from).collect(),
    }))
}

pub(super) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v2/topics/{name}/subscriptions/{id}/attempts",
            axum::routing::get(list_attempts),
        )
        .route(
            "/v2/topics/{name}/messages/{message_id}/attempts",
            axum::routing::get(list_message_attempts),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &[(&str, &str)]) -> QueryPairs {
        QueryPairs(
            q.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn filters_are_checked_and_carried_to_the_next_page() {
        let f = filter_of(&pairs(&[
            ("outcome", "retry"),
            ("since", "2026-01-02T03:04:05+01:00"),
            ("marker", "42"),
        ]))
        .unwrap();
        assert_eq!(f.before, Some(42));
        assert_eq!(f.outcome, Some(AttemptOutcome::Retry));
        let next = next_query(&f, 7, 5);
        assert_eq!(
            next,
            "marker=7&limit=5&outcome=retry&since=2026-01-02T02%3A04%3A05%2B00%3A00"
        );
        for bad in [
            ("outcome", "dead"),
            ("since", "yesterday"),
            ("marker", "-1"),
        ] {
            assert!(filter_of(&pairs(&[bad])).is_err(), "{bad:?}");
        }
    }
}
