//! Ingest: REST `POST /v2/topics/{t}/messages` (64 keep-alive connections, batches of
//! 10 × 256 B, one subscription whose consumer is paused) against two ceilings measured in
//! the same run: raw async-nats publishes with 1,000 outstanding acks into an identical
//! stream, and the minimal REST→JetStream bridge (`bridge`) under the same HTTP load.

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

use crate::{
    api::{batch_body, HeraldApi, PROJECT},
    bridge::Bridge,
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
async fn pause_consumers(nats_url: &str, topic: &str) -> Result<()> {
    let js = async_nats::jetstream::new(async_nats::connect(nats_url).await?);
    let name = stream_name(&ProjectId::parse(PROJECT)?, &TopicName::parse(topic)?);
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

    // Second ceiling: the minimal bridge, same stream, same load generator, same batches.
    let bridge_rate = {
        let nats = Nats::start(bins, args.sync_always).await?;
        let raw = RawTopic::create(&nats.url, "ingest").await?;
        raw.durable("paused", 1000).await?;
        let until = time::OffsetDateTime::now_utc() + time::Duration::hours(1);
        raw.stream.pause_consumer("paused", until).await?;
        // As many runtime threads as Herald's (tokio's default: one per core).
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        let bridge = Bridge::start(&nats.url, &raw.subject, threads).await?;
        let api = HeraldApi::new(&bridge.base);
        let body = batch_body(args.batch, args.size);
        rest_load(&api, "ingest", body, args.batch, args.connections, duration).await
    };
    eprintln!("ingest: minimal REST bridge {bridge_rate:.0} msg/s");

    let mut figures = Vec::new();
    for (label, per_post) in [("batch", args.batch), ("single", 1)] {
        let nats = Nats::start(bins, args.sync_always).await?;
        let herald = Herald::start(bins, &nats.url, &[]).await?;
        let receiver = Receiver::start().await?;
        let api = HeraldApi::new(&herald.base);
        api.create_topic("ingest").await?;
        api.subscribe("ingest", &receiver.url("/hook"), serde_json::json!({}))
            .await?;
        pause_consumers(&nats.url, "ingest").await?;
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
        let mut f = Figure::new(name.clone(), rate, "msg/s").vs(raw_rate);
        if label == "batch" {
            f = f.target("ratio >= 0.6");
            figures.push(f);
            figures.push(
                Figure::new("  same, vs the minimal REST bridge", rate, "msg/s")
                    .vs(bridge_rate)
                    .target("ratio >= 0.9"),
            );
        } else {
            figures.push(f);
        }
        figures.push(Figure::new(
            format!("  herald CPU per message ({label})"),
            us_per_msg,
            "us/msg",
        ));
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
    Ok(figures)
}
