//! Scale: many topics × subscriptions held by one Herald, all figures from the same run:
//! creation time and rate; then, once nats-server reports every consumer held (or the count
//! stops growing), Herald's RSS and idle CPU, nats-server's RSS and idle CPU; then the
//! publish→delivery latency on one topic (open loop) and the fan-out latency to every
//! subscription of one topic while all are held. Runs against whichever `--herald-bin` it is
//! given, so two delivery engines can be compared.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{stream, StreamExt};
use serde_json::{json, Value};

use crate::{
    api::HeraldApi,
    env::{cpu_percent, rss_mib, Bins, Herald, Nats},
    latency::open_loop,
    receiver::Receiver,
    stats::{Figure, Latencies},
};

pub struct Args {
    pub topics: usize,
    pub subscriptions: usize,
    /// Topics set up at once (each creates its subscriptions one after the other).
    pub concurrency: usize,
    /// Wall time over which idle CPU is measured.
    pub idle_secs: u64,
    /// Open-loop rate of the one-topic latency run, for 10 s.
    pub latency_rate: u64,
    pub sync_always: bool,
}

/// The topic of the open-loop latency run: one subscription, created after the others.
const LATENCY_TOPIC: &str = "scale-latency";
const LATENCY_SECS: u64 = 10;

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let nats = Nats::start(bins, args.sync_always).await?;
    // Topic streams may need more than nats-server's default 1,000 consumers.
    let per_topic = args.subscriptions.max(1000).to_string();
    let herald = Herald::start(
        bins,
        &nats.url,
        &[("HERALD_MAX_SUBSCRIPTIONS_PER_TOPIC", per_topic)],
    )
    .await?;
    let mut receiver = Receiver::start().await?;
    let api = HeraldApi::new(&herald.base);
    let (herald_rss_before, nats_rss_before) = (herald.rss_mib(), rss_mib(nats.pid()));

    let (created, elapsed) = create_all(&api, &receiver, args).await;
    let wanted = args.topics * args.subscriptions;
    let rate = created as f64 / elapsed.as_secs_f64();
    eprintln!("scale: {created} of {wanted} subscriptions created in {elapsed:?} ({rate:.0}/s)");
    api.create_topic(LATENCY_TOPIC).await?;
    api.subscribe(LATENCY_TOPIC, &receiver.url("/hook"), json!({}))
        .await?;

    let (held, settle) = wait_held(&nats, created + 1).await;
    eprintln!("scale: nats-server reports {held} consumers with a pull waiting after {settle:?}");
    let idle = cpu_percent(
        &[herald.pid(), nats.pid()],
        Duration::from_secs(args.idle_secs),
    )
    .await;
    let (herald_rss, nats_rss) = (herald.rss_mib(), rss_mib(nats.pid()));
    eprintln!(
        "scale: herald RSS {herald_rss:.1} MiB, idle CPU {:.2} %; nats-server RSS {nats_rss:.1} MiB, idle CPU {:.2} %",
        idle[0], idle[1]
    );

    let one = one_topic_latency(&api, &mut receiver, args.latency_rate).await?;
    let fan = fan_out_latency(&api, &mut receiver, args.subscriptions).await?;
    let held_label = format!("{created} subscriptions");
    let per_sub_kib = |after: f64, before: f64| (after - before) * 1024.0 / created.max(1) as f64;
    Ok(vec![
        Figure::new(
            format!(
                "scale: create {} topics x {} subs",
                args.topics, args.subscriptions
            ),
            elapsed.as_secs_f64(),
            "s",
        ),
        Figure::new("  subscriptions created per second", rate, "subs/s"),
        Figure::new(
            "  consumers with a pull waiting (nats-server)",
            held as f64,
            "",
        ),
        Figure::new(
            format!("scale: herald RSS, {held_label}"),
            herald_rss,
            "MiB",
        )
        .vs(herald_rss_before)
        .target("<= 80 MiB at 10,000"),
        Figure::new(
            "  herald RSS per subscription",
            per_sub_kib(herald_rss, herald_rss_before),
            "KiB",
        ),
        Figure::new(
            format!("scale: herald idle CPU over {} s", args.idle_secs),
            idle[0],
            "% core",
        )
        .target("<= 1 %"),
        Figure::new(
            format!("scale: nats-server RSS, {held_label}"),
            nats_rss,
            "MiB",
        )
        .vs(nats_rss_before),
        Figure::new(
            "  nats-server RSS per subscription",
            per_sub_kib(nats_rss, nats_rss_before),
            "KiB",
        ),
        Figure::new("  nats-server idle CPU", idle[1], "% core"),
        Figure::new(
            format!(
                "scale: latency, 1 sub @ {}/s x {LATENCY_SECS} s",
                args.latency_rate
            ),
            one.quantile(0.99),
            "ms",
        )
        .latencies(&one),
        Figure::new(
            format!("scale: fan-out latency to {} subs", args.subscriptions),
            fan.quantile(0.99),
            "ms",
        )
        .latencies(&fan),
    ])
}

