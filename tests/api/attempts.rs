//! Attempt log, subscription health, recover and disable (real nats-server, real webhook
//! receivers, Herald in-process; a second Herald process where the test says so).

use std::time::Duration;

use async_nats::jetstream;
use herald::startup::{Application, Roles};
use reqwest::Method;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::{eventually, json_with, TestApp},
    peers::{spawn_delivery_app, spawn_delivery_app_with, Receiver},
};

const WAIT: Duration = Duration::from_secs(20);

/// Publishes one message `{"n": n}` and returns its id.
async fn publish(app: &TestApp, topic: &str, n: u64) -> String {
    let doc = json_with(
        app.post_messages(topic, json!({"messages": [{"body": {"n": n}}]}))
            .await,
        201,
    )
    .await;
    let href = doc["resources"][0].as_str().unwrap();
    href.rsplit('/').next().unwrap().to_owned()
}

async fn attempts_page(app: &TestApp, topic: &str, sub: &str, query: &str) -> Value {
    json_with(
        app.get_path(&format!(
            "/v2/topics/{topic}/subscriptions/{sub}/attempts{query}"
        ))
        .await,
        200,
    )
    .await
}

/// Waits until the subscription's newest attempts hold `n` records (all of them when the
/// page is not full) and returns them, newest first.
async fn wait_attempts(app: &TestApp, topic: &str, sub: &str, n: usize) -> Vec<Value> {
    eventually(WAIT, &format!("{n} attempt records"), || async {
        let page = attempts_page(app, topic, sub, "?limit=100").await;
        let got = page["attempts"].as_array().unwrap().clone();
        (got.len() >= n).then_some(got)
    })
    .await
}

async fn subscription(app: &TestApp, topic: &str, sub: &str) -> Value {
    json_with(
        app.get_path(&format!("/v2/topics/{topic}/subscriptions/{sub}"))
            .await,
        200,
    )
    .await
}

