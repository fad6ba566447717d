//! `herald-bench user-messages`: creates many user messages across many projects through
//! the public NATS subject `herald.user_messages.create`, then measures the list (3.5,
//! `limit=1000`) and show latency of one project holding `--project-messages` messages,
//! first when the bucket holds a tenth of `--total`, then when it holds all of it. The
//! ratio of the two shows whether a list costs more when the bucket grows.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures::StreamExt;
use serde_json::{json, Value};

use super::{Environment, Latency, Report, Section, Target};

/// The measured project.
const TARGET_PROJECT: &str = "bench-target";
const EVENT_ID: &str = "HERALD_SUBSCRIPTION_001_002";

#[derive(clap::Args)]
pub struct UserMessagesArgs {
    /// Messages in the bucket for the second measurement; the first is at a tenth.
    #[arg(long, default_value_t = 1_000_000)]
    total: usize,
    /// Projects the other messages are spread over.
    #[arg(long, default_value_t = 1000)]
    projects: usize,
    /// Messages of the measured project.
    #[arg(long, default_value_t = 1000)]
    project_messages: usize,
    /// Create requests in flight at once.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Stop creating after this many seconds (overall) and measure what exists.
    #[arg(long, default_value_t = 600)]
    fill_budget_secs: u64,
    /// List requests measured per bucket size.
    #[arg(long, default_value_t = 200)]
    list_samples: usize,
    /// Show requests measured per bucket size.
    #[arg(long, default_value_t = 1000)]
    show_samples: usize,
}

/// Creation counters of one fill.
#[derive(Debug, Default, Clone, Copy)]
struct Filled {
    created: usize,
    errors: usize,
}

/// Sends create requests `from..to`, request `i` going to project `i % projects`, until
/// done or `deadline`.
async fn fill(
    client: &async_nats::Client,
    from: usize,
    to: usize,
    args: &UserMessagesArgs,
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

async fn create(client: &async_nats::Client, body: String) -> anyhow::Result<String> {
    let reply = client
        .request(herald::user_messages::CREATE_SUBJECT, body.into())
        .await?;
    let reply: Value = serde_json::from_slice(&reply.payload)?;
    match reply["id"].as_str() {
        Some(id) => Ok(id.to_owned()),
        None => bail!("create failed: {reply}"),
    }
}

/// List and show latency of the target project.
async fn measure(
    env: &Environment,
    ids: &[String],
    args: &UserMessagesArgs,
) -> anyhow::Result<(Latency, Latency)> {
    let http = reqwest::Client::new();
    let get = |path: String| {
        http.get(format!("{}{path}", env.herald_url))
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
    let mut list = Vec::with_capacity(args.list_samples);
    for _ in 0..args.list_samples {
        let start = Instant::now();
        let res = get(list_path.clone()).send().await?;
        if !res.status().is_success() {
            bail!("list answered {}", res.status());
        }
        res.bytes().await?;
        list.push(start.elapsed());
    }
    let mut show = Vec::with_capacity(args.show_samples);
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
        show.push(start.elapsed());
    }
    Ok((Latency::of(list), Latency::of(show)))
}

fn latency_rows(list: Latency, show: Latency) -> Vec<(String, Value)> {
    let ms = |v: f64| json!((v * 1000.0).round() / 1000.0);
    vec![
        ("list samples".into(), json!(list.samples)),
        ("list p50 ms".into(), ms(list.p50_ms)),
        ("list p99 ms".into(), ms(list.p99_ms)),
        ("show samples".into(), json!(show.samples)),
        ("show p50 ms".into(), ms(show.p50_ms)),
        ("show p99 ms".into(), ms(show.p99_ms)),
    ]
}

pub async fn run(target: &Target, args: UserMessagesArgs) -> anyhow::Result<Report> {
    if args.project_messages == 0 || args.total < args.project_messages * 10 {
        bail!("--total must be at least ten times --project-messages (and both positive)");
    }
    let env = Environment::start(target, |_| {}).await?;
    let result = run_in(&env, &args).await;
    env.stop().await;
    result
}

async fn run_in(env: &Environment, args: &UserMessagesArgs) -> anyhow::Result<Report> {
    let client = async_nats::connect(&env.nats_url)
        .await
        .context("cannot connect to NATS")?;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.fill_budget_secs);

    // The measured project's messages.
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

    // Small bucket: a tenth of the total.
    let small_target = args.total / 10;
    let small = fill(&client, ids.len(), small_target, args, deadline).await;
    let small_count = ids.len() + small.created;
    let small_secs = started.elapsed().as_secs_f64();
    let (small_list, small_show) = measure(env, &ids, args).await?;

    // Large bucket: the rest.
    let fill_started = Instant::now();
    let large = fill(&client, small_target, args.total, args, deadline).await;
    let large_secs = fill_started.elapsed().as_secs_f64();
    let large_count = small_count + large.created;
    let (large_list, large_show) = measure(env, &ids, args).await?;

    let create_secs = small_secs + large_secs;
    let ratio = |a: f64, b: f64| json!(((a / b) * 100.0).round() / 100.0);
    Ok(Report {
        benchmark: "user-messages".into(),
        sections: vec![
            Section {
                title: "creation (NATS request/reply herald.user_messages.create)".into(),
                rows: vec![
                    ("messages requested".into(), json!(args.total)),
                    ("messages created".into(), json!(large_count)),
                    ("create errors".into(), json!(small.errors + large.errors)),
                    ("projects".into(), json!(args.projects + 1)),
                    (
                        "measured project messages".into(),
                        json!(args.project_messages),
                    ),
                    ("concurrency".into(), json!(args.concurrency)),
                    (
                        "creation seconds".into(),
                        json!((create_secs * 10.0).round() / 10.0),
                    ),
                    (
                        "creates per second".into(),
                        json!((large_count as f64 / create_secs).round()),
                    ),
                    (
                        "stopped by --fill-budget-secs".into(),
                        json!(large_count < args.total),
                    ),
                ],
            },
            Section {
                title: format!("small bucket: {small_count} messages"),
                rows: latency_rows(small_list, small_show),
            },
            Section {
                title: format!("large bucket: {large_count} messages"),
                rows: latency_rows(large_list, large_show),
            },
            Section {
                title: "large / small".into(),
                rows: vec![
                    (
                        "bucket size ratio".into(),
                        ratio(large_count as f64, small_count as f64),
                    ),
                    (
                        "list p50 ratio".into(),
                        ratio(large_list.p50_ms, small_list.p50_ms),
                    ),
                    (
                        "list p99 ratio".into(),
                        ratio(large_list.p99_ms, small_list.p99_ms),
                    ),
                    (
                        "show p50 ratio".into(),
                        ratio(large_show.p50_ms, small_show.p50_ms),
                    ),
                ],
            },
        ],
    })
}
