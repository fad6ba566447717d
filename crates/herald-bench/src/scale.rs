//! Scale: many topics × subscriptions held by one Herald: time to create them, Herald's RSS,
//! and the delivery latency of a message on one topic while all are held.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures::{stream, StreamExt};
use serde_json::json;

use crate::{
    api::HeraldApi,
    env::{Bins, Herald, Nats},
    receiver::Receiver,
    stats::{Figure, Latencies},
};

pub struct Args {
    pub topics: usize,
    pub subscriptions: usize,
    pub sync_always: bool,
}

pub async fn run(bins: &Bins, args: &Args) -> Result<Vec<Figure>> {
    let nats = Nats::start(bins, args.sync_always).await?;
    let herald = Herald::start(bins, &nats.url, &[]).await?;
    let mut receiver = Receiver::start().await?;
    let api = HeraldApi::new(&herald.base);
    let rss_before = herald.rss_mib();

    let created = create_all(&api, &receiver, args).await;
    let consumers = args.topics * args.subscriptions;
    eprintln!("scale: {consumers} subscriptions created in {created:?}");

    // Let workers for every subscription start, then measure RSS.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss = herald.rss_mib();

    let lat = one_topic_latency(&api, &mut receiver, args.subscriptions).await?;
    Ok(vec![
        Figure::new(
            format!(
                "scale: create {} topics x {} subs",
                args.topics, args.subscriptions
            ),
            created.as_secs_f64(),
            "s",
        ),
        Figure::new(
            format!("scale: herald RSS holding {consumers} subscriptions"),
            rss,
            "MiB",
        )
        .vs(rss_before)
        .target("< 300 MiB"),
        Figure::new(
            "scale: delivery latency on one topic (all subs)",
            lat.quantile(0.99),
            "ms",
        )
        .latencies(&lat),
    ])
}

/// Creates every topic with its subscriptions, 8 topics at a time, and returns how long
/// it took. Failures are reported, not fatal: the figures still describe what was held.
async fn create_all(api: &HeraldApi, receiver: &Receiver, args: &Args) -> Duration {
    let start = Instant::now();
    let results: Vec<Result<()>> = stream::iter(0..args.topics)
        .map(|t| {
            let (api, url) = (api.clone(), receiver.url(&format!("/hook/{t}")));
            let subs = args.subscriptions;
            async move {
                let topic = format!("scale-{t}");
                api.create_topic(&topic).await?;
                for s in 0..subs {
                    api.subscribe(&topic, &format!("{url}?s={s}"), json!({}))
                        .await?;
                }
                Ok(())
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let created = start.elapsed();
    let failures = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        eprintln!("scale: {failures} topic set-ups failed, first: {e:#}");
    }
    created
}

/// Delivery latency on one topic while everything is held: 20 messages, each waited
/// for (up to 30 s) at all `subscriptions` of the topic.
async fn one_topic_latency(
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
