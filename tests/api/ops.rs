//! Operations endpoints.

use reqwest::Method;

use crate::helpers::{json_with, spawn_app};

#[tokio::test]
async fn health_ready_and_ping_answer() {
    let app = spawn_app().await;
    json_with(app.anon(Method::GET, "/healthz").send().await.unwrap(), 200).await;
    json_with(app.anon(Method::GET, "/readyz").send().await.unwrap(), 200).await;
    let ping = app.anon(Method::GET, "/v2/ping").send().await.unwrap();
    assert_eq!(ping.status().as_u16(), 204);
}

#[tokio::test]
async fn metrics_are_in_prometheus_format_with_route_labels() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let text = app
        .anon(Method::GET, "/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("# TYPE herald_http_requests_total counter"),
        "{text}"
    );
    assert!(text.contains(r#"route="/v2/topics/{name}""#), "{text}");
    assert!(
        text.contains("herald_http_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("herald_nats_connected 1"), "{text}");
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let app = spawn_app().await;
    let doc = json_with(
        app.anon(Method::GET, "/openapi.json").send().await.unwrap(),
        200,
    )
    .await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/v2/ping",
        "/metrics",
        "/v2/topics",
        "/v2/topics/{name}",
        "/v2/topics/{name}/stats",
        "/v2/topics/{name}/purge",
    ] {
        assert!(paths.contains_key(p), "{p} missing from OpenAPI");
    }
    for m in ["put", "get", "patch", "delete"] {
        assert!(paths["/v2/topics/{name}"].get(m).is_some(), "{m} missing");
    }
}

#[tokio::test]
async fn readiness_fails_with_503_while_nats_is_down() {
    let mut app = spawn_app().await;
    app.nats.kill();
    let res = crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "readyz to fail",
        || async {
            let r = app.anon(Method::GET, "/readyz").send().await.ok()?;
            (r.status() == 503).then_some(r)
        },
    )
    .await;
    let body = json_with(res, 503).await;
    assert_eq!(body["title"], "Service temporarily unavailable");
    json_with(app.anon(Method::GET, "/healthz").send().await.unwrap(), 200).await;
}

#[tokio::test]
async fn delivery_metrics_count_outcomes_latency_and_lag() {
    // Arrange
    let app = crate::peers::spawn_delivery_app().await;
    let receiver = crate::peers::Receiver::start().await;
    app.put_topic("m", None).await;
    let sub = app
        .subscribe(
            "m",
            serde_json::json!({"subscriber": receiver.url, "ttl": 3600}),
        )
        .await;

    // Act
    let res = app
        .post_messages(
            "m",
            serde_json::json!({"messages": [{"body": 1}, {"body": 2}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    receiver
        .wait_for(2, std::time::Duration::from_secs(10))
        .await;

    // Assert
    let text = crate::helpers::eventually(
        std::time::Duration::from_secs(5),
        "delivery metrics",
        || async {
            let t = app
                .anon(Method::GET, "/metrics")
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            // The recorder is process-wide: other tests' deliveries add to the same counter.
            let delivered = t
                .lines()
                .find_map(|l| {
                    l.strip_prefix(
                        r#"herald_deliveries_total{protocol="webhook",outcome="delivered"} "#,
                    )
                })
                .and_then(|v| v.trim().parse::<f64>().ok())?;
            (delivered >= 2.0).then_some(t)
        },
    )
    .await;
    assert!(
        text.contains("herald_delivery_latency_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("herald_messages_published_total"), "{text}");
    assert!(
        text.contains(&format!(
            r#"herald_subscription_lag_messages{{topic="m",subscription="{sub}"}} 0"#
        )),
        "{text}"
    );
}
