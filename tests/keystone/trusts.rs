//! `trust+` subscribers with real Keystone trusts: the receiver asks Keystone about the
//! token Herald presents; the trust goes with the subscription; a dead trust dead-letters
//! with `HERALD_SUBSCRIPTION_001_006`.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{extract::State, http::HeaderMap, http::StatusCode, routing::post, Router};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    helpers::{eventually, json_with, TestApp},
    identity::{herald, v2},
    server::{Admin, Relay, User},
};

/// What the receiver learnt from Keystone about one presented token.
#[derive(Debug, Clone)]
struct Presented {
    /// Keystone's `token` object, `None` when Keystone refused the token.
    token: Option<Value>,
    body: Value,
}

type Seen = Arc<Mutex<Vec<Presented>>>;

/// A `trust+` subscriber that validates `X-Auth-Token` against Keystone (as the admin)
/// and answers 204 for a valid token, 401 otherwise, as an OpenStack service would.
struct TrustReceiver {
    url: String,
    seen: Seen,
    task: tokio::task::JoinHandle<()>,
}

impl TrustReceiver {
    async fn start(admin_url: &str) -> Self {
        let admin = Arc::new(Admin::connect(admin_url).await.unwrap());
        let seen: Seen = Arc::default();
        let state = (admin, seen.clone());
        let app = Router::new().route(
            "/hook",
            post(
                |State((admin, seen)): State<(Arc<Admin>, Seen)>,
                 headers: HeaderMap,
                 body: axum::body::Bytes| async move {
                    let token = match headers.get("x-auth-token").and_then(|v| v.to_str().ok()) {
                        Some(t) => admin.validate(t).await.map(|v| v["token"].clone()),
                        None => None,
                    };
                    let valid = token.is_some();
                    seen.lock().unwrap().push(Presented {
                        token,
                        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
                    });
                    if valid {
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::UNAUTHORIZED
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            axum::serve(listener, app.with_state(state)).await.unwrap();
        });
        Self {
            url: format!("trust+http://127.0.0.1:{port}/hook"),
            seen,
            task,
        }
    }

    async fn wait_for(&self, n: usize) -> Vec<Presented> {
        eventually(Duration::from_secs(20), "trust deliveries", || async {
            let seen = self.seen.lock().unwrap().clone();
            (seen.len() >= n).then_some(seen)
        })
        .await
    }
}

impl Drop for TrustReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn with_token(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Value,
) -> reqwest::Response {
    app.anon(method, path)
        .header("X-Auth-Token", token)
        .json(&body)
        .send()
        .await
        .expect("request sent")
}

/// A topic and a `trust+` subscription of `user` to `receiver`; returns the subscription id.
async fn trust_subscription(app: &TestApp, user: &User, receiver: &TrustReceiver) -> String {
    let put = v2(app, Method::PUT, "/v2/topics/orders", Some(&user.token)).await;
    assert_eq!(put.status(), 201);
    let created = with_token(
        app,
        Method::POST,
        "/v2/topics/orders/subscriptions",
        &user.token,
        json!({"subscriber": receiver.url, "ttl": 3600}),
    )
    .await;
    json_with(created, 201).await["subscription_id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn publish(app: &TestApp, user: &User, body: Value) {
    let res = with_token(
        app,
        Method::POST,
        "/v2/topics/orders/messages",
        &user.token,
        json!({"messages": [{"body": body}]}),
    )
    .await;
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn a_trust_subscriber_gets_a_token_acting_for_the_subscriber_and_the_trust_goes_with_the_subscription(
) {
    // Arrange
    let admin = Admin::shared().await;
    let (app, service) = herald(&admin, |_| {}).await;
    let user = admin.user(None, &["member"]).await;
    let receiver = TrustReceiver::start(&admin.url).await;

    // Act
    let id = trust_subscription(&app, &user, &receiver).await;
    let trusts = admin.trusts_of(&user).await;
    publish(&app, &user, json!({"order": 1})).await;
    publish(&app, &user, json!({"order": 2})).await;
    let seen = receiver.wait_for(2).await;
    let stored = app.nats.connect().await.unwrap();
    let stream = herald::store::names::stream_name(
        &herald::domain::ProjectId::parse(&user.project_id).unwrap(),
        &herald::domain::TopicName::parse("orders").unwrap(),
    );
    let consumer = async_nats::jetstream::new(stored)
        .get_stream(&stream)
        .await
        .unwrap()
        .consumer_info(&id)
        .await
        .unwrap()
        .config
        .clone();
    let deleted = v2(
        &app,
        Method::DELETE,
        &format!("/v2/topics/orders/subscriptions/{id}"),
        Some(&user.token),
    )
    .await;

    // Assert: one trust, from the user to Herald, on the user's project, impersonating
    assert_eq!(trusts.len(), 1, "{trusts:?}");
    let trust = &trusts[0];
    assert_eq!(trust["trustee_user_id"], service.id);
    assert_eq!(trust["project_id"], user.project_id);
    assert_eq!(trust["impersonation"], true);
    assert!(
        trust["expires_at"].is_string(),
        "expires with the subscription"
    );
    // Each delivery's token is valid and acts as the user in the user's project
    for p in &seen {
        let token = p.token.as_ref().expect("Keystone accepted the token");
        assert_eq!(token["user"]["id"], user.id);
        assert_eq!(token["project"]["id"], user.project_id);
        assert_eq!(token["OS-TRUST:trust"]["id"], trust["id"]);
    }
    let orders: Vec<_> = seen
        .iter()
        .map(|p| p.body["body"]["order"].clone())
        .collect();
    assert!(
        orders.contains(&json!(1)) && orders.contains(&json!(2)),
        "{orders:?}"
    );
    // Herald keeps the trust id, never the user's token
    assert_eq!(
        consumer.metadata.get("herald.trust_id"),
        trust["id"].as_str().map(str::to_owned).as_ref()
    );
    assert!(consumer.metadata.values().all(|v| !v.contains(&user.token)));
    // Deleting the subscription deleted the trust
    assert_eq!(deleted.status(), 204);
    assert_eq!(admin.trust_status(trust["id"].as_str().unwrap()).await, 404);
}

#[tokio::test]
async fn a_deleted_trust_dead_letters_the_message_and_tells_the_project_with_001_006() {
    // Arrange: one delivery made (Herald holds the trust's token), then the user deletes
    // the trust in Keystone
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let user = admin.user(None, &["member"]).await;
    let receiver = TrustReceiver::start(&admin.url).await;
    let id = trust_subscription(&app, &user, &receiver).await;
    publish(&app, &user, json!({"order": 1})).await;
    receiver.wait_for(1).await;
    let trust = admin.trusts_of(&user).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let revoked = admin
        .http
        .delete(format!("{}/v3/OS-TRUST/trusts/{trust}", admin.url))
        .header("X-Auth-Token", &user.token)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 204, "the trustor deletes its trust");

    // Act
    publish(&app, &user, json!({"order": 2})).await;
    let letters = eventually(Duration::from_secs(20), "the dead letter", || async {
        let r = v2(
            &app,
            Method::GET,
            &format!("/v2/topics/orders/subscriptions/{id}/dead_letters"),
            Some(&user.token),
        )
        .await;
        let body: Value = r.json().await.ok()?;
        let letters = body["dead_letters"].as_array()?.clone();
        (!letters.is_empty()).then_some(letters)
    })
    .await;
    let notice = eventually(Duration::from_secs(20), "the user message", || async {
        let r = app
            .anon(Method::GET, "/v3/messages")
            .header("X-Auth-Token", &user.token)
            .header("OpenStack-API-Version", "volume 3.3")
            .send()
            .await
            .ok()?;
        let body: Value = r.json().await.ok()?;
        body["messages"].as_array()?.first().cloned()
    })
    .await;

    // Assert
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["body"], json!({"order": 2}));
    assert_eq!(letters[0]["attempts"], 1, "permanent: not retried");
    assert!(
        letters[0]["last_error"]
            .as_str()
            .unwrap()
            .contains("trust no longer works"),
        "{letters:?}"
    );
    assert_eq!(notice["event_id"], "HERALD_SUBSCRIPTION_001_006");
    assert_eq!(notice["resource_uuid"], id);
    let refused = receiver.seen.lock().unwrap().clone();
    assert!(
        refused.iter().skip(1).all(|p| p.token.is_none()),
        "only the cached, revoked token reached the receiver after the deletion"
    );
}

#[tokio::test]
async fn a_token_that_cannot_create_trusts_gets_403_and_nothing_is_stored() {
    // Arrange: an application credential's token may not create trusts (Keystone refuses
    // delegated tokens)
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let user = admin.user(None, &["member"]).await;
    let (delegated, _) = admin
        .expiring_token(&user, chrono::Utc::now() + chrono::Duration::hours(1))
        .await;
    let put = v2(&app, Method::PUT, "/v2/topics/orders", Some(&user.token)).await;
    assert_eq!(put.status(), 201);

    // Act
    let created = with_token(
        &app,
        Method::POST,
        "/v2/topics/orders/subscriptions",
        &delegated,
        json!({"subscriber": "trust+http://127.0.0.1:9/hook"}),
    )
    .await;
    let listed = v2(
        &app,
        Method::GET,
        "/v2/topics/orders/subscriptions",
        Some(&user.token),
    )
    .await;

    // Assert
    let body = json_with(created, 403).await;
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .contains("Keystone refused"),
        "{body}"
    );
    assert_eq!(json_with(listed, 200).await["subscriptions"], json!([]));
    assert!(admin.trusts_of(&user).await.is_empty());
}

#[tokio::test]
async fn deleting_the_topic_deletes_the_trusts_of_its_subscriptions() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let user = admin.user(None, &["member"]).await;
    let receiver = TrustReceiver::start(&admin.url).await;
    trust_subscription(&app, &user, &receiver).await;
    let trust = admin.trusts_of(&user).await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(admin.trust_status(&trust).await, 200);

