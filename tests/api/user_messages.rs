//! User messages (Cinder v3): discovery, microversions, headers, create/list/show/delete,
//! paging and filters, roles and project isolation, TTL expiry, NATS creation, restarts
//! and the catalog at start-up. Every test runs a real nats-server.

use std::{collections::HashSet, time::Duration};

use chrono::NaiveDateTime;
use herald::startup::{Application, Roles};
use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{eventually, json_with, spawn_app, spawn_app_with, test_config, NatsServer};

const RESOURCE: &str = "0b4d8a2c-1f35-4d8e-9c0e-2e5f0e6a8b11";
const OTHER_RESOURCE: &str = "5a7c1e0f-9d41-4b6e-8a2d-3c9f1b7e4d22";
const EXPIRED: &str = "HERALD_SUBSCRIPTION_002_003";
const RETRIES_EXHAUSTED: &str = "HERALD_SUBSCRIPTION_001_002";

fn event(event_id: &str) -> Value {
    json!({ "event_id": event_id, "resource_uuid": RESOURCE })
}

fn ids(list: &Value) -> Vec<String> {
    list["messages"]
        .as_array()
        .expect("a messages array")
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn parse_date(s: &str) -> NaiveDateTime {
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.6f")
        .unwrap_or_else(|e| panic!("{s} is not %Y-%m-%dT%H:%M:%S.%6f: {e}"))
}

fn assert_cinder_error(body: &Value, kind: &str, code: u16) {
    let obj = body.as_object().expect("an object");
    assert_eq!(obj.len(), 1, "one fault key: {body}");
    assert_eq!(body[kind]["code"], code, "{body}");
    assert!(body[kind]["message"].is_string(), "{body}");
}

#[tokio::test]
async fn version_discovery_answers_300_at_the_root_and_200_at_v3() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let root = app.anon(Method::GET, "/").send().await.unwrap();
    let v3 = app.anon(Method::GET, "/v3/").send().await.unwrap();

    // Assert
    let root = json_with(root, 300).await;
    let v3 = json_with(v3, 200).await;
    for doc in [&root, &v3] {
        let v = &doc["versions"][0];
        assert_eq!(v["id"], "v3.0");
        assert_eq!(v["status"], "CURRENT");
        assert_eq!(v["version"], "3.71");
        assert_eq!(v["min_version"], "3.0");
        assert!(v["updated"].is_string());
        assert!(v["links"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["rel"] == "self"));
        assert_eq!(v["media-types"][0]["base"], "application/json");
    }
}

#[tokio::test]
async fn every_v3_response_carries_the_microversion_and_request_id_headers() {
    let app = spawn_app().await;
    let p = app.project.clone();
    let cases = [
        (
            app.list_user_messages(&p, "3.5", "").await,
            200,
            "volume 3.5",
        ),
        (
            app.list_user_messages(&p, "latest", "").await,
            200,
            "volume 3.71",
        ),
        (
            app.list_user_messages(&p, "3.5", "?limit=x").await,
            400,
            "volume 3.5",
        ),
        (
            app.cinder(Method::GET, "/v3/nothing/here", &p, Some("3.5"), None)
                .send()
                .await
                .unwrap(),
            404,
            "volume 3.5",
        ),
        (
            app.list_user_messages(&p, "3.99", "").await,
            406,
            "volume 3.0",
        ),
        (
            app.anon(Method::GET, "/v3/").send().await.unwrap(),
            200,
            "volume 3.0",
        ),
    ];
    for (res, status, version) in cases {
        assert_eq!(res.status().as_u16(), status, "{}", res.url());
        let h = res.headers();
        assert_eq!(h["openstack-api-version"], version, "{}", res.url());
        assert_eq!(h["vary"], "OpenStack-API-Version");
        let rid = h["x-openstack-request-id"].to_str().unwrap();
        assert!(rid.starts_with("req-"));
        assert_eq!(h["x-compute-request-id"], rid);
    }
}