async fn patch_subscription(app: &TestApp, topic: &str, sub: &str, body: Value) -> u16 {
    app.req(
        Method::PATCH,
        &format!("/v2/topics/{topic}/subscriptions/{sub}"),
    )
    .json(&body)
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

/// The subscription's consumer as nats-server sees it.
async fn consumer_info(app: &TestApp, topic: &str, sub: &str) -> jetstream::consumer::Info {
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let stream = herald::store::names::stream_name(
        &herald::domain::ProjectId::parse(&app.project).unwrap(),
        &herald::domain::TopicName::parse(topic).unwrap(),
    );
    let mut consumer = js
        .get_stream(stream)
        .await
        .unwrap()
        .get_consumer::<jetstream::consumer::pull::Config>(sub)
        .await
        .unwrap();
    consumer.info().await.unwrap().clone()
}

#[tokio::test]
async fn every_outcome_is_recorded_with_status_codes_response_excerpts_and_the_message_view_shows_them_all(
) {
    // Arrange
    let app = spawn_delivery_app().await;
    app.put_topic("t", None).await;
    let flaky = Receiver::start().await;
    flaky.answer(500, None, Duration::ZERO);
    flaky.answer_body("not now");
    let rejecting = Receiver::start().await;
    rejecting.answer(400, None, Duration::ZERO);
    rejecting.answer_body("bad payload");
    let picky = Receiver::start().await;
    let gone = Receiver::start().await;
    // One retry after 25 policy seconds (500 ms): time to change the answer.
    let policy = json!({"retries_with_no_delay": 0, "minimum_delay_retries": 3, "minimum_delay": 25,
                        "maximum_delay": 25, "maximum_delay_retries": 0});
    let flaky_sub = app
        .subscribe(
            "t",
            json!({"subscriber": flaky.url, "options": {"_retry_policy": policy}}),
        )
        .await;
    let rejecting_sub = app
        .subscribe("t", json!({"subscriber": rejecting.url}))
        .await;
    let picky_sub = app
        .subscribe(
            "t",
            json!({"subscriber": picky.url, "options": {"filter_policy": {"color": ["blue"]}}}),
        )
        .await;
    let gone_sub = app.subscribe("t", json!({"subscriber": gone.url})).await;
    let res = app
        .req(
            Method::PUT,
            &format!("/v2/topics/t/subscriptions/{gone_sub}/confirm"),
        )
        .json(&json!({"confirmed": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);

    // Act
    let id = publish(&app, "t", 1).await;
    flaky.wait_for(1, WAIT).await;
    flaky.answer(200, None, Duration::ZERO);
    flaky.answer_body("fine");

    // Assert
    let flaky_records = wait_attempts(&app, "t", &flaky_sub, 2).await;
    let (delivered, retry) = (&flaky_records[0], &flaky_records[1]);
    assert_eq!(retry["outcome"], "retry");
    assert_eq!(retry["attempt"], 1);
    assert_eq!(retry["status_code"], 500);
    assert_eq!(retry["response"], "not now");
    assert_eq!(retry["error"], "the subscriber answered HTTP 500");
    assert!(retry["next_attempt_at"].is_string());
    assert_eq!(delivered["outcome"], "delivered");
    assert_eq!(delivered["attempt"], 2);
    assert_eq!(delivered["status_code"], 200);
    assert_eq!(delivered["response"], "fine");
    assert!(delivered.get("error").is_none());
    for r in &flaky_records {
        assert_eq!(r["message_id"], id.as_str());
        assert_eq!(r["subscription_id"], flaky_sub.as_str());
        assert!(r["duration_ms"].is_u64() && r["started_at"].is_string());
    }
    let failed = &wait_attempts(&app, "t", &rejecting_sub, 1).await[0];
    assert_eq!(failed["outcome"], "failed");
    assert_eq!(failed["status_code"], 400);
    assert_eq!(failed["response"], "bad payload");
    let filtered = &wait_attempts(&app, "t", &picky_sub, 1).await[0];
    assert_eq!(filtered["outcome"], "filtered");
    assert!(filtered.get("status_code").is_none());
    let skipped = &wait_attempts(&app, "t", &gone_sub, 1).await[0];
    assert_eq!(skipped["outcome"], "skipped");
    assert!(picky.received().is_empty() && gone.received().is_empty());

    let view = json_with(
        app.get_path(&format!("/v2/topics/t/messages/{id}/attempts"))
            .await,
        200,
    )
    .await;
    let mut outcomes: Vec<&str> = view["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    outcomes.sort_unstable();
    assert_eq!(
        outcomes,
        ["delivered", "failed", "filtered", "retry", "skipped"]
    );
    let other = json_with(
        app.get_path("/v2/topics/t/messages/no-such-message/attempts")
            .await,
        200,
    )
    .await;
    assert_eq!(other["attempts"], json!([]));
}

#[tokio::test]
async fn attempts_page_newest_first_filter_by_outcome_and_since_stay_in_their_project_and_survive_a_restart(
) {
    // Arrange
    let mut app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    let before = chrono::Utc::now();
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(publish(&app, "t", n).await);
    }
    wait_attempts(&app, "t", &sub, 7).await;

    // Act
    let (seen, markers) = all_pages(&app, "t", &sub, 3).await;
    let pages = markers.len() + 1;

    // Assert
    assert_eq!(pages, 3, "3 + 3 + 1");
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(sorted, expected, "every record once: {seen:?}");
    let newest = attempts_page(&app, "t", &sub, "?limit=1").await;
    assert_eq!(newest["attempts"][0]["message_id"], seen[0], "newest first");
    let retries = attempts_page(&app, "t", &sub, "?outcome=retry").await;
    assert_eq!(retries["attempts"], json!([]));
    let delivered = attempts_page(&app, "t", &sub, "?outcome=delivered&limit=100").await;
    assert_eq!(delivered["attempts"].as_array().unwrap().len(), 7);
    let since = before.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let recent = attempts_page(&app, "t", &sub, &format!("?since={since}")).await;
    assert_eq!(recent["attempts"].as_array().unwrap().len(), 7);
    let future = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let none = attempts_page(&app, "t", &sub, &format!("?since={future}")).await;
    assert_eq!(none["attempts"], json!([]));
    for bad in [
        "?limit=101",
        "?limit=0",
        "?outcome=lost",
        "?since=monday",
        "?marker=x",
    ] {
        let res = app
            .get_path(&format!("/v2/topics/t/subscriptions/{sub}/attempts{bad}"))
            .await;
        assert_eq!(res.status(), 400, "{bad}");
    }
    let stranger = app
        .http
        .get(format!(
            "{}/v2/topics/t/subscriptions/{sub}/attempts",
            app.address
        ))
        .header("X-Project-ID", "someone-else")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);

    app.restart().await;
    let after = attempts_page(&app, "t", &sub, "?limit=100").await;
    assert_eq!(after["attempts"].as_array().unwrap().len(), 7);
    let health = subscription(&app, "t", &sub).await;
    assert_eq!(health["status"], "active");
    assert!(health["last_delivered_at"].is_string());
    assert_eq!(health["last_failed_at"], Value::Null);
    assert_eq!(health["pending"], 0);
}

#[tokio::test]
async fn the_attempt_logs_byte_and_age_limits_drop_the_oldest_records() {
    // Arrange
    let app = spawn_delivery_app_with(|c| {
        c.attempt_log_max_bytes = 4096;
        c.attempt_log_max_age = 2;
    })
    .await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;

    // Act
    for n in 0..40 {
        publish(&app, "t", n).await;
    }
    receiver.wait_for(40, WAIT).await;

    // Assert: bytes capped at once, then everything ages out.
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let mut stream = js.get_stream("HERALD_ATTEMPTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.max_bytes, 4096);
    assert_eq!(info.config.max_age, Duration::from_secs(2));
    assert!(info.state.bytes <= 4096, "{} bytes", info.state.bytes);
    let page = attempts_page(&app, "t", &sub, "?limit=100").await;
    let kept = page["attempts"].as_array().unwrap().len();
    assert!(kept > 0 && kept < 40, "{kept} records kept");
    eventually(WAIT, "records to age out", || async {
        let page = attempts_page(&app, "t", &sub, "").await;
        (page["attempts"] == json!([])).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_receiver_answering_two_megabytes_leaves_only_the_configured_excerpt() {
    // Arrange
    let app = spawn_delivery_app_with(|c| c.attempt_log_response_bytes = 100).await;
    let receiver = Receiver::start().await;
    receiver.answer_body(vec![b'x'; 2 << 20]);
    app.put_topic("t", None).await;
    let sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;

    // Act
    publish(&app, "t", 1).await;

    // Assert
    let record = &wait_attempts(&app, "t", &sub, 1).await[0];
    assert_eq!(record["outcome"], "delivered");
    assert_eq!(record["response"], "x".repeat(100));
}

/// Dead letters of `sub`, oldest first.
async fn dead_letters(app: &TestApp, sub: &str) -> Vec<Value> {
    app.dead_letters("t", sub).await["dead_letters"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn recover_delivers_again_the_dead_letters_of_its_window_and_only_those() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    receiver.answer(400, None, Duration::ZERO);
    app.put_topic("t", None).await;
    let sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;
    for n in 1..=3 {
        publish(&app, "t", n).await;
        eventually(WAIT, "the dead letter", || async {
            (dead_letters(&app, &sub).await.len() == n as usize).then_some(())
        })
        .await;
    }
    let letters = dead_letters(&app, &sub).await;
    let failed_at = |i: usize| letters[i]["failed_at"].as_str().unwrap().to_owned();
    receiver.answer(200, None, Duration::ZERO);

    // Act
    let recover = |body: Value| {
        app.req(
            Method::POST,
            &format!("/v2/topics/t/subscriptions/{sub}/recover"),
        )
        .json(&body)
        .send()
    };
    let res = recover(json!({"since": failed_at(1), "until": failed_at(2)}))
        .await
        .unwrap();

    // Assert
    assert_eq!(json_with(res, 202).await, json!({"recovered": 1}));
    let got = receiver.wait_for(4, WAIT).await;
    assert_eq!(got[3].body["body"], json!({"n": 2}));
    let left: Vec<Value> = dead_letters(&app, &sub)
        .await
        .iter()
        .map(|l| l["body"]["n"].clone())
        .collect();
    assert_eq!(left, [json!(1), json!(3)]);
    let newest = &wait_attempts(&app, "t", &sub, 4).await[0];
    assert_eq!(newest["outcome"], "delivered");
    for bad in [
        json!({}),
        json!({"since": "yesterday"}),
        json!({"since": failed_at(0), "until": 5}),
    ] {
        assert_eq!(recover(bad.clone()).await.unwrap().status(), 400, "{bad}");
    }
}

/// A second Herald process (API and workers) on the app's nats-server.
async fn second_process(app: &TestApp) -> CancellationToken {
    let mut config = app.config.clone();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let other = Application::build(config, Roles::default()).await.unwrap();
    let stop = CancellationToken::new();
    let token = stop.clone();
    tokio::spawn(async move { other.run(token).await.unwrap() });
    stop
}

/// Waits until nobody pulls from the subscription's consumer and `pending` messages wait
/// (not yet pulled, or NAKed by the stopped worker and due again).
/// Nothing is pulled for the disabled subscription and `pending` messages wait in its
/// consumer. A pull request sent before the disable is not renewed but may wait on the server
/// (never served: the consumer is paused) until it expires, so this allows the pull engine's
/// request lifetime.
async fn parked(app: &TestApp, sub: &str, pending: u64) {
    let wait = Duration::from_secs(app.config.pull_expires_secs) + WAIT;
    eventually(wait, "no pull requests and messages waiting", || async {
        let info = consumer_info(app, "t", sub).await;
        (info.num_waiting == 0 && info.num_pending + info.num_ack_pending as u64 == pending)
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_subscription_failing_for_disable_after_is_disabled_in_every_process_tells_the_project_and_resumes_when_enabled(
) {
    // Arrange
    // A short request lifetime, so the request left waiting at the disable ends soon.
    let app = spawn_delivery_app_with(|c| {
        c.disable_after = 2;
        c.pull_expires_secs = 10;
    })
    .await;
    let other = second_process(&app).await;
    let receiver = Receiver::start().await;
    receiver.answer(503, None, Duration::ZERO);
    app.put_topic("t", None).await;
    let policy = json!({"retries_with_no_delay": 0, "minimum_delay_retries": 1000,
                        "minimum_delay": 5, "maximum_delay": 5, "maximum_delay_retries": 0});
    let sub = app
        .subscribe(
            "t",
            json!({"subscriber": receiver.url, "options": {"_retry_policy": policy, "secret": "s3cr3t-value-long-enough"}}),
        )
        .await;

    // Act
    publish(&app, "t", 1).await;

    // Assert
    eventually(WAIT, "the subscription to be disabled", || async {
        (subscription(&app, "t", &sub).await["status"] == "disabled").then_some(())
    })
    .await;
    parked(&app, &sub, 1).await;
    let health = subscription(&app, "t", &sub).await;
    assert!(health["last_failed_at"].is_string());
    assert_eq!(health["last_error"], "the subscriber answered HTTP 503");
    assert_eq!(health["last_delivered_at"], Value::Null);
    assert_eq!(health["pending"], 1);
    let notices = eventually(WAIT, "the user message", || async {
        let list = json_with(app.list_user_messages(&app.project, "3.3", "").await, 200).await;
        let found: Vec<Value> = list["messages"]
            .as_array()?
            .iter()
            .filter(|m| m["event_id"] == "HERALD_SUBSCRIPTION_004_005")
            .cloned()
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert_eq!(notices.len(), 1, "one process tells the project");
    assert_eq!(notices[0]["resource_uuid"], sub.as_str());

    let tried = receiver.received().len();
    publish(&app, "t", 2).await;
    parked(&app, &sub, 2).await;
    assert_eq!(
        receiver.received().len(),
        tried,
        "nothing delivered while disabled"
    );

    receiver.answer(200, None, Duration::ZERO);
    assert_eq!(
        patch_subscription(&app, "t", &sub, json!({"options": {"enabled": true}})).await,
        204
    );
    eventually(WAIT, "both messages after re-enabling", || async {
        let got = receiver.received();
        let ok: Vec<_> = got[tried..]
            .iter()
            .map(|r| r.body["body"]["n"].clone())
            .collect();
        (ok.contains(&json!(1)) && ok.contains(&json!(2))).then_some(())
    })
    .await;
    let back = subscription(&app, "t", &sub).await;
    assert_eq!(back["status"], "active");
    assert_eq!(
        back["options"]["secret"], "s3cr3t-value-long-enough",
        "options kept"
    );
    other.cancel();
}

#[tokio::test]
async fn enabled_false_pauses_delivery_by_hand_and_bad_enabled_or_max_rate_values_are_refused() {
    // Arrange
    let app = spawn_delivery_app().await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let sub = app
        .subscribe("t", json!({"subscriber": receiver.url}))
        .await;

    // Act
    assert_eq!(
        patch_subscription(&app, "t", &sub, json!({"options": {"enabled": false}})).await,
        204
    );
    publish(&app, "t", 1).await;

    // Assert
    assert_eq!(subscription(&app, "t", &sub).await["status"], "disabled");
    parked(&app, &sub, 1).await;
    assert!(receiver.received().is_empty());
    assert_eq!(
        patch_subscription(&app, "t", &sub, json!({"options": {"enabled": true}})).await,
        204
    );
    receiver.wait_for(1, WAIT).await;
    for (bad, field) in [
        (json!({"enabled": "yes"}), "enabled"),
        (json!({"max_rate": 0}), "max_rate"),
        (json!({"max_rate": "fast"}), "max_rate"),
    ] {
        let res = app
            .req(Method::PATCH, &format!("/v2/topics/t/subscriptions/{sub}"))
            .json(&json!({"options": bad}))
            .send()
            .await
            .unwrap();
        let doc = json_with(res, 400).await;
        assert!(
            doc["description"].as_str().unwrap().contains(field),
            "{doc}"
        );
    }
    assert_eq!(
        patch_subscription(&app, "t", &sub, json!({"options": {"max_rate": 2.5}})).await,
        204
    );
    assert_eq!(
        subscription(&app, "t", &sub).await["options"]["max_rate"],
        2.5
    );
}

/// Every page of the subscription, following `next` links; `(message ids, next markers)`.
async fn all_pages(app: &TestApp, topic: &str, sub: &str, limit: usize) -> (Vec<String>, Vec<u64>) {
    let (mut ids, mut markers) = (Vec::new(), Vec::new());
    let mut query = format!("?limit={limit}");
    loop {
        let page = attempts_page(app, topic, sub, &query).await;
        for a in page["attempts"].as_array().unwrap() {
            ids.push(a["message_id"].as_str().unwrap().to_owned());
        }
        let Some(next) = page["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["rel"] == "next")
        else {
            return (ids, markers);
        };
        let href = next["href"].as_str().unwrap();
        let marker = href.split("marker=").nth(1).unwrap();
        markers.push(marker.split('&').next().unwrap().parse().unwrap());
        query = format!("?{}", href.split_once('?').unwrap().1);
    }
}

/// The attempt index rings stored for the subscription, as `(complete, sequences newest
/// first)`, one per writing process.
async fn index_rings(app: &TestApp, sub: &str) -> Vec<(bool, Vec<u64>)> {
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    let Ok(stream) = js.get_stream("HERALD_ATTEMPT_INDEX").await else {
        return Vec::new();
    };
    let filter = format!("herald.attempt_index.{}.{sub}.*", app.project);
    let mut subjects = Vec::new();
    {
        let mut info = stream.info_with_subjects(&filter).await.unwrap();
        while let Some((subject, _)) = futures::TryStreamExt::try_next(&mut info).await.unwrap() {
            subjects.push(subject);
        }
    }
    let mut rings = Vec::new();
    for subject in subjects {
        let msg = stream
            .get_last_raw_message_by_subject(&subject)
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&msg.payload).unwrap();
        let mut seqs: Vec<u64> = Vec::new();
        for d in v["d"].as_array().unwrap() {
            let d = d.as_u64().unwrap();
            seqs.push(seqs.last().map_or(d, |prev| prev - d));
        }
        rings.push((v["c"].as_bool().unwrap(), seqs));
    }
    rings
}

#[tokio::test]
async fn a_busy_subscriptions_pages_are_read_through_the_attempt_index_of_every_process_and_miss_no_record(
) {
    // Arrange: two processes deliver a subscription's 300 messages, interleaved in the
    // log with another subscription's; and a third subscription has records no index
    // names (written straight into the stream, as by a Herald before the index existed).
    let app = spawn_delivery_app().await;
    let _other = second_process(&app).await;
    let receiver = Receiver::start().await;
    app.put_topic("t", None).await;
    let busy = app
        .subscribe("t", json!({"subscriber": format!("{}/busy", receiver.url)}))
        .await;
    let _noise = app
        .subscribe(
            "t",
            json!({"subscriber": format!("{}/noise", receiver.url)}),
        )
        .await;
    let mut posted = Vec::new();
    for batch in 0..30 {
        let messages: Vec<Value> = (0..10)
            .map(|i| json!({"body": {"n": batch * 10 + i}}))
            .collect();
        let doc = json_with(
            app.post_messages("t", json!({"messages": messages})).await,
            201,
        )
        .await;
        for href in doc["resources"].as_array().unwrap() {
            posted.push(
                href.as_str()
                    .unwrap()
                    .rsplit('/')
                    .next()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    let rings = eventually(WAIT, "both processes' rings name 300 records", || async {
        let rings = index_rings(&app, &busy).await;
        let named: usize = rings.iter().map(|(_, s)| s.len()).sum();
        let complete = rings.iter().all(|(c, _)| *c);
        // A ring keeps 128: with 300 records at least one process let some go.
        (rings.len() == 2 && (named == 300 || (!complete && named >= 128))).then_some(rings)
    })
    .await;

    // Act
    let (ids, markers) = all_pages(&app, "t", &busy, 100).await;

    // Assert
    assert_eq!(ids.len(), 300, "every record once");
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    posted.sort();
    assert_eq!(sorted, posted);
    assert!(
        markers.windows(2).all(|w| w[0] > w[1]),
        "newest first: {markers:?}"
    );
    // The first page ends where the union of the rings says the 100th newest record is.
    let mut named: Vec<u64> = rings.iter().flat_map(|(_, s)| s.clone()).collect();
    named.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(markers[0], named[99], "page 1 read through the index");

    // Arrange: records the index does not name.
    let legacy = app
        .subscribe(
            "t",
            json!({"subscriber": format!("{}/legacy", receiver.url)}),
        )
        .await;
    let js = jetstream::new(async_nats::connect(app.nats.url()).await.unwrap());
    for n in 0..3 {
        let record = json!({
            "id": format!("old-{n}"), "message_id": format!("old-{n}"),
            "subscription_id": legacy, "attempt": 1,
            "started_at": chrono::Utc::now(), "duration_ms": 1,
            "outcome": "delivered", "status_code": 200
        });
        js.publish(
            format!("herald.attempts.{}.{legacy}", app.project),
            serde_json::to_vec(&record).unwrap().into(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    publish(&app, "t", 1000).await;

    // Act
    let legacy_records = wait_attempts(&app, "t", &legacy, 4).await;

    // Assert
    let ids: Vec<&str> = legacy_records
        .iter()
        .map(|a| a["message_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 4, "{ids:?}");
    assert_eq!(&ids[1..], ["old-2", "old-1", "old-0"], "{ids:?}");
}
