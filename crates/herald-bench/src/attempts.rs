//! The attempt log: (1) fan-out 1 × `subscriptions` with the log on ÷ off, same run;
//! (2) one subscription's attempt page (`limit=100`) among `small` then `total` records
//! in `HERALD_ATTEMPTS`, spread evenly over `subjects` subscriptions, p99 of `samples`
//! requests at each size. The measured subscription's records (≈ 1 in `subjects`) are
//! Herald's own: real webhook deliveries, posted in batches of 10 between chunks of the
//! filler and written by Herald's attempt writer (so whatever Herald indexes, they are
//! indexed). The other `subjects - 1` subscriptions' records are synthetic, published
//! straight into the stream.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use futures::TryStreamExt;
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

/// Messages per post to the measured subscription's topic during the fill: its records
/// arrive ≈ 10 at a time, one batch per ≈ 10 filler records per filler subscription.
const TARGET_BATCH: usize = 10;
/// Pages read before measuring (see `page_latencies`).
const WARM_UP: Duration = Duration::from_secs(1);

/// Records `from..to` of the stream, round-robin over `filler.len() + 1` subscriptions:
/// record k belongs to the measured one when `k % n == n - 1` (a real delivery, posted to
/// the topic "attempts" in batches of [`TARGET_BATCH`]), else it is a synthetic record on
/// `filler[k % n]`, pipelined. Returns the messages posted, each of which Herald delivers
/// to the measured subscription and records once.
async fn fill(
    js: &async_nats::jetstream::Context,
    api: &HeraldApi,
    filler: &[String],
    from: usize,
    to: usize,
) -> Result<usize> {
    let n = filler.len() + 1;
    let started = chrono::Utc::now();
    let mut acks = std::collections::VecDeque::with_capacity(4096);
    let mut pending = 0;
    let mut posted = 0;
    for k in from..to {
        if k % n == n - 1 {
            pending += 1;
            if pending == TARGET_BATCH {
                post_batch(api, k, pending).await?;
                posted += pending;
                pending = 0;
            }
            continue;
        }
        if acks.len() >= 4096 {
            if let Some(a) = acks.pop_front() {
                std::future::IntoFuture::into_future(a).await?;
            }
        }
        let subject = &filler[k % n];
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
    if pending > 0 {
        post_batch(api, to, pending).await?;
        posted += pending;
    }
    for a in acks {
        a.await?;
    }
    Ok(posted)
}

/// Posts `count` messages to the topic "attempts" in one request.
async fn post_batch(api: &HeraldApi, k: usize, count: usize) -> Result<()> {
    let messages: Vec<_> = (0..count)
        .map(|i| json!({"body": {"k": k, "i": i}}))
        .collect();
    let body = serde_json::to_vec(&json!({ "messages": messages }))?;
    if !api.post_raw("attempts", body.into()).await? {
        bail!("post of {count} messages to the topic attempts was refused");
    }
    Ok(())
}

/// The records in `HERALD_ATTEMPTS` on `subject`.
async fn subject_count(
    stream: &async_nats::jetstream::stream::Stream,
    subject: &str,
) -> Result<usize> {
    let mut subjects = stream.info_with_subjects(subject).await?;
    let mut count = 0;
    while let Some((s, c)) = subjects.try_next().await? {
        if s == subject {
            count += c;
        }
    }
    Ok(count)
}

/// Waits until Herald has written `want` records on `subject` (one per delivery).
async fn wait_for_records(
    js: &async_nats::jetstream::Context,
    subject: &str,
    want: usize,
) -> Result<()> {
    let stream = js.get_stream("HERALD_ATTEMPTS").await?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = subject_count(&stream, subject).await?;
        if have >= want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("Herald wrote {have} of {want} attempt records of the measured subscription");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until Herald's attempt index names the newest record on `subject` (a Herald
/// without the index: returns at once). Pages read in the second after a burst of writes
/// also walk that second of the stream; this measures a settled log.
async fn wait_for_index(js: &async_nats::jetstream::Context, target: &str) -> Result<()> {
    let Ok(index) = js.get_stream("HERALD_ATTEMPT_INDEX").await else {
        return Ok(());
    };
    let records = js.get_stream("HERALD_ATTEMPTS").await?;
    let newest = records
        .get_last_raw_message_by_subject(&format!("herald.attempts.{PROJECT}.{target}"))
        .await?
        .sequence;
    let filter = format!("herald.attempt_index.{PROJECT}.{target}.*");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut subjects = Vec::new();
        {
            let mut info = index.info_with_subjects(&filter).await?;
            while let Some((s, _)) = info.try_next().await? {
                subjects.push(s);
            }
        }
        for s in subjects {
            let ring: serde_json::Value =
                serde_json::from_slice(&index.get_last_raw_message_by_subject(&s).await?.payload)?;
            if ring["d"][0].as_u64() == Some(newest) {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("Herald's attempt index did not name record {newest} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn page_latencies(api: &HeraldApi, sub: &str, samples: usize) -> Result<Latencies> {
    let url = format!(
        "{}/v2/topics/attempts/subscriptions/{sub}/attempts?limit=100",
        api.base
    );
    let mut l = Latencies::default();
    // Pages read in the first second after the fill are not counted: they warm the
    // connection and the server's block cache, and meet nats-server still settling the
    // burst (every ~80 ms a page took 15-30 ms there, whichever Herald asked).
    let warm = Instant::now() + WARM_UP;
    while l.len() < samples {
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
        if Instant::now() >= warm {
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
    let filler: Vec<String> = (1..args.subjects)
        .map(|_| format!("herald.attempts.{PROJECT}.{}", uuid::Uuid::new_v4()))
        .collect();
    let target_subject = format!("herald.attempts.{PROJECT}.{target}");
    // The warm-up delivery above is the measured subscription's first record.
    let mut own = 1;
    let t = Instant::now();
    own += fill(&js, &api, &filler, 0, args.small)
        .await
        .context("fill")?;
    wait_for_records(&js, &target_subject, own).await?;
    wait_for_index(&js, &target).await?;
    let own_small = own;
    let mut fill_secs = t.elapsed().as_secs_f64();
    let small = page_latencies(&api, &target, args.samples).await?;
    let t = Instant::now();
    own += fill(&js, &api, &filler, args.small, args.total)
        .await
        .context("fill")?;
    wait_for_records(&js, &target_subject, own).await?;
    wait_for_index(&js, &target).await?;
    fill_secs += t.elapsed().as_secs_f64();
    let large = page_latencies(&api, &target, args.samples).await?;
    eprintln!(
        "attempt page: {} records p99 {:.2} ms, {} records p99 {:.2} ms (filled in {fill_secs:.0} s)",
        args.small,
        small.quantile(0.99),
        args.total,
        large.quantile(0.99)
    );
    Ok(vec![
        Figure::new(
            format!(
                "attempt page (100) of 1 of {} subscriptions, {} records ({} its own by Herald, rest synthetic), p99",
                args.subjects,
                args.small,
                own_small
            ),
            small.quantile(0.99),
            "ms",
        )
        .latencies(&small)
        .target("p99 < 20 ms"),
        Figure::new(
            format!(
                "attempt page (100) of 1 of {} subscriptions, {} records ({} its own by Herald, rest synthetic), p99",
                args.subjects,
                args.total,
                own
            ),
            large.quantile(0.99),
            "ms",
        )
        .latencies(&large)
        .vs(small.quantile(0.99))
        .target("p99 < 20 ms; ratio ≈ 1: flat in the total"),
    ])
}
