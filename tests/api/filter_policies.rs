//! Filter policies and message attributes end to end: REST and native publishers, both
//! scopes, PATCH of a policy, and the 400s of bad policies and attributes.

use std::time::Duration;

use async_nats::jetstream;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    helpers::json_with,
    peers::{spawn_delivery_app, Receiver},
};

const WAIT: Duration = Duration::from_secs(15);

fn bodies(receiver: &Receiver) -> Vec<Value> {
    receiver.received().into_iter().map(|r| r.body).collect()
}

#[tokio::test]
async fn only_messages_whose_attributes_match_the_policy_are_delivered_with_their_attributes() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("orders", None).await;
    let id = app
        .subscribe(
            "orders",
            json!({"subscriber": receiver.url, "options": {"filter_policy": {
                "store": ["example_corp"], "price_usd": [{"numeric": [">=", 100]}]}}}),
        )
        .await;

    // Act
    json_with(
        app.post_messages(
            "orders",
            json!({"messages": [
                {"body": 1, "attributes": {"store": "example_corp", "price_usd": 210.75}},
                {"body": 2, "attributes": {"store": "example_corp", "price_usd": 5}},
                {"body": 3, "attributes": {"store": "other"}},
                {"body": 4},
            ]}),
        )
        .await,
        201,
    )
    .await;

    // Assert
    app.settled("orders", &id).await;
    let got = bodies(&receiver);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"], 1);
    assert_eq!(
        got[0]["attributes"],
        json!({"store": "example_corp", "price_usd": 210.75})
    );
    let metrics = app
        .anon(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // The registry is shared by every test of this binary: at least this test's three.
    let filtered: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("herald_deliveries_total")
                && l.contains("protocol=\"webhook\"")
                && l.contains("outcome=\"filtered\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(filtered >= 3.0, "{metrics}");
}

#[tokio::test]
async fn native_publishers_send_attributes_as_headers_and_nats_subscribers_receive_them() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic(
        "t",
        Some(json!({"_allowed_subscribe_protocols": ["webhook", "nats"]})),
    )
    .await;
    app.subscribe(
        "t",
        json!({"subscriber": receiver.url, "options": {"filter_policy": {
            "color": [{"prefix": "re"}], "size": [{"numeric": ["<", 10]}]}}}),
    )
    .await;
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let mut inbox = client.subscribe("sink.t").await.unwrap();
    app.subscribe(
        "t",
        json!({"subscriber": "nats:sink.t", "options": {"filter_policy": {"color": ["blue"]}}}),
    )
    .await;
    let js = jetstream::new(client.clone());
    let subject = format!("herald.topics.{}.t", app.project);

    // Act: plain text and JSON header values.
    for (color, size, body) in [("red", "3", "a"), ("blue", "3", "b"), ("red", "30", "c")] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Herald-Attr-color", color);
        h.insert("Herald-Attr-size", size);
        js.publish_with_headers(subject.clone(), h, body.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    // Assert
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].body["body"], "a");
    assert_eq!(
        got[0].body["attributes"],
        json!({"color": "red", "size": 3})
    );
    let request = tokio::time::timeout(WAIT, futures::StreamExt::next(&mut inbox))
        .await
        .unwrap()
        .unwrap();
    let headers = request.headers.clone().unwrap();
    assert_eq!(
        headers.get("Herald-Attr-color").unwrap().as_str(),
        "\"blue\""
    );
    let body: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(body["body"], "b");
    if let Some(reply) = request.reply {
        client.publish(reply, "ok".into()).await.unwrap();
    }
}

