//! Ingest: REST `POST /v2/topics/{t}/messages` (64 keep-alive connections, batches of
//! 10 × 256 B, one subscription whose consumer is paused) against two ceilings measured in
//! the same run: raw async-nats publishes with 1,000 outstanding acks into an identical
//! stream, and the minimal REST→JetStream bridge (`bridge`) under the same HTTP load.
//! `ingest-keystone`: the same REST load with `auth_mode = keystone` against `noauth`, in
//! one run.

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use futures::TryStreamExt;
use herald::{
    domain::{ProjectId, TopicName},
    store::names::stream_name,
};

use herald_testkit::keystone;

use crate::{
    api::{batch_body, HeraldApi, PROJECT},
    bridge::{self, Bridge},
    env::{cpu_time, threads_cpu_time, Bins, Herald, Nats},
    raw::RawTopic,
    receiver::Receiver,
    stats::Figure,
};

pub struct Args {
    pub seconds: u64,
    pub connections: usize,
    pub batch: usize,
    pub size: usize,
    pub sync_always: bool,
    /// A second Herald binary measured in the same run, phase after phase with the first
    /// (a same-run A/B of a change).
    pub compare: Option<PathBuf>,
    /// How many times the bridge and Herald batch phases are repeated (medians reported).
    pub rounds: usize,
}

impl Args {
    /// The README's shape: batches of 10 × 256 B, one round, no second binary.
    pub fn batches(seconds: u64, connections: usize, sync_always: bool) -> Self {
        Self {
            seconds,
            connections,
            batch: 10,
            size: 256,
            sync_always,
            compare: None,
            rounds: 1,
        }
    }
}

/// Pauses every consumer of a Herald topic so nothing is delivered while we measure ingest.
async fn pause_consumers(nats_url: &str, project: &str, topic: &str) -> Result<()> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let name = stream_name(&ProjectId::parse(project)?, &TopicName::parse(topic)?);
    let stream = js.get_stream(&name).await?;
    let consumers: Vec<String> = stream.consumer_names().try_collect().await?;
    let until = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    for c in consumers {
        stream.pause_consumer(&c, until).await?;
    }
    Ok(())
}

