//! The overview: the project's topics, its subscriptions by status, and charts of
//! deliveries per second and publish→delivery latency over the last hour.

use std::collections::BTreeMap;

use axum::{extract::State, response::Response};
use futures::{stream, StreamExt, TryStreamExt};
use maud::html;

use super::{
    chart::{self, Line},
    history::SPAN_SECS,
    page::{self, Failure, Nav},
    Viewer,
};
use crate::{
    api::AppState, config::Config, domain::Subscriber, store::subscriptions::Subscription,
};

/// Topics whose subscriptions are read at once.
const CONCURRENCY: usize = 16;
/// Topics listed on the overview (the topics page pages through all of them).
const TOPICS_SHOWN: usize = 10;

/// A subscription's status, as the console shows it.
pub(crate) fn status(config: &Config, sub: &Subscription) -> &'static str {
    let awaits = Subscriber::parse(&sub.subscriber)
        .is_ok_and(|s| s.awaits_confirmation(config.require_confirmation, sub.confirmed));
    if sub.unsubscribed {
        "unsubscribed"
    } else if awaits {
        "unconfirmed"
    } else {
        "active"
    }
}

pub(crate) async fn show_overview(
    State(state): State<AppState>,
    viewer: Viewer,
) -> Result<Response, Failure> {
    let project = &viewer.identity.project;
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
    let mut by_status: BTreeMap<&str, usize> = BTreeMap::new();
    for sub in subs.iter().flatten().filter(|s| !s.is_expired(now)) {
        *by_status.entry(status(&state.config, sub)).or_default() += 1;
    }
    let total: usize = by_status.values().sum();

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
                    @for (s, n) in &by_status {
                        li { span class={ "badge " (s) } { (s) } " " (n) }
                    }
                }
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
                    @for (t, s) in topics.iter().zip(&subs).take(TOPICS_SHOWN) {
                        tr {
                            td { a href={ "/console/topics/" (t.name.as_str()) } { (t.name.as_str()) } }
                            td.num { (s.iter().filter(|s| !s.is_expired(now)).count()) }
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
