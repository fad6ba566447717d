//! Footprint: Herald's start-to-ready time and idle RSS, median of three starts.

use std::time::Duration;

use anyhow::Result;

use crate::{
    env::{Bins, Herald, Nats},
    stats::Figure,
};

pub async fn run(bins: &Bins) -> Result<Vec<Figure>> {
    let nats = Nats::start(bins, false).await?;
    let (mut ready_ms, mut rss) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let herald = Herald::start(bins, &nats.url, &[]).await?;
        ready_ms.push(herald.start_to_ready.as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_secs(2)).await;
        rss.push(herald.rss_mib());
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    Ok(vec![
        Figure::new(
            "footprint: start-to-ready (median of 3)",
            median(ready_ms),
            "ms",
        )
        .target("< 1000 ms"),
        Figure::new("footprint: idle RSS (median of 3)", median(rss), "MiB").target("< 30 MiB"),
    ])
}
