//! The attempt log: (1) fan-out 1 × `subscriptions` with the log on ÷ off, same run;
//! (2) one subscription's attempt page (`limit=100`) among `small` then `total` records
//! written straight into `HERALD_ATTEMPTS`, spread evenly over `subjects` subscriptions
//! (the measured one among them), p99 of `samples` requests at each size.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::{
    api::{HeraldApi, PROJECT},
    env::{Bins, Herald, Nats},
    fanout,
    receiver::Receiver,
    stats::{Figure, Latencies},
};

pub struct Args {
    pub subscriptions: usize,
    pub deliveries: usize,
    pub small: usize,
    pub total: usize,
    pub subjects: usize,
    pub samples: usize,
    pub sync_always: bool,
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let mut figures = Vec::new();
    let fan = fanout::Args {
        subscriptions: vec![args.subscriptions],
        deliveries: args.deliveries,
        concurrency: 64,
        sync_always: args.sync_always,
    };
    let n = args.subscriptions;
    let messages = (args.deliveries / n).max(100);
    let off_env = [("HERALD_ATTEMPT_LOG", "false".to_owned())];
    let (off, off_us) = fanout::herald_run_env(bins, &fan, n, messages, &off_env).await?;
    let (on, on_us) = fanout::herald_run_env(bins, &fan, n, messages, &[]).await?;
    eprintln!(
        "attempt log: fan-out 1x{n} on {on:.0}/s ({on_us:.1} us CPU/delivery), off {off:.0}/s ({off_us:.1} us)"
    );
    figures.push(
        Figure::new(
            format!("fan-out 1 x {n} webhooks, attempt log on (deliveries/s)"),
            on,
            "deliv/s",
        )
        .vs(off)
        .target("on / off >= 0.9"),
    );
    figures.push(
        Figure::new(
            format!("Herald CPU per delivery, 1 x {n}, attempt log on"),
            on_us,
            "us",
        )
        .vs(off_us)
        .target("vs attempt log off"),
    );
    figures.extend(page_figures(bins, args).await?);
    Ok(figures)
}

/// Writes records `from..to` round-robin over `subjects` (record k on subject k % n),
/// pipelined.
async fn fill(
    js: &async_nats::jetstream::Context,
    subjects: &[String],
    from: usize,
    to: usize,
) -> Result<()> {
    let started = chrono::Utc::now();
    let mut acks = std::collections::VecDeque::with_capacity(4096);
    for k in from..to {
        if acks.len() >= 4096 {
            if let Some(a) = acks.pop_front() {
                std::future::IntoFuture::into_future(a).await?;
            }
        }
        let subject = &subjects[k % subjects.len()];
        let sub = subject.rsplit('.').next().unwrap_or_default();
        let record = json!({
            "id": uuid::Uuid::new_v4(), "message_id": format!("m{k}"),
            "subscription_id": sub, "attempt": 1,
            "started_at": started + chrono::Duration::microseconds(k as i64),
            "duration_ms": 3, "outcome": "delivered", "status_code": 200,
            "response": "ok"
        });
        acks.push_back(
            js.publish(subject.clone(), serde_json::to_vec(&record)?.into())
                .await?,
        );
    }
    for a in acks {
        a.await?;
    }
    Ok(())
}

async fn page_latencies(api: &HeraldApi, sub: &str, samples: usize) -> Result<Latencies> {
    let url = format!(
        "{}/v2/topics/attempts/subscriptions/{sub}/attempts?limit=100",
        api.base
    );
    let mut l = Latencies::default();
    for i in 0..samples + 5 {
        let t = Instant::now();
        let r = api
            .http
            .get(&url)
            .header("X-Project-ID", PROJECT)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("attempt page: {}", r.status());
        }
        let v: serde_json::Value = r.json().await?;
        let got = v["attempts"].as_array().map_or(0, Vec::len);
        if got != 100 {
            bail!("attempt page held {got} records, not 100");
        }
        // The first few warm the connection and the server's block cache.
        if i >= 5 {
            l.push(t.elapsed().as_secs_f64() * 1e3);
        }
    }
    Ok(l)
}

async fn page_figures(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let herald = Herald::start(bins, &nats.url, &[]).await?;
    let receiver = Receiver::start().await?;
    let api = HeraldApi::new(&herald.base);
    api.create_topic("attempts").await?;
    let target = api
        .subscribe("attempts", &receiver.url("/hook/0"), json!({}))
        .await?;
    // One delivery makes Herald create the attempt stream with its own limits.
    api.post_raw(
        "attempts",
        serde_json::to_vec(&json!({"messages": [{"body": 1}]}))?.into(),
    )
    .await?;
    let client = async_nats::connect(&nats.url).await?;
    let js = async_nats::jetstream::new(client);
    let deadline = Instant::now() + Duration::from_secs(30);
    while js.get_stream("HERALD_ATTEMPTS").await.is_err() {
        if Instant::now() > deadline {
            bail!("Herald did not create HERALD_ATTEMPTS");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut subjects: Vec<String> = (1..args.subjects)
        .map(|_| format!("herald.attempts.{PROJECT}.{}", uuid::Uuid::new_v4()))
        .collect();
    subjects.push(format!("herald.attempts.{PROJECT}.{target}"));
    let t = Instant::now();
    fill(&js, &subjects, 0, args.small).await.context("fill")?;
    let small = page_latencies(&api, &target, args.samples).await?;
    fill(&js, &subjects, args.small, args.total)
        .await
        .context("fill")?;
    let fill_secs = t.elapsed().as_secs_f64();
    let large = page_latencies(&api, &target, args.samples).await?;
    eprintln!(
        "attempt page: {} records p99 {:.2} ms, {} records p99 {:.2} ms (filled in {fill_secs:.0} s)",
        args.small,
        small.quantile(0.99),
        args.total,
        large.quantile(0.99)
    );
    let per_sub = |n: usize| n / args.subjects;
    Ok(vec![
        Figure::new(
            format!(
                "attempt page (100) of 1 of {} subscriptions, {} records ({} its own), p99",
                args.subjects,
                args.small,
                per_sub(args.small)
            ),
            small.quantile(0.99),
            "ms",
        )
        .latencies(&small)
        .target("p99 < 20 ms"),
        Figure::new(
            format!(
                "attempt page (100) of 1 of {} subscriptions, {} records ({} its own), p99",
                args.subjects,
                args.total,
                per_sub(args.total)
            ),
            large.quantile(0.99),
            "ms",
        )
        .latencies(&large)
        .vs(small.quantile(0.99))
        .target("p99 < 20 ms; ratio ≈ 1: flat in the total"),
    ])
}