/// Creates every topic with its subscriptions, `concurrency` topics at a time. Returns the
/// subscriptions created and how long it took. Failures are reported, not fatal: the
/// figures still describe what was held.
async fn create_all(api: &HeraldApi, receiver: &Receiver, args: &Args) -> (usize, Duration) {
    let start = Instant::now();
    let results: Vec<(usize, Option<anyhow::Error>)> = stream::iter(0..args.topics)
        .map(|t| {
            let (api, url) = (api.clone(), receiver.url(&format!("/hook/{t}")));
            let subs = args.subscriptions;
            async move {
                let topic = format!("scale-{t}");
                if let Err(e) = api.create_topic(&topic).await {
                    return (0, Some(e));
                }
                for s in 0..subs {
                    if let Err(e) = api
                        .subscribe(&topic, &format!("{url}?s={s}"), json!({}))
                        .await
                    {
                        return (s, Some(e));
                    }
                }
                (subs, None)
            }
        })
        .buffer_unordered(args.concurrency.max(1))
        .collect()
        .await;
    let elapsed = start.elapsed();
    let created = results.iter().map(|(n, _)| n).sum();
    let failures = results.iter().filter(|(_, e)| e.is_some()).count();
    if let Some(e) = results.into_iter().find_map(|(_, e)| e) {
        eprintln!("scale: {failures} topic set-ups failed, first: {e:#}");
    }
    (created, elapsed)
}

/// Polls nats-server's `/jsz` until `want` consumers have a pull request waiting, or the
/// count stops growing for three polls (an engine may hold idle consumers without a
/// waiting pull), or two minutes pass. Returns the last count and the time it took.
async fn wait_held(nats: &Nats, want: usize) -> (usize, Duration) {
    let start = Instant::now();
    let http = reqwest::Client::new();
    let url = format!(
        "{}/jsz?accounts=true&streams=true&consumers=true",
        nats.monitor
    );
    let (mut last, mut still) = (0, 0);
    while start.elapsed() < Duration::from_secs(120) {
        let waiting = match http.get(&url).send().await {
            Ok(r) => r.json::<Value>().await.map_or(0, |v| count_waiting(&v)),
            Err(_) => 0,
        };
        if waiting >= want {
            return (waiting, start.elapsed());
        }
        still = if waiting == last { still + 1 } else { 0 };
        if still >= 3 {
            break;
        }
        last = waiting;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    (last, start.elapsed())
}

/// Consumers in a `/jsz` document whose `num_waiting` (pull requests held) is positive.
fn count_waiting(v: &Value) -> usize {
    match v {
        Value::Object(m) => {
            let own = m
                .get("num_waiting")
                .and_then(Value::as_u64)
                .is_some_and(|n| n > 0);
            usize::from(own) + m.values().map(count_waiting).sum::<usize>()
        }
        Value::Array(a) => a.iter().map(count_waiting).sum(),
        _ => 0,
    }
}

/// Publish→webhook latency on the one-subscription topic, open loop at `rate` for 10 s.
async fn one_topic_latency(
    api: &HeraldApi,
    receiver: &mut Receiver,
    rate: u64,
) -> Result<Latencies> {
    receiver.drain_latencies();
    let sent = open_loop(rate, LATENCY_SECS, |t| {
        let api = api.clone();
        async move {
            let body = format!(r#"{{"messages":[{{"body":{{"t":{t}}}}}]}}"#);
            if !matches!(api.post_raw(LATENCY_TOPIC, body.into()).await, Ok(true)) {
                eprintln!("scale: a latency POST failed");
            }
        }
    })
    .await;
    Ok(crate::latency::collect(receiver, sent).await)
}

/// Delivery latency on one topic to all its `subscriptions`: 20 messages, each waited for
/// (up to 30 s) at every subscription.
async fn fan_out_latency(
    api: &HeraldApi,
    receiver: &mut Receiver,
    subscriptions: usize,
) -> Result<Latencies> {
    let mut lat = Latencies::default();
    for _ in 0..20 {
        let t = crate::receiver::now_ns();
        let body = format!(r#"{{"messages":[{{"body":{{"t":{t}}}}}]}}"#);
        api.post_raw("scale-0", body.into()).await?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut got = 0;
        while got < subscriptions && Instant::now() < deadline {
            for v in receiver.drain_latencies() {
                lat.push(v);
                got += 1;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(lat)
}

#[cfg(test)]
mod tests {
    #[test]
    fn waiting_consumers_are_counted_anywhere_in_a_jsz_document() {
        let jsz = serde_json::json!({"account_details": [{"stream_detail": [
            {"consumer_detail": [{"num_waiting": 1}, {"num_waiting": 0}]},
            {"consumer_detail": [{"num_waiting": 3}]}
        ]}]});
        assert_eq!(super::count_waiting(&jsz), 2);
    }
}
