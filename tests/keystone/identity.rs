use std::{path::PathBuf, time::Duration};

use herald::config::{AuthMode, Config};
use herald_testkit::nats::NatsServer;
use reqwest::{Method, Response};
use serde_json::json;

use crate::{
    helpers::{eventually, json_with, spawn_app_on, TestApp},
    server::{Admin, Relay, User, SERVICE_PROJECT},
};

/// Herald in keystone mode with a service user of its own.
pub async fn herald(admin: &Admin, configure: impl FnOnce(&mut Config)) -> (TestApp, User) {
    herald_on(admin, NatsServer::start().await, configure).await
}

/// [`herald`] against a nats-server the test started (e.g. with an auth callout).
pub async fn herald_on(
    admin: &Admin,
    nats: NatsServer,
    configure: impl FnOnce(&mut Config),
) -> (TestApp, User) {
    let service = admin.service_user().await;
    let (url, name, password) = (
        admin.url.clone(),
        service.name.clone(),
        service.password.clone(),
    );
    let app = spawn_app_on(nats, move |c| {
        c.auth_mode = AuthMode::Keystone;
        c.keystone_url = Some(url);
        c.keystone_user = Some(name);
        c.keystone_password = Some(password);
        c.keystone_project = Some(SERVICE_PROJECT.into());
        configure(c);
    })
    .await;
    (app, service)
}

fn validations(app: &TestApp) -> u64 {
    app.auth
        .as_ref()
        .and_then(|a| a.keystone())
        .expect("keystone mode")
        .validations()
}

pub async fn v2(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> Response {
    let mut r = app.anon(method, path);
    if let Some(t) = token {
        r = r.header("X-Auth-Token", t);
    }
    r.send().await.expect("request sent")
}

async fn v3(app: &TestApp, method: Method, path: &str, token: Option<&str>) -> Response {
    let mut r = app
        .anon(method, path)
        .header("OpenStack-API-Version", "volume 3.3");
    if let Some(t) = token {
        r = r.header("X-Auth-Token", t);
    }
    r.send().await.expect("request sent")
}

fn challenge(res: &Response, admin: &Admin) {
    assert_eq!(
        res.headers()
            .get("www-authenticate")
            .map(|v| v.to_str().unwrap()),
        Some(format!("Keystone uri=\"{}\"", admin.url).as_str())
    );
}

#[tokio::test]
async fn a_missing_or_unknown_token_is_a_401_with_a_keystone_challenge_in_each_family_shape() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;

    // Act
    let missing_v2 = v2(&app, Method::GET, "/v2/topics", None).await;
    let bogus_v2 = v2(&app, Method::GET, "/v2/topics", Some("gAAAAnot-a-token")).await;
    let missing_v3 = v3(&app, Method::GET, "/v3/messages", None).await;
    let bogus_v3 = v3(&app, Method::GET, "/v3/messages", Some("not-a-token")).await;

    // Assert
    challenge(&missing_v2, &admin);
    challenge(&bogus_v2, &admin);
    challenge(&missing_v3, &admin);
    challenge(&bogus_v3, &admin);
    assert_eq!(json_with(missing_v2, 401).await["title"], "Not authorized");
    assert_eq!(json_with(bogus_v2, 401).await["title"], "Not authorized");
    assert_eq!(
        json_with(missing_v3, 401).await["unauthorized"]["code"],
        401
    );
    assert_eq!(json_with(bogus_v3, 401).await["unauthorized"]["code"], 401);
}

#[tokio::test]
async fn a_token_scoped_to_a_domain_rather_than_a_project_is_a_401() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let user = admin.user(None, &["member"]).await;
    let token = admin.domain_token(&user, "member").await;

    // Act
    let on_v2 = v2(&app, Method::GET, "/v2/topics", Some(&token)).await;
    let on_v3 = v3(&app, Method::GET, "/v3/messages", Some(&token)).await;

    // Assert
    challenge(&on_v2, &admin);
    let body = json_with(on_v2, 401).await;
    assert!(
        body["description"].as_str().unwrap().contains("project"),
        "{body}"
    );
    assert_eq!(json_with(on_v3, 401).await["unauthorized"]["code"], 401);
}

