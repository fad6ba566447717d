//! Native NATS clients with Keystone tokens: nats-server's auth callout asks Herald, which
//! validates the token and issues a user limited to the token's project. The client is
//! nats-py (tests/python/nats_keystone_client.py).

use std::{path::PathBuf, time::Duration};

use herald_testkit::{nats::NatsServer, peers::Receiver};
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    helpers::json_with,
    identity::{herald_on, v2},
    server::Admin,
};

const HERALD_PASSWORD: &str = "herald-nats-pw";
const CALLOUT_PASSWORD: &str = "callout-nats-pw";

/// The shipped nats/keystone-callout.conf with this test's issuer and passwords.
fn callout_config(issuer_public: &str) -> String {
    let shipped = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("nats/keystone-callout.conf"),
    )
    .expect("nats/keystone-callout.conf");
    let issuer_line = shipped
        .lines()
        .find(|l| l.trim_start().starts_with("issuer:"))
        .expect("an issuer line");
    shipped
        .replace(issuer_line, &format!("    issuer: {issuer_public}"))
        .replace("change-me-herald", HERALD_PASSWORD)
        .replace("change-me-callout", CALLOUT_PASSWORD)
        // The harness gives the port, address and store.
        .lines()
        .filter(|l| {
            !["listen", "http:", "store_dir"]
                .iter()
                .any(|k| l.trim_start().starts_with(k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn python() -> PathBuf {
    std::env::var_os("HERALD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

#[tokio::test]
async fn a_nats_client_with_a_keystone_token_publishes_to_its_project_only_and_a_bad_token_is_refused(
) {
    // Arrange: nats-server with the auth callout; Herald answers it
    let admin = Admin::shared().await;
    let issuer = nkeys::KeyPair::new_account();
    let nats = NatsServer::start_with_config(
        &callout_config(&issuer.public_key()),
        ("herald", HERALD_PASSWORD),
    )
    .await;
    let seed = issuer.seed().unwrap();
    let (app, _) = herald_on(&admin, nats, move |c| {
        c.nats_user = Some("herald".into());
        c.nats_password = Some(HERALD_PASSWORD.into());
        c.nats_callout_issuer_seed = Some(seed);
        c.nats_callout_user = Some("herald_callout".into());
        c.nats_callout_password = Some(CALLOUT_PASSWORD.into());
    })
    .await;
    let user = admin.user(None, &["member"]).await;
    let other = admin.user(None, &["member"]).await;
    let receiver = Receiver::start().await;
    let put = v2(&app, Method::PUT, "/v2/topics/orders", Some(&user.token)).await;
    assert_eq!(put.status(), 201);
    let sub = app
        .anon(Method::POST, "/v2/topics/orders/subscriptions")
        .header("X-Auth-Token", &user.token)
        .json(&json!({"subscriber": receiver.url}))
        .send()
        .await
        .unwrap();
    json_with(sub, 201).await;
    let (p, q) = (&user.project_id, &other.project_id);

    // Act
    let out = tokio::process::Command::new(python())
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/nats_keystone_client.py"))
        .arg(app.nats.url())
        .arg(&user.token)
        .arg("gAAAAAnot-a-keystone-token")
        .arg(format!("herald.topics.{p}.orders"))
        .arg(format!("herald.topics.{q}.orders"))
        .arg(format!("{q}.events"))
        .output()
        .await
        .expect("python runs (scripts/test installs nats-py into .venv)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "client failed: {stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.trim()).expect("one JSON line");
    let delivered = receiver.wait_for(1, Duration::from_secs(20)).await;

    // Assert: its own project's topic takes the message and Herald delivers it
    assert!(report["own_seq"].as_u64().is_some(), "{report}");
    assert_eq!(delivered[0].body["body"], json!({"native": true}));
    // Another project's subjects are refused
    let errors = report["errors"].to_string().to_lowercase();
    assert!(
        errors.contains(&format!(
            "permissions violation for publish to \\\"herald.topics.{q}.orders\\\""
        )),
        "{report}"
    );
    assert!(
        errors.contains(&format!(
            "permissions violation for subscription to \\\"{q}.events\\\""
        )),
        "{report}"
    );
    // A token Keystone does not know is refused at connect
    assert_ne!(report["bad_token"], "connected", "{report}");
    assert!(
        report
            .to_string()
            .to_lowercase()
            .contains("authorization violation"),
        "{report}"
    );
}