#[tokio::test]
async fn microversions_below_3_3_are_404_above_the_maximum_406_and_malformed_400() {
    let app = spawn_app().await;
    let p = app.project.clone();
    let no_header = app
        .cinder(Method::GET, "/v3/messages", &p, None, None)
        .send()
        .await
        .unwrap();
    assert_cinder_error(&json_with(no_header, 404).await, "itemNotFound", 404);
    let old = app.list_user_messages(&p, "3.2", "").await;
    assert_cinder_error(&json_with(old, 404).await, "itemNotFound", 404);
    let new = app.list_user_messages(&p, "3.72", "").await;
    assert_cinder_error(&json_with(new, 406).await, "notAcceptable", 406);
    let bad = app.list_user_messages(&p, "3.x", "").await;
    assert_cinder_error(&json_with(bad, 400).await, "badRequest", 400);
    let ok = app.list_user_messages(&p, "3.3", "").await;
    assert_eq!(json_with(ok, 200).await, json!({"messages": []}));
}

#[tokio::test]
async fn an_admin_creates_a_catalog_message_that_members_list_and_show_in_both_path_forms() {
    // Arrange
    let app = spawn_app().await;
    let p = app.project.clone();

    // Act
    let created = app
        .create_user_message(&p, json!({"event_id": RETRIES_EXHAUSTED, "resource_uuid": RESOURCE, "request_id": "req-abc"}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let with_project = app
        .cinder(
            Method::GET,
            &format!("/v3/{p}/messages/{id}"),
            &p,
            Some("3.3"),
            None,
        )
        .send()
        .await
        .unwrap();
    let without_project = app
        .cinder(
            Method::GET,
            &format!("/v3/messages/{id}"),
            &p,
            Some("3.3"),
            None,
        )
        .send()
        .await
        .unwrap();
    let list = app
        .cinder(Method::GET, "/v3/messages", &p, Some("3.3"), None)
        .send()
        .await
        .unwrap();

    // Assert
    let shown = json_with(with_project, 200).await;
    assert_eq!(shown.as_object().unwrap().len(), 1, "only `message`");
    assert_eq!(json_with(without_project, 200).await, shown);
    let m = &shown["message"];
    assert_eq!(m, &created);
    let keys: HashSet<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
    let expected: HashSet<&str> = [
        "id",
        "event_id",
        "user_message",
        "message_level",
        "resource_type",
        "resource_uuid",
        "created_at",
        "guaranteed_until",
        "request_id",
        "links",
    ]
    .into();
    assert_eq!(keys, expected);
    assert_eq!(m["event_id"], RETRIES_EXHAUSTED);
    assert_eq!(m["resource_type"], "SUBSCRIPTION");
    assert_eq!(m["resource_uuid"], RESOURCE);
    assert_eq!(m["request_id"], "req-abc");
    assert_eq!(m["message_level"], "ERROR");
    assert!(m["user_message"].as_str().unwrap().contains("retries"));
    let created_at = parse_date(m["created_at"].as_str().unwrap());
    let until = parse_date(m["guaranteed_until"].as_str().unwrap());
    assert_eq!(
        (until - created_at).num_seconds(),
        app.config.message_ttl as i64
    );
    assert_eq!(m["links"][0]["rel"], "self");
    assert!(m["links"][0]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/v3/{p}/messages/{id}")));
    assert_eq!(m["links"][1]["rel"], "bookmark");
    assert!(m["links"][1]["href"]
        .as_str()
        .unwrap()
        .ends_with(&format!("/{p}/messages/{id}")));
    let list = json_with(list, 200).await;
    assert_eq!(list["messages"][0], shown["message"]);
    assert_eq!(list.as_object().unwrap().len(), 1, "no messages_links");
}

#[tokio::test]
async fn creating_a_message_needs_the_admin_role() {
    let app = spawn_app().await;
    let p = app.project.clone();
    for roles in [None, Some("reader"), Some("member")] {
        let res = app
            .cinder(
                Method::POST,
                &format!("/v3/{p}/messages"),
                &p,
                Some("3.3"),
                roles,
            )
            .json(&event(EXPIRED))
            .send()
            .await
            .unwrap();
        assert_cinder_error(&json_with(res, 403).await, "forbidden", 403);
    }
    let list = json_with(app.list_user_messages(&p, "3.5", "").await, 200).await;
    assert!(ids(&list).is_empty());
}

#[tokio::test]
async fn creation_refuses_unknown_events_bad_uuids_and_oversized_fields_and_stores_nothing() {
    let app = spawn_app().await;
    let p = app.project.clone();
    let long = "x".repeat(300);
    let bad_bodies = [
        json!({"event_id": "HERALD_SUBSCRIPTION_999_999"}),
        json!({"event_id": EXPIRED, "resource_uuid": "not-a-uuid"}),
        json!({"event_id": EXPIRED, "request_id": long}),
        json!({"event_id": long}),
        json!({"event_id": EXPIRED, "resource_type": "VOLUME"}),
        json!({"event_id": EXPIRED, "message_level": "LOUD"}),
        json!({"event_id": EXPIRED, "user_message": "free text is never accepted"}),
        json!({"action_id": "001", "detail_id": "001"}),
        json!({"event_id": EXPIRED, "project_id": "someone-else"}),
        json!({}),
        json!("a string"),
    ];
    for body in bad_bodies {
        let res = app
            .cinder(
                Method::POST,
                &format!("/v3/{p}/messages"),
                &p,
                Some("3.3"),
                Some("admin"),
            )
            .json(&body)
            .send()
            .await
            .unwrap();
        let err = json_with(res, 400).await;
        assert_cinder_error(&err, "badRequest", 400);
    }
    let huge = json!({"event_id": EXPIRED, "request_id": "r".repeat(20_000)});
    let res = app
        .cinder(
            Method::POST,
            &format!("/v3/{p}/messages"),
            &p,
            Some("3.3"),
            Some("admin"),
        )
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_cinder_error(&json_with(res, 413).await, "overLimit", 413);
    let list = json_with(app.list_user_messages(&p, "3.5", "").await, 200).await;
    assert!(ids(&list).is_empty(), "nothing stored: {list}");
}

#[tokio::test]
async fn another_projects_messages_are_invisible_and_a_foreign_path_project_is_malformed() {
    // Arrange
    let app = spawn_app().await;
    let mine = app.project.clone();
    let theirs = format!("{mine}x");
    let their_id = app.create_user_message(&theirs, event(EXPIRED)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.create_user_message(&mine, event(EXPIRED)).await;

    // Act + Assert: never listed
    let list = json_with(app.list_user_messages(&mine, "3.5", "").await, 200).await;
    assert_eq!(ids(&list).len(), 1);
    assert!(!ids(&list).contains(&their_id));
    // 404 through my own scope, in both forms, for show and delete
    for path in [
        format!("/v3/messages/{their_id}"),
        format!("/v3/{mine}/messages/{their_id}"),
    ] {
        for method in [Method::GET, Method::DELETE] {
            let res = app
                .cinder(method, &path, &mine, Some("3.3"), None)
                .send()
                .await
                .unwrap();
            let body = json_with(res, 404).await;
            assert_eq!(
                body["itemNotFound"]["message"],
                format!("Message {their_id} could not be found.")
            );
        }
    }
    // Naming their project in the path: 400
    let res = app
        .cinder(
            Method::GET,
            &format!("/v3/{theirs}/messages/{their_id}"),
            &mine,
            Some("3.3"),
            None,
        )
        .send()
        .await
        .unwrap();
    let body = json_with(res, 400).await;
    assert_eq!(body["badRequest"]["message"], "Malformed request url");
    let res = app
        .cinder(
            Method::GET,
            &format!("/v3/{theirs}/messages"),
            &mine,
            Some("3.5"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    // An admin may read another project by naming it.
    let res = app
        .cinder(
            Method::GET,
            &format!("/v3/{theirs}/messages/{their_id}"),
            &mine,
            Some("3.3"),
            Some("admin"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_with(res, 200).await["message"]["id"],
        their_id.as_str()
    );
}

#[tokio::test]
async fn deleting_needs_member_or_admin_and_then_the_message_is_gone() {
    let app = spawn_app().await;
    let p = app.project.clone();
    let id = app.create_user_message(&p, event(EXPIRED)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/v3/messages/{id}");

    let res = app
        .cinder(Method::DELETE, &path, &p, Some("3.3"), Some("reader"))
        .send()
        .await
        .unwrap();
    assert_cinder_error(&json_with(res, 403).await, "forbidden", 403);
    let res = app
        .cinder(Method::GET, &path, &p, Some("3.3"), Some("reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "a reader may show");

    let res = app
        .cinder(Method::DELETE, &path, &p, Some("3.3"), Some("member"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    for method in [Method::GET, Method::DELETE] {
        let res = app
            .cinder(method, &path, &p, Some("3.3"), None)
            .send()
            .await
            .unwrap();
        assert_cinder_error(&json_with(res, 404).await, "itemNotFound", 404);
    }
    let list = json_with(app.list_user_messages(&p, "3.5", "").await, 200).await;
    assert!(ids(&list).is_empty());
    let res = app
        .cinder(
            Method::GET,
            "/v3/messages/not-a-uuid",
            &p,
            Some("3.3"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_cinder_error(&json_with(res, 404).await, "itemNotFound", 404);
}

#[tokio::test]
async fn lists_at_3_5_page_sort_and_filter_and_3_3_ignores_parameters() {
    // Arrange: five messages, the third about another resource, the last of another event
    let app = spawn_app().await;
    let p = app.project.clone();
    let mut created = Vec::new();
    for n in 0..5 {
        let body = match n {
            2 => json!({"event_id": EXPIRED, "resource_uuid": OTHER_RESOURCE}),
            4 => {
                json!({"event_id": RETRIES_EXHAUSTED, "resource_uuid": RESOURCE, "request_id": "req-last"})
            }
            _ => event(EXPIRED),
        };
        created.push(
            app.create_user_message(&p, body).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let newest_first: Vec<String> = created.iter().rev().cloned().collect();
    let list = |q: &str| {
        let q = q.to_owned();
        let app = &app;
        let p = p.clone();
        async move { app.list_user_messages(&p, "3.5", &q).await }
    };

    // Default order: created_at desc; the whole project when it fits in one page
    let all = json_with(list("").await, 200).await;
    assert_eq!(ids(&all), newest_first);
    assert!(all.get("messages_links").is_none());

    // limit + next link, which carries the marker and the other parameters
    let page = json_with(list("?limit=2&sort=created_at:asc").await, 200).await;
    assert_eq!(ids(&page), created[..2]);
    let next = page["messages_links"][0]["href"].as_str().unwrap();
    assert_eq!(page["messages_links"][0]["rel"], "next");
    assert!(next.contains(&format!("/v3/{p}/messages?")), "{next}");
    assert!(next.contains(&format!("marker={}", created[1])), "{next}");
    let res = app
        .http
        .get(next)
        .header("X-Auth-Token", format!("t:{p}"))
        .header("OpenStack-API-Version", "volume 3.5")
        .send()
        .await
        .unwrap();
    let page2 = json_with(res, 200).await;
    assert_eq!(ids(&page2), created[2..4]);
    let last = json_with(
        list(&format!(
            "?limit=2&sort=created_at:asc&marker={}",
            created[3]
        ))
        .await,
        200,
    )
    .await;
    assert_eq!(ids(&last), created[4..]);
    assert!(last.get("messages_links").is_none(), "no further page");

    // offset, sort_key/sort_dir
    let off = json_with(list("?offset=1&limit=2").await, 200).await;
    assert_eq!(ids(&off), newest_first[1..3]);
    let asc = json_with(list("?sort_key=created_at&sort_dir=asc").await, 200).await;
    assert_eq!(ids(&asc), created);
    let by_event = json_with(list("?sort=event_id:asc,created_at:asc").await, 200).await;
    assert_eq!(
        ids(&by_event)[0],
        created[4],
        "HERALD_SUBSCRIPTION_001 < 002"
    );

    // filters
    let f = json_with(list(&format!("?resource_uuid={OTHER_RESOURCE}")).await, 200).await;
    assert_eq!(ids(&f), vec![created[2].clone()]);
    let f = json_with(list(&format!("?event_id={RETRIES_EXHAUSTED}")).await, 200).await;
    assert_eq!(ids(&f), vec![created[4].clone()]);
    let f = json_with(
        list("?request_id=req-last&resource_type=SUBSCRIPTION&message_level=ERROR").await,
        200,
    )
    .await;
    assert_eq!(ids(&f), vec![created[4].clone()]);
    let f = json_with(list("?message_level=INFO").await, 200).await;
    assert!(ids(&f).is_empty());

    // errors
    for (q, status) in [
        ("?limit=-1", 400),
        ("?limit=abc", 400),
        ("?offset=-1", 400),
        ("?sort=nope", 400),
        ("?sort=created_at:sideways", 400),
        ("?sort=created_at&sort_key=id", 400),
        ("?sort_dir=up", 400),
        ("?marker=8d3f1c8e-0000-4000-8000-000000000000", 404),
    ] {
        let res = list(q).await;
        assert_eq!(res.status().as_u16(), status, "{q}");
        let body: Value = res.json().await.unwrap();
        let kind = if status == 400 {
            "badRequest"
        } else {
            "itemNotFound"
        };
        assert_cinder_error(&body, kind, status);
    }
    let res = list("?foo=1&bar=2").await;
    let body = json_with(res, 400).await;
    assert_eq!(
        body["badRequest"]["message"],
        "Invalid filters foo,bar are found in query options."
    );

    // 3.3 ignores every parameter
    let old = json_with(
        app.list_user_messages(&p, "3.3", "?limit=1&foo=bar&sort=nope")
            .await,
        200,
    )
    .await;
    assert_eq!(ids(&old), newest_first);
}

#[tokio::test]
async fn messages_expire_by_jetstream_ttl_without_any_reaper() {
    // Arrange
    let app = spawn_app_with(|c| c.message_ttl = 1).await;
    let p = app.project.clone();
    let id = app.create_user_message(&p, event(EXPIRED)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let kv = async_nats::jetstream::new(client)
        .get_key_value("herald_user_messages")
        .await
        .unwrap();
    let key = format!("{p}.{id}");
    assert!(kv.get(key.clone()).await.unwrap().is_some());

    // Act: wait for JetStream itself to drop the key
    eventually(Duration::from_secs(15), "the key to expire", || {
        let (kv, key) = (kv.clone(), key.clone());
        async move { kv.get(key).await.unwrap().is_none().then_some(()) }
    })
    .await;

    // Assert
    let res = app
        .cinder(
            Method::GET,
            &format!("/v3/messages/{id}"),
            &p,
            Some("3.3"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let list = json_with(app.list_user_messages(&p, "3.5", "").await, 200).await;
    assert!(ids(&list).is_empty());
}

#[tokio::test]
async fn nats_requests_create_messages_and_invalid_ones_get_an_error_reply() {
    let app = spawn_app().await;
    let p = app.project.clone();

    let ok = app
        .nats_create_user_message(
            json!({"project_id": p, "event_id": EXPIRED, "resource_uuid": RESOURCE})
                .to_string()
                .as_bytes(),
        )
        .await;
    let id = ok["id"].as_str().expect("an id").to_owned();
    assert_eq!(ok.as_object().unwrap().len(), 1);
    let res = app
        .cinder(
            Method::GET,
            &format!("/v3/messages/{id}"),
            &p,
            Some("3.3"),
            None,
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_with(res, 200).await["message"]["event_id"], EXPIRED);

    for bad in [
        json!({"project_id": p, "event_id": "NOT_IN_THE_CATALOG"}).to_string(),
        json!({"project_id": p, "event_id": EXPIRED, "resource_uuid": "xyz"}).to_string(),
        json!({"event_id": EXPIRED}).to_string(),
        json!({"project_id": "bad.project", "event_id": EXPIRED}).to_string(),
        "{not json".to_owned(),
    ] {
        let reply = app.nats_create_user_message(bad.as_bytes()).await;
        assert_eq!(reply["error"]["code"], 400, "{bad} -> {reply}");
        assert!(reply["error"]["message"].as_str().unwrap().len() > 5);
        assert!(reply.get("id").is_none());
    }
    let list = json_with(app.list_user_messages(&p, "3.5", "").await, 200).await;
    assert_eq!(
        ids(&list),
        vec![id],
        "only the valid request stored a message"
    );
}

#[tokio::test]
async fn messages_survive_restarts_of_herald_and_of_nats_server() {
    let mut app = spawn_app().await;
    let p = app.project.clone();
    let id = app.create_user_message(&p, event(EXPIRED)).await["id"]
        .as_str()
        .unwrap()
        .to_owned();

    app.restart().await;
    let list = json_with(app.list_user_messages(&p, "3.5", "").await, 200).await;
    assert_eq!(ids(&list), vec![id.clone()]);

    app.nats.restart().await;
    let listed = eventually(
        Duration::from_secs(15),
        "herald to list after NATS restarted",
        || {
            let app = &app;
            let p = p.clone();
            async move {
                let res = app.list_user_messages(&p, "3.5", "").await;
                if res.status() != 200 {
                    return None;
                }
                Some(res.json::<Value>().await.unwrap())
            }
        },
    )
    .await;
    assert_eq!(ids(&listed), vec![id.clone()]);
    // NATS creation works again too (the responder resubscribed).
    let reply = eventually(Duration::from_secs(15), "the NATS responder", || {
        let app = &app;
        let p = p.clone();
        async move {
            let client = async_nats::connect(app.nats.url()).await.ok()?;
            let body = json!({"project_id": p, "event_id": EXPIRED}).to_string();
            let reply = client
                .request("herald.user_messages.create", body.into())
                .await
                .ok()?;
            serde_json::from_slice::<Value>(&reply.payload).ok()
        }
    })
    .await;
    assert!(reply["id"].is_string(), "{reply}");
}

#[tokio::test]
async fn nats_down_answers_503_in_cinders_shape() {
    let mut app = spawn_app().await;
    let p = app.project.clone();
    app.nats.kill();
    let res = app.list_user_messages(&p, "3.5", "").await;
    let body = json_with(res, 503).await;
    assert_cinder_error(&body, "serviceUnavailable", 503);
    let res = app
        .cinder(
            Method::POST,
            &format!("/v3/{p}/messages"),
            &p,
            Some("3.3"),
            Some("admin"),
        )
        .json(&event(EXPIRED))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
}

#[tokio::test]
async fn a_broken_catalog_file_stops_start_up_with_an_error_naming_the_line() {
    let nats = NatsServer::start().await;
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "[[event]]\nid = \"MY_EVENT\"\nmessage = \"ok\"\nresource_type = \"THING\"\nlevel = \"SHOUTING\"\n",
    )
    .unwrap();
    let mut config = test_config(&nats);
    config.catalog = Some(file.path().to_owned());

    let err = match Application::build(config, Roles::default()).await {
        Ok(_) => panic!("start-up must fail"),
        Err(e) => format!("{e:#}"),
    };

    assert!(err.contains("line 5"), "{err}");
    assert!(err.contains(&file.path().display().to_string()), "{err}");
}

#[tokio::test]
async fn an_operator_catalog_adds_cinder_style_action_and_detail_tables() {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        file.path(),
        "[[table]]\nprefix = \"VOLUME\"\nresource_types = [\"VOLUME\"]\n[table.actions]\n\"001\" = \"schedule allocate volume\"\n[table.details]\n\"002\" = \"No valid backend was found.\"\n",
    )
    .unwrap();
    let path = file.path().to_owned();
    let app = spawn_app_with(move |c| c.catalog = Some(path)).await;
    let p = app.project.clone();

    let by_ids = app
        .create_user_message(
            &p,
            json!({"action_id": "001", "detail_id": "002", "resource_type": "VOLUME"}),
        )
        .await;
    let by_event = app
        .create_user_message(&p, json!({"event_id": "VOLUME_VOLUME_001_002"}))
        .await;
    let builtin_still_there = app.create_user_message(&p, event(EXPIRED)).await;

    for m in [&by_ids, &by_event] {
        assert_eq!(m["event_id"], "VOLUME_VOLUME_001_002");
        assert_eq!(
            m["user_message"],
            "schedule allocate volume:No valid backend was found."
        );
        assert_eq!(m["resource_type"], "VOLUME");
        assert!(m.get("resource_uuid").is_none(), "omitted when empty");
    }
    assert_eq!(builtin_still_there["event_id"], EXPIRED);
}

#[tokio::test]
async fn in_tokens_mode_v3_needs_a_known_token_and_roles_come_from_the_tokens_file() {
    // Arrange
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        tokens.path(),
        r#"{"tokens": {
            "t-reader": {"user_id": "r", "project_id": "tp", "roles": ["reader"]},
            "t-admin": {"user_id": "a", "project_id": "tp", "roles": ["admin"]}}}"#,
    )
    .unwrap();
    let path = tokens.path().to_owned();
    let app = spawn_app_with(move |c| {
        c.auth_mode = herald::config::AuthMode::Tokens;
        c.tokens_file = Some(path);
    })
    .await;
    let call = |method: Method, path: &str, token: Option<&str>| {
        let mut r = app
            .anon(method, path)
            .header("OpenStack-API-Version", "volume 3.5");
        if let Some(t) = token {
            r = r.header("X-Auth-Token", t);
        }
        r
    };

    // Act + Assert
    for token in [None, Some("nope")] {
        let res = call(Method::GET, "/v3/messages", token)
            .send()
            .await
            .unwrap();
        assert_cinder_error(&json_with(res, 401).await, "unauthorized", 401);
    }
    let res = call(Method::POST, "/v3/tp/messages", Some("t-admin"))
        .json(&event(EXPIRED))
        .send()
        .await
        .unwrap();
    let id = json_with(res, 201).await["message"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let res = call(Method::GET, "/v3/messages", Some("t-reader"))
        .send()
        .await
        .unwrap();
    assert_eq!(ids(&json_with(res, 200).await), vec![id.clone()]);
    let res = call(
        Method::DELETE,
        &format!("/v3/tp/messages/{id}"),
        Some("t-reader"),
    )
    .send()
    .await
    .unwrap();
    assert_cinder_error(&json_with(res, 403).await, "forbidden", 403);
    let res = call(
        Method::DELETE,
        &format!("/v3/tp/messages/{id}"),
        Some("t-admin"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(res.status(), 204);
}

#[tokio::test]
async fn a_dead_letter_becomes_a_user_message_of_the_subscriptions_project() {
    // Arrange: a subscriber that rejects everything (4xx: a permanent failure)
    let app = crate::peers::spawn_delivery_app().await;
    let p = app.project.clone();
    let receiver = crate::peers::Receiver::start().await;
    receiver.answer(422, None, Duration::ZERO);
    app.put_topic("t", None).await;
    let subscription = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;

    // Act
    app.post_messages("t", json!({"messages": [{"body": 1}]}))
        .await;

    // Assert: the delivery engine's notice went through the catalog into the bucket
    let list = eventually(
        Duration::from_secs(15),
        "the dead-letter user message",
        || {
            let (app, p) = (&app, p.clone());
            async move {
                let list = json_with(app.list_user_messages(&p, "3.5", "").await, 200).await;
                (!ids(&list).is_empty()).then_some(list)
            }
        },
    )
    .await;
    let m = &list["messages"][0];
    assert_eq!(m["event_id"], "HERALD_SUBSCRIPTION_001_001");
    assert_eq!(m["resource_type"], "SUBSCRIPTION");
    assert_eq!(m["resource_uuid"], subscription.as_str());
    assert!(m["user_message"].as_str().unwrap().contains("rejected"));
}
