//! `/console/topics/{name}/subscriptions/{id}`: the subscription's settings, its dead
//! letters with replay, and delete with a confirmation step.

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use maud::html;
use serde_json::Value;

use super::{
    overview::status,
    page::{self, csrf, Failure, Nav},
    see_other,
    topics::{service, topic_href, topic_name},
    Form, Viewer,
};
use crate::{api::AppState, error::ApiError};

/// Dead letters per page (the API's largest page).
const PAGE: usize = 20;

#[derive(serde::Deserialize)]
pub(crate) struct LettersQuery {
    #[serde(default)]
    after: Option<u64>,
}

pub(crate) async fn show_subscription(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
    Query(q): Query<LettersQuery>,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let project = &viewer.identity.project;
    let sub = service(&state).get(project, &name, &id).await?;
    let mut letters = state
        .store
        .list_dead_letters(project, &name, &sub.id, q.after.unwrap_or(0), PAGE + 1)
        .await?;
    let more = letters.len() > PAGE;
    letters.truncate(PAGE);
    let href = format!("{}/subscriptions/{}", topic_href(&name), sub.id);
    let next = letters
        .last()
        .filter(|_| more)
        .map(|last| format!("{href}?after={}", last.seq));
    let first = q.after.is_some().then_some(href.as_str());
    let st = status(&state.config, &sub);
    let body = html! {
        p { "Topic " a href=(topic_href(&name)) { (name.as_str()) } }
        table.details {
            tr { th { "Subscriber" } td #subscriber { (sub.subscriber) } }
            tr { th { "Status" } td { span class={ "badge " (st) } #status { (st) } } }
            tr { th { "Id" } td.mono { (sub.id) } }
            tr { th { "Created" } td { (page::when(sub.created_at)) } }
            tr { th { "Expires" } td { (page::when(sub.expires_at)) " (ttl " (sub.ttl) " s)" } }
            tr { th { "Confirmed" } td { (if sub.confirmed { "yes" } else { "no" }) } }
        }
        h2 { "Options" }
        (page::json(&Value::Object(sub.options.doc().clone())))
        h2 { "Dead letters" }
        @if letters.is_empty() && q.after.is_none() {
            p #no-dead-letters { "No dead letters." }
        } @else {
            form.inline method="post" action={ (href) "/replay" } {
                (csrf(&viewer))
                button type="submit" #replay-all { "Replay all dead letters" }
            }
            table #dead-letters {
                thead { tr { th { "Message" } th { "Failed" } th.num { "Attempts" } th { "Last error" } th { "Body" } th {} } }
                tbody {
                    @for d in &letters {
                        tr {
                            td.mono { (d.letter.message_id) }
                            td { (page::when(d.letter.failed_at)) }
                            td.num { (d.letter.attempts) }
                            td.error-text { (d.letter.last_error) }
                            td { (page::json(&d.letter.body)) }
                            td {
                                form.inline method="post" action={ (href) "/replay" } {
                                    (csrf(&viewer))
                                    input type="hidden" name="id" value=(d.letter.message_id);
                                    button type="submit" { "Replay" }
                                }
                            }
                        }
                    }
                }
            }
            (page::pager(first, next))
        }
        section.pending-feature #attempts {
            h2 { "Attempt log and health" }
            p.muted { "The attempt log (status codes, response excerpts), last error, recover and enable/disable arrive with issue 13." }
        }
        p { a.danger href={ (href) "/delete" } { "Delete this subscription…" } }
    };
    Ok(page::page(&viewer, Nav::Topics, "Subscription", None, body))
}

pub(crate) async fn replay(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let identity = viewer.writer()?;
    let sub = service(&state).get(&identity.project, &name, &id).await?;
    let ids = form.all("id");
    let replayed = state
        .store
        .replay_dead_letters(
            &identity.project,
            &name,
            &sub.id,
            (!ids.is_empty()).then_some(ids.as_slice()),
        )
        .await?;
    form.session.flash(
        false,
        format!("Replayed {replayed} dead letter(s): they are delivered again."),
    );
    Ok(see_other(&format!(
        "{}/subscriptions/{}",
        topic_href(&name),
        sub.id
    )))
}

pub(crate) async fn confirm_delete_subscription(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let sub = service(&state)
        .get(&viewer.identity.project, &name, &id)
        .await?;
    let href = format!("{}/subscriptions/{}", topic_href(&name), sub.id);
    let body = html! {
        p { "Unsubscribe " b { (sub.subscriber) } " from " b { (name.as_str()) } "? It stops receiving messages; its pending ones are not delivered." }
        form.inline method="post" action={ (href) "/delete" } {
            (csrf(&viewer))
            button.danger type="submit" { "Delete subscription" }
        }
        " "
        a href=(href) { "Cancel" }
    };
    Ok(page::page(
        &viewer,
        Nav::Topics,
        "Delete subscription?",
        None,
        body,
    ))
}

pub(crate) async fn delete_subscription(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let identity = viewer.writer()?;
    state
        .store
        .delete_subscription(&identity.project, &name, &id)
        .await
        .map_err(ApiError::from)?;
    form.session.flash(false, "Subscription deleted.");
    Ok(see_other(&topic_href(&name)))
}
