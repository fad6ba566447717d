//! JetStream failures are told apart by their codes: only real unavailability is "not
//! reachable"; a missing stream is 404, a consumer limit 403 naming the limit, and any other
//! refusal a 503 that says what JetStream said.

use std::{
    process::{Child, Command, Stdio},
    time::Duration,
};

use async_nats::jetstream;
use herald::{
    domain::{ProjectId, TopicName},
    store::topic_stream_config,
};
use reqwest::Method;
use serde_json::json;

use crate::helpers::{
    eventually, free_port, json_with, nats_server_bin, spawn_app, spawn_app_with, TestApp,
};

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
        1000,
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
async fn a_missing_stream_or_consumer_is_not_found_not_unavailable() {
    // Arrange: a subscription, then its topic's stream removed behind Herald's back (a
    // record without its stream, as a crash between the two writes leaves).
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let id = json_with(subscribe(&app, "t", 0).await, 201).await["subscription_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let missing = uuid::Uuid::new_v4();
    let get = |path: String| app.req(Method::GET, &path).send();

    // Act / Assert: an unknown consumer on a live stream.
    json_with(
        get(format!("/v2/topics/t/subscriptions/{missing}"))
            .await
            .unwrap(),
        404,
    )
    .await;
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let config = topic_stream_config(
        &ProjectId::parse(&app.project).unwrap(),
        &TopicName::parse("t").unwrap(),
        1,
        1000,
    );
    js.delete_stream(&config.name).await.unwrap();
    // A missing stream.
    json_with(
        get(format!("/v2/topics/t/subscriptions/{id}"))
            .await
            .unwrap(),
        404,
    )
    .await;
    let list = json_with(get("/v2/topics/t/subscriptions".into()).await.unwrap(), 200).await;
    assert_eq!(list["subscriptions"], json!([]));
    let stats = json_with(get("/v2/topics/t/stats".into()).await.unwrap(), 200).await;
    assert_eq!(stats["messages"]["total"], 0);
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

/// A nats-server whose only account has JetStream limits (`limits`, e.g. `max_streams: 3`).
struct LimitedNats {
    url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

impl LimitedNats {
    async fn start(limits: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("nats.conf");
        std::fs::write(
            &conf,
            format!(
                "host: 127.0.0.1\nport: {port}\njetstream {{ store_dir: {:?} }}\n\
                 accounts {{ A {{ jetstream {{ {limits} }}, users: [{{user: herald}}] }} }}\n\
                 no_auth_user: herald\n",
                dir.path().join("js"),
            ),
        )
        .unwrap();
        let child = Command::new(nats_server_bin())
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let url = format!("nats://127.0.0.1:{port}");
        let probe = url.clone();
        eventually(Duration::from_secs(10), "limited nats-server", || {
            let url = probe.clone();
            async move {
                let js = jetstream::new(async_nats::connect(&url).await.ok()?);
                js.query_account().await.ok().map(|_| ())
            }
        })
        .await;
        Self {
            url,
            child,
            _dir: dir,
        }
    }
}

impl Drop for LimitedNats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn an_account_stream_limit_refuses_a_topic_with_403_naming_the_limit() {
    // Arrange: Herald's three buckets (topics, user messages, subscription health: the
    // last made by the attempt writer's first tick) and one topic fill an account of four
    // streams.
    let nats = LimitedNats::start("max_streams: 4").await;
    let url = nats.url.clone();
    let app = spawn_app_with(|c| c.nats_url = url.clone()).await;
    let js = jetstream::new(async_nats::connect(&url).await.unwrap());
    eventually(
        Duration::from_secs(10),
        "Herald's three buckets",
        || async { (js.query_account().await.ok()?.streams == 3).then_some(()) },
    )
    .await;
    assert_eq!(app.put_topic("first", None).await.status(), 201);

    // Act
    let res = app.put_topic("second", None).await;

    // Assert
    let body = json_with(res, 403).await;
    let description = body["description"].as_str().unwrap();
    assert!(
        description.starts_with("Topic quota exceeded:") && description.contains("streams"),
        "{description}"
    );
    json_with(app.get_topic("second").await, 404).await;
}