#[tokio::test]
async fn a_member_works_in_its_own_project_and_cannot_see_or_pick_another() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let alice = admin.user(None, &["member"]).await;
    let bob = admin.user(None, &["member"]).await;
    let put = v2(&app, Method::PUT, "/v2/topics/alerts", Some(&alice.token)).await;
    assert_eq!(put.status(), 201);

    // Act
    let own = v2(&app, Method::GET, "/v2/topics/alerts", Some(&alice.token)).await;
    let foreign = v2(&app, Method::GET, "/v2/topics/alerts", Some(&bob.token)).await;
    let picked = app
        .anon(Method::GET, "/v2/topics/alerts")
        .header("X-Auth-Token", &bob.token)
        .header("X-Project-ID", &alice.project_id)
        .send()
        .await
        .unwrap();

    // Assert
    assert_eq!(own.status(), 200);
    assert_eq!(
        foreign.status(),
        404,
        "another project's topic is invisible"
    );
    assert_eq!(picked.status(), 404, "a member cannot name another project");
}

#[tokio::test]
async fn a_reader_may_read_but_not_write_and_an_admin_may_name_another_project() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let member = admin.user(None, &["member"]).await;
    let reader = admin.user(Some(&member.project_name), &["reader"]).await;
    let operator = admin.user(None, &["admin"]).await;
    assert_eq!(
        v2(&app, Method::PUT, "/v2/topics/t1", Some(&member.token))
            .await
            .status(),
        201
    );

    // Act
    let read = v2(&app, Method::GET, "/v2/topics/t1", Some(&reader.token)).await;
    let write = v2(&app, Method::PUT, "/v2/topics/t2", Some(&reader.token)).await;
    let as_admin = app
        .anon(Method::DELETE, "/v2/topics/t1")
        .header("X-Auth-Token", &operator.token)
        .header("X-Project-ID", &member.project_id)
        .send()
        .await
        .unwrap();
    let after = v2(&app, Method::GET, "/v2/topics/t1", Some(&member.token)).await;

    // Assert
    assert_eq!(read.status(), 200);
    assert_eq!(json_with(write, 403).await["title"], "Not authorized");
    assert_eq!(as_admin.status(), 204);
    assert_eq!(
        after.status(),
        404,
        "the admin deleted it in the member's project"
    );
}

#[tokio::test]
async fn roles_outside_herald_give_403_unless_keystone_role_map_maps_them() {
    // Arrange
    let admin = Admin::shared().await;
    let (plain, _) = herald(&admin, |_| {}).await;
    let (mapped, _) = herald(&admin, |c| {
        c.keystone_role_map = "herald-operator=admin, herald-viewer=reader".into();
    })
    .await;
    let viewer = admin.user(None, &["herald-viewer"]).await;

    // Act
    let unmapped = v2(&plain, Method::GET, "/v2/topics", Some(&viewer.token)).await;
    let unmapped_v3 = v3(&plain, Method::GET, "/v3/messages", Some(&viewer.token)).await;
    let read = v2(&mapped, Method::GET, "/v2/topics", Some(&viewer.token)).await;
    let write = v2(&mapped, Method::PUT, "/v2/topics/x", Some(&viewer.token)).await;

    // Assert
    let body = json_with(unmapped, 403).await;
    assert!(
        body["description"].as_str().unwrap().contains("no role"),
        "{body}"
    );
    assert_eq!(json_with(unmapped_v3, 403).await["forbidden"]["code"], 403);
    assert_eq!(read.status(), 200);
    assert_eq!(write.status(), 403);
}

