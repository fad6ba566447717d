//! Replicas, in a 3-node cluster (`herald_testkit::nats::NatsCluster`), a fresh one each:
//!
//! - Herald with `replicas = 3`: the time to create `topics × subscriptions`, every node's
//!   RSS before and after, then a node kill: the node leading the most consumers is
//!   SIGKILLed, one message is published to every topic, and the benchmark watches for
//!   `window_secs` which subscriptions receive it; then the node is restarted and it watches
//!   until every subscription has it (or 60 s). Lost and duplicated deliveries are counted
//!   per (subscription, message).
//! - Raw JetStream, R1 against R3 consumers on R3 streams. Herald's topic streams cannot
//!   have R1 consumers: they use interest retention, and JetStream requires the consumers
//!   of interest (and work-queue) streams to have the stream's replicas (error 10134). So
//!   this measures what R1 consumers would buy on limits-retention streams: creation time,
//!   RSS per node, and how many consumers answer from the surviving nodes after a kill.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use async_nats::jetstream;
use futures::{stream, StreamExt, TryStreamExt};
use herald_testkit::nats::NatsCluster;
use serde_json::json;

use crate::{
    api::HeraldApi,
    env::{rss_mib, Bins, Herald},
    receiver::{now_ns, Receiver},
    stats::Figure,
};

pub struct Args {
    pub topics: usize,
    pub subscriptions: usize,
    /// Replicas of the raw consumers (on R3 limits-retention streams).
    pub consumer_replicas: Vec<usize>,
    /// How long deliveries are watched while the node is down.
    pub window_secs: u64,
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let mut figures = herald_r3(bins, args).await?;
    for r in &args.consumer_replicas {
        figures.extend(raw_consumers(args, *r).await?);
    }
    Ok(figures)
}

/// What the receiver got: each (URL, message) and how often.
#[derive(Default)]
struct Seen {
    counts: HashMap<(String, u64), u32>,
}

impl Seen {
    fn take(&mut self, receiver: &mut Receiver) {
        for r in receiver.drain_records() {
            *self.counts.entry(r).or_default() += 1;
        }
    }

    fn delivered(&self, expected: &HashSet<(String, u64)>) -> usize {
        expected
            .iter()
            .filter(|k| self.counts.contains_key(*k))
            .count()
    }

    fn duplicates(&self) -> u32 {
        self.counts.values().map(|n| n.saturating_sub(1)).sum()
    }
}

