//! `/console/topics` (list, create, stats, delete with a confirmation step) and
//! `/console/topics/{name}` (metadata, stats, subscriptions, subscribe and publish forms).

use axum::{
    extract::{Path, Query, State},
    response::Response,
};
use futures::{stream, StreamExt, TryStreamExt};
use maud::html;
use serde_json::{json, Map, Value};

use super::{
    overview::status,
    page::{self, csrf, Failure, Nav},
    see_other, Form, Viewer,
};
use crate::{
    api::{self, AppState},
    domain::{TopicMetadata, TopicName},
    error::ApiError,
    store::attempts::LastAttempts,
    subscriptions::{SubscriptionDoc, Subscriptions},
};

/// Rows per page (the API's largest page).
const PAGE: usize = 20;
/// Subscriptions whose attempt logs are read at once.
const CONCURRENCY: usize = 8;
/// Newest attempt records read per subscription for its last error.
const HEALTH_SCAN: usize = 200;

/// The topic named by the path, or the console's 404.
pub(crate) fn topic_name(raw: &str) -> Result<TopicName, Failure> {
    TopicName::parse(raw).map_err(|_| Failure::not_found("Topic could not be found."))
}

pub(crate) fn topic_href(name: &TopicName) -> String {
    format!("/console/topics/{}", name.as_str())
}

pub(crate) fn service(state: &AppState) -> Subscriptions<'_> {
    Subscriptions {
        store: &state.store,
        config: &state.config,
        outbound: &state.outbound,
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct ListQuery {
    #[serde(default)]
    marker: String,
    #[serde(default)]
    name: String,
}

pub(crate) async fn list_topics(
    State(state): State<AppState>,
    viewer: Viewer,
    Query(q): Query<ListQuery>,
) -> Result<Response, Failure> {
    let project = &viewer.identity.project;
    let all = state.store.list_topics(project).await?;
    let matching = all.len();
    let page_topics: Vec<_> = all
        .into_iter()
        .filter(|t| t.name.as_str() > q.marker.as_str() && t.name.as_str().contains(&q.name))
        .take(PAGE + 1)
        .collect();
    let more = page_topics.len() > PAGE;
    let page_topics = &page_topics[..page_topics.len().min(PAGE)];
    let counts = state.store.topic_counts(project).await?;
    let count = |t: &TopicName| {
        counts
            .get(&crate::store::names::stream_name(project, t))
            .copied()
            .unwrap_or_default()
    };
    let next = page_topics.last().filter(|_| more).map(|last| {
        format!(
            "/console/topics?{}",
            page::query(&[("marker", last.name.as_str()), ("name", &q.name)])
        )
    });
    let first = (!q.marker.is_empty())
        .then(|| format!("/console/topics?{}", page::query(&[("name", &q.name)])));
    let body = html! {
        form.filters method="get" action="/console/topics" {
            label { "Name contains " input type="search" name="name" value=(q.name); }
            button type="submit" { "Filter" }
            span.muted { (matching) " topics in the project" }
        }
        p.muted { "Pending messages and dead letters are on each topic's page." }
        @if page_topics.is_empty() {
            p { "No topics here." }
        } @else {
            table #topics {
                thead { tr {
                    th { "Topic" } th.num { "Messages" } th.num { "Subscriptions" } th {}
                } }
                tbody {
                    @for t in page_topics {
                        @let c = count(&t.name);
                        tr {
                            td { a href=(topic_href(&t.name)) { (t.name.as_str()) } }
                            td.num { (c.messages) }
                            td.num { (c.subscriptions) }
                            td { a.danger href={ (topic_href(&t.name)) "/delete" } { "Delete…" } }
                        }
                    }
                }
            }
        }
        (page::pager(first.as_deref(), next))
        h2 { "Create a topic" }
        form.card #create-topic method="post" action="/console/topics" {
            (csrf(&viewer))
            label { "Name" input type="text" name="name" required pattern="[A-Za-z0-9_.\\-]{1,64}" placeholder="orders"; }
            label { "Metadata (JSON object, optional)"
                textarea name="metadata" rows="3" placeholder="{\"_default_message_ttl\": 3600}" {} }
            button type="submit" { "Create topic" }
        }
    };
    Ok(page::page(&viewer, Nav::Topics, "Topics", None, body))
}