#[tokio::test]
async fn on_v3_the_path_project_must_be_the_tokens_unless_admin() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let member = admin.user(None, &["member"]).await;
    let other = admin.user(None, &["member"]).await;
    let operator = admin.user(None, &["admin"]).await;
    let p = &member.project_id;

    // Act
    let own = v3(
        &app,
        Method::GET,
        &format!("/v3/{p}/messages"),
        Some(&member.token),
    )
    .await;
    let implied = v3(&app, Method::GET, "/v3/messages", Some(&member.token)).await;
    let foreign = v3(
        &app,
        Method::GET,
        &format!("/v3/{p}/messages"),
        Some(&other.token),
    )
    .await;
    let by_admin = v3(
        &app,
        Method::GET,
        &format!("/v3/{p}/messages"),
        Some(&operator.token),
    )
    .await;

    // Assert
    assert_eq!(json_with(own, 200).await["messages"], json!([]));
    assert_eq!(implied.status(), 200);
    assert_eq!(
        json_with(foreign, 400).await["badRequest"]["message"],
        "Malformed request url"
    );
    assert_eq!(by_admin.status(), 200);
}

#[tokio::test]
async fn a_revoked_token_is_refused_once_its_cache_entry_has_expired() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |c| c.token_cache_seconds = 2).await;
    let user = admin.user(None, &["member"]).await;
    let never_used = admin.token(&user).await;
    let cached = user.token.clone();
    assert_eq!(
        v2(&app, Method::GET, "/v2/topics", Some(&cached))
            .await
            .status(),
        200
    );

    // Act
    admin.revoke(&never_used).await;
    admin.revoke(&cached).await;
    let uncached = v2(&app, Method::GET, "/v2/topics", Some(&never_used)).await;
    let still = v2(&app, Method::GET, "/v2/topics", Some(&cached)).await;

    // Assert
    challenge(&uncached, &admin);
    assert_eq!(
        uncached.status(),
        401,
        "a revoked token that was not cached"
    );
    assert_eq!(
        still.status(),
        200,
        "the documented trade-off: cached until the entry expires"
    );
    eventually(
        Duration::from_secs(10),
        "the revoked token to be refused",
        || async {
            let r = v2(&app, Method::GET, "/v2/topics", Some(&cached)).await;
            (r.status() == 401).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn an_expired_token_is_refused_although_the_cache_would_keep_it_longer() {
    // Arrange: a token that expires in 4 s (an application credential's expiry caps it),
    // and a cache that would keep it 300 s
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |c| c.token_cache_seconds = 300).await;
    let user = admin.user(None, &["member"]).await;
    let (token, expires_at) = admin
        .expiring_token(&user, chrono::Utc::now() + chrono::Duration::seconds(4))
        .await;

    // Act
    let before = v2(&app, Method::GET, "/v2/topics", Some(&token)).await;
    let refused_at = eventually(
        Duration::from_secs(15),
        "the expired token to be refused",
        || async {
            let r = v2(&app, Method::GET, "/v2/topics", Some(&token)).await;
            (r.status() == 401).then(chrono::Utc::now)
        },
    )
    .await;

    // Assert
    assert_eq!(before.status(), 200);
    assert!(refused_at >= expires_at);
    assert!(
        refused_at < expires_at + chrono::Duration::seconds(3),
        "refused at {refused_at}, expired at {expires_at}"
    );
}

#[tokio::test]
async fn concurrent_requests_with_one_uncached_token_cause_one_validation() {
    // Arrange
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let warm = admin.user(None, &["member"]).await;
    assert_eq!(
        v2(&app, Method::GET, "/v2/topics", Some(&warm.token))
            .await
            .status(),
        200
    );
    let user = admin.user(None, &["member"]).await;
    let before = validations(&app);

    // Act
    let statuses = futures::future::join_all((0..32).map(|_| async {
        v2(&app, Method::GET, "/v2/topics", Some(&user.token))
            .await
            .status()
    }))
    .await;

    // Assert
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(validations(&app) - before, 1);
}

#[tokio::test]
async fn herald_obtains_a_new_service_token_when_keystone_revoked_its_own() {
    // Arrange: Herald holds a service token; disabling its user revokes every token of it
    let admin = Admin::shared().await;
    let (app, service) = herald(&admin, |_| {}).await;
    let user = admin.user(None, &["member"]).await;
    assert_eq!(
        v2(&app, Method::GET, "/v2/topics", Some(&user.token))
            .await
            .status(),
        200
    );
    admin.set_user_enabled(&service.id, false).await;
    admin.set_user_enabled(&service.id, true).await;
    let fresh = admin.token(&user).await;
    let before = validations(&app);

    // Act: Keystone's revocation events have one-second resolution, so a service token
    // issued in the second of the revocation is refused too; Herald re-authenticates on
    // each refusal (once per request) until its new token is accepted.
    eventually(
        Duration::from_secs(10),
        "a new service token to work",
        || async {
            let r = v2(&app, Method::GET, "/v2/topics", Some(&fresh)).await;
            (r.status() == 200).then_some(())
        },
    )
    .await;

    // Assert
    assert!(
        validations(&app) - before >= 2,
        "refused at least once, then validated with a new service token"
    );
}

#[tokio::test]
async fn with_keystone_stopped_an_uncached_token_is_a_503_and_a_cached_one_works_until_its_entry_expires(
) {
    // Arrange: Herald reaches Keystone through a relay, cut after one token is cached
    let admin = Admin::shared().await;
    let relay = Relay::to(&admin.url).await;
    let relayed = relay.url.clone();
    let (app, _) = herald(&admin, move |c| {
        c.keystone_url = Some(relayed);
        c.token_cache_seconds = 3;
        c.keystone_timeout_ms = 1000;
    })
    .await;
    let user = admin.user(None, &["member"]).await;
    let uncached = admin.token(&user).await;
    assert_eq!(
        v2(&app, Method::GET, "/v2/topics", Some(&user.token))
            .await
            .status(),
        200
    );
    relay.cut().await;

    // Act
    let started = std::time::Instant::now();
    let down_v2 = v2(&app, Method::GET, "/v2/topics", Some(&uncached)).await;
    let down_v3 = v3(&app, Method::GET, "/v3/messages", Some(&uncached)).await;
    let elapsed = started.elapsed();
    let cached = v2(&app, Method::GET, "/v2/topics", Some(&user.token)).await;

    // Assert
    assert_eq!(
        json_with(down_v2, 503).await["title"],
        "Service temporarily unavailable"
    );
    assert_eq!(
        json_with(down_v3, 503).await["serviceUnavailable"]["code"],
        503
    );
    assert!(elapsed < Duration::from_secs(3), "bounded: {elapsed:?}");
    assert_eq!(cached.status(), 200, "the cached validation still holds");
    eventually(
        Duration::from_secs(10),
        "the cached entry to expire",
        || async {
            let r = v2(&app, Method::GET, "/v2/topics", Some(&user.token)).await;
            (r.status() == 503).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn python_cinderclient_lists_messages_with_keystone_password_auth() {
    // Arrange: a message in the user's project, created by an admin
    let admin = Admin::shared().await;
    let (app, _) = herald(&admin, |_| {}).await;
    let user = admin.user(None, &["member"]).await;
    let operator = admin.user(None, &["admin"]).await;
    let created = app
        .anon(Method::POST, &format!("/v3/{}/messages", user.project_id))
        .header("X-Auth-Token", &operator.token)
        .header("OpenStack-API-Version", "volume 3.3")
        .json(&json!({"event_id": "HERALD_SUBSCRIPTION_001_001",
            "resource_uuid": "11111111-1111-4111-8111-111111111111"}))
        .send()
        .await
        .unwrap();
    let id = json_with(created, 201).await["message"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let cinder = std::env::var_os("HERALD_PYTHON")
        .map(|p| PathBuf::from(p).with_file_name("cinder"))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/cinder"));

    // Act
    let out = tokio::process::Command::new(cinder)
        .args(["--os-auth-url", &format!("{}/v3", admin.url)])
        .args(["--os-username", &user.name, "--os-password", &user.password])
        .args(["--os-project-name", &user.project_name])
        .args([
            "--os-user-domain-name",
            "Default",
            "--os-project-domain-name",
            "Default",
        ])
        .args(["--os-endpoint", &format!("{}/v3", app.address)])
        .args(["--os-volume-api-version", "3.3", "message-list"])
        .output()
        .await
        .expect("cinder runs (scripts/test installs python-cinderclient into .venv)");

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "cinder failed: {stdout}\n{stderr}");
    assert!(stdout.contains(&id), "{stdout}");
}
