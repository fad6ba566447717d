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

/// Messages published while the R1 consumer's node is down.
const WHILE_DOWN: usize = 500;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_r1_consumer_on_an_r3_stream_pauses_with_its_node_and_loses_nothing() {
    let _turn = serial().await;
    bounded(Duration::from_secs(180), async {
        // Arrange: R3 topic streams, R1 subscription consumers (`consumer_replicas = 1`).
        let mut cluster = NatsCluster::start().await;
        let mut env = base_env(&cluster.urls());
        env.push(("HERALD_REPLICAS".into(), "3".into()));
        env.push(("HERALD_CONSUMER_REPLICAS".into(), "1".into()));
        let herald = Herald::start(env).await;
        let receiver = Receiver::start().await;
        let api = Arc::new(Api::new(vec![herald.base_url()]));
        api.put_topic("r1").await;
        let subscription = api.subscribe("r1", &receiver.url, json!({})).await;
        let leaders = cluster.topic_leaders().await;
        assert_eq!(leaders.replicas, 3);
        let victim = leaders.consumer;
        let survivor = (victim + 1) % cluster.nodes.len();

        let js = async_nats::jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(2))
            .build(
                async_nats::connect(cluster.nodes[survivor].url())
                    .await
                    .unwrap(),
            );
        let names: Vec<String> = futures::TryStreamExt::try_collect(js.stream_names())
            .await
            .unwrap();
        let stream_name = names
            .into_iter()
            .find(|n| n.starts_with("HERALD_TOPIC_"))
            .unwrap();
        let stream = js.get_stream(&stream_name).await.unwrap();

        // Act: kill the consumer's only node, publish, then bring the node back.
        cluster.nodes[victim].kill();
        let published = Load::start(
            api.clone(),
            "r1",
            WHILE_DOWN,
            50,
            2,
            Duration::from_secs(60),
        )
        .finish()
        .await;
        // The consumer's name is the subscription id.
        let while_down = stream.consumer_info(&subscription).await;
        let missing_while_down = receiver.missing(&published.acked);
        let restarted = std::time::Instant::now();
        cluster.nodes[victim].restart().await;

        // Assert: the stream (R3) took every message while the node was down; the
        // consumer (R1) was unavailable, and after the restart everything arrives.
        receiver
            .wait_for_all(&published.acked, Duration::from_secs(60))
            .await;
        let tally = receiver.tally();
        eprintln!(
            "cluster R1: killed {} (consumer's node; stream leader {}); {} published while \
             down ({:?}, failures {:?}); consumer info from a survivor: {}; {} not yet \
             delivered when the node restarted; all delivered {:?} after the restart; \
             receiver {tally:?}",
            cluster.nodes[victim].name,
            cluster.nodes[leaders.stream].name,
            published.acked.len(),
            published.elapsed,
            published.failures,
            while_down
                .as_ref()
                .map_or_else(|e| e.to_string(), |_| "answered".into()),
            missing_while_down,
            restarted.elapsed(),
        );
        assert_eq!(
            published.acked.len(),
            WHILE_DOWN,
            "R3 streams take publishes"
        );
        assert!(
            while_down.is_err(),
            "an R1 consumer is unavailable while its node is down"
        );
        assert_eq!(receiver.missing(&published.acked), 0);
        assert!(
            published.unexpected_failures().is_empty(),
            "failures other than 503 / connection: {:?}",
            published.failures
        );
    })
    .await;
}