/// A JSON object from a form field; empty means `{}`.
fn json_object(field: &str, text: &str) -> Result<Value, Failure> {
    if text.is_empty() {
        return Ok(json!({}));
    }
    match serde_json::from_str::<Value>(text) {
        Ok(v @ Value::Object(_)) => Ok(v),
        _ => Err(Failure::from(ApiError::BadRequest(format!(
            "{field} must be a JSON object."
        )))),
    }
}

/// Runs a form's action; on a client error the form's page shows it (a flash) instead
/// of an error page.
pub(crate) fn flash_or(
    viewer_session: &super::Session,
    back: &str,
    r: Result<String, Failure>,
) -> Result<Response, Failure> {
    match r {
        Ok(notice) => {
            viewer_session.flash(false, notice);
            Ok(see_other(back))
        }
        Err(f) if f.is_client_error() => {
            viewer_session.flash(true, f.message().to_owned());
            Ok(see_other(back))
        }
        Err(f) => Err(f),
    }
}

pub(crate) async fn create_topic(
    State(state): State<AppState>,
    viewer: Viewer,
    form: Form,
) -> Result<Response, Failure> {
    let created = async {
        let identity = viewer.writer()?;
        let name = TopicName::parse(form.get("name")).map_err(ApiError::from)?;
        let metadata = TopicMetadata::parse(json_object("metadata", form.get("metadata"))?)
            .map_err(ApiError::from)?;
        api::topics::check_topic_quota(&state, &identity.project, &name).await?;
        let created = state
            .store
            .create_topic(&identity.project, &name, metadata)
            .await?;
        Ok::<_, Failure>((name, created))
    }
    .await;
    match created {
        Ok((name, created)) => {
            viewer.session.flash(
                false,
                if created {
                    format!("Topic {name} created.")
                } else {
                    format!("Topic {name} already existed; its metadata is unchanged.")
                },
            );
            Ok(see_other(&topic_href(&name)))
        }
        Err(e) => flash_or(&viewer.session, "/console/topics", Err(e)),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct SubsQuery {
    #[serde(default)]
    after: String,
}

pub(crate) async fn show_topic(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    Query(q): Query<SubsQuery>,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let project = &viewer.identity.project;
    let topic = api::topics::load_topic(&state, project, &name).await?;
    let (stats, subs) = tokio::try_join!(
        async {
            state
                .store
                .topic_stats(project, &name)
                .await
                .map_err(Failure::from)
        },
        async {
            service(&state)
                .list(project, &name, &q.after, PAGE + 1)
                .await
                .map_err(Failure::from)
        },
    )?;
    let more = subs.len() > PAGE;
    let subs = &subs[..subs.len().min(PAGE)];
    let reads: Vec<_> = subs
        .iter()
        .map(|s| state.store.last_attempts(project, &s.id, HEALTH_SCAN))
        .collect();
    let health: Vec<LastAttempts> = stream::iter(reads)
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let href = topic_href(&name);
    let next = subs
        .last()
        .filter(|_| more)
        .map(|last| format!("{href}?{}", page::query(&[("after", &last.id)])));
    let first = (!q.after.is_empty()).then_some(href.as_str());
    let body = html! {
        section.cards {
            div.card.stat { span.big { (stats.messages) } " messages" }
            div.card.stat { span.big { (stats.subscriptions) } " subscriptions" }
            div.card.stat { span.big { (stats.pending) } " pending" }
            div.card.stat class=[(stats.dead_letters > 0).then_some("bad")] { span.big { (stats.dead_letters) } " dead letters" }
        }
        h2 { "Subscriptions" }
        @if subs.is_empty() {
            p { "No subscriptions." }
        } @else {
            table #subscriptions {
                thead { tr { th { "Subscriber" } th { "Status" } th { "Last error" } th { "Expires" } th { "Id" } } }
                tbody {
                    @for (s, h) in subs.iter().zip(&health) {
                        tr {
                            td { a href={ (href) "/subscriptions/" (s.id) } { (s.subscriber) } }
                            td { span class={ "badge " (status(&state, s)) } { (status(&state, s)) } }
                            td {
                                @match (&h.error, h.failed) {
                                    (Some(e), Some(t)) => { span.error-text { (e) } " " span.muted { (page::when(t)) } }
                                    _ => span.muted { "—" },
                                }
                            }
                            td { (page::when(s.expires_at)) }
                            td.mono { (s.id) }
                        }
                    }
                }
            }
        }
        (page::pager(first, next))
        div.columns {
            section {
                h2 { "Subscribe" }
                form.card method="post" action={ (href) "/subscriptions" } {
                    (csrf(&viewer))
                    label { "Subscriber" input type="text" name="subscriber" required placeholder="https://example.com/hook, mailto:…, nats:…"; }
                    label { "TTL (seconds, optional)" input type="number" name="ttl" min="1"; }
                    label { "Options (JSON object, optional)" textarea name="options" rows="3" placeholder="{\"secret\": \"…\"}" {} }
                    button type="submit" { "Subscribe" }
                }
            }
            section {
                h2 { "Publish a test message" }
                form.card method="post" action={ (href) "/messages" } {
                    (csrf(&viewer))
                    label { "Body (JSON; other text is sent as a string)" textarea name="body" rows="3" required {} }
                    label { "TTL (seconds, optional)" input type="number" name="ttl" min="60"; }
                    button type="submit" { "Publish" }
                }
            }
        }
        h2 { "Metadata" }
        (page::json(&Value::Object(topic.metadata.with_defaults())))
        p { a.danger href={ (href) "/delete" } { "Delete this topic…" } }
    };
    Ok(page::page(
        &viewer,
        Nav::Topics,
        &format!("Topic {name}"),
        None,
        body,
    ))
}

pub(crate) async fn confirm_delete_topic(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let project = &viewer.identity.project;
    api::topics::load_topic(&state, project, &name).await?;
    let stats = state.store.topic_stats(project, &name).await?;
    let href = topic_href(&name);
    let body = html! {
        p { "Deleting " b { (name.as_str()) } " removes its " (stats.messages) " messages and "
            (stats.subscriptions) " subscriptions (with their dead letters). This cannot be undone." }
        form.inline method="post" action={ (href) "/delete" } {
            (csrf(&viewer))
            button.danger type="submit" { "Delete topic " (name.as_str()) }
        }
        " "
        a href=(href) { "Cancel" }
    };
    Ok(page::page(
        &viewer,
        Nav::Topics,
        "Delete topic?",
        None,
        body,
    ))
}

pub(crate) async fn delete_topic(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let identity = viewer.writer()?;
    state.store.delete_topic(&identity.project, &name).await?;
    form.session.flash(false, format!("Topic {name} deleted."));
    Ok(see_other("/console/topics"))
}

/// An optional positive integer field.
fn int_field(form: &Form, field: &str) -> Result<Option<u64>, Failure> {
    match form.get(field) {
        "" => Ok(None),
        v => v.parse().map(Some).map_err(|_| {
            Failure::from(ApiError::BadRequest(format!(
                "{field} must be a whole number of seconds."
            )))
        }),
    }
}

pub(crate) async fn publish(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let href = topic_href(&name);
    let result = async {
        let identity = viewer.writer()?;
        let topic = api::messages::sending_topic(&state, identity, &name).await?;
        let text = form.get("body");
        if text.len() as u64 > topic.metadata.max_messages_post_size() {
            return Err(ApiError::PayloadTooLarge(
                "The message is larger than the topic's _max_messages_post_size.".into(),
            )
            .into());
        }
        let body = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()));
        let mut message = Map::from_iter([("body".to_owned(), body)]);
        if let Some(ttl) = int_field(&form, "ttl")? {
            message.insert("ttl".into(), ttl.into());
        }
        let ids = api::messages::publish(
            &state,
            identity,
            &name,
            &topic.metadata,
            &[Value::Object(message)],
            None,
        )
        .await?;
        Ok(format!("Published message {}.", ids.join(", ")))
    }
    .await;
    flash_or(&form.session, &href, result)
}

pub(crate) async fn subscribe(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, Failure> {
    let name = topic_name(&name)?;
    let href = topic_href(&name);
    let result = async {
        let identity = viewer.writer()?;
        let mut doc = Map::new();
        doc.insert("subscriber".into(), form.get("subscriber").into());
        if let Some(ttl) = int_field(&form, "ttl")? {
            doc.insert("ttl".into(), ttl.into());
        }
        let options = json_object("options", form.get("options"))?;
        doc.insert("options".into(), options);
        let doc = SubscriptionDoc::for_create(Value::Object(doc))?;
        let sub = service(&state)
            .create(identity, viewer.token(), &name, doc)
            .await?;
        Ok::<_, Failure>(sub.id)
    }
    .await;
    match result {
        Ok(id) => {
            form.session.flash(false, "Subscribed.");
            Ok(see_other(&format!("{href}/subscriptions/{id}")))
        }
        Err(e) => flash_or(&form.session, &href, Err(e)),
    }
}
