//! Topics API against a real nats-server.

use reqwest::Method;
use serde_json::json;

use crate::helpers::{json_with, spawn_app};

#[tokio::test]
async fn put_creates_a_topic_then_answers_204_and_keeps_metadata() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let first = app
        .put_topic("orders", Some(json!({"color": "blue"})))
        .await;
    let second = app.put_topic("orders", Some(json!({"color": "red"}))).await;

    // Assert
    assert_eq!(first.status().as_u16(), 201);
    assert_eq!(first.headers()["location"], "/v2/topics/orders");
    assert_eq!(second.status().as_u16(), 204);
    assert_eq!(second.headers()["location"], "/v2/topics/orders");
    let doc = json_with(app.get_topic("orders").await, 200).await;
    assert_eq!(doc["color"], "blue", "204 leaves metadata unchanged");
    assert_eq!(doc["_default_message_ttl"], 3600);
    assert_eq!(doc["_max_messages_post_size"], 262144);
    assert_eq!(doc["_default_message_delay"], 0);
}

#[tokio::test]
async fn put_without_body_creates_a_topic_with_defaults() {
    let app = spawn_app().await;
    assert_eq!(app.put_topic("a.b-c_d", None).await.status().as_u16(), 201);
    let doc = json_with(app.get_topic("a.b-c_d").await, 200).await;
    assert_eq!(doc["_retry_policy"]["retries_with_no_delay"], 3);
}

#[tokio::test]
async fn invalid_topic_names_are_refused_with_400() {
    let app = spawn_app().await;
    let long = "x".repeat(65);
    for bad in ["bad*name", "a..b", ".a", long.as_str(), "%C3%BC"] {
        let res = app.put_topic(bad, None).await;
        let body = json_with(res, 400).await;
        assert_eq!(body["title"], "Invalid API request");
        assert_eq!(body["description"], "Invalid topic identification", "{bad}");
    }
}

#[tokio::test]
async fn invalid_metadata_is_refused_with_the_field_named() {
    let app = spawn_app().await;
    for (meta, field) in [
        (json!({"_default_message_ttl": 59}), "_default_message_ttl"),
        (
            json!({"_max_messages_post_size": 262145}),
            "_max_messages_post_size",
        ),
        (
            json!({"_default_message_delay": 901}),
            "_default_message_delay",
        ),
        (
            json!({"_retry_policy": {"retry_backoff_function": "cubic"}}),
            "retry_backoff_function",
        ),
        (
            json!({"_allowed_subscribe_protocols": ["fax"]}),
            "_allowed_subscribe_protocols",
        ),
        (json!([1, 2]), "object"),
    ] {
        let body = json_with(app.put_topic("t", Some(meta)).await, 400).await;
        let d = body["description"].as_str().unwrap();
        assert!(d.contains(field), "{d} does not name {field}");
    }
    let res = app
        .req(Method::PUT, "/v2/topics/t")
        .body("{not json")
        .send()
        .await
        .unwrap();
    json_with(res, 400).await;
    assert_eq!(
        app.get_topic("t").await.status().as_u16(),
        404,
        "nothing was created"
    );
}

#[tokio::test]
async fn metadata_over_64_kib_is_refused_with_413() {
    let app = spawn_app().await;
    let big = json!({"blob": "x".repeat(70 * 1024)});
    json_with(app.put_topic("t", Some(big)).await, 413).await;
}

#[tokio::test]
async fn get_of_a_missing_topic_is_404() {
    let app = spawn_app().await;
    let body = json_with(app.get_topic("nope").await, 404).await;
    assert_eq!(body["title"], "Not found");
}

