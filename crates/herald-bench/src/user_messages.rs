//! User messages: creates `total` messages across `projects` projects through the public
//! NATS subject `herald.user_messages.create`, then measures the list (3.5, `limit=1000`)
//! and show latency of one project holding `project_messages` messages, first when the
//! bucket holds a tenth of `total`, then when it holds all of it. The large/small ratio
//! shows whether a list costs more when the bucket grows (it should stay near 1).

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use crate::{
    env::{Bins, Herald, Nats},
    stats::{Figure, Latencies},
};

/// The measured project.
const TARGET_PROJECT: &str = "bench-target";
const EVENT_ID: &str = "HERALD_SUBSCRIPTION_001_002";

pub struct Args {
    pub total: usize,
    pub projects: usize,
    pub project_messages: usize,
    pub concurrency: usize,
    pub fill_budget_secs: u64,
    pub list_samples: usize,
    pub show_samples: usize,
    /// Pause before each measurement so both start with JetStream's writes settled.
    pub settle_secs: u64,
    pub sync_always: bool,
    /// `(nats_url, herald_url)` of a running Herald instead of starting one.
    pub external: Option<(String, String)>,
}

/// Creation counters of one fill.
#[derive(Debug, Default, Clone, Copy)]
struct Filled {
    created: usize,
    errors: usize,
}

async fn create(client: &async_nats::Client, body: String) -> Result<String> {
    let reply = client
        .request(herald::user_messages::CREATE_SUBJECT, body.into())
        .await?;
    let reply: Value = serde_json::from_slice(&reply.payload)?;
    match reply["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => bail!("create failed: {reply}"),
    }
}

/// Sends create requests `from..to`, request `i` for project `i % projects`, until done
/// or `deadline`.
async fn fill(
    client: &async_nats::Client,
    from: usize,
    to: usize,
    args: &Args,
    deadline: Instant,
) -> Filled {
    futures::stream::iter(from..to)
        .take_while(|_| std::future::ready(Instant::now() < deadline))
        .map(|i| {
            let client = client.clone();
            let project = format!("bench-p{:04}", i % args.projects.max(1));
            async move {
                let body = json!({
                    "project_id": project,
                    "event_id": EVENT_ID,
                    "resource_uuid": uuid::Uuid::new_v4(),
                })
                .to_string();
                create(&client, body).await.is_ok()
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .fold(Filled::default(), |mut acc, ok| async move {
            if ok {
                acc.created += 1;
            } else {
                acc.errors += 1;
            }
            acc
        })
        .await
}

/// List and show latency (ms) of the measured project.
async fn measure(base: &str, ids: &[String], args: &Args) -> Result<(Latencies, Latencies)> {
    tokio::time::sleep(Duration::from_secs(args.settle_secs)).await;
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{base}{path}"))
            .header("X-Auth-Token", format!("bench:{TARGET_PROJECT}"))
            .header("OpenStack-API-Version", "volume 3.5")
    };
    let list_path = format!("/v3/{TARGET_PROJECT}/messages?limit=1000");
    // Warm up, and check the list is complete.
    for _ in 0..5 {
        let body: Value = get(list_path.clone()).send().await?.json().await?;
        let n = body["messages"].as_array().map_or(0, Vec::len);
        if n != ids.len().min(1000) {
            bail!("the list returned {n} messages, expected {}", ids.len());
        }
    }
    let mut list = Latencies::default();
    for _ in 0..args.list_samples {
        let start = Instant::now();
        let res = get(list_path.clone()).send().await?;
        if !res.status().is_success() {
            bail!("list answered {}", res.status());
        }
        res.bytes().await?;
        list.push(start.elapsed().as_secs_f64() * 1e3);
    }
    let mut show = Latencies::default();
    for i in 0..args.show_samples {
        let id = &ids[i % ids.len()];
        let start = Instant::now();
        let res = get(format!("/v3/{TARGET_PROJECT}/messages/{id}"))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("show answered {}", res.status());
        }
        res.bytes().await?;
        show.push(start.elapsed().as_secs_f64() * 1e3);
    }
    Ok((list, show))
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    if args.project_messages == 0 || args.total < args.project_messages * 10 {
        bail!("--total must be at least ten times --project-messages (and both positive)");
    }
    // Started here unless given; dropped (stopped) at the end.
    let (_nats, _herald, nats_url, base) = match &args.external {
        Some((nats, herald)) => (None, None, nats.clone(), herald.clone()),
        None => {
            let nats = Nats::start(bins, args.sync_always).await?;
            let herald = Herald::start(bins, &nats.url, &[]).await?;
            let (url, base) = (nats.url.clone(), herald.base.clone());
            (Some(nats), Some(herald), url, base)
        }
    };
    let client = async_nats::connect(&nats_url)
        .await
        .context("cannot connect to NATS")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.fill_budget_secs);

    // The measured project's messages, then the small bucket (a tenth of the total).
    let mut ids = Vec::with_capacity(args.project_messages);
    for chunk in (0..args.project_messages).collect::<Vec<_>>().chunks(64) {
        let batch = futures::future::join_all(chunk.iter().map(|_| {
            let body = json!({"project_id": TARGET_PROJECT, "event_id": EVENT_ID}).to_string();
            create(&client, body)
        }))
        .await;
        for r in batch {
            ids.push(r?);
        }
    }
    let small = fill(&client, ids.len(), args.total / 10, args, deadline).await;
    let small_count = ids.len() + small.created;
    let small_secs = started.elapsed().as_secs_f64();
    let (small_list, small_show) = measure(&base, &ids, args).await?;

    // The large bucket: the rest.
    let fill_started = Instant::now();
    let large = fill(&client, args.total / 10, args.total, args, deadline).await;
    let create_secs = small_secs + fill_started.elapsed().as_secs_f64();
    let large_count = small_count + large.created;
    let (large_list, large_show) = measure(&base, &ids, args).await?;

    let n = args.project_messages.min(1000);
    let mut figures = vec![
        Figure::new("user messages: created", large_count as f64, "msgs")
            .target(&format!("{} requested", args.total)),
        Figure::new(
            "user messages: create errors",
            (small.errors + large.errors) as f64,
            "msgs",
        ),
        Figure::new("user messages: creation time", create_secs, "s"),
        Figure::new(
            "user messages: create rate (NATS req/reply)",
            large_count as f64 / create_secs,
            "msg/s",
        ),
    ];
    for (label, count, list, show, baseline) in [
        ("small", small_count, &small_list, &small_show, None),
        (
            "large",
            large_count,
            &large_list,
            &large_show,
            Some((small_list.quantile(0.5), small_show.quantile(0.5))),
        ),
    ] {
        let mut l = Figure::new(
            format!("user messages: list {n} of {count} ({label}) p50"),
            list.quantile(0.5),
            "ms",
        )
        .latencies(list);
        let mut s = Figure::new(
            format!("user messages: show 1 of {count} ({label}) p50"),
            show.quantile(0.5),
            "ms",
        )
        .latencies(show);
        if let Some((list_base, show_base)) = baseline {
            l = l
                .vs(list_base)
                .target("ratio ≈ 1: cost independent of the bucket");
            s = s.vs(show_base).target("ratio ≈ 1");
        }
        figures.push(l);
        figures.push(s);
    }
    Ok(figures)
}
