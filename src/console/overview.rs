//! The overview: the project's topics, its subscriptions by status, and charts of
//! deliveries per second and publish→delivery latency over the last hour.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::{extract::State, response::Response};
use futures::{stream, StreamExt, TryStreamExt};
use maud::html;
use moka::future::Cache;

use super::{
    chart::{self, Line},
    history::SPAN_SECS,
    page::{self, Failure, Nav},
    Viewer,
};
use crate::{
    api::AppState,
    domain::{ProjectId, TopicName},
    store::{names::stream_name, subscriptions::Subscription, StoreError},
};

/// Topics whose subscriptions are read at once.
const CONCURRENCY: usize = 16;
/// Topics listed on the overview (the topics page pages through all of them).
const TOPICS_SHOWN: usize = 10;

/// A subscription's status, as the API's `GET …/subscriptions/{id}` says it.
pub(crate) fn status(state: &AppState, sub: &Subscription) -> &'static str {
    super::topics::service(state).status(sub)
}

/// Subscriptions by status need every topic's consumers (1,000 topics: 1,000 requests,
/// too slow for a page), so the counts are kept per project and refreshed in the
/// background once older than this; a project's first overview waits for them.
const TALLY_MAX_AGE: Duration = Duration::from_secs(30);
/// Projects whose counts are kept.
const TALLY_CAPACITY: u64 = 1_000;

/// A project's subscriptions by status, as counted at `at`.
pub(crate) struct Tally {
    at: Instant,
    by_status: BTreeMap<&'static str, usize>,
    refreshing: AtomicBool,
}

/// The counts of recently viewed projects; cloning shares them.
#[derive(Clone)]
pub(crate) struct Tallies(Cache<ProjectId, Arc<Tally>>);

impl Default for Tallies {
    fn default() -> Self {
        Self(
            Cache::builder()
                .max_capacity(TALLY_CAPACITY)
                .time_to_idle(Duration::from_secs(600))
                .build(),
        )
    }
}

/// Counts `project`'s live subscriptions by status.
async fn count(state: &AppState, project: &ProjectId) -> Result<Tally, StoreError> {
    let topics = state.store.list_topics(project).await?;
    let reads: Vec<_> = topics
        .iter()
        .map(|t| state.store.list_subscriptions(project, &t.name))
        .collect();
    let subs: Vec<Vec<Subscription>> = stream::iter(reads)
        .buffered(CONCURRENCY)
        .try_collect()
        .await?;
    let now = chrono::Utc::now();
    let mut by_status = BTreeMap::new();
    for sub in subs.iter().flatten().filter(|s| !s.is_expired(now)) {
        *by_status.entry(status(state, sub)).or_default() += 1;
    }
    Ok(Tally {
        at: Instant::now(),
        by_status,
        refreshing: AtomicBool::new(false),
    })
}

/// The project's counts: fresh, stale while a background refresh runs, or counted now.
async fn tally(state: &AppState, project: &ProjectId) -> Result<Arc<Tally>, StoreError> {
    let tallies = &state.console.tallies.0;
    match tallies.get(project).await {
        Some(t) if t.at.elapsed() < TALLY_MAX_AGE => Ok(t),
        Some(t) => {
            if !t.refreshing.swap(true, Ordering::AcqRel) {
                let (state, project, stale) = (state.clone(), project.clone(), t.clone());
                tokio::spawn(async move {
                    match count(&state, &project).await {
                        Ok(fresh) => {
                            state
                                .console
                                .tallies
                                .0
                                .insert(project, Arc::new(fresh))
                                .await
                        }
                        Err(e) => {
                            tracing::warn!(error.cause_chain = ?e, error.message = %e, "console: subscription counts not refreshed");
                            stale.refreshing.store(false, Ordering::Release);
                        }
                    }
                });
            }
            Ok(t)
        }
        None => {
            let t = Arc::new(count(state, project).await?);
            tallies.insert(project.clone(), t.clone()).await;
            Ok(t)
        }
    }
}

pub(crate) async fn show_overview(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, Failure> {
    let project = &viewer.identity.project;
    let (topics, counts, tally) = tokio::try_join!(
        state.store.list_topics(project),
        state.store.topic_counts(project),
        tally(&state, project),
    )?;
    let count_of = |t: &TopicName| {
        counts
            .get(&stream_name(project, t))
            .copied()
            .unwrap_or_default()
    };
    let total: usize = counts.values().map(|c| c.subscriptions).sum();
    let now = chrono::Utc::now();
    let points = state.console.history().points();
    let at = now.timestamp();
    let rate = [Line {
        class: "s1",
        label: "delivered",
        points: points
            .iter()
            .map(|p| (p.at, p.deliveries_per_sec))
            .collect(),
    }];
    let latency = [
        Line {
            class: "s1",
            label: "mean",
            points: points
                .iter()
                .filter_map(|p| p.latency_mean_ms.map(|v| (p.at, v)))
                .collect(),
        },
        Line {
            class: "s2",
            label: "p95",
            points: points
                .iter()
                .filter_map(|p| p.latency_p95_ms.map(|v| (p.at, v)))
                .collect(),
        },
    ];
    let body = html! {
        section.cards {
            div.card.stat { span.big #topic-count { (topics.len()) } " topics" }
            div.card.stat {
                span.big #subscription-count { (total) } " subscriptions"
                ul.statuses {
                    @for (s, n) in &tally.by_status {
                        li { span class={ "badge " (s) } { (s) } " " (n) }
                    }
                }
                span.muted { "by status, counted " (tally.at.elapsed().as_secs()) " s ago" }
            }
        }
        section.charts {
            (chart::line_chart("Deliveries per second", "/s", at, SPAN_SECS, &rate))
            (chart::line_chart("Publish → delivery latency", "ms", at, SPAN_SECS, &latency))
        }
        p.muted { "Charts cover every project served by this Herald process; they refresh every 30 s with JavaScript on (reload otherwise)." }
        h2 { "Topics" }
        @if topics.is_empty() {
            p { "No topics yet. " a href="/console/topics" { "Create one" } "." }
        } @else {
            table {
                thead { tr { th { "Topic" } th.num { "Subscriptions" } } }
                tbody {
                    @for t in topics.iter().take(TOPICS_SHOWN) {
                        tr {
                            td { a href={ "/console/topics/" (t.name.as_str()) } { (t.name.as_str()) } }
                            td.num { (count_of(&t.name).subscriptions) }
                        }
                    }
                }
            }
            @if topics.len() > TOPICS_SHOWN {
                p { a href="/console/topics" { "All " (topics.len()) " topics →" } }
            }
        }
    };
    Ok(page::page(
        &viewer,
        Nav::Overview,
        "Overview",
        Some(30),
        body,
    ))
}
