//! `options.max_rate` holds for a subscription as a whole when two Herald processes share
//! its consumer, and a limited subscription never slows another on the same topic.

use std::time::{Duration, Instant};

use herald::startup::{Application, Roles};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::{
    helpers::json_with,
    peers::{spawn_delivery_app, Receiver},
};

const RATE: f64 = 20.0;
const MESSAGES: usize = 200;

#[tokio::test]
async fn max_rate_holds_across_two_herald_processes_and_never_slows_another_subscription() {
    // Arrange: a second Herald (workers only) on the same NATS, a limited and an
    // unlimited subscription on one topic.
    let app = spawn_delivery_app().await;
    let second = Application::build(
        app.config.clone(),
        Roles {
            api: false,
            workers: true,
        },
    )
    .await
    .expect("second herald starts");
    let stop_second = CancellationToken::new();
    let second = tokio::spawn(second.run(stop_second.clone()));
    let limited = Receiver::start().await;
    let free = Receiver::start().await;
    app.put_topic("paced", None).await;
    app.subscribe(
        "paced",
        json!({"subscriber": limited.url, "ttl": 3600, "options": {"max_rate": RATE}}),
    )
    .await;
    app.subscribe("paced", json!({"subscriber": free.url, "ttl": 3600}))
        .await;

    // Act
    let start = Instant::now();
    for chunk in 0..MESSAGES / 100 {
        let messages: Vec<_> = (0..100)
            .map(|i| json!({"body": {"n": chunk * 100 + i}}))
            .collect();
        json_with(
            app.post_messages("paced", json!({"messages": messages}))
                .await,
            201,
        )
        .await;
    }
    free.wait_for(MESSAGES, Duration::from_secs(20)).await;
    let limited_when_free_done = limited.received().len();
    let got = limited.wait_for(MESSAGES, Duration::from_secs(40)).await;

    // Assert: a token bucket of RATE per second with one second of burst allows at most
    // RATE + RATE × t messages in any interval t, whichever process delivers them.
    assert!(
        limited_when_free_done < MESSAGES / 2,
        "the unlimited subscription got all {MESSAGES} while the limited one had \
         {limited_when_free_done}: a limited subscription does not hold the others back"
    );
    let times: Vec<f64> = got
        .iter()
        .map(|r| r.at.saturating_duration_since(start).as_secs_f64())
        .collect();
    for (i, t) in times.iter().enumerate() {
        for (j, u) in times.iter().enumerate().skip(i + 1) {
            let allowed = RATE + RATE * (u - t) + 2.0;
            let count = (j - i + 1) as f64;
            assert!(
                count <= allowed,
                "{count} deliveries within {:.2} s (messages {i}..={j}); max_rate {RATE}/s \
                 allows {allowed}",
                u - t
            );
        }
    }
    let span = times.last().unwrap() - times.first().unwrap();
    assert!(
        span < (MESSAGES as f64 / RATE) * 1.5,
        "{MESSAGES} messages at {RATE}/s took {span:.1} s: the rate is a ceiling, not a \
         slowdown"
    );
    stop_second.cancel();
    let _ = second.await;
}
