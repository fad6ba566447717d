//! SMS delivery through a real Kannel gateway (bearerbox + smsbox, loopback SMSC): the
//! number and the text that reach the gateway's other side, GSM-7 and UCS-2, concatenated
//! texts, the part limit, refused credentials and numbers, and an unreachable gateway.

use std::time::Duration;

use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    helpers::{eventually, free_port, json_with, TestApp},
    kannel::{Kannel, Mo, BLACKLISTED_PREFIX, KANNEL_PASSWORD, KANNEL_USER},
    peers::{spawn_delivery_app, spawn_delivery_app_with, UserMessages},
};

const WAIT: Duration = Duration::from_secs(20);
const NUMBER: &str = "+15551234567";
const SENDER: &str = "Herald";
const MAX_PARTS: usize = 3;

/// Herald pointed at `kannel` with `password`.
async fn spawn_sms_app(kannel: &Kannel, password: &str) -> TestApp {
    let (url, password) = (kannel.sendsms_url(), password.to_owned());
    spawn_delivery_app_with(move |c| {
        c.sms_gateway_url = Some(url);
        c.sms_gateway_user = Some(KANNEL_USER.into());
        c.sms_gateway_password = Some(password);
        c.sms_from = Some(SENDER.into());
        c.sms_max_parts = MAX_PARTS;
    })
    .await
}

/// A topic that allows SMS subscribers (they are not allowed by default).
async fn sms_topic(app: &TestApp, name: &str) {
    let res = app
        .put_topic(name, Some(json!({"_allowed_subscribe_protocols": ["sms"]})))
        .await;
    assert_eq!(res.status(), 201);
}

async fn publish(app: &TestApp, topic: &str, bodies: &[Value]) {
    let messages: Vec<Value> = bodies.iter().map(|b| json!({"body": b})).collect();
    json_with(
        app.post_messages(topic, json!({ "messages": messages }))
            .await,
        201,
    )
    .await;
}

async fn first_dead_letter(app: &TestApp, topic: &str, id: &str) -> Value {
    eventually(WAIT, "a dead letter", || async {
        let d = app.dead_letters(topic, id).await;
        d["dead_letters"].as_array().unwrap().first().cloned()
    })
    .await
}

fn mo(text: &str, coding: &str) -> Mo {
    Mo {
        from: SENDER.into(),
        to: NUMBER.into(),
        text: text.into(),
        coding: coding.into(),
    }
}

#[tokio::test]
async fn an_sms_subscriber_receives_the_template_text_at_its_number_through_kannel() {
    // Arrange
    let kannel = Kannel::start(MAX_PARTS).await;
    let app = spawn_sms_app(&kannel, KANNEL_PASSWORD).await;
    sms_topic(&app, "alerts").await;
    app.subscribe(
        "alerts",
        json!({"subscriber": format!("sms:{NUMBER}"), "ttl": 3600,
               "options": {"sms_template": "Herald: $zaqar_message$ (reply STOP)"}}),
    )
    .await;

    // Act
    publish(&app, "alerts", &[json!("Disk {sda} at 95% - 5€ [ok]")]).await;

    // Assert
    let got = kannel.wait_for(1, WAIT).await;
    assert_eq!(
        got,
        vec![mo("Herald: Disk {sda} at 95% - 5€ [ok] (reply STOP)", "0")]
    );
}

