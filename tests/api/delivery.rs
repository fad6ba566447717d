//! End-to-end delivery: real nats-server, real HTTP receiver, real SMTP server.

use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::{
    helpers::{eventually, json_with, NatsServer},
    peers::{
        spawn_delivery_app, spawn_delivery_app_on, spawn_delivery_app_with, Receiver, SmtpServer,
        UserMessages,
    },
};

const WAIT: Duration = Duration::from_secs(15);

#[tokio::test]
async fn a_webhook_receives_zaqars_body_with_topic_name_message_id_headers_and_a_valid_signature() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("orders", None).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    app.subscribe(
        "orders",
        json!({"subscriber": receiver.url, "options": {"post_headers": {"X-Team": "blue"}, "secret": secret}}),
    )
    .await;

    // Act
    let doc = json_with(
        app.post_messages(
            "orders",
            json!({"messages": [{"body": {"n": 1}, "ttl": 120}]}),
        )
        .await,
        201,
    )
    .await;

    // Assert
    let id = doc["resources"][0]
        .as_str()
        .unwrap()
        .rsplit('/')
        .next()
        .unwrap()
        .to_owned();
    let got = receiver.wait_for(1, WAIT).await;
    let r = &got[0];
    assert_eq!(
        r.body,
        json!({"body": {"n": 1}, "ttl": 120, "queue_name": "orders", "Message_Type": "Notification",
               "topic_name": "orders", "message_id": id})
    );
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(r.headers["x-team"], "blue");
    assert_eq!(r.headers["webhook-id"], id.as_str());
    // Standard Webhooks verification: HMAC-SHA256 over "id.timestamp.body" with the
    // base64-decoded secret.
    let ts = r.headers["webhook-timestamp"].to_str().unwrap();
    let raw = std::str::from_utf8(&r.raw).unwrap();
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{raw}").as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let sigs = r.headers["webhook-signature"].to_str().unwrap();
    assert!(
        sigs.split(' ').any(|s| s == format!("v1,{expected}")),
        "{sigs}"
    );
}

#[tokio::test]
async fn one_message_fans_out_to_webhook_nats_and_email_subscriptions() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let app = spawn_delivery_app_with(move |c| {
        c.smtp_url = Some(smtp_url);
        c.mail_from = "herald@test.local".into();
    })
    .await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let nats = async_nats::connect(app.nats.url()).await.unwrap();
    let mut inbox = nats.subscribe("sink.orders").await.unwrap();
    nats.flush().await.unwrap();
    app.put_topic("orders", None).await;
    for s in [
        a.url.clone(),
        b.url.clone(),
        "nats:sink.orders".into(),
        "mailto:ops@example.com?subject=Order%20news".into(),
    ] {
        app.subscribe("orders", json!({"subscriber": s})).await;
    }

    // Act
    json_with(
        app.post_messages("orders", json!({"messages": [{"body": "hello"}]}))
            .await,
        201,
    )
    .await;

    // Assert
    assert_eq!(a.wait_for(1, WAIT).await[0].body["body"], "hello");
    assert_eq!(b.wait_for(1, WAIT).await[0].body["body"], "hello");
    let request = tokio::time::timeout(WAIT, inbox.next())
        .await
        .unwrap()
        .unwrap();
    let v: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(v["body"], "hello");
    nats.publish(request.reply.unwrap(), "ok".into())
        .await
        .unwrap();
    let mail = eventually(WAIT, "the email", || async {
        smtp.mails().into_iter().next()
    })
    .await;
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    assert!(mail.contains("From: herald@test.local"), "{mail}");
    assert!(mail.contains("Subject: Order news"), "{mail}");
    assert!(mail.contains("\"hello\""), "{mail}");
}

