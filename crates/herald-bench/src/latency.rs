//! Latency: publish→webhook-received at a steady rate, open loop. Every message carries its
//! intended send time and is sent at that time whatever happened before, so a stall shows
//! up in the figures instead of hiding (no coordinated omission). Baseline: raw publish →
//! raw pull-and-POST loop → the same receiver, same schedule.

use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::Result;
use serde_json::json;
use tokio::sync::Semaphore;

use crate::{
    api::HeraldApi,
    env::{Bins, Herald, Nats},
    raw::{spawn_forwarder, RawTopic},
    receiver::{now_ns, Receiver},
    stats::{Figure, Latencies},
};

pub struct Args {
    pub rate: u64,
    pub seconds: u64,
    pub sync_always: bool,
}

fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64
}

/// Calls `send(intended_ns)` on schedule, spawned so a slow send never delays the next.
pub async fn open_loop<F, Fut>(rate: u64, seconds: u64, send: F) -> u64
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let total = rate * seconds;
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let (start_i, start_s) = (Instant::now(), SystemTime::now());
    let mut handles = Vec::with_capacity(total as usize);
    for i in 0..total {
        let offset = interval * i as u32;
        tokio::time::sleep_until((start_i + offset).into()).await;
        handles.push(tokio::spawn(send(epoch_ns(start_s + offset))));
    }
    for h in handles {
        let _ = h.await;
    }
    total
}

/// The latencies of up to `want` deliveries, waiting at most 60 s for them: fewer when
/// publishes failed or deliveries did not come (the caller reports the shortfall).
pub async fn collect(receiver: &mut Receiver, want: u64) -> Latencies {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lat = Latencies::default();
    while (lat.len() as u64) < want {
        for v in receiver.drain_latencies() {
            lat.push(v);
        }
        if Instant::now() > deadline {
            eprintln!("latency: only {} of {want} deliveries arrived", lat.len());
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    lat
}

/// Failed POSTs by cause (status or client error), so a shortfall says why.
#[derive(Default)]
struct Failures(Mutex<BTreeMap<String, u64>>);

impl Failures {
    fn count(&self, cause: String) {
        *self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(cause)
            .or_default() += 1;
    }

    /// Prints the failures by cause; returns how many there were.
    fn report(&self, sent: u64) -> u64 {
        let by_cause = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let failed = by_cause.values().sum();
        if failed > 0 {
            eprintln!("latency: {failed} of {sent} POSTs failed:");
            for (cause, n) in by_cause.iter() {
                eprintln!("latency:   {n} x {cause}");
            }
        }
        failed
    }
}

/// An error with its sources, `: `-separated (reqwest's own message hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Most HTTP connections the generator opens to Herald, as a client's connection pool
/// would: a POST waits for a free connection, and since its latency counts from its
/// intended send time, that wait shows in the figures. Unbounded, every POST sent while the
/// others are in flight opened a connection of its own, and on a loaded machine the
/// generator ran out of file descriptors ("Too many open files") and those POSTs failed.
const MAX_CONNECTIONS: usize = 64;

/// Latencies (publish→webhook, and publish→201), and how many of the messages sent were
/// not delivered.
async fn herald_latency(bins: &Bins, args: &Args) -> Result<(Latencies, Latencies, u64)> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let herald = Herald::start(bins, &nats.url, &[]).await?;
    let mut receiver = Receiver::start().await?;
    let api = HeraldApi::new(&herald.base);
    api.create_topic("latency").await?;
    api.subscribe("latency", &receiver.url("/hook"), json!({}))
        .await?;
    let failures = Arc::new(Failures::default());
    let acked = Arc::new(Mutex::new(Latencies::default()));
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let sent = open_loop(args.rate, args.seconds, |t| {
        let (api, failures, acked, connections) = (
            api.clone(),
            failures.clone(),
            acked.clone(),
            connections.clone(),
        );
        async move {
            let Ok(_connection) = connections.acquire_owned().await else {
                return;
            };
            let body = format!(r#"{{"messages":[{{"body":{{"t":{t}}}}}]}}"#);
            match api.post_raw_status("latency", body.into()).await {
                Ok(s) if s == 201 => {
                    let ms = now_ns().saturating_sub(t) as f64 / 1e6;
                    acked.lock().unwrap_or_else(|e| e.into_inner()).push(ms);
                }
                Ok(s) => failures.count(format!("status {s}")),
                Err(e) => failures.count(format!("client error: {}", error_chain(&e))),
            }
        }
    })
    .await;
    let failed = failures.report(sent);
    let lat = collect(&mut receiver, sent - failed).await;
    let missing = sent - lat.len() as u64;
    let acked = std::mem::take(&mut *acked.lock().unwrap_or_else(|e| e.into_inner()));
    Ok((lat, acked, missing))
}

async fn raw_latency(bins: &Bins, args: &Args) -> Result<(Latencies, u64)> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let mut receiver = Receiver::start().await?;
    let raw = RawTopic::create(&nats.url, "latency").await?;
    let consumer = raw.durable("sub", 256).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let forwarder = spawn_forwarder(
        consumer,
        reqwest::Client::new(),
        receiver.url("/hook"),
        256,
        stop.clone(),
        Arc::new(AtomicU64::new(0)),
    );
    let (js, subject) = (raw.js.clone(), raw.subject.clone());
    let sent = open_loop(args.rate, args.seconds, |t| {
        let (js, subject) = (js.clone(), subject.clone());
        async move {
            let body = format!(r#"{{"body":{{"t":{t}}}}}"#);
            if let Ok(ack) = js.publish(subject, body.into()).await {
                let _ = ack.await;
            }
        }
    })
    .await;
    let lat = collect(&mut receiver, sent).await;
    stop.store(true, Ordering::Relaxed);
    let _ = forwarder.await;
    let missing = sent - lat.len() as u64;
    Ok((lat, missing))
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let (raw, raw_missing) = raw_latency(bins, args).await?;
    let (herald, herald_acked, herald_missing) = herald_latency(bins, args).await?;
    let name = format!(
        "latency publish->webhook p99 @ {}/s x {}s",
        args.rate, args.seconds
    );
    eprintln!(
        "latency: herald p50 {:.2} p99 {:.2} ms; raw p50 {:.2} p99 {:.2} ms",
        herald.quantile(0.5),
        herald.quantile(0.99),
        raw.quantile(0.5),
        raw.quantile(0.99)
    );
    Ok(vec![
        Figure::new(name, herald.quantile(0.99), "ms")
            .latencies(&herald)
            .vs(raw.quantile(0.99))
            .target("p50 < 2 ms, p99 < 10 ms"),
        Figure::new("  raw baseline (same schedule)", raw.quantile(0.99), "ms").latencies(&raw),
        Figure::new(
            format!("  herald POST->201 p99 ({MAX_CONNECTIONS} connections at most)"),
            herald_acked.quantile(0.99),
            "ms",
        )
        .latencies(&herald_acked),
        Figure::new(
            "  herald / raw: not delivered (failed or late)",
            herald_missing as f64,
            "msgs",
        )
        .vs(raw_missing as f64),
    ])
}
