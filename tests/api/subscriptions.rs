//! Subscriptions API against a real nats-server.

use reqwest::Method;
use serde_json::json;

use herald::config::NatsSubscriberScope;

use crate::helpers::{json_with, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_subscription_can_be_created_read_listed_patched_and_deleted() {
    // Arrange
    let app = spawn_app().await;
    app.put_topic("orders", None).await;

    // Act
    let res = app
        .post_subscription(
            "orders",
            json!({"subscriber": "http://127.0.0.1:9/hook", "ttl": 600, "options": {"k": "v"}}),
        )
        .await;
    let location = res.headers()["location"].to_str().unwrap().to_owned();
    let id = json_with(res, 201).await["subscription_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Assert
    assert_eq!(location, format!("/v2/topics/orders/subscriptions/{id}"));
    let doc = json_with(app.get_path(&location).await, 200).await;
    assert_eq!(doc["id"], id.as_str());
    assert_eq!(doc["source"], "orders");
    assert_eq!(doc["subscriber"], "http://127.0.0.1:9/hook");
    assert_eq!(doc["ttl"], 600);
    assert_eq!(doc["options"], json!({"k": "v"}));
    assert_eq!(doc["confirmed"], false);
    assert!(doc["age"].as_i64().unwrap() >= 0);
    let list = json_with(app.get_path("/v2/topics/orders/subscriptions").await, 200).await;
    assert_eq!(list["subscriptions"].as_array().unwrap().len(), 1);
    assert_eq!(list["links"][0]["rel"], "next");

    let patched = app
        .req(Method::PATCH, &location)
        .json(&json!({"ttl": 900, "options": {"ordered": true}}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status().as_u16(), 204);
    let doc = json_with(app.get_path(&location).await, 200).await;
    assert_eq!(doc["ttl"], 900);
    assert_eq!(doc["options"], json!({"ordered": true}));

    let deleted = app.req(Method::DELETE, &location).send().await.unwrap();
    assert_eq!(deleted.status().as_u16(), 204);
    json_with(app.get_path(&location).await, 404).await;
    let again = app.req(Method::DELETE, &location).send().await.unwrap();
    assert_eq!(again.status().as_u16(), 204);
}

#[tokio::test]
async fn repeating_the_post_for_an_unconfirmed_subscription_returns_the_same_id() {
    let app = spawn_app().await;
    app.put_topic("orders", None).await;
    let body = json!({"subscriber": "mailto:ops@example.com"});
    let a = app.subscribe("orders", body.clone()).await;
    let b = app.subscribe("orders", body).await;
    assert_eq!(a, b);
}

#[tokio::test]
async fn repeating_the_post_for_a_confirmed_subscription_is_a_409() {
    let app = spawn_app().await;
    app.put_topic("orders", None).await;
    let body = json!({"subscriber": "nats:sink.x"});
    let id = app.subscribe("orders", body.clone()).await;
    let res = app
        .req(
            Method::PUT,
            &format!("/v2/topics/orders/subscriptions/{id}/confirm"),
        )
        .json(&json!({"confirmed": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let doc = json_with(app.post_subscription("orders", body).await, 409).await;
    assert_eq!(doc["title"], "Resource conflict");
}

#[tokio::test]
async fn invalid_subscriptions_are_refused_with_400() {
    let app = spawn_app().await;
    app.put_topic("orders", None).await;
    let missing = json_with(
        app.post_subscription("orders", json!({"ttl": 600})).await,
        400,
    )
    .await;
    assert_eq!(
        missing["description"],
        "Missing parameter subscriber in body."
    );
    for bad in [
        json!({"subscriber": "ftp://x"}),
        json!({"subscriber": 5}),
        json!({"subscriber": "http://127.0.0.1:9/", "ttl": 59}),
        json!({"subscriber": "http://127.0.0.1:9/", "ttl": "x"}),
        json!({"subscriber": "http://127.0.0.1:9/", "options": []}),
        json!({"subscriber": "http://127.0.0.1:9/", "options": {"_retry_policy": {"minimum_delay": -1}}}),
    ] {
        let doc = json_with(app.post_subscription("orders", bad.clone()).await, 400).await;
        assert_eq!(doc["title"], "Invalid API request", "{bad}");
    }
    json_with(
        app.post_subscription("nope", json!({"subscriber": "nats:a"}))
            .await,
        404,
    )
    .await;
}

#[tokio::test]
async fn a_protocol_or_project_the_topic_does_not_allow_is_a_403() {
    let app = spawn_app().await;
    app.put_topic(
        "t",
        Some(json!({"_allowed_subscribe_protocols": ["webhook"]})),
    )
    .await;
    json_with(
        app.post_subscription("t", json!({"subscriber": "mailto:a@b.c"}))
            .await,
        403,
    )
    .await;
    app.subscribe("t", json!({"subscriber": "http://127.0.0.1:9/"}))
        .await;
    app.put_topic(
        "u",
        Some(json!({"_allowed_subscribe_projects": ["someone-else"]})),
    )
    .await;
    json_with(
        app.post_subscription("u", json!({"subscriber": "http://127.0.0.1:9/"}))
            .await,
        403,
    )
    .await;
}

#[tokio::test]
async fn patching_with_an_empty_object_is_a_400_and_an_unknown_id_a_404() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let id = app.subscribe("t", json!({"subscriber": "nats:a.b"})).await;
    let path = format!("/v2/topics/t/subscriptions/{id}");
    let empty = app
        .req(Method::PATCH, &path)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    json_with(empty, 400).await;
    let list = app
        .req(Method::PATCH, &path)
        .json(&json!([1]))
        .send()
        .await
        .unwrap();
    json_with(list, 400).await;
    let unknown = app
        .req(
            Method::PATCH,
            &format!("/v2/topics/t/subscriptions/{}", uuid::Uuid::new_v4()),
        )
        .json(&json!({"ttl": 600}))
        .send()
        .await
        .unwrap();
    json_with(unknown, 404).await;
}

#[tokio::test]
async fn another_projects_subscriptions_are_invisible() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let id = app.subscribe("t", json!({"subscriber": "nats:a.b"})).await;
    let other = app
        .anon(Method::GET, &format!("/v2/topics/t/subscriptions/{id}"))
        .header("X-Project-ID", "intruder")
        .send()
        .await
        .unwrap();
    json_with(other, 404).await;
    let list = app
        .anon(Method::GET, "/v2/topics/t/subscriptions")
        .header("X-Project-ID", "intruder")
        .send()
        .await
        .unwrap();
    json_with(list, 404).await;
}

#[tokio::test]
async fn nats_subscribers_in_nats_or_herald_namespaces_are_refused_with_400_naming_the_rule() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    for (subject, rule) in [
        ("$KV.herald_topics.x", "$-prefixed namespace"),
        ("$O.bucket.x", "$-prefixed namespace"),
        ("$SYS.REQ.SERVER.PING", "$-prefixed namespace"),
        ("_INBOX.x", "_INBOX"),
        ("herald.user_messages.create", "herald."),
        ("a.>", "wildcards"),
    ] {
        let res = app
            .post_subscription("t", json!({"subscriber": format!("nats:{subject}")}))
            .await;
        let doc = json_with(res, 400).await;
        let why = doc["description"].as_str().unwrap();
        assert!(why.contains(rule), "{subject}: {why}");
    }
}

#[tokio::test]
async fn with_the_project_scope_a_nats_subscriber_must_be_under_the_projects_own_prefix() {
    let app = spawn_app_with(|c| c.nats_subscriber_scope = NatsSubscriberScope::Project).await;
    app.put_topic("t", None).await;
    let doc = json_with(
        app.post_subscription("t", json!({"subscriber": "nats:globex.orders"}))
            .await,
        400,
    )
    .await;
    let why = doc["description"].as_str().unwrap();
    assert!(why.contains("nats_subscriber_scope"), "{why}");
    let own = format!("nats:{}.orders", app.project);
    let id = app.subscribe("t", json!({"subscriber": own})).await;
    // A PATCH cannot move it out of the project either.
    let res = app
        .req(Method::PATCH, &format!("/v2/topics/t/subscriptions/{id}"))
        .json(&json!({"subscriber": "nats:globex.orders"}))
        .send()
        .await
        .unwrap();
    json_with(res, 400).await;
}
