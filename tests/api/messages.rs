//! Topic messages API against a real nats-server.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with, spawn_app};

#[tokio::test]
async fn posting_messages_answers_201_with_one_resource_per_message() {
    // Arrange
    let app = spawn_app().await;
    app.put_topic("orders", None).await;

    // Act
    let res = app
        .post_messages(
            "orders",
            json!({"messages": [{"body": {"a": 1}}, {"body": "x", "ttl": 60, "delay": 0}]}),
        )
        .await;

    // Assert
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let doc = json_with(res, 201).await;
    let resources = doc["resources"].as_array().unwrap();
    assert_eq!(resources.len(), 2);
    for r in resources {
        let id = r
            .as_str()
            .unwrap()
            .strip_prefix("/v2/topics/orders/messages/")
            .unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok(), "{r}");
        assert!(location.contains(id));
    }
}

#[tokio::test]
async fn invalid_message_batches_are_refused_with_400() {
    let app = spawn_app().await;
    app.put_topic("orders", None).await;
    for bad in [
        json!({}),
        json!({"messages": []}),
        json!({"messages": "x"}),
        json!({"messages": [{"ttl": 60}]}),
        json!({"messages": [{"body": 1, "ttl": 59}]}),
        json!({"messages": [{"body": 1, "delay": 901}]}),
        json!([1]),
    ] {
        let body = json_with(app.post_messages("orders", bad.clone()).await, 400).await;
        assert_eq!(body["title"], "Invalid API request", "{bad}");
    }
}

#[tokio::test]
async fn posting_to_an_unknown_topic_is_a_404() {
    let app = spawn_app().await;
    let body = json_with(
        app.post_messages("nope", json!({"messages": [{"body": 1}]}))
            .await,
        404,
    )
    .await;
    assert_eq!(body["title"], "Not found");
}

#[tokio::test]
async fn a_batch_over_the_topics_max_post_size_is_a_413() {
    let app = spawn_app().await;
    app.put_topic("small", Some(json!({"_max_messages_post_size": 100})))
        .await;
    let res = app
        .post_messages("small", json!({"messages": [{"body": "x".repeat(200)}]}))
        .await;
    json_with(res, 413).await;
}

#[tokio::test]
async fn a_user_the_topic_does_not_allow_to_send_gets_403() {
    let app = spawn_app().await;
    app.put_topic(
        "guarded",
        Some(json!({"_allowed_sending_users": ["alice"]})),
    )
    .await;
    let as_bob = app
        .req(Method::POST, "/v2/topics/guarded/messages")
        .header("X-User-ID", "bob")
        .json(&json!({"messages": [{"body": 1}]}))
        .send()
        .await
        .unwrap();
    let body = json_with(as_bob, 403).await;
    assert_eq!(body["title"], "Not authorized");
    let as_alice = app
        .req(Method::POST, "/v2/topics/guarded/messages")
        .header("X-User-ID", "alice")
        .json(&json!({"messages": [{"body": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(as_alice.status().as_u16(), 201);
}

#[tokio::test]
async fn a_retried_post_with_the_same_idempotency_key_returns_the_same_ids() {
    // Arrange
    let app = spawn_app().await;
    app.put_topic("orders", None).await;
    app.subscribe("orders", json!({"subscriber": "nats:sink.orders"}))
        .await;
    let post = || {
        app.req(Method::POST, "/v2/topics/orders/messages")
            .header("Idempotency-Key", "order-42")
            .json(&json!({"messages": [{"body": 1}, {"body": 2}]}))
            .send()
    };

    // Act
    let first = json_with(post().await.unwrap(), 201).await;
    let second = json_with(post().await.unwrap(), 201).await;

    // Assert
    assert_eq!(first, second);
    let stats = json_with(app.get_path("/v2/topics/orders/stats").await, 200).await;
    assert_eq!(stats["messages"]["total"], 2, "published once: {stats}");
}

#[tokio::test]
async fn a_message_acked_on_a_topic_without_subscriptions_is_not_stored() {
    let app = spawn_app().await;
    app.put_topic("lonely", None).await;
    json_with(
        app.post_messages("lonely", json!({"messages": [{"body": 1}]}))
            .await,
        201,
    )
    .await;
    let stats = json_with(app.get_path("/v2/topics/lonely/stats").await, 200).await;
    assert_eq!(stats["messages"]["total"], 0);
    assert_eq!(stats["subscriptions"]["count"], 0);
}

#[tokio::test]
async fn a_batch_larger_than_the_client_ack_window_is_published_without_stalling() {
    // async-nats keeps 5,000 publish acks in flight by default; a larger batch used to wait
    // forever for permits only it could release.
    let app = crate::peers::spawn_delivery_app().await;
    let receiver = crate::peers::Receiver::start().await;
    app.put_topic("big", None).await;
    app.subscribe(
        "big",
        serde_json::json!({"subscriber": receiver.url, "ttl": 3600}),
    )
    .await;
    let messages: Vec<_> = (0..6000).map(|i| serde_json::json!({"body": i})).collect();
    let started = std::time::Instant::now();
    let res = app
        .post_messages("big", serde_json::json!({ "messages": messages }))
        .await;
    assert_eq!(
        res.status(),
        201,
        "{}",
        res.text().await.unwrap_or_default()
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    receiver
        .wait_for(6000, std::time::Duration::from_secs(60))
        .await;
}

#[tokio::test]
async fn a_patch_applies_to_the_next_post_at_once_despite_the_topic_cache() {
    let app = crate::peers::spawn_delivery_app().await;
    app.put_topic("c", None).await;
    let body = serde_json::json!({"messages": [{"body": "x".repeat(200)}]});
    assert_eq!(
        app.post_messages("c", body.clone()).await.status(),
        201,
        "warms the cache"
    );
    let patch = serde_json::json!([{"op": "add", "path": "/metadata/_max_messages_post_size", "value": 64}]);
    assert_eq!(app.patch_topic("c", patch).await.status(), 200);
    assert_eq!(app.post_messages("c", body).await.status(), 413);
}

#[tokio::test]
async fn a_topic_deleted_behind_the_cache_answers_404_not_503() {
    // Arrange: cache the topic, then delete it as another Herald process would.
    let app = crate::peers::spawn_delivery_app().await;
    app.put_topic("gone", None).await;
    let body = serde_json::json!({"messages": [{"body": 1}]});
    assert_eq!(app.post_messages("gone", body.clone()).await.status(), 201);
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let project = herald::domain::ProjectId::parse(&app.project).unwrap();
    let topic = herald::domain::TopicName::parse("gone").unwrap();
    js.delete_stream(herald::store::names::stream_name(&project, &topic))
        .await
        .unwrap();
    let kv = js.get_key_value("herald_topics").await.unwrap();
    kv.purge(format!("{}.gone", app.project)).await.unwrap();

    // Act
    let res = app.post_messages("gone", body).await;

    // Assert
    crate::helpers::json_with(res, 404).await;
}