#[tokio::test]
async fn ucs2_and_concatenated_texts_arrive_intact() {
    // Arrange
    let kannel = Kannel::start(MAX_PARTS).await;
    let app = spawn_sms_app(&kannel, KANNEL_PASSWORD).await;
    sms_topic(&app, "t").await;
    app.subscribe("t", json!({"subscriber": format!("sms:{NUMBER}")}))
        .await;
    let cyrillic = "Привет, мир 👋 — сервер перезапущен";
    // Two UCS-2 parts (100 units), and three GSM-7 parts with extension characters.
    let long_ucs2 = format!("{}👋", "я".repeat(98));
    let long_gsm = format!("{}€{}", "a".repeat(300), "{end}");
    let object = json!({"order": 42, "state": "shipped"});
    // GSM-7's basic set beyond ASCII (Greek capitals included) stays GSM-7.
    let gsm_basic = "Grüße ΔΦΓΛΩΠΨΣΘΞ ¿¡§£¥¤ ØøÅåÆæßÉÇ ñÑàèéìòù @$_";

    // Act
    publish(
        &app,
        "t",
        &[
            json!(cyrillic),
            json!(long_ucs2),
            json!(long_gsm),
            object.clone(),
            json!(gsm_basic),
        ],
    )
    .await;

    // Assert
    let mut got = kannel.wait_for(5, WAIT).await;
    got.sort_by_key(|m| m.text.chars().count());
    let mut want = vec![
        mo(cyrillic, "2"),
        mo(&long_ucs2, "2"),
        mo(&long_gsm, "0"),
        mo(r#"{"order":42,"state":"shipped"}"#, "0"),
        mo(gsm_basic, "0"),
    ];
    want.sort_by_key(|m| m.text.chars().count());
    assert_eq!(got, want, "Kannel logs:\n{}", kannel.logs());
}

#[tokio::test]
async fn a_text_over_sms_max_parts_is_dead_lettered_unsent_with_a_clear_error_and_a_user_message() {
    // Arrange
    let kannel = Kannel::start(MAX_PARTS).await;
    let app = spawn_sms_app(&kannel, KANNEL_PASSWORD).await;
    let users = UserMessages::start(&app).await;
    sms_topic(&app, "t").await;
    // Ordered: the short message is handled only after the long one was settled.
    let id = app
        .subscribe(
            "t",
            json!({"subscriber": format!("sms:{NUMBER}"), "options": {"ordered": true}}),
        )
        .await;
    let too_long = "a".repeat(153 * MAX_PARTS + 1);

    // Act
    publish(&app, "t", &[json!(too_long), json!("short")]).await;

    // Assert
    let letter = first_dead_letter(&app, "t", &id).await;
    assert_eq!(letter["attempts"], 1, "permanent: no retry");
    assert_eq!(letter["body"], json!(too_long));
    assert_eq!(
        letter["last_error"],
        "the SMS text needs 4 parts (460 GSM-7 units), more than sms_max_parts = 3; not sent"
    );
    let got = kannel.wait_for(1, WAIT).await;
    assert_eq!(
        got,
        vec![mo("short", "0")],
        "the long text never reached Kannel"
    );
    let seen = eventually(WAIT, "the user message request", || async {
        users.seen().first().cloned()
    })
    .await;
    assert_eq!(
        seen,
        json!({"project_id": app.project, "event_id": "HERALD_SUBSCRIPTION_001_001",
               "resource_type": "SUBSCRIPTION", "resource_uuid": id})
    );
}

#[tokio::test]
async fn wrong_gateway_credentials_are_permanent_and_never_leak_the_password() {
    // Arrange
    let kannel = Kannel::start(MAX_PARTS).await;
    let wrong = "not-the-kannel-password";
    let app = spawn_sms_app(&kannel, wrong).await;
    let users = UserMessages::start(&app).await;
    sms_topic(&app, "t").await;
    let id = app
        .subscribe("t", json!({"subscriber": format!("sms:{NUMBER}")}))
        .await;

    // Act
    publish(&app, "t", &[json!("hello")]).await;

    // Assert
    let letter = first_dead_letter(&app, "t", &id).await;
    assert_eq!(letter["attempts"], 1, "403 is permanent");
    let error = letter["last_error"].as_str().unwrap();
    assert_eq!(
        error,
        "SMS gateway: HTTP 403: Authorization failed for sendsms"
    );
    assert!(!error.contains(wrong));
    eventually(WAIT, "the user message request", || async {
        users.seen().first().cloned()
    })
    .await;
    assert!(kannel.mo.received().is_empty());
}

#[tokio::test]
async fn a_number_the_gateway_refuses_is_a_permanent_failure() {
    // Arrange
    let kannel = Kannel::start(MAX_PARTS).await;
    let app = spawn_sms_app(&kannel, KANNEL_PASSWORD).await;
    sms_topic(&app, "t").await;
    let refused = format!("sms:{BLACKLISTED_PREFIX}12345678");
    let id = app.subscribe("t", json!({"subscriber": refused})).await;

    // Act
    publish(&app, "t", &[json!("hello")]).await;

    // Assert
    let letter = first_dead_letter(&app, "t", &id).await;
    assert_eq!(letter["attempts"], 1);
    let error = letter["last_error"].as_str().unwrap();
    assert_eq!(
        error,
        "SMS gateway: HTTP 400: Number(s) has/have been denied by white- and/or black-lists."
    );
}

#[tokio::test]
async fn an_unreachable_gateway_is_retried_on_the_policy_schedule_then_dead_lettered() {
    // Arrange: nothing listens on the gateway port.
    let port = free_port();
    let app = spawn_delivery_app_with(|c| {
        c.sms_gateway_url = Some(format!("http://127.0.0.1:{port}/cgi-bin/sendsms"));
        c.sms_gateway_user = Some(KANNEL_USER.into());
        c.sms_gateway_password = Some(KANNEL_PASSWORD.into());
    })
    .await;
    let users = UserMessages::start(&app).await;
    sms_topic(&app, "t").await;
    let policy = json!({"retries_with_no_delay": 1, "minimum_delay_retries": 1, "minimum_delay": 5,
                        "maximum_delay": 10, "maximum_delay_retries": 1});
    let id = app
        .subscribe(
            "t",
            json!({"subscriber": format!("sms:{NUMBER}"), "options": {"_retry_policy": policy}}),
        )
        .await;

    // Act
    publish(&app, "t", &[json!("hello")]).await;

    // Assert: 1 + 1 immediate + 1 at minimum + 1 backoff + 1 at maximum = 5 attempts.
    let letter = first_dead_letter(&app, "t", &id).await;
    assert_eq!(letter["attempts"], 5);
    let error = letter["last_error"].as_str().unwrap();
    assert!(error.starts_with("SMS gateway: cannot reach it"), "{error}");
    assert!(!error.contains(KANNEL_PASSWORD), "{error}");
    let seen = eventually(WAIT, "the user message request", || async {
        users.seen().first().cloned()
    })
    .await;
    assert_eq!(seen["event_id"], "HERALD_SUBSCRIPTION_001_002");
}

#[tokio::test]
async fn without_a_gateway_sms_deliveries_are_dead_lettered_naming_the_setting() {
    // Arrange
    let app = spawn_delivery_app().await;
    sms_topic(&app, "t").await;
    let id = app
        .subscribe("t", json!({"subscriber": format!("sms:{NUMBER}")}))
        .await;

    // Act
    publish(&app, "t", &[json!("hello")]).await;

    // Assert
    let letter = first_dead_letter(&app, "t", &id).await;
    assert_eq!(letter["attempts"], 1);
    assert_eq!(
        letter["last_error"],
        "no SMS gateway configured (HERALD_SMS_GATEWAY_URL)"
    );
}

#[tokio::test]
async fn sms_subscribers_need_a_topic_that_allows_them_and_an_e164_number() {
    // Arrange
    let app = spawn_delivery_app().await;
    app.put_topic("default", None).await;
    sms_topic(&app, "sms").await;

    // Act
    let by_default = app
        .post_subscription("default", json!({"subscriber": format!("sms:{NUMBER}")}))
        .await;
    let bad_number = app
        .post_subscription("sms", json!({"subscriber": "sms:+0555123"}))
        .await;
    let topic = json_with(app.get_topic("default").await, 200).await;

    // Assert
    let body = json_with(by_default, 403).await;
    assert_eq!(
        body["description"],
        "The protocol sms is not allowed by this topic."
    );
    let body = json_with(bad_number, 400).await;
    assert!(
        body["description"]
            .as_str()
            .unwrap()
            .starts_with("Invalid subscriber \"sms:+0555123\""),
        "{body}"
    );
    assert_eq!(
        topic["_allowed_subscribe_protocols"],
        json!(["email", "webhook", "trust", "nats"])
    );
    let listed = app
        .req(Method::GET, "/v2/topics/sms/subscriptions")
        .send()
        .await
        .unwrap();
    assert_eq!(
        json_with(listed, 200).await["subscriptions"],
        json!([]),
        "nothing was created"
    );
}