/// Runs `connections` workers POSTing `body` for `duration`; returns messages acked per second.
async fn rest_load(
    api: &HeraldApi,
    topic: &str,
    body: bytes::Bytes,
    per_post: usize,
    connections: usize,
    duration: Duration,
) -> f64 {
    let acked = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..connections)
        .map(|_| {
            let (api, topic, body, acked, failed) = (
                api.clone(),
                topic.to_owned(),
                body.clone(),
                acked.clone(),
                failed.clone(),
            );
            tokio::spawn(async move {
                while start.elapsed() < duration {
                    match api.post_raw(&topic, body.clone()).await {
                        Ok(true) => acked.fetch_add(per_post as u64, Ordering::Relaxed),
                        _ => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        eprintln!("ingest: {failed} POSTs failed");
    }
    acked.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// One REST load phase: throughput, and the CPU each party spent per acked message (the
/// front end: Herald or the bridge; nats-server; the load generator). On a machine whose
/// cores all three share, these per-message costs are what bounds the throughput.
struct Phase {
    rate: f64,
    server_us: f64,
    nats_us: f64,
    client_us: f64,
}

impl Phase {
    /// Runs `load` while measuring `server` (CPU so far of the front end, which runs in
    /// this process when `in_process`), nats-server (`nats_pid`) and this whole process.
    async fn measure(
        nats_pid: u32,
        server: impl Fn() -> Duration,
        in_process: bool,
        load: impl std::future::Future<Output = f64>,
        duration: Duration,
    ) -> Self {
        let me = std::process::id();
        let before = (server(), cpu_time(nats_pid), cpu_time(me));
        let rate = load.await;
        let (s, n, c) = (server(), cpu_time(nats_pid), cpu_time(me));
        let messages = (rate * duration.as_secs_f64()).max(1.0);
        let us = |d: Duration| d.as_secs_f64() * 1e6 / messages;
        let (s, n, c) = (
            s.saturating_sub(before.0),
            n.saturating_sub(before.1),
            c.saturating_sub(before.2),
        );
        // The bridge runs inside this process: its threads are not the load generator's.
        let client = if in_process { c.saturating_sub(s) } else { c };
        Self {
            rate,
            server_us: us(s),
            nats_us: us(n),
            client_us: us(client),
        }
    }

    fn print(&self, label: &str) {
        eprintln!(
            "ingest: {label} {:.0} msg/s; CPU per message: front end {:.1} us, nats-server {:.1} us, load generator {:.1} us",
            self.rate, self.server_us, self.nats_us, self.client_us
        );
    }
}

/// The minimal bridge under the REST load, into a stream configured like a topic's; with
/// `headers`, publishing Herald's two per-message headers.
async fn bridge_phase(bins: &Bins, args: &Args, headers: bool) -> Result<Phase> {
    let duration = Duration::from_secs(args.seconds);
    let nats = Nats::start(bins, args.sync_always).await?;
    let raw = RawTopic::create(&nats.url, "ingest").await?;
    raw.durable("paused", 1000).await?;
    let until = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
    raw.stream.pause_consumer("paused", until).await?;
    // As many runtime threads as Herald's (tokio's default: one per core).
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let bridge = Bridge::start(&nats.url, &raw.subject, threads, headers).await?;
    let api = HeraldApi::new(&bridge.base);
    let body = batch_body(args.batch, args.size);
    let load = rest_load(&api, "ingest", body, args.batch, args.connections, duration);
    let phase = Phase::measure(
        nats.pid(),
        || threads_cpu_time(bridge::THREAD_NAME),
        true,
        load,
        duration,
    )
    .await;
    phase.print(if headers {
        "minimal REST bridge + Herald's headers"
    } else {
        "minimal REST bridge"
    });
    Ok(phase)
}

/// A fresh Herald (`bins.herald`) with one paused subscription under the REST load, posting
/// `per_post` messages per request.
async fn herald_phase(bins: &Bins, args: &Args, per_post: usize, label: &str) -> Result<Phase> {
    let duration = Duration::from_secs(args.seconds);
    let nats = Nats::start(bins, args.sync_always).await?;
    let herald = Herald::start(bins, &nats.url, &[]).await?;
    let receiver = Receiver::start().await?;
    let api = HeraldApi::new(&herald.base);
    api.create_topic("ingest").await?;
    api.subscribe("ingest", &receiver.url("/hook"), serde_json::json!({}))
        .await?;
    pause_consumers(&nats.url, PROJECT, "ingest").await?;
    let body = batch_body(per_post, args.size);
    let load = rest_load(&api, "ingest", body, per_post, args.connections, duration);
    let phase = Phase::measure(nats.pid(), || herald.cpu_time(), false, load, duration).await;
    phase.print(label);
    Ok(phase)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let duration = Duration::from_secs(args.seconds);

    // Baseline: raw JetStream, identical stream, one paused durable consumer.
    let raw_rate = {
        let nats = Nats::start(bins, args.sync_always).await?;
        let raw = RawTopic::create(&nats.url, "ingest").await?;
        raw.durable("paused", 1000).await?;
        let until = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        raw.stream.pause_consumer("paused", until).await?;
        raw.publish_windowed(vec![b'x'; args.size].into(), 1000, duration)
            .await?
    };
    eprintln!("ingest: raw JetStream {raw_rate:.0} msg/s");

    let other = args.compare.as_ref().map(|herald| Bins {
        herald: herald.clone(),
        ..bins.clone()
    });
    // Second ceiling, the minimal bridge under the same load, and Herald's batches, phase
    // after phase (with the compared binary's after each), `rounds` times.
    let (mut bridge_runs, mut batch_runs, mut other_runs) = (Vec::new(), Vec::new(), Vec::new());
    let mut headers_runs = Vec::new();
    for _ in 0..args.rounds.max(1) {
        bridge_runs.push(bridge_phase(bins, args, false).await?);
        headers_runs.push(bridge_phase(bins, args, true).await?);
        batch_runs.push(herald_phase(bins, args, args.batch, "REST batch").await?);
        if let Some(other) = &other {
            other_runs.push(herald_phase(other, args, args.batch, "REST batch (compared)").await?);
        }
    }
    let single = herald_phase(bins, args, 1, "REST single").await?;
    let other_single = match &other {
        Some(other) => Some(herald_phase(other, args, 1, "REST single (compared)").await?),
        None => None,
    };

    let med = |runs: &[Phase], f: fn(&Phase) -> f64| median(runs.iter().map(f).collect());
    let bridge_rate = med(&bridge_runs, |p| p.rate);
    let batch_rate = med(&batch_runs, |p| p.rate);
    let batch_name = format!(
        "ingest REST {}x{} B, {} conns",
        args.batch, args.size, args.connections
    );
    let mut figures = vec![
        Figure::new(batch_name, batch_rate, "msg/s")
            .vs(raw_rate)
            .target("ratio >= 0.6"),
        Figure::new("  same, vs the minimal REST bridge", batch_rate, "msg/s")
            .vs(bridge_rate)
            .target("ratio >= 0.9"),
        Figure::new(
            "  same, vs the bridge sending Herald-Id and Nats-TTL too",
            batch_rate,
            "msg/s",
        )
        .vs(med(&headers_runs, |p| p.rate)),
        Figure::new(
            "  herald CPU per message (batch)",
            med(&batch_runs, |p| p.server_us),
            "us/msg",
        ),
        Figure::new(
            "  nats-server CPU per message (batch)",
            med(&batch_runs, |p| p.nats_us),
            "us/msg",
        ),
    ];
    if !other_runs.is_empty() {
        figures.push(
            Figure::new("  same, vs the compared herald", batch_rate, "msg/s")
                .vs(med(&other_runs, |p| p.rate)),
        );
        figures.push(
            Figure::new(
                "  herald CPU per message (batch), vs compared",
                med(&batch_runs, |p| p.server_us),
                "us/msg",
            )
            .vs(med(&other_runs, |p| p.server_us)),
        );
    }
    figures.push(
        Figure::new(
            format!("ingest REST 1x{} B, {} conns", args.size, args.connections),
            single.rate,
            "msg/s",
        )
        .vs(raw_rate),
    );
    figures.push(Figure::new(
        "  herald CPU per message (single)",
        single.server_us,
        "us/msg",
    ));
    if let Some(o) = other_single {
        figures
            .push(Figure::new("  same, vs the compared herald", single.rate, "msg/s").vs(o.rate));
        figures.push(
            Figure::new(
                "  herald CPU per message (single), vs compared",
                single.server_us,
                "us/msg",
            )
            .vs(o.server_us),
        );
    }
    figures.push(
        Figure::new(
            format!(
                "ingest minimal REST bridge {}x{} B, {} conns",
                args.batch, args.size, args.connections
            ),
            bridge_rate,
            "msg/s",
        )
        .vs(raw_rate),
    );
    figures.push(Figure::new(
        "  bridge CPU per message",
        med(&bridge_runs, |p| p.server_us),
        "us/msg",
    ));
    figures.push(Figure::new(
        "  nats-server CPU per message (bridge)",
        med(&bridge_runs, |p| p.nats_us),
        "us/msg",
    ));
    figures.push(Figure::new(
        "  bridge + headers: bridge CPU per message",
        med(&headers_runs, |p| p.server_us),
        "us/msg",
    ));
    figures.push(Figure::new(
        "  nats-server CPU per message (bridge + headers)",
        med(&headers_runs, |p| p.nats_us),
        "us/msg",
    ));
    Ok(figures)
}

/// One ingest measurement (batches of `args.batch`) against a fresh NATS and Herald
/// started with `env`; `identify` makes the API client of that Herald.
async fn measure(
    bins: &Bins,
    args: &Args,
    env: &[(&str, String)],
    identify: impl Fn(&str) -> HeraldApi,
) -> Result<f64> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let herald = Herald::start(bins, &nats.url, env).await?;
    let receiver = Receiver::start().await?;
    let api = identify(&herald.base);
    api.create_topic("ingest").await?;
    api.subscribe("ingest", &receiver.url("/hook"), serde_json::json!({}))
        .await?;
    pause_consumers(&nats.url, &api.project, "ingest").await?;
    let body = batch_body(args.batch, args.size);
    let duration = Duration::from_secs(args.seconds);
    Ok(rest_load(&api, "ingest", body, args.batch, args.connections, duration).await)
}

/// Ingest with `auth_mode = keystone` (a real Keystone; every request carries one token,
/// validated once and then served from Herald's cache) against `noauth`, in the same run.
pub async fn run_keystone(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    // Blocking: bootstraps Keystone (~15-30 s) on a thread of its own.
    let keystone_url = tokio::task::spawn_blocking(keystone::shared_url).await?;
    let admin = keystone::Admin::connect(&keystone_url).await?;
    let service = admin.service_user().await;
    let user = admin.user(None, &["member"]).await;
    let env = [
        ("HERALD_AUTH_MODE", "keystone".to_owned()),
        ("HERALD_KEYSTONE_URL", keystone_url.clone()),
        ("HERALD_KEYSTONE_USER", service.name.clone()),
        ("HERALD_KEYSTONE_PASSWORD", service.password.clone()),
        (
            "HERALD_KEYSTONE_PROJECT",
            keystone::SERVICE_PROJECT.to_owned(),
        ),
    ];
    let noauth = measure(bins, args, &[], HeraldApi::new).await?;
    eprintln!("ingest: REST noauth {noauth:.0} msg/s");
    let with_keystone = measure(bins, args, &env, |base| {
        HeraldApi::with_token(base, &user.token, &user.project_id)
    })
    .await?;
    eprintln!("ingest: REST keystone {with_keystone:.0} msg/s");
    Ok(vec![Figure::new(
        format!(
            "ingest REST keystone (cached token) {}x{} B, {} conns, vs noauth",
            args.batch, args.size, args.connections
        ),
        with_keystone,
        "msg/s",
    )
    .vs(noauth)
    .target("ratio >= 0.9")])
}
