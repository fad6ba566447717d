use std::{collections::HashSet, sync::Arc, time::Duration};

use serde_json::json;

use crate::{
    bounded,
    client::{Api, Load},
    harness::{base_env, eventually, Herald, NatsCluster},
    receiver::Receiver,
    serial,
};

/// Messages of the quiet phase (both Heralds up, no fault).
const QUIET: usize = 2_000;
/// Messages of the faulty phase (a NATS node, then a Herald, killed).
const UNDER_FAULTS: usize = 60_000;
/// `delivery_max_in_flight` of each Herald.
const IN_FLIGHT: usize = 64;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_with_two_heralds_survives_losing_a_nats_node_then_a_herald() {
    let _turn = serial().await;
    bounded(Duration::from_secs(300), async {
        // Arrange: 3 routed nodes, topics with 3 replicas, two Heralds on every node's URL.
        let mut cluster = NatsCluster::start().await;
        let mut env = base_env(&cluster.urls());
        env.push(("HERALD_REPLICAS".into(), "3".into()));
        env.push((
            "HERALD_DELIVERY_MAX_IN_FLIGHT".into(),
            IN_FLIGHT.to_string(),
        ));
        let first = Herald::start(env.clone()).await;
        let mut second = Herald::start(env).await;
        let receiver = Receiver::start().await;
        let api = Arc::new(Api::new(vec![first.base_url(), second.base_url()]));
        api.put_topic("replicated").await;
        api.subscribe("replicated", &receiver.url, json!({})).await;

        // Act 1: both Heralds share the consumer, nothing fails.
        let quiet = Load::start(
            api.clone(),
            "replicated",
            QUIET,
            100,
            2,
            Duration::from_secs(60),
        )
        .finish()
        .await;
        receiver
            .wait_for_all(&quiet.acked, Duration::from_secs(60))
            .await;
        api.wait_drained("replicated", Duration::from_secs(30))
            .await;
        let quiet_tally = receiver.tally();

        // Act 2: under load, SIGKILL the node leading the subscription's consumer (what
        // delivery depends on), then (a third of the load later) one Herald.
        let leaders = cluster.topic_leaders().await;
        assert_eq!(
            leaders.replicas, 3,
            "HERALD_REPLICAS reaches the topic's stream"
        );
        let victim = leaders.consumer;
        let load = Load::start(
            api.clone(),
            "replicated",
            UNDER_FAULTS,
            100,
            4,
            Duration::from_secs(150),
        );
        load.wait_acked(UNDER_FAULTS / 4, Duration::from_secs(90))
            .await;
        cluster.nodes[victim].kill();
        let after_node_kill = load.acked.load(std::sync::atomic::Ordering::Relaxed);
        load.wait_acked(after_node_kill + UNDER_FAULTS / 3, Duration::from_secs(90))
            .await;
        second.kill();
        let report = load.finish().await;

        // Assert
        let mut all: HashSet<String> = quiet.acked.clone();
        all.extend(report.acked.iter().cloned());
        receiver.wait_for_all(&all, Duration::from_secs(120)).await;
        eventually(
            Duration::from_secs(60),
            Duration::from_millis(100),
            "the topic to drain on the surviving Herald",
            || async { (api.pending("replicated").await == Some(0)).then_some(()) },
        )
        .await;
        let tally = receiver.tally();
        eprintln!(
            "cluster: killed {} (consumer leader; stream leader {}); quiet phase {QUIET} \
             messages, receiver {quiet_tally:?}; faulty phase {} \
             acknowledged of {UNDER_FAULTS} in {:?} (failures {:?}); receiver: {tally:?}; \
             duplicates {} (bound {})",
            cluster.nodes[victim].name,
            cluster.nodes[leaders.stream].name,
            report.acked.len(),
            report.elapsed,
            report.failures,
            tally.duplicates,
            2 * IN_FLIGHT,
        );
        assert_eq!(quiet_tally.delivered, QUIET);
        assert_eq!(
            quiet_tally.duplicates, 0,
            "two Heralds never deliver a message twice without a fault"
        );
        assert_eq!(report.acked.len(), UNDER_FAULTS, "the service continued");
        assert_eq!(receiver.missing(&all), 0);
        assert!(
            tally.duplicates <= 2 * IN_FLIGHT,
            "duplicates beyond the two kills' in-flight windows: {}",
            tally.duplicates
        );
        assert!(
            report.unexpected_failures().is_empty(),
            "failures other than 503 / connection: {:?}",
            report.failures
        );
    })
    .await;
}
