use std::{sync::Arc, time::Duration};

use serde_json::json;

use crate::{
    bounded,
    client::{Api, Load},
    harness::{base_env, eventually, Herald, NatsNode},
    receiver::Receiver,
    serial,
};

/// The figure: 100 000 messages, published as 1 000 POSTs of 100 (4 in flight)
/// and delivered to two webhook subscriptions, while NATS is killed (SIGKILL) once a third of them are
/// acknowledged and restarted on the same store.
const MESSAGES: usize = 100_000;
const BATCH: usize = 100;
/// How long NATS stays down: longer than the workers' pull heartbeat (5 s), so every
/// pull has failed and must be renewed.
const OUTAGE_SECS: u64 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_the_api_acknowledged_is_delivered_when_nats_server_is_killed_under_load() {
    let _turn = serial().await;
    bounded(Duration::from_secs(300), async {
        // Arrange
        let mut nats = NatsNode::start_single().await;
        let herald = Herald::start(base_env(&nats.url())).await;
        let receiver = Receiver::start().await;
        let second_receiver = Receiver::start().await;
        // A plain client: a batch that failed is posted again as new messages.
        let mut api = Api::new(vec![herald.base_url()]);
        api.idempotency_keys = false;
        let api = Arc::new(api);
        api.put_topic("load").await;
        api.subscribe("load", &receiver.url, json!({})).await;
        api.subscribe("load", &second_receiver.url, json!({}))
            .await;

        // Act: kill NATS mid-load, keep it down for OUTAGE_SECS after Herald noticed, then
        // restart it on the same store.
        let load = Load::start(
            api.clone(),
            "load",
            MESSAGES,
            BATCH,
            4,
            Duration::from_secs(180),
        );
        load.wait_acked(MESSAGES / 3, Duration::from_secs(120)).await;
        let delivered_before = receiver.tally().delivered;
        nats.kill();
        let http = reqwest::Client::new();
        let readyz = format!("{}/readyz", herald.base_url());
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(20),
            "herald to report NATS down",
            || async {
                let r = http.get(&readyz).send().await.ok()?;
                (!r.status().is_success()).then_some(())
            },
        )
        .await;
        let outage = std::time::Instant::now();
        eventually(
            Duration::from_secs(20),
            Duration::from_millis(100),
            "the outage to last",
            || async { (outage.elapsed() >= Duration::from_secs(OUTAGE_SECS)).then_some(()) },
        )
        .await;
        nats.restart().await;
        let report = load.finish().await;

        // Assert
        receiver
            .wait_for_all(&report.acked, Duration::from_secs(180))
            .await;
        second_receiver
            .wait_for_all(&report.acked, Duration::from_secs(60))
            .await;
        api.wait_drained("load", Duration::from_secs(60)).await;
        let tally = receiver.tally();
        let second = second_receiver.tally();
        let unacknowledged = tally.delivered.saturating_sub(report.acked.len());
        eprintln!(
            "nats kill -9 under load: {} acknowledged of {MESSAGES} in {:?} ({} POSTs, failures {:?}); \
             {} delivered before the kill; receiver: {tally:?}; {unacknowledged} delivered \
             from POSTs that were answered 503; second subscription's receiver: {second:?}",
            report.acked.len(),
            report.elapsed,
            report.posts,
            report.failures,
            delivered_before,
        );
        assert_eq!(report.acked.len(), MESSAGES, "every batch was acknowledged in the end");
        assert_eq!(receiver.missing(&report.acked), 0);
        assert_eq!(second_receiver.missing(&report.acked), 0);
        // Messages of a failed POST may only reach subscribers when its 503 said so.
        let admitted: usize = report
            .failures
            .iter()
            .filter(|(answer, _)| answer.contains("some may have been published"))
            .map(|(_, posts)| posts)
            .sum();
        assert!(
            unacknowledged <= admitted * BATCH,
            "{unacknowledged} messages of failed POSTs were delivered, but only {admitted} \
             503s said their batch may have been published: {:?}",
            report.failures
        );
        assert!(
            report.unexpected_failures().is_empty(),
            "NATS down must be a 503: {:?}",
            report.failures
        );
    })
    .await;
}
