//! Ingest: REST `POST /v2/topics/{t}/messages` (64 keep-alive connections, batches of
//! 10 × 256 B, one subscription whose consumer is paused) against raw async-nats publishes
//! with 1,000 outstanding acks into an identical stream. `ingest-keystone`: the same REST
//! load with `auth_mode = keystone` against `noauth`, in one run.

use std::{
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
    env::{Bins, Herald, Nats},
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

    let mut figures = Vec::new();
    for (label, per_post) in [("batch", args.batch), ("single", 1)] {
        let nats = Nats::start(bins, args.sync_always).await?;
        let herald = Herald::start(bins, &nats.url, &[]).await?;
        let receiver = Receiver::start().await?;
        let api = HeraldApi::new(&herald.base);
        api.create_topic("ingest").await?;
        api.subscribe("ingest", &receiver.url("/hook"), serde_json::json!({}))
            .await?;
        pause_consumers(&nats.url, PROJECT, "ingest").await?;
        let body = batch_body(per_post, args.size);
        let cpu_before = herald.cpu_time();
        let rate = rest_load(&api, "ingest", body, per_post, args.connections, duration).await;
        let cpu = herald.cpu_time().saturating_sub(cpu_before);
        let us_per_msg = cpu.as_secs_f64() * 1e6 / (rate * duration.as_secs_f64()).max(1.0);
        eprintln!("ingest: REST {label} {rate:.0} msg/s, herald CPU {us_per_msg:.1} us/msg");
        let name = format!(
            "ingest REST {}x{} B, {} conns",
            per_post, args.size, args.connections
        );
        let mut f = Figure::new(name, rate, "msg/s").vs(raw_rate);
        if label == "batch" {
            f = f.target("ratio >= 0.6");
        }
        figures.push(f);
        figures.push(Figure::new(
            format!("  herald CPU per message ({label})"),
            us_per_msg,
            "us/msg",
        ));
    }
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
