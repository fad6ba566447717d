use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use serde_json::json;

use crate::{
    bounded,
    client::{Api, Load},
    harness::{base_env, eventually, Herald, NatsNode},
    receiver::Receiver,
    serial,
};

/// Retry delays of the policy below, in policy seconds, retry by retry: 2 immediate,
/// 2 at the minimum (5), the linear backoff list range(5, 20, 5) = [5, 10, 15], then 20
/// at the maximum (20): 28 attempts in all.
const SCHEDULE: [u64; 27] = [
    0, 0, 5, 5, 5, 10, 15, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20, 20,
    20, 20,
];
/// `HERALD_RETRY_DELAY_UNIT_MS` of [`base_env`].
const UNIT_MS: u64 = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_answering_503_for_a_while_then_200_gets_everything_on_the_policy_schedule() {
    let _turn = serial().await;
    bounded(Duration::from_secs(120), async {
        // Arrange
        let nats = NatsNode::start_single().await;
        let herald = Herald::start(base_env(&nats.url())).await;
        let receiver = Receiver::start().await;
        receiver.answer(503, Duration::ZERO);
        let api = Arc::new(Api::new(vec![herald.base_url()]));
        api.put_topic("flaky").await;
        let policy = json!({"retries_with_no_delay": 2, "minimum_delay_retries": 2,
            "minimum_delay": 5, "maximum_delay": 20, "maximum_delay_retries": 20,
            "retry_backoff_function": "linear"});
        api.subscribe("flaky", &receiver.url, json!({"_retry_policy": policy}))
            .await;

        // Act: 200 messages meet a receiver that is down for 1.5 s, then well.
        let started = Instant::now();
        let report = Load::start(api.clone(), "flaky", 200, 50, 2, Duration::from_secs(30))
            .finish()
            .await;
        eventually(
            Duration::from_secs(10),
            Duration::from_millis(10),
            "1.5 s of outage",
            || async { (started.elapsed() >= Duration::from_millis(1500)).then_some(()) },
        )
        .await;
        receiver.answer(200, Duration::ZERO);

        // Assert
        receiver
            .wait_for_all(&report.acked, Duration::from_secs(60))
            .await;
        api.wait_drained("flaky", Duration::from_secs(30)).await;
        let mut max_attempts = 0;
        let mut late = Vec::new();
        for id in &report.acked {
            let attempts = receiver.attempts(id);
            max_attempts = max_attempts.max(attempts.len());
            assert!(
                attempts.len() <= SCHEDULE.len() + 1,
                "{id}: too many attempts"
            );
            let (last, failed) = attempts.split_last().unwrap();
            assert_eq!(last.status, 200, "{id}: ends delivered");
            assert!(failed.iter().all(|a| a.status == 503), "{id}: one 200 only");
            for (i, pair) in attempts.windows(2).enumerate() {
                let gap = pair[1].at - pair[0].at;
                let policy = Duration::from_millis(SCHEDULE[i] * UNIT_MS);
                assert!(
                    gap + Duration::from_millis(2) >= policy,
                    "{id}: retry {} came after {gap:?}, before the policy's {policy:?}",
                    i + 1
                );
                // Far later than the policy means a lost NAK and an `ack_wait` redelivery.
                if gap > policy + Duration::from_millis(1000) {
                    late.push((i + 1, gap));
                }
            }
        }
        let tally = receiver.tally();
        eprintln!(
            "503 then 200: {} messages, {} requests, at most {max_attempts} attempts for one \
             message; receiver: {tally:?}; retries over 1 s late: {late:?}",
            report.acked.len(),
            tally.requests,
        );
        assert!(late.is_empty(), "retries far off the policy: {late:?}");
        assert_eq!(tally.duplicates, 0);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_slower_than_half_the_attempt_timeout_never_gets_a_concurrent_duplicate() {
    let _turn = serial().await;
    bounded(Duration::from_secs(120), async {
        // Arrange: 1 s attempts, answers after 600 ms, 100 deliveries in flight.
        let nats = NatsNode::start_single().await;
        let mut env = base_env(&nats.url());
        env.push(("HERALD_DELIVERY_MAX_IN_FLIGHT".into(), "100".into()));
        let herald = Herald::start(env).await;
        let receiver = Receiver::start().await;
        receiver.answer(200, Duration::from_millis(600));
        let api = Arc::new(Api::new(vec![herald.base_url()]));
        api.put_topic("slow").await;
        api.subscribe("slow", &receiver.url, json!({})).await;

        // Act
        let started = Instant::now();
        let report = Load::start(api.clone(), "slow", 1000, 100, 2, Duration::from_secs(30))
            .finish()
            .await;

        // Assert
        receiver
            .wait_for_all(&report.acked, Duration::from_secs(60))
            .await;
        api.wait_drained("slow", Duration::from_secs(30)).await;
        let tally = receiver.tally();
        eprintln!(
            "slow receiver (600 ms of a 1 s attempt timeout): {} messages in {:?}; receiver: {tally:?}",
            report.acked.len(),
            started.elapsed()
        );
        assert_eq!(tally.delivered, 1000);
        assert_eq!(tally.concurrent_duplicates, 0);
        assert_eq!(tally.duplicates, 0);
    })
    .await;
}
