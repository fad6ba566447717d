//! Fan-out delivery: 1 topic × N webhook subscriptions to a local receiver that answers 200
//! at once; deliveries/s from the first publish to the last delivery. Baseline: raw loops
//! pulling from N durable consumers and POSTing to the same receiver, same concurrency.

use std::{
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Result};

use crate::{
    api::{batch_body, HeraldApi},
    env::{cpu_time, Bins, Herald, Nats},
    raw::{spawn_forwarder, RawTopic},
    receiver::Receiver,
    stats::Figure,
};

pub struct Args {
    pub subscriptions: Vec<usize>,
    /// Deliveries per run (messages = deliveries / subscriptions).
    pub deliveries: usize,
    pub concurrency: usize,
    pub sync_always: bool,
}

async fn wait_for(receiver: &Receiver, want: u64, deadline: Duration) -> Result<Duration> {
    let start = Instant::now();
    while receiver.count() < want {
        if start.elapsed() > deadline {
            bail!(
                "only {} of {want} deliveries after {deadline:?}",
                receiver.count()
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(start.elapsed())
}

/// Publish bodies of 10 messages; with `shards`, message k carries the attribute
/// `shard = "s{k % shards}"` (post p uses body p % len).
fn bodies(shards: Option<usize>) -> Vec<bytes::Bytes> {
    let Some(shards) = shards else {
        return vec![batch_body(10, 256)];
    };
    let filler = "x".repeat(256);
    (0..shards)
        .map(|p| {
            let msgs: Vec<serde_json::Value> = (0..10)
                .map(|j| {
                    serde_json::json!({"body": filler,
                        "attributes": {"shard": format!("s{}", (p * 10 + j) % shards)}})
                })
                .collect();
            serde_json::to_vec(&serde_json::json!({ "messages": msgs }))
                .expect("json")
                .into()
        })
        .collect()
}

/// CPU µs per delivery of each process of a run (what bounds throughput when the cores
/// are saturated: deliveries/s ≈ cores ÷ the total).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub herald: f64,
    pub nats: f64,
    /// The bench itself: the publisher, the receiver and (raw runs) the delivery loop.
    pub bench: f64,
}

impl Cpu {
    fn total(&self) -> f64 {
        self.herald + self.nats + self.bench
    }
}

/// CPU counters of the processes of a run, read before and after it.
struct CpuMeter {
    nats_pid: u32,
    herald_pid: Option<u32>,
    at: (Duration, Duration, Duration),
}

impl CpuMeter {
    fn start(nats_pid: u32, herald_pid: Option<u32>) -> Self {
        let mut m = Self {
            nats_pid,
            herald_pid,
            at: Default::default(),
        };
        m.at = m.read();
        m
    }

    fn read(&self) -> (Duration, Duration, Duration) {
        (
            self.herald_pid.map_or(Duration::ZERO, cpu_time),
            cpu_time(self.nats_pid),
            cpu_time(std::process::id()),
        )
    }

    fn per_delivery(&self, deliveries: u64) -> Cpu {
        let now = self.read();
        let us =
            |a: Duration, b: Duration| a.saturating_sub(b).as_secs_f64() * 1e6 / deliveries as f64;
        Cpu {
            herald: us(now.0, self.at.0),
            nats: us(now.1, self.at.1),
            bench: us(now.2, self.at.2),
        }
    }
}

/// Deliveries/s and the CPU per delivery of each process.
async fn herald_run(bins: &Bins, args: &Args, n: usize, messages: usize) -> Result<(f64, Cpu)> {
    herald_run_full(bins, args, n, messages, false, &[]).await
}

/// With `filtered`, subscription i has the policy `{"shard": ["s{i}"]}`, so each message
/// matches exactly one of the `n` subscriptions.
async fn herald_run_with(
    bins: &Bins,
    args: &Args,
    n: usize,
    messages: usize,
    filtered: bool,
) -> Result<(f64, f64)> {
    let (rate, cpu) = herald_run_full(bins, args, n, messages, filtered, &[]).await?;
    Ok((rate, cpu.herald))
}

/// [`herald_run`] with Herald started with extra environment variables.
pub async fn herald_run_env(
    bins: &Bins,
    args: &Args,
    n: usize,
    messages: usize,
    env: &[(&str, String)],
) -> Result<(f64, f64)> {
    let (rate, cpu) = herald_run_full(bins, args, n, messages, false, env).await?;
    Ok((rate, cpu.herald))
}

async fn herald_run_full(
    bins: &Bins,
    args: &Args,
    n: usize,
    messages: usize,
    filtered: bool,
    env: &[(&str, String)],
) -> Result<(f64, Cpu)> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let herald = Herald::start(bins, &nats.url, env).await?;
    let receiver = Receiver::start().await?;
    let api = HeraldApi::new(&herald.base);
    api.create_topic("fanout").await?;
    for i in 0..n {
        api.subscribe(
            "fanout",
            &receiver.url(&format!("/hook/{i}")),
            if filtered {
                serde_json::json!({"filter_policy": {"shard": [format!("s{i}")]}})
            } else {
                serde_json::json!({})
            },
        )
        .await?;
    }
    let start = Instant::now();
    let meter = CpuMeter::start(nats.pid(), Some(herald.pid()));
    let bodies = Arc::new(bodies(filtered.then_some(n)));
    let posts = messages.div_ceil(10);
    let publisher = {
        let api = api.clone();
        tokio::spawn(async move {
            let mut tasks = Vec::new();
            for chunk in 0..8 {
                let (api, bodies) = (api.clone(), bodies.clone());
                tasks.push(tokio::spawn(async move {
                    for p in (chunk..posts).step_by(8) {
                        let body = bodies[p % bodies.len()].clone();
                        let _ = api.post_raw("fanout", body).await;
                    }
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };
    let want = (posts * 10 * if filtered { 1 } else { n }) as u64;
    wait_for(&receiver, want, Duration::from_secs(300)).await?;
    publisher.await?;
    let rate = want as f64 / start.elapsed().as_secs_f64();
    Ok((rate, meter.per_delivery(want)))
}

/// Publishes `count` copies of `payload` into the raw topic, message k with `headers(k)`,
/// keeping at most 1,000 acks outstanding (async-nats blocks publishes beyond 5,000).
async fn publish_raw(
    raw: &RawTopic,
    payload: bytes::Bytes,
    count: usize,
    headers: impl Fn(usize) -> Option<async_nats::HeaderMap>,
) -> Result<()> {
    let mut acks = std::collections::VecDeque::with_capacity(1000);
    for k in 0..count {
        if acks.len() >= 1000 {
            if let Some(a) = acks.pop_front() {
                std::future::IntoFuture::into_future(a).await?;
            }
        }
        let subject = raw.subject.clone();
        let ack = match headers(k) {
            Some(h) => {
                raw.js
                    .publish_with_headers(subject, h, payload.clone())
                    .await?
            }
            None => raw.js.publish(subject, payload.clone()).await?,
        };
        acks.push_back(ack);
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

async fn raw_run(bins: &Bins, args: &Args, n: usize, messages: usize) -> Result<(f64, Cpu)> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let receiver = Receiver::start().await?;
    let raw = RawTopic::create(&nats.url, "fanout").await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let forwarded = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..n {
        let consumer = raw
            .durable(&format!("sub{i}"), args.concurrency as i64)
            .await?;
        tasks.push(spawn_forwarder(
            consumer,
            http.clone(),
            receiver.url(&format!("/hook/{i}")),
            args.concurrency,
            stop.clone(),
            forwarded.clone(),
        ));
    }
    let start = Instant::now();
    let meter = CpuMeter::start(nats.pid(), None);
    let posts = messages.div_ceil(10);
    let payload: bytes::Bytes =
        serde_json::to_vec(&serde_json::json!({"body": "x".repeat(256)}))?.into();
    publish_raw(&raw, payload, posts * 10, |_| None).await?;
    let want = (posts * 10 * n) as u64;
    wait_for(&receiver, want, Duration::from_secs(300)).await?;
    let rate = want as f64 / start.elapsed().as_secs_f64();
    let cpu = meter.per_delivery(want);
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok((rate, cpu))
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    for &n in &args.subscriptions {
        let messages = (args.deliveries / n).max(100);
        let (raw, raw_cpu) = raw_run(bins, args, n, messages).await?;
        let (herald, cpu) = herald_run(bins, args, n, messages).await?;
        eprintln!(
            "fanout x{n}: herald {herald:.0}/s raw {raw:.0}/s; CPU us/delivery: herald run \
             {:.1} (herald {:.1}, nats-server {:.1}, bench {:.1}), raw run {:.1} (nats-server \
             {:.1}, bench with the raw loop {:.1})",
            cpu.total(),
            cpu.herald,
            cpu.nats,
            cpu.bench,
            raw_cpu.total(),
            raw_cpu.nats,
            raw_cpu.bench,
        );
        figures.push(
            Figure::new(
                format!("fan-out deliveries, 1 topic x {n} webhooks"),
                herald,
                "deliv/s",
            )
            .vs(raw)
            .target("ratio >= 0.8"),
        );
        figures.push(
            Figure::new(
                format!("CPU per delivery, all processes, 1 x {n} (Herald run vs raw run)"),
                cpu.total(),
                "us",
            )
            .vs(raw_cpu.total())
            .target("bounds the ratio on 2 saturated cores"),
        );
    }
    Ok(figures)
}

/// The raw ceiling of filtered fan-out: `n` durable consumers on one stream, each pulling
/// every message, POSTing the 1/n whose `Herald-Attr-shard` header names it and acking all.
async fn raw_filtered_run(bins: &Bins, args: &Args, n: usize, messages: usize) -> Result<f64> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let receiver = Receiver::start().await?;
    let raw = RawTopic::create(&nats.url, "fanout").await?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for i in 0..n {
        let consumer = raw
            .durable(&format!("sub{i}"), args.concurrency as i64)
            .await?;
        let url = receiver.url(&format!("/hook/{i}"));
        tasks.push(spawn_filtered_forwarder(
            consumer,
            http.clone(),
            url,
            i,
            stop.clone(),
        ));
    }
    let start = Instant::now();
    let payload: bytes::Bytes =
        serde_json::to_vec(&serde_json::json!({"body": "x".repeat(256)}))?.into();
    publish_raw(&raw, payload, messages, |k| {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Herald-Attr-shard", format!("\"s{}\"", k % n).as_str());
        Some(headers)
    })
    .await?;
    wait_for(&receiver, messages as u64, Duration::from_secs(300)).await?;
    let rate = messages as f64 / start.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    Ok(rate)
}

/// One raw filtering consumer: pulls every message until `stop`, POSTs to `url` those whose
/// `Herald-Attr-shard` header is `"s{shard}"`, and acks all of them. Pulls time out after
/// 200 ms so that `stop` is seen even when the stream is idle.
fn spawn_filtered_forwarder(
    consumer: async_nats::jetstream::consumer::Consumer<
        async_nats::jetstream::consumer::pull::Config,
    >,
    http: reqwest::Client,
    url: String,
    shard: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    let mine = format!("\"s{shard}\"");
    tokio::spawn(async move {
        let Ok(mut stream) = consumer.messages().await else {
            return;
        };
        while !stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(
                Duration::from_millis(200),
                futures::StreamExt::next(&mut stream),
            )
            .await;
            let Ok(Some(Ok(message))) = next else {
                continue;
            };
            let matches = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Herald-Attr-shard"))
                .is_some_and(|v| v.as_str() == mine);
            if matches {
                let _ = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(message.payload.clone())
                    .send()
                    .await;
            }
            let _ = message.ack().await;
        }
    })
}

/// Filter policies: 1 topic × `n` subscriptions each matching 1/n of the messages, against
/// 1 × 1 unfiltered with the same messages (same run). Herald CPU is per published message.
pub async fn run_filtered(
    bins: &Bins,
    args: &Args,
    n: usize,
    messages: usize,
) -> Result<Vec<Figure>> {
    let (plain, plain_us) = herald_run_with(bins, args, 1, messages, false).await?;
    let (filtered, filtered_us) = herald_run_with(bins, args, n, messages, true).await?;
    let raw = raw_filtered_run(bins, args, n, messages).await?;
    eprintln!(
        "filter x{n}: {filtered:.0} deliveries/s ({filtered_us:.1} us CPU per published message) vs 1x1 unfiltered {plain:.0}/s ({plain_us:.1} us), raw {n} pull-and-ack consumers {raw:.0}/s"
    );
    Ok(vec![
        Figure::new(
            format!("filtered fan-out vs raw: {n} consumers pull and ack all, POST 1/{n}"),
            filtered,
            "deliv/s",
        )
        .vs(raw)
        .target("vs raw JetStream ceiling"),
        Figure::new(
            format!(
                "filtered fan-out, 1 topic x {n} subscriptions matching 1/{n} each (deliveries/s)"
            ),
            filtered,
            "deliv/s",
        )
        .vs(plain)
        .target("vs 1 x 1 unfiltered"),
        Figure::new(
            format!("Herald CPU per published message, {n} filtered subscriptions"),
            filtered_us,
            "us",
        )
        .vs(plain_us)
        .target("vs 1 x 1 unfiltered"),
    ])
}
