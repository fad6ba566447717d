//! Cross-cutting HTTP behaviour: identity, errors, limits, request ids, NATS outages.

use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with, spawn_app, spawn_app_with};

#[tokio::test]
async fn v2_routes_require_a_project_header_in_noauth_mode() {
    let app = spawn_app().await;
    let body = json_with(
        app.anon(Method::GET, "/v2/topics").send().await.unwrap(),
        400,
    )
    .await;
    assert_eq!(body["title"], "Invalid API request");
    assert!(body["description"]
        .as_str()
        .unwrap()
        .contains("X-Project-ID"));
    let bad = app
        .anon(Method::GET, "/v2/topics")
        .header("X-Project-ID", "a.b")
        .send()
        .await
        .unwrap();
    json_with(bad, 400).await;
}

#[tokio::test]
async fn client_id_must_be_a_uuid_and_can_be_required() {
    let app = spawn_app().await;
    let bad = app
        .req(Method::GET, "/v2/topics")
        .header("Client-ID", "not-a-uuid")
        .send()
        .await
        .unwrap();
    json_with(bad, 400).await;
    let good = app
        .req(Method::GET, "/v2/topics")
        .header("Client-ID", uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    json_with(good, 200).await;

    let strict = spawn_app_with(|c| c.require_client_id = true).await;
    json_with(
        strict.req(Method::GET, "/v2/topics").send().await.unwrap(),
        400,
    )
    .await;
    let ok = strict
        .req(Method::GET, "/v2/topics")
        .header("Client-ID", uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .unwrap();
    json_with(ok, 200).await;
}

#[tokio::test]
async fn unknown_routes_and_wrong_methods_answer_json() {
    let app = spawn_app().await;
    let body = json_with(
        app.req(Method::GET, "/v2/nothing-here")
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    assert_eq!(body["title"], "Not found");
    let body = json_with(
        app.req(Method::POST, "/v2/topics").send().await.unwrap(),
        405,
    )
    .await;
    assert_eq!(body["title"], "Method not allowed");
    let body = json_with(
        app.anon(Method::GET, "/v3/nothing").send().await.unwrap(),
        404,
    )
    .await;
    assert_eq!(body["itemNotFound"]["code"], 404);
}

#[tokio::test]
async fn bodies_over_the_configured_limit_get_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 4096).await;
    let res = app
        .req(Method::POST, "/v2/topics/t/purge")
        .body(vec![b' '; 10_000])
        .send()
        .await
        .unwrap();
    let body = json_with(res, 413).await;
    assert_eq!(body["title"], "Request body too large");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;
    for res in [
        app.anon(Method::GET, "/healthz").send().await.unwrap(),
        app.req(Method::GET, "/v2/topics/nope")
            .send()
            .await
            .unwrap(),
        app.anon(Method::GET, "/nothing").send().await.unwrap(),
    ] {
        let id = res.headers()["x-openstack-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(id.starts_with("req-"), "{id}");
    }
}

#[tokio::test]
async fn nats_down_gives_503_within_bounded_time_then_recovers() {
    // Arrange
    let mut app = spawn_app().await;
    app.put_topic("t", None).await;
    app.nats.kill();

    // Act
    let started = Instant::now();
    let res = app.get_topic("t").await;

    // Assert
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
    let body = json_with(res, 503).await;
    assert_eq!(body["title"], "Service temporarily unavailable");
    json_with(app.put_topic("u", None).await, 503).await;
    json_with(app.list_topics("").await, 503).await;

    app.nats.restart().await;
    crate::helpers::eventually(Duration::from_secs(15), "recovery", || async {
        (app.get_topic("t").await.status() == 200).then_some(())
    })
    .await;
}

fn write_tokens() -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        f.path(),
        json!({"tokens": {
            "tok-member": {"user_id": "u1", "project_id": "p1"},
            "tok-reader": {"user_id": "u2", "project_id": "p1", "roles": ["reader"]},
            "tok-other": {"user_id": "u3", "project_id": "p2"},
            "tok-admin": {"user_id": "root", "project_id": "adm", "roles": ["admin"]}
        }})
        .to_string(),
    )
    .unwrap();
    f
}

#[tokio::test]
async fn tokens_mode_authenticates_authorises_and_isolates() {
    // Arrange
    let tokens = write_tokens();
    let path = tokens.path().to_owned();
    let app = spawn_app_with(|c| {
        c.auth_mode = herald::config::AuthMode::Tokens;
        c.tokens_file = Some(path);
    })
    .await;
    let as_ = |token: &str, m: Method, p: &str| app.anon(m, p).header("X-Auth-Token", token);

    // Missing or unknown token: 401.
    let body = json_with(
        app.anon(Method::GET, "/v2/topics").send().await.unwrap(),
        401,
    )
    .await;
    assert_eq!(body["title"], "Not authorized");
    json_with(
        as_("nope", Method::GET, "/v2/topics").send().await.unwrap(),
        401,
    )
    .await;

    // Member creates; reader may read but not write.
    assert_eq!(
        as_("tok-member", Method::PUT, "/v2/topics/t")
            .send()
            .await
            .unwrap()
            .status(),
        201
    );
    json_with(
        as_("tok-reader", Method::GET, "/v2/topics/t")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    json_with(
        as_("tok-reader", Method::DELETE, "/v2/topics/t")
            .send()
            .await
            .unwrap(),
        403,
    )
    .await;

    // Another project cannot see it, even by naming the project.
    let res = as_("tok-other", Method::GET, "/v2/topics/t")
        .header("X-Project-ID", "p1")
        .send()
        .await
        .unwrap();
    json_with(res, 404).await;

    // Admin may act on any project.
    let res = as_("tok-admin", Method::GET, "/v2/topics/t")
        .header("X-Project-ID", "p1")
        .send()
        .await
        .unwrap();
    json_with(res, 200).await;
}

#[tokio::test]
async fn a_client_that_trickles_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let addr = app.address.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the headers: the server must close the connection by itself.
    let started = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 30 s");
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "closed too early: {:?}",
        started.elapsed()
    );
}
