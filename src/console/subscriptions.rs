//! `/console/topics/{name}/subscriptions/{id}`: the subscription's settings, its dead
//! letters with replay, and delete with a confirmation step.

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::html;
use serde_json::{json, Value};

use super::{
    overview::status,
    page::{self, csrf, Failure, Nav},
    see_other,
    topics::{service, topic_href, topic_name},
    Form, Viewer,
};
use crate::{
    api::AppState,
    error::ApiError,
    store::attempts::{AttemptFilter, AttemptOutcome},
    subscriptions::SubscriptionDoc,
};

/// Attempt records per page.
const ATTEMPTS_PAGE: usize = 25;
/// Newest attempt records read for the health summary (as the API's `GET …/{id}`).
const HEALTH_SCAN: usize = 1000;

/// Dead letters per page (the API's largest page).
const PAGE: usize = 20;

#[derive(serde::Deserialize)]
pub(crate) struct LettersQuery {
    /// Dead letters after this sequence.
    #[serde(default)]
    after: Option<u64>,
    /// Attempts before this sequence (newest first).
    #[serde(default)]
    before: Option<u64>,
    /// Attempts of this outcome only.
    #[serde(default)]
    outcome: String,
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
    let outcome = AttemptOutcome::parse(&q.outcome);
    let filter = AttemptFilter {
        before: q.before,
        outcome,
        since: None,
    };
    let (mut letters, last, pending, mut attempts) = tokio::try_join!(
        state
            .store
            .list_dead_letters(project, &name, &sub.id, q.after.unwrap_or(0), PAGE + 1),
        state.store.last_attempts(project, &sub.id, HEALTH_SCAN),
        state.store.subscription_pending(project, &name, &sub.id),
        state
            .store
            .list_attempts(project, &sub.id, &filter, ATTEMPTS_PAGE + 1),
    )?;
    let more = letters.len() > PAGE;
    letters.truncate(PAGE);
    let more_attempts = attempts.len() > ATTEMPTS_PAGE;
    attempts.truncate(ATTEMPTS_PAGE);
    let href = format!("{}/subscriptions/{}", topic_href(&name), sub.id);
    let next = letters
        .last()
        .filter(|_| more)
        .map(|last| format!("{href}?after={}", last.seq));
    let first = q.after.is_some().then_some(href.as_str());
    let older_attempts = attempts.last().filter(|_| more_attempts).map(|last| {
        format!(
            "{href}?{}#attempts",
            page::query(&[("before", &last.seq.to_string()), ("outcome", &q.outcome)])
        )
    });
    let attempts_first = q.before.map(|_| {
        format!(
            "{href}?{}#attempts",
            page::query(&[("outcome", &q.outcome)])
        )
    });
    let st = status(&state, &sub);
    let disabled = sub.disabled;
    let body = html! {
        p { "Topic " a href=(topic_href(&name)) { (name.as_str()) } }
        div.columns {
            table.details {
                tr { th { "Subscriber" } td #subscriber { (sub.subscriber) } }
                tr { th { "Status" } td { span class={ "badge " (st) } #status { (st) } } }
                tr { th { "Pending" } td #pending { (pending) } }
                tr { th { "Last delivered" } td { @if let Some(t) = last.delivered { (page::when(t)) } @else { "—" } } }
                tr { th { "Last failed" } td { @if let Some(t) = last.failed { (page::when(t)) } @else { "—" } } }
                tr { th { "Last error" } td.error-text #last-error { (last.error.as_deref().unwrap_or("—")) } }
                tr { th { "Id" } td.mono { (sub.id) } }
                tr { th { "Created" } td { (page::when(sub.created_at)) } }
                tr { th { "Expires" } td { (page::when(sub.expires_at)) " (ttl " (sub.ttl) " s)" } }
                tr { th { "Confirmed" } td { (if sub.confirmed { "yes" } else { "no" }) } }
            }
            div.stack {
                form.card #enable method="post" action={ (href) "/enabled" } {
                    (csrf(&viewer))
                    input type="hidden" name="enabled" value=(if disabled { "true" } else { "false" });
                    @if disabled {
                        p { "Nothing is delivered while disabled; messages wait until they expire." }
                        button type="submit" { "Enable" }
                    } @else {
                        p { "Disable to stop deliveries (messages wait; enabling resumes)." }
                        button.danger type="submit" { "Disable" }
                    }
                }
                form.card #recover method="post" action={ (href) "/recover" } {
                    (csrf(&viewer))
                    p { "Recover: deliver again every dead letter that failed in a window (UTC)." }
                    label { "Since" input type="datetime-local" name="since" step="1" required; }
                    label { "Until (optional, default now)" input type="datetime-local" name="until" step="1"; }
                    button type="submit" { "Recover" }
                }
            }
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
        h2 id="attempts" { "Attempt log" }
        form.filters method="get" action=(href) {
            label { "Outcome "
                select name="outcome" {
                    option value="" selected[outcome.is_none()] { "any" }
                    @for o in AttemptOutcome::ALL {
                        option value=(o.as_str()) selected[outcome == Some(o)] { (o.as_str()) }
                    }
                }
            }
            button type="submit" { "Filter" }
        }
        @if attempts.is_empty() {
            p #no-attempts { "No attempts recorded." }
        } @else {
            table #attempt-log {
                thead { tr { th { "Started" } th { "Outcome" } th.num { "Status" } th.num { "ms" } th.num { "Try" } th { "Message" } th { "Error / response" } th { "Next try" } } }
                tbody {
                    @for stored in &attempts {
                        @let a = &stored.attempt;
                        tr {
                            td { (page::when(a.started_at)) }
                            td { span class={ "badge " (a.outcome.as_str()) } { (a.outcome.as_str()) } }
                            td.num { @if let Some(c) = a.status_code { (c) } @else { "—" } }
                            td.num { (a.duration_ms) }
                            td.num { (a.attempt) }
                            td.mono { (a.message_id) }
                            td {
                                @if let Some(e) = &a.error { div.error-text { (e) } }
                                @if let Some(r) = &a.response { pre.json { (r) } }
                            }
                            td { @if let Some(t) = a.next_attempt_at { (page::when(t)) } }
                        }
                    }
                }
            }
        }
        (page::pager(attempts_first.as_deref(), older_attempts))
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
        .replay_dead_letters(&identity.project, &name, &sub.id, |letter| {
            ids.is_empty() || ids.contains(&letter.message_id)
        })
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

/// A `datetime-local` field (read as UTC); empty is `None`.
fn utc_field(form: &Form, field: &str) -> Result<Option<DateTime<Utc>>, Failure> {
    let v = form.get(field);
    if v.is_empty() {
        return Ok(None);
    }
    ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(v, f).ok())
        .map(|t| Some(t.and_utc()))
        .ok_or_else(|| {
            Failure::from(ApiError::BadRequest(format!(
                "{field} must be a date and time (YYYY-MM-DDTHH:MM[:SS], UTC)."
            )))
        })
}

/// Delivers again every dead letter that failed in the window (the API's `recover`).
pub(crate) async fn recover(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let href = format!("{}/subscriptions/{id}", topic_href(&name));
    let result = async {
        let identity = viewer.writer()?;
        let since = utc_field(&form, "since")?
            .ok_or_else(|| Failure::from(ApiError::BadRequest("since is required.".into())))?;
        let until = utc_field(&form, "until")?;
        let sub = service(&state).get(&identity.project, &name, &id).await?;
        let recovered = state
            .store
            .replay_dead_letters(&identity.project, &name, &sub.id, |letter| {
                letter.failed_at >= since && until.is_none_or(|u| letter.failed_at < u)
            })
            .await?;
        Ok(format!(
            "Recovered {recovered} dead letter(s): they are delivered again."
        ))
    }
    .await;
    super::topics::flash_or(&form.session, &href, result)
}

/// Enables or disables the subscription (the API's `PATCH {"options": {"enabled": …}}`).
pub(crate) async fn set_enabled(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((name, id)): Path<(String, String)>,
    form: Form,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let href = format!("{}/subscriptions/{id}", topic_href(&name));
    let result = async {
        let identity = viewer.writer()?;
        let enabled = form.get("enabled") == "true";
        let doc = SubscriptionDoc::for_patch(json!({"options": {"enabled": enabled}}))?;
        service(&state)
            .update(identity, viewer.token(), &name, &id, doc)
            .await?;
        Ok(if enabled {
            "Subscription enabled: deliveries resume.".to_owned()
        } else {
            "Subscription disabled: nothing is delivered until it is enabled again.".to_owned()
        })
    }
    .await;
    super::topics::flash_or(&form.session, &href, result)
}