/// Publishes one message to each topic (each retried until accepted, up to 30 s) and
/// returns the (URL, message) pairs every subscription should receive.
async fn publish_round(api: &HeraldApi, args: &Args) -> Result<HashSet<(String, u64)>> {
    let mut expected = HashSet::new();
    let base = now_ns();
    for t in 0..args.topics {
        // Distinct per topic even within one clock tick.
        let stamp = base + t as u64;
        let body = format!(r#"{{"messages":[{{"body":{{"t":{stamp}}}}}]}}"#);
        let deadline = Instant::now() + Duration::from_secs(30);
        while !matches!(
            api.post_raw(&format!("r-{t}"), body.clone().into()).await,
            Ok(true)
        ) {
            if Instant::now() > deadline {
                anyhow::bail!("topic r-{t} refused publishes for 30 s");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for s in 0..args.subscriptions {
            expected.insert((format!("/hook/{t}?s={s}"), stamp));
        }
    }
    Ok(expected)
}

/// Watches deliveries until every expected pair arrived or `limit` passed; returns how many
/// arrived and, if all did, when the last one did.
async fn watch(
    receiver: &mut Receiver,
    seen: &mut Seen,
    expected: &HashSet<(String, u64)>,
    limit: Duration,
) -> (usize, Option<Duration>) {
    let start = Instant::now();
    loop {
        seen.take(receiver);
        let got = seen.delivered(expected);
        if got == expected.len() {
            return (got, Some(start.elapsed()));
        }
        if start.elapsed() > limit {
            return (got, None);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Consumers led by each node (by node name).
async fn consumer_leaders(
    cluster: &NatsCluster,
    alive: usize,
    prefix: &str,
) -> Result<HashMap<String, usize>> {
    let js = jetstream::new(async_nats::connect(cluster.nodes[alive].url()).await?);
    let names: Vec<String> = js.stream_names().try_collect().await?;
    let mut led = HashMap::new();
    for name in names.iter().filter(|n| n.starts_with(prefix)) {
        let stream = js.get_stream(name).await?;
        let infos: Vec<_> = stream.consumers().try_collect().await?;
        for i in infos {
            if let Some(leader) = i.cluster.and_then(|c| c.leader) {
                *led.entry(leader).or_default() += 1;
            }
        }
    }
    Ok(led)
}

async fn create_all(api: &HeraldApi, receiver: &Receiver, args: &Args) -> Result<Duration> {
    let start = Instant::now();
    let results: Vec<Result<()>> = stream::iter(0..args.topics)
        .map(|t| {
            let (api, url) = (api.clone(), receiver.url(&format!("/hook/{t}")));
            let subs = args.subscriptions;
            async move {
                let topic = format!("r-{t}");
                api.create_topic(&topic).await?;
                for s in 0..subs {
                    api.subscribe(&topic, &format!("{url}?s={s}"), json!({}))
                        .await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .context("creating topics and subscriptions")?;
    Ok(start.elapsed())
}

async fn herald_r3(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let label = "herald R3";
    let mut cluster = NatsCluster::start().await;
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid().unwrap_or(0)).collect();
    let rss_before: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect();
    let herald = Herald::start(
        bins,
        &cluster.urls(),
        &[
            ("HERALD_REPLICAS", "3".into()),
            // Short attempts so a consumer that vanished mid-delivery is retried soon.
            ("HERALD_DELIVERY_TIMEOUT_MS", "2000".into()),
        ],
    )
    .await?;
    let mut receiver = Receiver::start_recording().await?;
    let api = HeraldApi::new(&herald.base);
    let total = args.topics * args.subscriptions;

    let created = create_all(&api, &receiver, args).await?;
    eprintln!("replicas {label}: {total} subscriptions created in {created:?}");
    let mut seen = Seen::default();
    let warm = publish_round(&api, args).await?;
    let (got, _) = watch(&mut receiver, &mut seen, &warm, Duration::from_secs(60)).await;
    anyhow::ensure!(
        got == warm.len(),
        "{label}: only {got} of {total} delivered before any fault"
    );
    let rss_after: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect();

    let led = consumer_leaders(&cluster, 0, "HERALD_TOPIC_").await?;
    let (victim, victim_led) = busiest(&cluster, &led);
    eprintln!(
        "replicas {label}: consumer leaders per node {led:?}; killing {}",
        cluster.nodes[victim].name
    );

    cluster.nodes[victim].kill();
    let killed = Instant::now();
    let round = publish_round(&api, args).await?;
    let published_after = killed.elapsed();
    let window = Duration::from_secs(args.window_secs);
    let (during, resumed) = watch(&mut receiver, &mut seen, &round, window).await;
    eprintln!(
        "replicas {label}: published to every topic {published_after:?} after the kill; \
         {during} of {total} delivered while the node was down{}",
        resumed.map_or(String::new(), |d| format!(
            ", all {:?} after the kill",
            d + published_after
        ))
    );
    cluster.nodes[victim].restart().await;
    let (after, complete) = watch(&mut receiver, &mut seen, &round, Duration::from_secs(60)).await;
    seen.take(&mut receiver);
    eprintln!(
        "replicas {label}: after restart {after} of {total} delivered{}; duplicates {}",
        complete.map_or(String::from(" (not all within 60 s)"), |d| format!(
            " within {d:?}"
        )),
        seen.duplicates()
    );

    let mut figures = vec![
        Figure::new(
            format!(
                "replicas {label}: create {} x {}",
                args.topics, args.subscriptions
            ),
            created.as_secs_f64(),
            "s",
        ),
        Figure::new(
            "  subscriptions created per second",
            total as f64 / created.as_secs_f64(),
            "subs/s",
        ),
    ];
    for (i, node) in cluster.nodes.iter().enumerate() {
        figures.push(
            Figure::new(
                format!("  nats-server {} RSS", node.name),
                rss_after[i],
                "MiB",
            )
            .vs(rss_before[i]),
        );
    }
    let mean_per_sub_kib = rss_after
        .iter()
        .zip(&rss_before)
        .map(|(a, b)| (a - b) * 1024.0 / total as f64)
        .sum::<f64>()
        / 3.0;
    let pct = |n: usize| n as f64 * 100.0 / total as f64;
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    figures.extend([
        Figure::new(
            "  nats-server RSS per subscription per node",
            mean_per_sub_kib,
            "KiB",
        ),
        Figure::new("  consumers led by the killed node", victim_led as f64, ""),
        Figure::new(
            format!("  delivered within {} s of the kill", args.window_secs),
            pct(during),
            "%",
        ),
        Figure::new(
            "  all delivered after the kill (NaN: not while down)",
            secs(resumed.map(|d| d + published_after)),
            "s",
        ),
        Figure::new("  all delivered after the restart", secs(complete), "s"),
        Figure::new("  lost (never delivered)", (total - after) as f64, ""),
        Figure::new("  duplicate deliveries", f64::from(seen.duplicates()), ""),
    ]);
    Ok(figures)
}

/// Index and consumer count of the node leading the most consumers.
fn busiest(cluster: &NatsCluster, led: &HashMap<String, usize>) -> (usize, usize) {
    cluster
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (i, led.get(&n.name).copied().unwrap_or(0)))
        .max_by_key(|(_, n)| *n)
        .unwrap_or((0, 0))
}

/// How many of `consumers` (stream, name) answer an info request within 1 s.
async fn answering(js: &jetstream::Context, consumers: &[(String, String)]) -> usize {
    stream::iter(consumers.iter().cloned())
        .map(|(stream, name)| {
            let js = js.clone();
            async move {
                let info = async {
                    let s = js.get_stream_no_info(&stream).await.ok()?;
                    s.consumer_info(&name).await.ok()
                };
                tokio::time::timeout(Duration::from_secs(1), info)
                    .await
                    .ok()
                    .flatten()
                    .is_some()
            }
        })
        .buffer_unordered(64)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await
}

/// Polls [`answering`] until all answer or `limit` passes; returns the count and when.
async fn wait_answering(
    js: &jetstream::Context,
    consumers: &[(String, String)],
    limit: Duration,
) -> (usize, Option<Duration>) {
    let start = Instant::now();
    loop {
        let n = answering(js, consumers).await;
        if n == consumers.len() {
            return (n, Some(start.elapsed()));
        }
        if start.elapsed() > limit {
            return (n, None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Raw JetStream: `topics` R3 limits-retention streams with `subscriptions` durable pull
/// consumers of `replicas` each; creation time, RSS per node, availability after a kill.
async fn raw_consumers(args: &Args, replicas: usize) -> Result<Vec<Figure>> {
    let label = format!("raw R{replicas} on R3 streams");
    let mut cluster = NatsCluster::start().await;
    let pids: Vec<u32> = cluster.nodes.iter().map(|n| n.pid().unwrap_or(0)).collect();
    let rss_before: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect();
    let js = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(async_nats::connect(cluster.urls().split(',').collect::<Vec<_>>()).await?);
    let total = args.topics * args.subscriptions;
    let start = Instant::now();
    let created: Vec<Result<Vec<(String, String)>>> = stream::iter(0..args.topics)
        .map(|t| {
            let js = js.clone();
            let subs = args.subscriptions;
            async move {
                let name = format!("RAWR_{t}");
                let stream = js
                    .create_stream(jetstream::stream::Config {
                        name: name.clone(),
                        subjects: vec![format!("rawr.{t}")],
                        num_replicas: 3,
                        ..Default::default()
                    })
                    .await?;
                let mut names = Vec::with_capacity(subs);
                for s in 0..subs {
                    let durable = format!("c{s}");
                    stream
                        .create_consumer(jetstream::consumer::pull::Config {
                            durable_name: Some(durable.clone()),
                            ack_policy: jetstream::consumer::AckPolicy::Explicit,
                            num_replicas: replicas,
                            ..Default::default()
                        })
                        .await?;
                    names.push((name.clone(), durable));
                }
                anyhow::Ok(names)
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    let elapsed = start.elapsed();
    let consumers: Vec<(String, String)> = created
        .into_iter()
        .collect::<Result<Vec<_>>>()
        .with_context(|| format!("{label}: creating"))?
        .into_iter()
        .flatten()
        .collect();
    let rss_after: Vec<f64> = pids.iter().map(|p| rss_mib(*p)).collect();
    let led = consumer_leaders(&cluster, 0, "RAWR_").await?;
    let (victim, victim_led) = busiest(&cluster, &led);
    eprintln!(
        "replicas {label}: {total} created in {elapsed:?}; leaders {led:?}; killing {}",
        cluster.nodes[victim].name
    );
    let survivor = (victim + 1) % 3;
    let js_survivor = jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(1))
        .build(async_nats::connect(cluster.nodes[survivor].url()).await?);
    cluster.nodes[victim].kill();
    let (during, all_during) = wait_answering(
        &js_survivor,
        &consumers,
        Duration::from_secs(args.window_secs),
    )
    .await;
    cluster.nodes[victim].restart().await;
    let (after, all_after) =
        wait_answering(&js_survivor, &consumers, Duration::from_secs(60)).await;
    eprintln!(
        "replicas {label}: answering while down {during} of {total} (all after {all_during:?}); \
         after restart {after} (all after {all_after:?})"
    );
    let secs = |d: Option<Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64());
    let mut figures = vec![
        Figure::new(
            format!(
                "replicas {label}: create {} x {}",
                args.topics, args.subscriptions
            ),
            elapsed.as_secs_f64(),
            "s",
        ),
        Figure::new(
            "  consumers created per second",
            total as f64 / elapsed.as_secs_f64(),
            "/s",
        ),
    ];
    for (i, node) in cluster.nodes.iter().enumerate() {
        figures.push(
            Figure::new(
                format!("  nats-server {} RSS", node.name),
                rss_after[i],
                "MiB",
            )
            .vs(rss_before[i]),
        );
    }
    figures.extend([
        Figure::new("  consumers led by the killed node", victim_led as f64, ""),
        Figure::new(
            format!("  answering within {} s of the kill", args.window_secs),
            during as f64,
            "",
        ),
        Figure::new(
            "  all answering after the kill (NaN: not while down)",
            secs(all_during),
            "s",
        ),
        Figure::new("  all answering after the restart", secs(all_after), "s"),
    ]);
    Ok(figures)
}