#[tokio::test]
async fn server_errors_are_retried_on_the_policy_schedule_then_dead_lettered_with_a_user_message() {
    // Arrange
    let app = spawn_delivery_app().await;
    let users = UserMessages::start(&app).await;
    let receiver = Receiver::start().await;
    receiver.answer(503, None, Duration::ZERO);
    app.put_topic("t", None).await;
    // 1 immediate retry, 2 at 5 "seconds" (100 ms), backoff 5..10 step 5 -> [5], 1 at 10.
    let policy = json!({"retries_with_no_delay": 1, "minimum_delay_retries": 2, "minimum_delay": 5,
                        "maximum_delay": 10, "maximum_delay_retries": 1});
    let id = app
        .subscribe(
            "t",
            json!({"subscriber": receiver.url, "options": {"_retry_policy": policy}}),
        )
        .await;

    // Act
    app.post_messages("t", json!({"messages": [{"body": 7}]}))
        .await;

    // Assert: 1 + 1 + 2 + 1 + 1 = 6 attempts, then a dead letter.
    let letters = eventually(WAIT, "a dead letter", || async {
        let d = app.dead_letters("t", &id).await;
        (!d["dead_letters"].as_array().unwrap().is_empty()).then_some(d)
    })
    .await;
    let got = receiver.received();
    assert_eq!(got.len(), 6, "attempts");
    let gaps: Vec<u128> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    assert!(gaps[0] < 90, "immediate retry: {gaps:?}");
    for g in &gaps[1..4] {
        assert!(*g >= 90, "minimum delay of 100ms: {gaps:?}");
    }
    assert!(gaps[4] >= 190, "maximum delay of 200ms: {gaps:?}");
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["body"], 7);
    assert_eq!(letter["attempts"], 6);
    assert!(letter["last_error"].as_str().unwrap().contains("503"));
    let seen = eventually(WAIT, "the user message request", || async {
        let s = users.seen();
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(
        seen[0],
        json!({"project_id": app.project, "event_id": "HERALD_SUBSCRIPTION_001_002",
               "resource_type": "SUBSCRIPTION", "resource_uuid": id})
    );
    let stats = json_with(app.get_path("/v2/topics/t/stats").await, 200).await;
    assert_eq!(stats["subscriptions"]["dead_letters"], 1);
    assert_eq!(
        stats["messages"]["total"], 0,
        "terminated messages leave the topic"
    );
    // Every message settled: nothing is left that could be attempted again.
    app.settled("t", &id).await;
    assert_eq!(
        receiver.received().len(),
        6,
        "no attempt after the dead letter"
    );
}

#[tokio::test]
async fn a_client_error_dead_letters_at_once_and_a_replay_delivers_it_again() {
    // Arrange
    let app = spawn_delivery_app().await;
    let users = UserMessages::start(&app).await;
    let receiver = Receiver::start().await;
    receiver.answer(422, None, Duration::ZERO);
    app.put_topic("t", None).await;
    let id = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;

    // Act
    app.post_messages("t", json!({"messages": [{"body": {"x": 1}}]}))
        .await;

    // Assert
    let letters = eventually(WAIT, "a dead letter", || async {
        let d = app.dead_letters("t", &id).await;
        (!d["dead_letters"].as_array().unwrap().is_empty()).then_some(d)
    })
    .await;
    assert_eq!(receiver.received().len(), 1, "4xx is not retried");
    assert_eq!(letters["dead_letters"][0]["attempts"], 1);
    let seen = eventually(WAIT, "the user message request", || async {
        users.seen().into_iter().next()
    })
    .await;
    assert_eq!(seen["event_id"], "HERALD_SUBSCRIPTION_001_001");

    receiver.answer(200, None, Duration::ZERO);
    let replay = app
        .req(
            Method::POST,
            &format!("/v2/topics/t/subscriptions/{id}/dead_letters/replay"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(json_with(replay, 202).await["replayed"], 1);
    let got = receiver.wait_for(2, WAIT).await;
    assert_eq!(got[1].body["body"], json!({"x": 1}));
    assert_eq!(
        got[1].body["message_id"],
        letters["dead_letters"][0]["message_id"]
    );
    let after = app.dead_letters("t", &id).await;
    assert!(after["dead_letters"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn messages_published_while_the_receiver_is_down_arrive_once_it_is_up() {
    let app = spawn_delivery_app().await;
    let port = crate::helpers::free_port();
    app.put_topic("t", None).await;
    let url = format!("http://127.0.0.1:{port}/hook");
    let id = app
        .subscribe(
            "t",
            json!({"subscriber": url, "options": {"_retry_policy": {"retries_with_no_delay": 0}}}),
        )
        .await;
    for i in 0..5 {
        app.post_messages("t", json!({"messages": [{"body": i}]}))
            .await;
    }
    // An attempt failed against the closed port and was given back for a retry.
    app.redelivered("t", &id).await;
    let receiver = Receiver::start_on(port).await;
    let got = receiver.wait_for(5, WAIT).await;
    let mut bodies: Vec<i64> = got
        .iter()
        .map(|r| r.body["body"].as_i64().unwrap())
        .collect();
    bodies.sort();
    bodies.dedup();
    assert_eq!(bodies, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn a_message_published_natively_on_the_topic_subject_is_delivered() {
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("native.events", None).await;
    let id = app
        .subscribe("native.events", json!({"subscriber": receiver.url}))
        .await;
    let client = async_nats::connect(app.nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "native-1");
    let subject = format!("herald.topics.{}.native.events", app.project);
    for _ in 0..2 {
        js.publish_with_headers(subject.clone(), headers.clone(), r#"{"k":"v"}"#.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    js.publish(subject, "plain text".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let got = receiver.wait_for(2, WAIT).await;
    let first = got
        .iter()
        .find(|r| r.body["message_id"] == "native-1")
        .unwrap();
    assert_eq!(first.body["body"], json!({"k": "v"}));
    assert!(got.iter().any(|r| r.body["body"] == "plain text"));
    // Every message the stream kept was handled (the receiver records before answering).
    app.settled("native.events", &id).await;
    assert_eq!(
        receiver.received().len(),
        2,
        "the duplicate Nats-Msg-Id was dropped"
    );
}

#[tokio::test]
async fn a_webhook_to_a_refused_address_is_never_called_and_dead_letters_with_the_outbound_policy_message(
) {
    // Arrange: the default guard (no outbound_allow) and a receiver on loopback.
    let app = spawn_delivery_app_with(|c| c.outbound_allow = vec![]).await;
    let users = UserMessages::start(&app).await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let id = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    let by_name = app
        .subscribe(
            "t",
            json!({"subscriber": format!("http://localhost:{}/hook", receiver.port)}),
        )
        .await;

    // Act
    app.post_messages("t", json!({"messages": [{"body": 1}]}))
        .await;

    // Assert: dead letters that say Herald refused, and the project is told so (not
    // "the subscriber rejected the message").
    for sub in [&id, &by_name] {
        let letters = eventually(WAIT, "a dead letter", || async {
            let d = app.dead_letters("t", sub).await;
            (!d["dead_letters"].as_array().unwrap().is_empty()).then_some(d)
        })
        .await;
        let last_error = letters["dead_letters"][0]["last_error"].as_str().unwrap();
        assert!(
            last_error.contains("Herald's outbound policy refused"),
            "{last_error}"
        );
        assert_eq!(letters["dead_letters"][0]["attempts"], 1);
    }
    let seen = eventually(WAIT, "both user message requests", || async {
        let s = users.seen();
        (s.len() >= 2).then_some(s)
    })
    .await;
    for m in &seen {
        assert_eq!(m["event_id"], "HERALD_SUBSCRIPTION_001_007", "{m}");
    }
    assert!(receiver.received().is_empty());
}

/// nats-server users for the delivery-permission tests: Herald's main user may not publish
/// to `sink.>` (so a delivery there proves the separate connection), the delivery user may
/// publish anywhere but NATS's and Herald's namespaces, `_INBOX` and `forbidden.>`.
const PERMISSIONS_CONF: &str = r#"
authorization {
  users = [
    { user: herald, password: herald-pw, permissions: { publish: { allow: [">"], deny: ["sink.>"] } } }
    { user: herald_delivery, password: delivery-pw,
      permissions: {
        publish: { allow: [">"], deny: ["$JS.>", "$KV.>", "$O.>", "$SYS.>", "herald", "herald.>", "_INBOX", "_INBOX.>", "forbidden.>"] }
        subscribe: { allow: ["_INBOX.>"] }
      }
    }
  ]
}
"#;

async fn spawn_app_with_delivery_permissions() -> crate::helpers::TestApp {
    let nats = NatsServer::start_with_config(PERMISSIONS_CONF, ("herald", "herald-pw")).await;
    spawn_delivery_app_on(nats, |c| {
        c.nats_user = Some("herald".into());
        c.nats_password = Some("herald-pw".into());
        c.nats_delivery_user = Some("herald_delivery".into());
        c.nats_delivery_password = Some("delivery-pw".into());
    })
    .await
}

#[tokio::test]
async fn nats_deliveries_go_out_on_the_delivery_users_connection() {
    // Arrange
    let app = spawn_app_with_delivery_permissions().await;
    let nats = app.nats.connect().await.unwrap();
    let mut inbox = nats.subscribe("sink.orders").await.unwrap();
    nats.flush().await.unwrap();
    app.put_topic("t", None).await;
    app.subscribe("t", json!({"subscriber": "nats:sink.orders"}))
        .await;

    // Act
    app.post_messages("t", json!({"messages": [{"body": "hi"}]}))
        .await;

    // Assert: delivered although Herald's main user may not publish to sink.>, and the
    // reply (to the delivery user's own _INBOX) acks it.
    let request = tokio::time::timeout(WAIT, inbox.next())
        .await
        .expect("the request arrives")
        .unwrap();
    let v: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(v["body"], "hi");
    nats.publish(request.reply.unwrap(), "ok".into())
        .await
        .unwrap();
    eventually(WAIT, "the message to be acked", || async {
        let stats = json_with(app.get_path("/v2/topics/t/stats").await, 200).await;
        (stats["messages"]["total"] == 0).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_nats_subject_the_delivery_user_may_not_publish_to_dead_letters_at_once_and_receives_nothing(
) {
    // Arrange: forbidden.x passes validation but the server denies it to the delivery user.
    let app = spawn_app_with_delivery_permissions().await;
    let watcher = app.nats.connect().await.unwrap();
    let mut watch = watcher.subscribe("forbidden.>").await.unwrap();
    watcher.flush().await.unwrap();
    app.put_topic("t", None).await;
    let id = app
        .subscribe("t", json!({"subscriber": "nats:forbidden.x"}))
        .await;

    // Act
    app.post_messages("t", json!({"messages": [{"body": 1}]}))
        .await;

    // Assert: a permanent failure naming the violation, the project told, nothing written.
    let letters = eventually(WAIT, "a dead letter", || async {
        let d = app.dead_letters("t", &id).await;
        (!d["dead_letters"].as_array().unwrap().is_empty()).then_some(d)
    })
    .await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(
        letter["last_error"],
        r#"NATS refused publishing to "forbidden.x": permissions violation"#
    );
    assert_eq!(letter["attempts"], 1, "not retried");
    let message = eventually(WAIT, "the user message", || async {
        let res = app.list_user_messages(&app.project, "3.3", "").await;
        let list = json_with(res, 200).await;
        list["messages"].as_array().unwrap().first().cloned()
    })
    .await;
    assert_eq!(message["event_id"], "HERALD_SUBSCRIPTION_001_007");
    assert_eq!(message["resource_uuid"], id.as_str());
    watcher.flush().await.unwrap();
    assert!(
        tokio::time::timeout(Duration::ZERO, watch.next())
            .await
            .is_err(),
        "nothing reached forbidden.>"
    );
}

#[tokio::test]
async fn nothing_is_lost_when_nats_server_restarts_mid_stream() {
    let mut app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    app.subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    for i in 0..10 {
        json_with(
            app.post_messages("t", json!({"messages": [{"body": i}]}))
                .await,
            201,
        )
        .await;
    }
    app.nats.restart().await;
    eventually(WAIT, "herald to reconnect", || async {
        app.get_path("/readyz")
            .await
            .status()
            .is_success()
            .then_some(())
    })
    .await;
    for i in 10..20 {
        eventually(WAIT, "a publish to succeed", || async {
            let r = app
                .post_messages("t", json!({"messages": [{"body": i}]}))
                .await;
            (r.status().as_u16() == 201).then_some(())
        })
        .await;
    }
    let bodies = eventually(Duration::from_secs(30), "all 20 messages", || async {
        let mut b: Vec<i64> = receiver
            .received()
            .iter()
            .map(|r| r.body["body"].as_i64().unwrap())
            .collect();
        b.sort();
        b.dedup();
        (b.len() == 20).then_some(b)
    })
    .await;
    assert_eq!(bodies, (0..20).collect::<Vec<_>>());
    let _ = &mut app;
}

#[tokio::test]
async fn a_herald_restart_during_slow_deliveries_loses_nothing() {
    let mut app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    receiver.answer(200, None, Duration::from_millis(300));
    app.put_topic("t", None).await;
    app.subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    for i in 0..5 {
        app.post_messages("t", json!({"messages": [{"body": i}]}))
            .await;
    }
    app.restart().await;
    receiver.answer(200, None, Duration::ZERO);
    let bodies = eventually(Duration::from_secs(30), "all 5 messages", || async {
        let mut b: Vec<i64> = receiver
            .received()
            .iter()
            .map(|r| r.body["body"].as_i64().unwrap())
            .collect();
        b.sort();
        b.dedup();
        (b.len() == 5).then_some(b)
    })
    .await;
    assert_eq!(bodies, vec![0, 1, 2, 3, 4]);
}

#[tokio::test]
async fn an_expired_subscription_receives_nothing_and_disappears() {
    let app = spawn_delivery_app_with(|c| c.min_subscription_ttl = 1).await;
    let users = UserMessages::start(&app).await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let id = app
        .subscribe("t", json!({"subscriber": receiver.url, "ttl": 1}))
        .await;
    let path = format!("/v2/topics/t/subscriptions/{id}");
    eventually(WAIT, "the subscription to expire", || async {
        (app.get_path(&path).await.status().as_u16() == 404).then_some(())
    })
    .await;
    app.post_messages("t", json!({"messages": [{"body": 1}]}))
        .await;
    let seen = eventually(WAIT, "the expiry user message", || async {
        users
            .seen()
            .into_iter()
            .find(|m| m["event_id"] == "HERALD_SUBSCRIPTION_002_003")
    })
    .await;
    assert_eq!(seen["resource_uuid"], id.as_str());
    let stats = json_with(app.get_path("/v2/topics/t/stats").await, 200).await;
    assert_eq!(stats["subscriptions"]["count"], 0);
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn a_subscription_that_expires_unconfirmed_tells_the_project_confirmation_never_completed() {
    // Arrange
    let app = spawn_delivery_app_with(|c| {
        c.min_subscription_ttl = 1;
        c.require_confirmation = true;
        c.signed_url_secret = Some("s3cret".into());
    })
    .await;
    let users = UserMessages::start(&app).await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;

    // Act: never confirm.
    let id = app
        .subscribe("t", json!({"subscriber": receiver.url, "ttl": 1}))
        .await;

    // Assert
    let seen = eventually(WAIT, "the unconfirmed-expiry user message", || async {
        users
            .seen()
            .into_iter()
            .find(|m| m["event_id"] == "HERALD_SUBSCRIPTION_003_004")
    })
    .await;
    assert_eq!(seen["resource_uuid"], id.as_str());
    assert!(
        users
            .seen()
            .iter()
            .all(|m| m["event_id"] != "HERALD_SUBSCRIPTION_002_003"),
        "one event, not both"
    );
}

#[tokio::test]
async fn an_unconfirmed_subscriber_receives_only_the_confirmation_until_it_confirms() {
    // Arrange
    let app = spawn_delivery_app_with(|c| {
        c.require_confirmation = true;
        c.signed_url_secret = Some("s3cret".into());
    })
    .await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let id = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    let confirmation = receiver.wait_for(1, WAIT).await.remove(0).body;
    assert_eq!(confirmation["Message_Type"], "SubscriptionConfirmation");
    app.post_messages("t", json!({"messages": [{"body": "early"}]}))
        .await;
    // "early" was handled (acked undelivered: the subscription is unconfirmed).
    app.settled("t", &id).await;
    assert_eq!(receiver.received().len(), 1, "only the confirmation");

    // Act: confirm with the pre-signed headers alone (no identity).
    let path = confirmation["URL-Paths"].as_str().unwrap();
    assert_eq!(path, format!("/v2/topics/t/subscriptions/{id}/confirm"));
    let forged = app
        .anon(Method::PUT, path)
        .header("URL-Signature", "00")
        .header("URL-Methods", "PUT")
        .header("URL-Paths", path)
        .header("URL-Expires", confirmation["URL-Expires"].as_str().unwrap())
        .header(
            "X-Project-ID",
            confirmation["X-Project-ID"].as_str().unwrap(),
        )
        .json(&confirmation["SubscribeBody"])
        .send()
        .await
        .unwrap();
    json_with(forged, 404).await;
    let res = app
        .anon(Method::PUT, path)
        .header(
            "URL-Signature",
            confirmation["URL-Signature"].as_str().unwrap(),
        )
        .header("URL-Methods", confirmation["URL-Methods"].as_str().unwrap())
        .header("URL-Paths", path)
        .header("URL-Expires", confirmation["URL-Expires"].as_str().unwrap())
        .header(
            "X-Project-ID",
            confirmation["X-Project-ID"].as_str().unwrap(),
        )
        .json(&confirmation["SubscribeBody"])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);
    let doc = json_with(
        app.get_path(&format!("/v2/topics/t/subscriptions/{id}"))
            .await,
        200,
    )
    .await;
    assert_eq!(doc["confirmed"], true);
    eventually(WAIT, "a delivery after confirmation", || async {
        let _ = app
            .post_messages("t", json!({"messages": [{"body": "late"}]}))
            .await;
        receiver
            .received()
            .iter()
            .any(|r| r.body["body"] == "late")
            .then_some(())
    })
    .await;
    assert!(!receiver
        .received()
        .iter()
        .any(|r| r.body["body"] == "early"));
}

#[tokio::test]
async fn an_ordered_subscription_delivers_one_at_a_time_in_publish_order_through_retries() {
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    receiver.answer(500, None, Duration::ZERO);
    app.put_topic("t", None).await;
    app.subscribe("t", json!({"subscriber": receiver.url, "options": {"ordered": true,
        "_retry_policy": {"retries_with_no_delay": 0, "minimum_delay_retries": 50, "minimum_delay": 1,
                          "maximum_delay": 1, "maximum_delay_retries": 0}}}))
        .await;
    for i in 0..5 {
        app.post_messages("t", json!({"messages": [{"body": i}]}))
            .await;
    }
    receiver.wait_for(3, WAIT).await;
    receiver.answer(200, None, Duration::ZERO);
    eventually(WAIT, "all five delivered", || async {
        (receiver
            .received()
            .iter()
            .filter(|r| r.body["body"] == 4)
            .count()
            == 1)
            .then_some(())
    })
    .await;
    let order: Vec<i64> = receiver
        .received()
        .iter()
        .map(|r| r.body["body"].as_i64().unwrap())
        .collect();
    let first_ok = order.iter().position(|b| *b != 0).unwrap();
    assert!(
        order[..first_ok].iter().all(|b| *b == 0),
        "retries of the head only: {order:?}"
    );
    assert_eq!(&order[first_ok..], &[1, 2, 3, 4], "{order:?}");
}