#[tokio::test]
async fn list_pages_by_name_with_marker_and_limit() {
    // Arrange
    let app = spawn_app().await;
    for name in ["t3", "t1", "t2", "t5", "t4"] {
        assert_eq!(
            app.put_topic(name, Some(json!({"n": name}))).await.status(),
            201
        );
    }

    // Act
    let page1 = json_with(app.list_topics("?limit=2").await, 200).await;

    // Assert
    let names: Vec<_> = page1["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, vec!["t1", "t2"]);
    assert_eq!(page1["topics"][0]["href"], "/v2/topics/t1");
    assert!(page1["topics"][0].get("metadata").is_none());
    let next = page1["links"][0]["href"].as_str().unwrap().to_owned();
    assert_eq!(page1["links"][0]["rel"], "next");
    assert_eq!(next, "/v2/topics?marker=t2&limit=2");

    let page2 = json_with(
        app.list_topics(next.trim_start_matches("/v2/topics")).await,
        200,
    )
    .await;
    assert_eq!(page2["topics"][0]["name"], "t3");

    let all = json_with(app.list_topics("?detailed=true&limit=20").await, 200).await;
    assert_eq!(all["topics"].as_array().unwrap().len(), 5);
    assert_eq!(all["topics"][4]["metadata"]["n"], "t5");

    let empty = json_with(app.list_topics("?marker=t5").await, 200).await;
    assert_eq!(empty["topics"], json!([]));
    assert_eq!(empty["links"], json!([]));
}

#[tokio::test]
async fn list_filters_by_name_and_metadata() {
    let app = spawn_app().await;
    app.put_topic("alpha", Some(json!({"env": "prod"}))).await;
    app.put_topic("beta", Some(json!({"env": "dev"}))).await;
    app.put_topic("alphabet", Some(json!({"env": "dev"}))).await;
    let by_name = json_with(app.list_topics("?name=alpha").await, 200).await;
    assert_eq!(by_name["topics"].as_array().unwrap().len(), 2);
    let by_meta = json_with(app.list_topics("?env=dev").await, 200).await;
    let names: Vec<_> = by_meta["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alphabet", "beta"]);
}

#[tokio::test]
async fn list_rejects_bad_limits_and_flags() {
    let app = spawn_app().await;
    for q in [
        "?limit=0",
        "?limit=21",
        "?limit=x",
        "?limit=-1",
        "?detailed=maybe",
    ] {
        json_with(app.list_topics(q).await, 400).await;
    }
}

#[tokio::test]
async fn patch_applies_zaqar_json_patch_and_returns_the_new_metadata() {
    let app = spawn_app().await;
    app.put_topic("t", Some(json!({"a": 1, "b": 2}))).await;
    let res = app
        .patch_topic(
            "t",
            json!([
                {"op": "replace", "path": "/metadata/a", "value": 10},
                {"op": "remove", "path": "/metadata/b"},
                {"op": "add", "path": "/metadata/_default_message_ttl", "value": 120}
            ]),
        )
        .await;
    let doc = json_with(res, 200).await;
    assert_eq!(doc["a"], 10);
    assert!(doc.get("b").is_none());
    assert_eq!(doc["_default_message_ttl"], 120);
    assert_eq!(json_with(app.get_topic("t").await, 200).await["a"], 10);
}

#[tokio::test]
async fn patch_error_cases_answer_415_400_404_and_409() {
    let app = spawn_app().await;
    app.put_topic("t", Some(json!({"a": 1}))).await;

    let wrong_type = app
        .req(Method::PATCH, "/v2/topics/t")
        .json(&json!([{"op": "add", "path": "/metadata/x", "value": 1}]))
        .send()
        .await
        .unwrap();
    json_with(wrong_type, 415).await;
    json_with(app.patch_topic("t", json!([])).await, 400).await;
    json_with(app.patch_topic("t", json!({"op": "add"})).await, 400).await;
    json_with(
        app.patch_topic("t", json!([{"op": "copy", "path": "/metadata/a"}]))
            .await,
        400,
    )
    .await;
    json_with(
        app.patch_topic(
            "t",
            json!([{"op": "add", "path": "/metadata/_default_message_ttl", "value": 1}]),
        )
        .await,
        400,
    )
    .await;
    json_with(
        app.patch_topic(
            "nope",
            json!([{"op": "add", "path": "/metadata/a", "value": 1}]),
        )
        .await,
        404,
    )
    .await;
    let conflict = json_with(
        app.patch_topic(
            "t",
            json!([{"op": "replace", "path": "/metadata/missing", "value": 1}]),
        )
        .await,
        409,
    )
    .await;
    assert_eq!(conflict["title"], "Resource conflict");
    json_with(
        app.patch_topic("t", json!([{"op": "remove", "path": "/metadata/missing"}]))
            .await,
        409,
    )
    .await;
    assert_eq!(
        json_with(app.get_topic("t").await, 200).await["a"],
        1,
        "failed patches change nothing"
    );
}

