use std::{sync::Arc, time::Duration};

use serde_json::json;

use crate::{
    bounded,
    client::{Api, Load},
    harness::{base_env, eventually, Herald, NatsNode},
    receiver::Receiver,
    serial,
};

const MESSAGES: usize = 20_000;
/// `delivery_max_in_flight`: the consumer's `max_ack_pending`, so at most this many
/// deliveries can be unacknowledged when Herald dies.
const IN_FLIGHT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_herald_mid_delivery_loses_nothing_and_duplicates_stay_within_the_in_flight_window()
{
    let _turn = serial().await;
    bounded(Duration::from_secs(180), async {
        // Arrange: a receiver that takes 5 ms, so deliveries are in flight at the kill.
        let nats = NatsNode::start_single().await;
        let mut env = base_env(&nats.url());
        env.push((
            "HERALD_DELIVERY_MAX_IN_FLIGHT".into(),
            IN_FLIGHT.to_string(),
        ));
        let mut herald = Herald::start(env).await;
        let receiver = Receiver::start().await;
        receiver.answer(200, Duration::from_millis(5));
        let api = Arc::new(Api::new(vec![herald.base_url()]));
        api.put_topic("work").await;
        api.subscribe("work", &receiver.url, json!({})).await;
        let load = Load::start(
            api.clone(),
            "work",
            MESSAGES,
            100,
            4,
            Duration::from_secs(90),
        );

        // Act: SIGKILL mid-publish and mid-delivery, then start the same Herald again (the
        // publisher retries the POSTs that failed with the same `Idempotency-Key`).
        load.wait_acked(MESSAGES / 2, Duration::from_secs(60)).await;
        eventually(
            Duration::from_secs(60),
            Duration::from_millis(20),
            "deliveries under way",
            || async { (receiver.tally().delivered >= 1_000).then_some(()) },
        )
        .await;
        herald.kill();
        let at_kill = receiver.tally();
        let acked_at_kill = load.acked.load(std::sync::atomic::Ordering::Relaxed);
        herald.restart().await;
        let report = load.finish().await;

        // Assert
        assert_eq!(
            report.acked.len(),
            MESSAGES,
            "failures: {:?}",
            report.failures
        );
        receiver
            .wait_for_all(&report.acked, Duration::from_secs(90))
            .await;
        api.wait_drained("work", Duration::from_secs(60)).await;
        let tally = receiver.tally();
        eprintln!(
            "herald kill -9 mid-delivery: {MESSAGES} messages, {acked_at_kill} acknowledged and {} \
             delivered at the kill; \
             publish failures meanwhile {:?}; receiver: {tally:?}; duplicates {} (bound \
             {IN_FLIGHT})",
            at_kill.delivered, report.failures, tally.duplicates,
        );
        assert_eq!(receiver.missing(&report.acked), 0);
        assert_eq!(
            tally.delivered, MESSAGES,
            "a POST retried with its Idempotency-Key publishes nothing new"
        );
        assert!(
            tally.duplicates <= IN_FLIGHT,
            "{} duplicates exceed the in-flight window of {IN_FLIGHT}",
            tally.duplicates
        );
        assert_eq!(tally.concurrent_duplicates, 0);
        assert!(herald.terminate().await, "SIGTERM drains and exits 0");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigterm_mid_delivery_finishes_in_flight_deliveries_and_duplicates_nothing() {
    let _turn = serial().await;
    bounded(Duration::from_secs(120), async {
        // Arrange: 200 ms answers, so deliveries are in flight at the signal.
        let nats = NatsNode::start_single().await;
        let mut env = base_env(&nats.url());
        env.push((
            "HERALD_DELIVERY_MAX_IN_FLIGHT".into(),
            IN_FLIGHT.to_string(),
        ));
        let mut herald = Herald::start(env).await;
        let receiver = Receiver::start().await;
        receiver.answer(200, Duration::from_millis(200));
        let api = Arc::new(Api::new(vec![herald.base_url()]));
        api.put_topic("drain").await;
        api.subscribe("drain", &receiver.url, json!({})).await;
        let report = Load::start(api.clone(), "drain", 2_000, 100, 2, Duration::from_secs(30))
            .finish()
            .await;
        eventually(
            Duration::from_secs(30),
            Duration::from_millis(5),
            "deliveries under way",
            || async { (receiver.tally().delivered >= 300).then_some(()) },
        )
        .await;

        // Act: a graceful stop, then the same Herald again.
        let exited_cleanly = herald.terminate().await;
        let at_stop = receiver.tally();
        herald.restart().await;

        // Assert
        receiver
            .wait_for_all(&report.acked, Duration::from_secs(60))
            .await;
        api.wait_drained("drain", Duration::from_secs(30)).await;
        let tally = receiver.tally();
        eprintln!(
            "herald SIGTERM mid-delivery: 2000 messages, {} delivered at the signal; receiver: \
             {tally:?}",
            at_stop.delivered
        );
        assert!(exited_cleanly, "SIGTERM drains and exits 0");
        assert_eq!(
            tally.duplicates, 0,
            "a graceful stop acks what it finished and hands back the rest"
        );
    })
    .await;
}
