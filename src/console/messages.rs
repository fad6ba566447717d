//! `/console/messages`: the project's user messages (Cinder's), filtered, sorted and
//! paged, with delete.

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use maud::html;
use uuid::Uuid;

use super::{
    page::{self, csrf, Failure, Nav},
    see_other, Form, Viewer,
};
use crate::{api::AppState, store::user_messages::UserMessage};

/// Messages per page.
const PAGE: usize = 20;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(default)]
pub(crate) struct MessagesQuery {
    event_id: String,
    message_level: String,
    resource_uuid: String,
    /// `created_at` (default), `event_id`, `message_level` or `resource_type`.
    sort: String,
    /// `desc` (default) or `asc`.
    dir: String,
    /// 0-based page number.
    page: usize,
}

impl MessagesQuery {
    fn keeps(&self, m: &UserMessage) -> bool {
        let has = |filter: &str, value: &str| {
            filter.is_empty()
                || value
                    .to_ascii_lowercase()
                    .contains(&filter.to_ascii_lowercase())
        };
        has(&self.event_id, &m.event_id)
            && (self.message_level.is_empty()
                || m.message_level.eq_ignore_ascii_case(&self.message_level))
            && has(
                &self.resource_uuid,
                m.resource_uuid.as_deref().unwrap_or(""),
            )
    }

    /// Sorts by the chosen key, then by creation and id so pages are stable.
    fn sort(&self, list: &mut [UserMessage]) {
        list.sort_by(|a, b| {
            let key = match self.sort.as_str() {
                "event_id" => a.event_id.cmp(&b.event_id),
                "message_level" => a.message_level.cmp(&b.message_level),
                "resource_type" => a.resource_type.cmp(&b.resource_type),
                _ => std::cmp::Ordering::Equal,
            };
            key.then(a.created_at.cmp(&b.created_at))
                .then(a.id.cmp(&b.id))
        });
        if self.dir != "asc" {
            list.reverse();
        }
    }

    fn href(&self, page: usize) -> String {
        let page = page.to_string();
        format!(
            "/console/messages?{}",
            page::query(&[
                ("event_id", &self.event_id),
                ("message_level", &self.message_level),
                ("resource_uuid", &self.resource_uuid),
                ("sort", &self.sort),
                ("dir", &self.dir),
                ("page", if page == "0" { "" } else { &page }),
            ])
        )
    }
}

pub(crate) async fn list_messages(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<MessagesQuery>,
) -> Result<Response, Failure> {
    let mut list: Vec<UserMessage> = state
        .store
        .list_user_messages(&viewer.identity.project)
        .await?
        .into_iter()
        .filter(|m| q.keeps(m))
        .collect();
    q.sort(&mut list);
    let total = list.len();
    let start = q.page.saturating_mul(PAGE).min(total);
    let shown = &list[start..(start + PAGE).min(total)];
    let next = (start + PAGE < total).then(|| q.href(q.page + 1));
    let first = (q.page > 0).then(|| q.href(0));
    let back = q.href(q.page);
    let sorts = [
        ("created_at", "Created"),
        ("event_id", "Event"),
        ("message_level", "Level"),
        ("resource_type", "Resource type"),
    ];
    let body = html! {
        form.filters method="get" action="/console/messages" {
            label { "Event id " input type="search" name="event_id" value=(q.event_id); }
            label { "Level "
                select name="message_level" {
                    @for l in ["", "ERROR", "WARNING", "INFO"] {
                        option value=(l) selected[q.message_level.eq_ignore_ascii_case(l)] { (if l.is_empty() { "any" } else { l }) }
                    }
                }
            }
            label { "Resource " input type="search" name="resource_uuid" value=(q.resource_uuid); }
            label { "Sort "
                select name="sort" {
                    @for (k, label) in sorts {
                        option value=(k) selected[q.sort == k || (q.sort.is_empty() && k == "created_at")] { (label) }
                    }
                }
            }
            select name="dir" aria-label="Direction" {
                option value="desc" selected[q.dir != "asc"] { "newest / Z first" }
                option value="asc" selected[q.dir == "asc"] { "oldest / A first" }
            }
            button type="submit" { "Apply" }
            span.muted { (total) " messages" }
        }
        @if shown.is_empty() {
            p { "No user messages." }
        } @else {
            table #user-messages {
                thead { tr { th { "Created" } th { "Level" } th { "Event" } th { "Message" } th { "Resource" } th { "Request" } th {} } }
                tbody {
                    @for m in shown {
                        tr {
                            td { (page::when(m.created_at)) }
                            td { span class={ "badge level-" (m.message_level.to_ascii_lowercase()) } { (m.message_level) } }
                            td.mono { (m.event_id) }
                            td.user-message { (m.user_message) }
                            td.mono { (m.resource_type.as_deref().unwrap_or("")) " " (m.resource_uuid.as_deref().unwrap_or("")) }
                            td.mono { (m.request_id) }
                            td {
                                form.inline method="post" action={ "/console/messages/" (m.id) "/delete" } {
                                    (csrf(&viewer))
                                    input type="hidden" name="back" value=(back);
                                    button.danger type="submit" { "Delete" }
                                }
                            }
                        }
                    }
                }
            }
        }
        (page::pager(first.as_deref(), next))
    };
    Ok(page::page(
        &viewer,
        Nav::Messages,
        "User messages",
        None,
        body,
    ))
}

pub(crate) async fn delete_message(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let not_found = || Failure::not_found(format!("Message {id} could not be found."));
    let uuid = Uuid::parse_str(&id).map_err(|_| not_found())?;
    let identity = viewer.writer()?;
    if !state
        .store
        .delete_user_message(&identity.project, &uuid)
        .await?
    {
        return Err(not_found());
    }
    form.session
        .flash(false, format!("Message {uuid} deleted."));
    // Only a console path: never redirect elsewhere on the form's say-so.
    let back = form.get("back");
    let back = if back.starts_with("/console/messages") && !back.starts_with("//") {
        back
    } else {
        "/console/messages"
    };
    Ok(see_other(back))
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};

    use super::*;

    fn message(event: &str, level: &str, age_secs: i64) -> UserMessage {
        UserMessage {
            id: Uuid::new_v4(),
            project_id: "p".into(),
            event_id: event.into(),
            user_message: "m".into(),
            message_level: level.into(),
            resource_type: None,
            resource_uuid: None,
            request_id: "req-1".into(),
            created_at: Utc::now() - Duration::seconds(age_secs),
            guaranteed_until: Utc::now(),
        }
    }

    #[test]
    fn messages_filter_by_event_and_level_and_sort_newest_first_by_default() {
        let mut list = vec![
            message("HERALD_A", "ERROR", 30),
            message("HERALD_B", "INFO", 10),
            message("HERALD_A", "INFO", 20),
        ];
        let q = MessagesQuery::default();
        q.sort(&mut list);
        let ages: Vec<_> = list.iter().map(|m| m.event_id.as_str()).collect();
        assert_eq!(ages, ["HERALD_B", "HERALD_A", "HERALD_A"]);
        let q = MessagesQuery {
            event_id: "_a".into(),
            message_level: "info".into(),
            ..MessagesQuery::default()
        };
        let kept: Vec<_> = list.iter().filter(|m| q.keeps(m)).collect();
        assert_eq!(kept.len(), 1);
        let q = MessagesQuery {
            sort: "event_id".into(),
            dir: "asc".into(),
            ..MessagesQuery::default()
        };
        q.sort(&mut list);
        assert_eq!(list[0].event_id, "HERALD_A");
        assert_eq!(list[2].event_id, "HERALD_B");
    }
}
