//! Nothing a native NATS publisher sends stalls or crashes delivery: what cannot be
//! delivered as it is dead-letters once with a clear `last_error` (real nats-server, real
//! receivers).

use std::{
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use async_nats::jetstream;
use futures::StreamExt;
use proptest::{prelude::*, test_runner::TestRunner};
use serde_json::{json, Value};

use crate::{
    helpers::{eventually, TestApp},
    peers::{spawn_delivery_app, spawn_delivery_app_with, Receiver, SmtpServer},
};

const WAIT: Duration = Duration::from_secs(20);
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// Dead letters recorded for the subscription (read from the dead-letter stream itself, so
/// no paging).
async fn dead_letter_count(js: &jetstream::Context, subscription: &str) -> usize {
    let Ok(stream) = js.get_stream("HERALD_DEAD_LETTERS").await else {
        return 0;
    };
    let mut subjects = stream
        .info_with_subjects(format!("herald.dead_letters.*.*.{subscription}"))
        .await
        .unwrap();
    let mut n = 0;
    while let Some(Ok((_, count))) = subjects.next().await {
        n += count;
    }
    n
}

async fn native_publish(
    app: &TestApp,
    js: &jetstream::Context,
    topic: &str,
    headers: async_nats::HeaderMap,
    body: Vec<u8>,
) -> bool {
    let subject = format!("herald.topics.{}.{topic}", app.project);
    match js
        .publish_with_headers(subject, headers, body.into())
        .await
        .unwrap()
        .await
    {
        Ok(ack) => !ack.duplicate,
        // nats-server refuses some header values itself (e.g. an invalid Nats-TTL).
        Err(_) => false,
    }
}

#[tokio::test]
async fn a_control_character_in_nats_msg_id_dead_letters_a_signed_webhook_once_instead_of_panicking(
) {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let sub = app
        .subscribe(
            "t",
            json!({"subscriber": receiver.url, "options": {"secret": SECRET}}),
        )
        .await;
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());

    // Act
    let mut bad = async_nats::HeaderMap::new();
    bad.insert("Nats-Msg-Id", "order\u{1}42");
    assert!(native_publish(&app, &js, "t", bad, br#"{"n":1}"#.to_vec()).await);
    let mut good = async_nats::HeaderMap::new();
    good.insert("Nats-Msg-Id", "order-43");
    assert!(native_publish(&app, &js, "t", good, br#"{"n":2}"#.to_vec()).await);

    // Assert
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].body["message_id"], "order-43");
    let letters = eventually(WAIT, "the dead letter", || async {
        let d = app.dead_letters("t", &sub).await;
        (!d["dead_letters"].as_array().unwrap().is_empty()).then_some(d)
    })
    .await;
    let letter = &letters["dead_letters"][0];
    assert_eq!(letter["attempts"], 1);
    assert_eq!(letter["body"], json!({"n": 1}));
    assert_eq!(letter["message_id"], "order\\u{1}42");
    let error = letter["last_error"].as_str().unwrap();
    assert!(error.contains("control characters"), "{error}");
    app.settled("t", &sub).await;
    assert_eq!(receiver.received().len(), 1);
    assert_eq!(dead_letter_count(&js, &sub).await, 1);
}

#[tokio::test]
async fn a_herald_not_before_centuries_ahead_dead_letters_instead_of_parking_the_message() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());

    // Act
    for (i, value) in ["9223372036854775807", "soon", "99999999999999999999"]
        .into_iter()
        .enumerate()
    {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Nats-Msg-Id", format!("late-{i}").as_str());
        h.insert("Herald-Not-Before", value);
        assert!(native_publish(&app, &js, "t", h, b"{}".to_vec()).await);
    }

    // Assert
    app.settled("t", &sub).await;
    assert_eq!(dead_letter_count(&js, &sub).await, 3);
    let letters = app.dead_letters("t", &sub).await;
    for letter in letters["dead_letters"].as_array().unwrap() {
        let error = letter["last_error"].as_str().unwrap();
        assert!(error.contains("Herald-Not-Before"), "{error}");
    }
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn two_messages_sharing_a_publisher_chosen_id_both_become_dead_letters() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());

    // Act: Herald-Id is not deduplicated by JetStream; both messages are undeliverable.
    for body in [b"1".to_vec(), b"2".to_vec()] {
        let mut h = async_nats::HeaderMap::new();
        h.insert("Herald-Id", "same");
        h.insert("Herald-Not-Before", "tomorrow");
        assert!(native_publish(&app, &js, "t", h, body).await);
    }

    // Assert
    app.settled("t", &sub).await;
    assert_eq!(dead_letter_count(&js, &sub).await, 2);
}

