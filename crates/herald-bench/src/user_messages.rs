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

/// One measured bucket size: how many messages it held, and the latencies at that size.
struct Bucket {
    count: usize,
    list: Latencies,
    show: Latencies,
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    if args.project_messages == 0 || args.total < args.project_messages * 10 {
        bail!("--total must be at least ten times --project-messages (and both positive)");
    }
    // Started here unless given; dropped (stopped) at the end.
    let (_nats, _herald, nats_url, base) = start_or_use(bins, args).await?;
    let client = async_nats::connect(&nats_url)
        .await
        .context("cannot connect to NATS")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.fill_budget_secs);

    // The measured project's messages, then the small bucket (a tenth of the total).
    let ids = create_target_messages(&client, args.project_messages).await?;
    let small = fill(&client, ids.len(), args.total / 10, args, deadline).await;
    let small_count = ids.len() + small.created;
    let small_secs = started.elapsed().as_secs_f64();
    let (list, show) = measure(&base, &ids, args).await?;
    let small_bucket = Bucket {
        count: small_count,
        list,
        show,
    };

    // The large bucket: the rest.
    let fill_started = Instant::now();
    let large = fill(&client, args.total / 10, args.total, args, deadline).await;
    let create_secs = small_secs + fill_started.elapsed().as_secs_f64();
    let large_count = small_count + large.created;
    let (list, show) = measure(&base, &ids, args).await?;
    let large_bucket = Bucket {
        count: large_count,
        list,
        show,
    };

    let errors = small.errors + large.errors;
    let mut figures = creation_figures(args, large_count, errors, create_secs);
    let n = args.project_messages.min(1000);
    figures.extend(bucket_figures(n, "small", &small_bucket, None));
    figures.extend(bucket_figures(
        n,
        "large",
        &large_bucket,
        Some(&small_bucket),
    ));
    Ok(figures)
}

/// The given `(nats_url, herald_url)`, or a NATS and a Herald started for this run (kept
/// alive by the returned handles).
async fn start_or_use(
    bins: &Bins,
    args: &Args,
) -> Result<(Option<Nats>, Option<Herald>, String, String)> {
    Ok(match &args.external {
        Some((nats, herald)) => (None, None, nats.clone(), herald.clone()),
        None => {
            let nats = Nats::start(bins, args.sync_always).await?;
            let herald = Herald::start(bins, &nats.url, &[]).await?;
            let (url, base) = (nats.url.clone(), herald.base.clone());
            (Some(nats), Some(herald), url, base)
        }
    })
}

/// Creates the measured project's `count` messages, 64 at a time, and returns their ids;
/// any failure aborts, as the measurements need all of them.
async fn create_target_messages(client: &async_nats::Client, count: usize) -> Result<Vec<String>> {
    let mut ids = Vec::with_capacity(count);
    for chunk in (0..count).collect::<Vec<_>>().chunks(64) {
        let batch = futures::future::join_all(chunk.iter().map(|_| {
            let body = json!({"project_id": TARGET_PROJECT, "event_id": EVENT_ID}).to_string();
            create(client, body)
        }))
        .await;
        for r in batch {
            ids.push(r?);
        }
    }
    Ok(ids)
}

fn creation_figures(args: &Args, created: usize, errors: usize, create_secs: f64) -> Vec<Figure> {
    vec![
        Figure::new("user messages: created", created as f64, "msgs")
            .target(&format!("{} requested", args.total)),
        Figure::new("user messages: create errors", errors as f64, "msgs"),
        Figure::new("user messages: creation time", create_secs, "s"),
        Figure::new(
            "user messages: create rate (NATS req/reply)",
            created as f64 / create_secs,
            "msg/s",
        ),
    ]
}

/// List and show p50 of one bucket; against `baseline` (the small bucket) when given, as
/// the ratio is what shows whether cost grows with the bucket.
fn bucket_figures(
    n: usize,
    label: &str,
    bucket: &Bucket,
    baseline: Option<&Bucket>,
) -> [Figure; 2] {
    let count = bucket.count;
    let mut l = Figure::new(
        format!("user messages: list {n} of {count} ({label}) p50"),
        bucket.list.quantile(0.5),
        "ms",
    )
    .latencies(&bucket.list);
    let mut s = Figure::new(
        format!("user messages: show 1 of {count} ({label}) p50"),
        bucket.show.quantile(0.5),
        "ms",
    )
    .latencies(&bucket.show);
    if let Some(base) = baseline {
        l = l
            .vs(base.list.quantile(0.5))
            .target("ratio ≈ 1: cost independent of the bucket");
        s = s.vs(base.show.quantile(0.5)).target("ratio ≈ 1");
    }
    [l, s]
}
