//! A change to a subscription holds for every message published after the API answered:
//! confirm `false`, DELETE and a PATCH of the subscriber. Also the per-topic subscription
//! ceiling (`max_subscriptions_per_topic`, the stream's `max_consumers`).

use std::time::Duration;

use async_nats::jetstream;
use herald::{
    domain::{ProjectId, TopicName},
    store::names::stream_name,
};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    helpers::{eventually, json_with, spawn_app_with, TestApp},
    peers::{spawn_delivery_app, Receiver},
};

const WAIT: Duration = Duration::from_secs(15);

fn stream_of(app: &TestApp, topic: &str) -> String {
    stream_name(
        &ProjectId::parse(&app.project).unwrap(),
        &TopicName::parse(topic).unwrap(),
    )
}

async fn jetstream(app: &TestApp) -> jetstream::Context {
    jetstream::new(async_nats::connect(app.nats.url()).await.unwrap())
}

async fn publish(app: &TestApp, topic: &str, n: u64) {
    json_with(
        app.post_messages(topic, json!({"messages": [{"body": {"n": n}}]}))
            .await,
        201,
    )
    .await;
}

fn numbers(receiver: &Receiver) -> Vec<u64> {
    receiver
        .received()
        .iter()
        .filter_map(|r| r.body["body"]["n"].as_u64())
        .collect()
}

/// A subscription of topic `t` to a fresh receiver that has received message 1.
async fn delivering_subscription() -> (TestApp, Receiver, String) {
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let id = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    publish(&app, "t", 1).await;
    receiver.wait_for(1, WAIT).await;
    (app, receiver, id)
}

#[tokio::test]
async fn after_confirm_false_answers_nothing_published_reaches_the_subscriber() {
    // Arrange: a delivering subscription (confirmation not required).
    let (app, receiver, id) = delivering_subscription().await;

    // Act: unsubscribe, then publish at once.
    let res = app
        .req(
            Method::PUT,
            &format!("/v2/topics/t/subscriptions/{id}/confirm"),
        )
        .json(&json!({"confirmed": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    publish(&app, "t", 2).await;
    app.settled("t", &id).await;

    // Assert: the message was handled without reaching the subscriber.
    assert_eq!(numbers(&receiver), vec![1]);
    let doc = json_with(
        app.get_path(&format!("/v2/topics/t/subscriptions/{id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(doc["confirmed"], false);

    // Act: confirm again; the next message arrives, the skipped one does not.
    let res = app
        .req(
            Method::PUT,
            &format!("/v2/topics/t/subscriptions/{id}/confirm"),
        )
        .json(&json!({"confirmed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    publish(&app, "t", 3).await;
    receiver.wait_for(2, WAIT).await;
    assert_eq!(numbers(&receiver), vec![1, 3]);
}

#[tokio::test]
async fn after_a_subscriber_patch_answers_the_next_message_goes_only_to_the_new_subscriber() {
    // Arrange
    let app = spawn_delivery_app().await;
    let (old, new) = (Receiver::start().await, Receiver::start().await);
    app.put_topic("t", None).await;
    let id = app.subscribe("t", json!({"subscriber": old.url})).await;
    publish(&app, "t", 1).await;
    old.wait_for(1, WAIT).await;

    // Act: move the subscription, then publish at once, several times.
    let res = app
        .req(Method::PATCH, &format!("/v2/topics/t/subscriptions/{id}"))
        .json(&json!({"subscriber": new.url}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for n in 2..=6 {
        publish(&app, "t", n).await;
    }

    // Assert
    new.wait_for(5, WAIT).await;
    app.settled("t", &id).await;
    assert_eq!(numbers(&old), vec![1], "the old subscriber got nothing new");
    let mut got = numbers(&new);
    got.sort_unstable();
    assert_eq!(got, vec![2, 3, 4, 5, 6]);
}

#[tokio::test]
async fn after_delete_answers_nothing_published_reaches_the_subscriber_or_stays_stored() {
    // Arrange
    let (app, receiver, id) = delivering_subscription().await;

    // Act
    let res = app
        .req(Method::DELETE, &format!("/v2/topics/t/subscriptions/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    publish(&app, "t", 2).await;

    // Assert: without the consumer the topic has no interest in the message, so it is not
    // even stored; nothing can deliver it later.
    let js = jetstream(&app).await;
    let mut stream = js.get_stream(stream_of(&app, "t")).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    assert_eq!(state.messages, 0, "{state:?}");
    assert_eq!(state.consumer_count, 0);
    assert_eq!(numbers(&receiver), vec![1]);
}

#[tokio::test]
async fn a_topic_refuses_subscriptions_beyond_its_ceiling_with_a_403_naming_it() {
    // Arrange
    let app = spawn_app_with(|c| c.max_subscriptions_per_topic = 3).await;
    app.put_topic("t", None).await;
    let mut stream = jetstream(&app)
        .await
        .get_stream(stream_of(&app, "t"))
        .await
        .unwrap();
    assert_eq!(stream.info().await.unwrap().config.max_consumers, 3);
    for i in 0..3 {
        app.subscribe(
            "t",
            json!({"subscriber": format!("http://127.0.0.1:9/{i}")}),
        )
        .await;
    }

    // Act
    let res = app
        .post_subscription("t", json!({"subscriber": "http://127.0.0.1:9/x"}))
        .await;

    // Assert
    let body: Value = json_with(res, 403).await;
    assert_eq!(
        body["description"],
        "Subscription quota exceeded: a topic may hold at most 3 subscriptions."
    );
}

#[tokio::test]
async fn streams_of_older_versions_get_the_subscription_ceiling_at_start_up() {
    // Arrange: a topic whose stream has no `max_consumers` (as older Heralds made them).
    let mut app = spawn_app_with(|c| c.max_subscriptions_per_topic = 5000).await;
    app.put_topic("old", None).await;
    let js = jetstream(&app).await;
    let mut stream = js.get_stream(stream_of(&app, "old")).await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_consumers = -1;
    js.update_stream(config).await.unwrap();
    assert_ne!(stream.info().await.unwrap().config.max_consumers, 5000);

    // Act
    app.restart().await;

    // Assert
    eventually(WAIT, "start-up to set max_consumers", || {
        let js = js.clone();
        let name = stream_of(&app, "old");
        async move {
            let mut s = js.get_stream(name).await.ok()?;
            (s.info().await.ok()?.config.max_consumers == 5000).then_some(())
        }
    })
    .await;
}

#[tokio::test]
async fn a_burst_of_listings_leaves_no_consumers_on_the_buckets() {
    // Arrange: nats-server 2.15 refuses a stream's 1,001st consumer, so each listing's
    // ordered consumer must go when the listing is done.
    let app = spawn_app_with(|_| {}).await;
    app.put_topic("t", None).await;

    // Act
    for _ in 0..50 {
        json_with(app.list_topics("").await, 200).await;
    }

    // Assert
    let js = jetstream(&app).await;
    eventually(WAIT, "listing consumers to be gone", || {
        let js = js.clone();
        async move {
            let mut s = js.get_stream("KV_herald_topics").await.ok()?;
            (s.info().await.ok()?.state.consumer_count == 0).then_some(())
        }
    })
    .await;
}