#[tokio::test]
async fn a_body_scope_policy_matches_nested_keys() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let id = app
        .subscribe(
            "t",
            json!({"subscriber": receiver.url, "options": {
                "filter_policy_scope": "MessageBody",
                "filter_policy": {"order": {"city": ["Seattle"]}, "$or": [
                    {"total": [{"numeric": [">", 100]}]}, {"vip": ["yes"]}]}}}),
        )
        .await;

    // Act
    json_with(
        app.post_messages(
            "t",
            json!({"messages": [
                {"body": {"order": {"city": "Seattle"}, "total": 150}},
                {"body": {"order": {"city": "Seattle"}, "total": 50}},
                {"body": {"order": {"city": "Portland"}, "total": 500}},
                {"body": "not an object"},
            ]}),
        )
        .await,
        201,
    )
    .await;

    // Assert
    app.settled("t", &id).await;
    let got = bodies(&receiver);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["body"]["total"], 150);
}

#[tokio::test]
async fn a_patched_policy_applies_to_the_next_messages_and_removing_it_delivers_all() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let id = app
        .subscribe(
            "t",
            json!({"subscriber": receiver.url, "options": {"filter_policy": {"kind": ["a"]}}}),
        )
        .await;
    let publish = |kind: &'static str, n: u64| {
        let app = &app;
        async move {
            json_with(
                app.post_messages(
                    "t",
                    json!({"messages": [{"body": n, "attributes": {"kind": kind}}]}),
                )
                .await,
                201,
            )
            .await;
        }
    };
    publish("a", 1).await;
    publish("b", 2).await;
    app.settled("t", &id).await;

    // Act: switch the policy to "b", then remove it.
    let patch = |options: Value| {
        app.req(Method::PATCH, &format!("/v2/topics/t/subscriptions/{id}"))
            .json(&json!({ "options": options }))
            .send()
    };
    assert_eq!(
        patch(json!({"filter_policy": {"kind": ["b"]}}))
            .await
            .unwrap()
            .status(),
        204
    );
    publish("a", 3).await;
    publish("b", 4).await;
    app.settled("t", &id).await;
    assert_eq!(patch(json!({})).await.unwrap().status(), 204);
    publish("a", 5).await;
    publish("c", 6).await;
    app.settled("t", &id).await;

    // Assert
    let mut got: Vec<u64> = bodies(&receiver)
        .iter()
        .filter_map(|b| b["body"].as_u64())
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![1, 4, 5, 6]);
}

#[tokio::test]
async fn bad_policies_and_attributes_are_refused_with_400_naming_the_rule() {
    // Arrange
    let app = spawn_delivery_app().await;
    app.put_topic("t", None).await;
    let cases = [
        (
            json!({"a": ["1"], "b": ["1"], "c": ["1"], "d": ["1"], "e": ["1"], "f": ["1"]}),
            "at most 5",
        ),
        (json!({"a": [{"numeric": [">", 5, "<", 1]}]}), "lower bound"),
        (json!({"a": [{"nope": 1}]}), "unknown operator"),
        (json!("x"), "JSON object"),
    ];

    // Act / Assert
    for (policy, needle) in cases {
        let body = json_with(
            app.post_subscription(
                "t",
                json!({"subscriber": "http://127.0.0.1:9/x", "options": {"filter_policy": policy}}),
            )
            .await,
            400,
        )
        .await;
        let d = body["description"].as_str().unwrap();
        assert!(d.contains(needle), "{policy}: {d}");
    }
    let body = json_with(
        app.post_subscription(
            "t",
            json!({"subscriber": "http://127.0.0.1:9/x", "options": {"filter_policy": {"a": ["x"]}, "filter_policy_scope": "Body"}}),
        )
        .await,
        400,
    )
    .await;
    assert!(body["description"]
        .as_str()
        .unwrap()
        .contains("filter_policy_scope"));
    for (attributes, needle) in [
        (json!({"bad name": "x"}), "\"bad name\""),
        (json!({"a": {"nested": 1}}), "\"a\""),
        (
            json!((0..11)
                .map(|i| (format!("k{i}"), json!(1)))
                .collect::<serde_json::Map<_, _>>()),
            "at most 10",
        ),
    ] {
        let body = json_with(
            app.post_messages(
                "t",
                json!({"messages": [{"body": 1, "attributes": attributes}]}),
            )
            .await,
            400,
        )
        .await;
        let d = body["description"].as_str().unwrap();
        assert!(d.contains(needle), "{d}");
    }
}