#[tokio::test]
async fn patch_replaces_a_reserved_key_that_was_never_stored() {
    // Arrange
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    // Act
    let res = app
        .patch_topic(
            "t",
            json!([
                {"op": "replace", "path": "/metadata/_default_message_ttl", "value": 120},
                {"op": "replace", "path": "/metadata/_default_message_delay", "value": 5}
            ]),
        )
        .await;
    // Assert
    let doc = json_with(res, 200).await;
    assert_eq!(doc["_default_message_ttl"], 120);
    assert_eq!(doc["_default_message_delay"], 5);
    let stored = json_with(app.get_topic("t").await, 200).await;
    assert_eq!(stored["_default_message_ttl"], 120);
    assert_eq!(
        stored["_max_messages_post_size"], 262144,
        "defaults still shown"
    );
    // A user key that was never stored still cannot be replaced.
    json_with(
        app.patch_topic(
            "t",
            json!([{"op": "replace", "path": "/metadata/missing", "value": 1}]),
        )
        .await,
        409,
    )
    .await;
}

#[tokio::test]
async fn patch_paths_deeper_than_metadata_key_are_400_not_409() {
    // Arrange
    let app = spawn_app().await;
    app.put_topic("t", Some(json!({"a": {"b": 1}}))).await;
    for op in [
        json!({"op": "add", "path": "/metadata/a/b", "value": 2}),
        json!({"op": "replace", "path": "/metadata/a/b", "value": 2}),
        json!({"op": "remove", "path": "/metadata/a/b"}),
        json!({"op": "add", "path": "/metadata/x/y/z", "value": 2}),
    ] {
        // Act
        let body = json_with(app.patch_topic("t", json!([op])).await, 400).await;
        // Assert
        assert_eq!(body["title"], "Invalid request body", "{op}");
    }
    assert_eq!(
        json_with(app.get_topic("t").await, 200).await["a"],
        json!({"b": 1})
    );
}

#[tokio::test]
async fn concurrent_patches_never_lose_an_update_silently() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let patches = (0..8).map(|i| {
        let patch = json!([{"op": "add", "path": format!("/metadata/k{i}"), "value": i}]);
        app.patch_topic("t", patch)
    });
    let results = futures::future::join_all(patches).await;
    let ok: Vec<usize> = results
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status() == 200)
        .map(|(i, _)| i)
        .collect();
    for r in &results {
        assert!(matches!(r.status().as_u16(), 200 | 409), "{}", r.status());
    }
    let doc = json_with(app.get_topic("t").await, 200).await;
    for i in ok {
        assert_eq!(doc[format!("k{i}")], i, "a 200 patch must be visible");
    }
}

#[tokio::test]
async fn delete_removes_the_topic_and_its_stream_and_is_idempotent() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    assert_eq!(app.delete_topic("t").await.status().as_u16(), 204);
    assert_eq!(app.delete_topic("t").await.status().as_u16(), 204);
    assert_eq!(app.get_topic("t").await.status().as_u16(), 404);
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let names: Vec<String> = futures::TryStreamExt::try_collect(js.stream_names())
        .await
        .unwrap();
    assert!(
        names.iter().all(|n| !n.starts_with("HERALD_TOPIC_")),
        "stream left behind: {names:?}"
    );
    // The name can be reused.
    assert_eq!(app.put_topic("t", None).await.status().as_u16(), 201);
}

#[tokio::test]
async fn stats_count_messages_in_the_topic_stream() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let stats = json_with(
        app.req(Method::GET, "/v2/topics/t/stats")
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        stats,
        json!({"messages": {"claimed": 0, "free": 0, "total": 0},
               "subscriptions": {"count": 0, "pending": 0, "dead_letters": 0}})
    );
    let missing = app
        .req(Method::GET, "/v2/topics/nope/stats")
        .send()
        .await
        .unwrap();
    json_with(missing, 404).await;
}

#[tokio::test]
async fn purge_validates_resource_types() {
    let app = spawn_app().await;
    app.put_topic("t", None).await;
    let purge = |body: Option<serde_json::Value>| {
        let mut r = app.req(Method::POST, "/v2/topics/t/purge");
        if let Some(b) = body {
            r = r.json(&b);
        }
        r.send()
    };
    assert_eq!(purge(None).await.unwrap().status().as_u16(), 204);
    assert_eq!(
        purge(Some(json!({"resource_types": ["messages"]})))
            .await
            .unwrap()
            .status()
            .as_u16(),
        204
    );
    assert_eq!(
        purge(Some(
            json!({"resource_types": ["messages", "subscriptions"]})
        ))
        .await
        .unwrap()
        .status()
        .as_u16(),
        204
    );
    json_with(
        purge(Some(json!({"resource_types": ["queues"]})))
            .await
            .unwrap(),
        400,
    )
    .await;
    json_with(
        purge(Some(json!({"resource_types": "messages"})))
            .await
            .unwrap(),
        400,
    )
    .await;
    let missing = app
        .req(Method::POST, "/v2/topics/nope/purge")
        .send()
        .await
        .unwrap();
    json_with(missing, 404).await;
}