#[tokio::test]
async fn a_body_that_is_not_utf8_dead_letters_for_email_and_still_reaches_webhooks() {
    // Arrange
    let smtp = SmtpServer::start().await;
    let smtp_url = smtp.url();
    let app = spawn_delivery_app_with(move |c| c.smtp_url = Some(smtp_url)).await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let mail_sub = app
        .subscribe("t", json!({"subscriber": "mailto:ops@example.com"}))
        .await;
    let hook_sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());

    // Act
    let h = async_nats::HeaderMap::new();
    assert!(native_publish(&app, &js, "t", h, vec![0xff, 0xfe, b'a']).await);

    // Assert
    app.settled("t", &mail_sub).await;
    app.settled("t", &hook_sub).await;
    assert_eq!(receiver.received().len(), 1);
    assert!(smtp.mails().is_empty());
    let letters = app.dead_letters("t", &mail_sub).await;
    let error = letters["dead_letters"][0]["last_error"].as_str().unwrap();
    assert!(error.contains("not UTF-8"), "{error}");
}

#[tokio::test]
async fn a_string_post_data_is_zaqars_form_with_the_message_in_place_of_the_placeholder() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    app.subscribe(
        "t",
        json!({"subscriber": receiver.url,
               "options": {"post_data": "{\"event\": \"$zaqar_message$\", \"source\": \"herald\"}"}}),
    )
    .await;

    // Act
    app.post_messages("t", json!({"messages": [{"body": {"n": 7}}]}))
        .await;

    // Assert
    let got = receiver.wait_for(1, WAIT).await;
    assert_eq!(got[0].body["source"], "herald");
    assert_eq!(got[0].body["event"]["body"], json!({"n": 7}));
    assert_eq!(got[0].body["event"]["Message_Type"], "Notification");
}

/// One native publish: what a client can send (async-nats refuses CR and LF in values).
#[derive(Debug, Clone)]
struct Publish {
    msg_id: Option<String>,
    /// `Herald-Id` (preferred over `Nats-Msg-Id`, not deduplicated by JetStream); a unique
    /// prefix is added, since two messages sharing one id are one message to Herald.
    herald_id: Option<String>,
    /// A literal value, or an offset in ms from now (kept short so cases stay fast).
    not_before: Option<Result<String, i64>>,
    ttl: Option<String>,
    body: Vec<u8>,
}

fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[^\r\n]{0,24}",
        "[ -~]{0,12}",
        "[\u{0}-\u{1f}\u{7f}a-z]{1,6}",
        "[a-z0-9-]{1,1100}",
    ]
    .prop_map(|s| s.replace(['\r', '\n'], ""))
}

fn publish() -> impl Strategy<Value = Publish> {
    let not_before = prop_oneof![
        any::<i64>().prop_map(|v| Ok(v.to_string())),
        header_text().prop_map(Ok),
        (-5_000i64..400).prop_map(Err),
    ];
    let ttl = prop_oneof![
        (60u64..10_000_000).prop_map(|s| format!("{s}s")),
        (60u64..10_000_000).prop_map(|s| s.to_string()),
        "[0-9]{19,22}s?",
        Just("never".to_owned()),
        "[a-z%]{1,6}",
    ];
    let body = prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        "[^\u{0}]{0,40}".prop_map(String::into_bytes),
        Just(br#"{"k": [1, "\u0000", null]}"#.to_vec()),
    ];
    (
        proptest::option::of(header_text()),
        proptest::option::weighted(0.3, header_text()),
        proptest::option::of(not_before),
        proptest::option::of(ttl),
        body,
    )
        .prop_map(|(msg_id, herald_id, not_before, ttl, body)| Publish {
            msg_id,
            herald_id,
            not_before,
            ttl,
            body,
        })
}