    // Act
    let deleted = v2(&app, Method::DELETE, "/v2/topics/orders", Some(&user.token)).await;

    // Assert
    assert_eq!(deleted.status(), 204);
    assert_eq!(admin.trust_status(&trust).await, 404);
}

#[tokio::test]
async fn with_keystone_unreachable_a_trust_delivery_is_retried_not_dead_lettered() {
    // Arrange: Herald reaches Keystone through a relay, cut once the subscription (and its
    // trust) exist; the caller's token is cached, the trust's token not yet
    let admin = Admin::shared().await;
    let relay = Relay::to(&admin.url).await;
    let relayed = relay.url.clone();
    let (app, _) = herald(&admin, move |c| {
        // The default keystone_timeout_ms: a busy Keystone can take over a second, and a
        // cut relay refuses connections at once anyway.
        c.keystone_url = Some(relayed);
        c.retry_delay_unit_ms = 50;
    })
    .await;
    let user = admin.user(None, &["member"]).await;
    let receiver = TrustReceiver::start(&admin.url).await;
    let id = trust_subscription(&app, &user, &receiver).await;
    relay.cut().await;

    // Act: publish, then wait for JetStream to hand the message out again (a NAK: a retry)
    publish(&app, &user, json!({"order": 1})).await;
    let js = async_nats::jetstream::new(app.nats.connect().await.unwrap());
    let stream = herald::store::names::stream_name(
        &herald::domain::ProjectId::parse(&user.project_id).unwrap(),
        &herald::domain::TopicName::parse("orders").unwrap(),
    );
    eventually(Duration::from_secs(20), "a redelivery", || async {
        let s = js.get_stream(&stream).await.ok()?;
        let info = s
            .get_consumer::<async_nats::jetstream::consumer::pull::Config>(&id)
            .await
            .ok()?;
        (info.cached_info().num_redelivered >= 1).then_some(())
    })
    .await;
    let letters = v2(
        &app,
        Method::GET,
        &format!("/v2/topics/orders/subscriptions/{id}/dead_letters"),
        Some(&user.token),
    )
    .await;

    // Assert
    assert_eq!(json_with(letters, 200).await["dead_letters"], json!([]));
    assert!(receiver.seen.lock().unwrap().is_empty(), "nothing was sent");
}