#[tokio::test]
async fn projects_are_isolated() {
    // Arrange
    let app = spawn_app().await;
    app.put_topic("shared-name", Some(json!({"owner": "a"})))
        .await;
    let other = |m: Method, p: &str| app.anon(m, p).header("X-Project-ID", "otherproject");

    // Act + Assert: invisible, never listed, and a same-named topic is separate.
    let res = other(Method::GET, "/v2/topics/shared-name")
        .send()
        .await
        .unwrap();
    json_with(res, 404).await;
    let list = json_with(other(Method::GET, "/v2/topics").send().await.unwrap(), 200).await;
    assert_eq!(list["topics"], json!([]));
    let res = other(Method::PUT, "/v2/topics/shared-name")
        .json(&json!({"owner": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 201);
    assert_eq!(
        json_with(app.get_topic("shared-name").await, 200).await["owner"],
        "a"
    );
    assert_eq!(
        other(Method::DELETE, "/v2/topics/shared-name")
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        app.get_topic("shared-name").await.status(),
        200,
        "another project's delete is harmless"
    );
}

#[tokio::test]
async fn topics_survive_a_herald_restart() {
    let mut app = spawn_app().await;
    app.put_topic("keep", Some(json!({"k": "v"}))).await;
    app.restart().await;
    assert_eq!(json_with(app.get_topic("keep").await, 200).await["k"], "v");
}

#[tokio::test]
async fn topics_survive_a_nats_server_restart() {
    let mut app = spawn_app().await;
    app.put_topic("keep", Some(json!({"k": "v"}))).await;
    app.nats.restart().await;
    let doc = crate::helpers::eventually(
        std::time::Duration::from_secs(15),
        "topic readable again",
        || async {
            let res = app.get_topic("keep").await;
            if res.status() == 200 {
                res.json::<serde_json::Value>().await.ok()
            } else {
                None
            }
        },
    )
    .await;
    assert_eq!(doc["k"], "v");
}

#[tokio::test]
async fn a_topic_record_without_stream_is_repaired_at_start_up() {
    // Arrange: simulate a crash between writing the record and creating the stream.
    let mut app = spawn_app().await;
    app.put_topic("half", None).await;
    let js = async_nats::jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let name = herald::store::names::stream_name(
        &herald::domain::ProjectId::parse(&app.project).unwrap(),
        &herald::domain::TopicName::parse("half").unwrap(),
    );
    js.delete_stream(&name).await.unwrap();

    // Act
    app.restart().await;

    // Assert
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "stream re-created",
        || {
            let (js, name) = (js.clone(), name.clone());
            async move { js.get_stream(&name).await.ok().map(|_| ()) }
        },
    )
    .await;
}

#[tokio::test]
async fn an_orphan_stream_is_removed_at_start_up() {
    // Arrange: simulate a crash between deleting the record and deleting the stream.
    let mut app = spawn_app().await;
    app.put_topic("gone", None).await;
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("herald_topics").await.unwrap();
    kv.purge(format!("{}.gone", app.project)).await.unwrap();

    // Act
    app.restart().await;

    // Assert
    let name = herald::store::names::stream_name(
        &herald::domain::ProjectId::parse(&app.project).unwrap(),
        &herald::domain::TopicName::parse("gone").unwrap(),
    );
    crate::helpers::eventually(
        std::time::Duration::from_secs(10),
        "orphan stream removed",
        || {
            let (js, name) = (js.clone(), name.clone());
            async move { js.get_stream(&name).await.is_err().then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_project_beyond_its_topic_quota_gets_403_and_others_are_unaffected() {
    let app = crate::helpers::spawn_app_with(|c| c.max_topics_per_project = 3).await;
    for name in ["a", "b", "c"] {
        assert_eq!(app.put_topic(name, None).await.status(), 201);
    }
    let body = json_with(app.put_topic("d", None).await, 403).await;
    assert!(
        body["description"].as_str().unwrap().contains("quota"),
        "{body}"
    );
    assert_eq!(
        app.put_topic("a", None).await.status(),
        204,
        "existing topics still answer 204"
    );
    let other = app
        .anon(Method::PUT, "/v2/topics/d")
        .header("X-Project-ID", "other")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 201);
    app.delete_topic("a").await;
    assert_eq!(
        app.put_topic("d", None).await.status(),
        201,
        "deleting frees quota"
    );
}