#[test]
fn arbitrary_native_publishes_end_delivered_or_dead_lettered_on_every_subscription() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Arrange: one app for every case, a signed webhook, a NATS and an email subscriber.
    let (app, receiver, smtp, js, subs, nats_seen) = rt.block_on(async {
        let smtp = SmtpServer::start().await;
        let smtp_url = smtp.url();
        let app = spawn_delivery_app_with(move |c| c.smtp_url = Some(smtp_url)).await;
        let receiver = Receiver::start().await;
        let client = async_nats::connect(app.nats.url()).await.unwrap();
        let mut inbox = client.subscribe("sink.prop").await.unwrap();
        client.flush().await.unwrap();
        let nats_seen = Arc::new(AtomicUsize::new(0));
        let (seen, responder) = (nats_seen.clone(), client.clone());
        tokio::spawn(async move {
            while let Some(m) = inbox.next().await {
                seen.fetch_add(1, Ordering::SeqCst);
                if let Some(reply) = m.reply {
                    let _ = responder.publish(reply, "ok".into()).await;
                }
            }
        });
        app.put_topic("prop", None).await;
        let hook = app
            .subscribe(
                "prop",
                json!({"subscriber": receiver.url, "options": {"secret": SECRET}}),
            )
            .await;
        let nats = app
            .subscribe("prop", json!({"subscriber": "nats:sink.prop"}))
            .await;
        let mail = app
            .subscribe("prop", json!({"subscriber": "mailto:ops@example.com"}))
            .await;
        let js = jetstream::new(client);
        (app, receiver, smtp, js, [hook, nats, mail], nats_seen)
    });
    let published = AtomicUsize::new(0);
    let sequence = AtomicUsize::new(0);
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 32,
        failure_persistence: None,
        // Counts are cumulative over cases: once off, shrinking cannot help.
        max_shrink_iters: 0,
        ..ProptestConfig::default()
    });

    // Act and assert, per case: a few publishes, then every subscription settles with
    // deliveries + dead letters == accepted publishes.
    let result = runner.run(&proptest::collection::vec(publish(), 1..5), |batch| {
        rt.block_on(async {
            for p in batch {
                let mut h = async_nats::HeaderMap::new();
                if let Some(id) = &p.msg_id {
                    h.insert("Nats-Msg-Id", id.as_str());
                }
                if let Some(id) = &p.herald_id {
                    let n = sequence.fetch_add(1, Ordering::SeqCst);
                    h.insert("Herald-Id", format!("{n:06}-{id}").as_str());
                }
                match &p.not_before {
                    Some(Ok(v)) => h.insert("Herald-Not-Before", v.as_str()),
                    Some(Err(offset)) => {
                        let at = chrono::Utc::now().timestamp_millis() + offset;
                        h.insert("Herald-Not-Before", at.to_string().as_str())
                    }
                    None => {}
                }
                if let Some(ttl) = &p.ttl {
                    h.insert("Nats-TTL", ttl.as_str());
                }
                if native_publish(&app, &js, "prop", h, p.body.clone()).await {
                    published.fetch_add(1, Ordering::SeqCst);
                }
            }
            for sub in &subs {
                app.settled("prop", sub).await;
            }
            let published = published.load(Ordering::SeqCst);
            let delivered = [
                receiver.received().len(),
                nats_seen.load(Ordering::SeqCst),
                smtp.mails().len(),
            ];
            for (sub, delivered) in subs.iter().zip(delivered) {
                let dead = dead_letter_count(&js, sub).await;
                prop_assert_eq!(
                    delivered + dead,
                    published,
                    "subscription {}: {} delivered, {} dead letters",
                    sub,
                    delivered,
                    dead
                );
            }
            Ok::<(), TestCaseError>(())
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
    let dead: Vec<usize> = rt.block_on(async {
        let mut out = Vec::new();
        for sub in &subs {
            out.push(dead_letter_count(&js, sub).await);
        }
        out
    });
    eprintln!(
        "{} messages accepted; dead letters (webhook, nats, email): {dead:?}",
        published.load(Ordering::SeqCst)
    );
    // The engine is still alive: a plain message after all that is delivered.
    rt.block_on(async {
        let before = receiver.received().len();
        app.post_messages("prop", json!({"messages": [{"body": "after"}]}))
            .await;
        receiver.wait_for(before + 1, WAIT).await;
        let last: Vec<Value> = receiver.received().into_iter().map(|r| r.body).collect();
        assert!(last.iter().any(|b| b["body"] == "after"));
    });
}
