//! JetStream failures are told apart by their codes: only real unavailability is "not
//! reachable"; a missing stream is 404, a consumer limit 403 naming the limit, and any other
//! refusal a 503 that says what JetStream said.

use async_nats::jetstream;
use herald::{
    domain::{ProjectId, TopicName},
    store::topics::topic_stream_config,
};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with, spawn_app, TestApp};

const NOT_REACHABLE: &str = "not reachable";

/// Replaces the topic's stream with one configured by `change` (JetStream does not let
/// some limits change on update).
async fn recreate_topic_stream(
    app: &TestApp,
    topic: &str,
    change: impl FnOnce(&mut jetstream::stream::Config),
) -> jetstream::Context {
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let mut config = topic_stream_config(
        &ProjectId::parse(&app.project).unwrap(),
        &TopicName::parse(topic).unwrap(),
        1,
    );
    js.delete_stream(&config.name).await.unwrap();
    change(&mut config);
    js.create_stream(config).await.unwrap();
    js
}

async fn subscribe(app: &TestApp, topic: &str, n: usize) -> reqwest::Response {
    app.req(Method::POST, &format!("/v2/topics/{topic}/subscriptions"))
        .json(&json!({"subscriber": format!("http://127.0.0.1:9/hook{n}")}))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn nats_down_is_503_not_reachable() {
    // Arrange
    let mut app = spawn_app().await;
    app.put_topic("t", None).await;
    app.nats.kill();

    // Act
    let res = app.get_topic("t").await;

    // Assert
    let body = json_with(res, 503).await;
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains(NOT_REACHABLE),
        "{body}"
    );
}

#[tokio::test]
async fn publishing_to_a_topic_whose_stream_is_missing_is_404_not_503() {
    // Arrange: a record without its stream (a crash between the two writes).
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let config = topic_stream_config(
        &ProjectId::parse(&app.project).unwrap(),
        &TopicName::parse("t").unwrap(),
        1,
    );
    js.delete_stream(&config.name).await.unwrap();

    // Act
    let res = app
        .req(Method::POST, "/v2/topics/t/messages")
        .json(&json!({"messages": [{"body": 1}]}))
        .send()
        .await
        .unwrap();

    // Assert
    json_with(res, 404).await;
}

#[tokio::test]
async fn a_stream_consumer_limit_refuses_a_subscription_with_403_naming_the_limit() {
    // Arrange
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    recreate_topic_stream(&app, "t", |c| c.max_consumers = 2).await;
    for n in 0..2 {
        json_with(subscribe(&app, "t", n).await, 201).await;
    }

    // Act
    let res = subscribe(&app, "t", 2).await;

    // Assert
    let body = json_with(res, 403).await;
    assert_eq!(
        body["description"],
        "Subscription quota exceeded: a topic may hold at most 2 subscriptions."
    );
}

#[tokio::test]
async fn a_jetstream_refusal_is_503_with_its_code_and_description_not_not_reachable() {
    // Arrange: a stream that refuses purges.
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    recreate_topic_stream(&app, "t", |c| c.deny_purge = true).await;

    // Act
    let res = app
        .req(Method::POST, "/v2/topics/t/purge")
        .json(&json!({"resource_types": ["messages"]}))
        .send()
        .await
        .unwrap();

    // Assert
    let body = json_with(res, 503).await;
    let description = body["description"].as_str().unwrap();
    assert!(
        description.starts_with("JetStream refused the request (code 10"),
        "{description}"
    );
    assert!(!description.contains(NOT_REACHABLE), "{description}");
}
