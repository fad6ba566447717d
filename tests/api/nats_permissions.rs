//! The permissions shipped in `nats/` against a real nats-server: Herald's delivery user
//! can serve `nats:` subscribers but cannot publish into NATS's `$` namespaces, Herald's
//! `herald.` subjects or `_INBOX`, and Herald's delivery transport reports such a refusal
//! as a permanent "permissions violation".

use std::time::Duration;

use futures::StreamExt;
use herald::{
    config::Config,
    delivery::{nats::NatsTransport, outcome::DeliveryError},
};

use crate::helpers::{connect_as, eventually, NatsServer};

/// Subjects no delivery user may publish to, whatever the deployment.
const RESERVED: [&str; 8] = [
    "$JS.API.STREAM.CREATE.x",
    "$KV.herald_topics.p.t",
    "$O.bucket.x",
    "$SYS.REQ.SERVER.PING",
    "herald.topics.p.t",
    "herald.user_messages.create",
    "_INBOX.someone.1",
    "_INBOX",
];

/// The `authorization` block of a shipped config (the rest names ports and paths of its
/// deployment; the harness picks its own).
fn authorization_of(file: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
    let start = text
        .find("authorization {")
        .unwrap_or_else(|| panic!("{file} has no authorization block"));
    text[start..].to_owned()
}

/// Starts nats-server with `file`'s users, a responder on `served` (as `responder`), and
/// the delivery transport as `herald_delivery`; checks `served` is delivered and every
/// subject of `refused` is refused.
async fn check(file: &str, responder: (&str, &str), served: &str, refused: &[&str]) {
    // Arrange
    let nats =
        NatsServer::start_with_config(&authorization_of(file), ("herald", "change-me-herald"))
            .await;
    let peer = connect_as(&nats.url(), Some(responder)).await.unwrap();
    let mut requests = peer.subscribe(served.to_owned()).await.unwrap();
    peer.flush().await.unwrap();
    tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                let _ = peer.publish(reply, "ok".into()).await;
            }
        }
    });
    let config = Config {
        nats_url: nats.url(),
        nats_delivery_user: Some("herald_delivery".into()),
        nats_delivery_password: Some("change-me-herald-delivery".into()),
        ..Config::default()
    };
    let transport = NatsTransport::connect(&config).await.unwrap();
    let timeout = Duration::from_millis(500);
    let send = |subject: String| {
        let transport = transport.clone();
        async move {
            transport
                .request(&subject, Default::default(), "{}".into(), timeout)
                .await
        }
    };

    // Act + Assert: a subscriber subject is served (request out, reply back on the
    // delivery user's own inbox).
    eventually(
        Duration::from_secs(10),
        "a delivery to the served subject",
        || {
            let served = served.to_owned();
            async move { send(served).await.ok() }
        },
    )
    .await;
    let results = futures::future::join_all(refused.iter().map(|s| send((*s).to_owned()))).await;
    for (subject, result) in refused.iter().zip(results) {
        match result {
            Err(DeliveryError::Refused(s)) => assert_eq!(s, *subject),
            other => panic!("{file}: publishing to {subject} was not refused: {other:?}"),
        }
    }
}

#[tokio::test]
async fn the_docker_configs_delivery_user_serves_subscribers_but_not_reserved_namespaces() {
    for file in [
        "nats/docker.conf",
        "nats/cluster/docker.conf",
        "nats/cluster/n1.conf",
    ] {
        check(
            file,
            ("herald", "change-me-herald"),
            "alerts.orders",
            &RESERVED,
        )
        .await;
    }
}

#[tokio::test]
async fn the_multi_user_configs_delivery_user_publishes_only_to_project_subjects() {
    let mut refused = RESERVED.to_vec();
    refused.extend(["alerts.orders", "acmecorp.x"]);
    check(
        "nats/multi-user.conf",
        ("acme", "change-me-acme"),
        "acme.orders",
        &refused,
    )
    .await;
}
