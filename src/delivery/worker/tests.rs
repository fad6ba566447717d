//! The worker's pure steps: notification shape, templates, signatures, message ids,
//! `Herald-Not-Before`, TTLs and attempt numbers (unit and property tests).

use serde_json::json;

use super::*;
use crate::{
    delivery::message::{
        check_message_id, printable_id, MAX_MESSAGE_ID_BYTES, MAX_NOT_BEFORE_AHEAD_MS,
    },
    domain::topic_metadata::MAX_MESSAGE_TTL_SECS,
};

#[test]
fn the_notification_has_zaqars_shape_plus_topic_name_and_message_id() {
    let n: Value = serde_json::from_str(&notification(
        br#"{"a":1}"#,
        60,
        "t.x",
        "id1",
        &Attributes::default(),
    ))
    .unwrap();
    assert_eq!(
        n,
        json!({"body": {"a": 1}, "ttl": 60, "queue_name": "t.x", "Message_Type": "Notification",
               "topic_name": "t.x", "message_id": "id1"})
    );
    let raw: Value = serde_json::from_str(&notification(
        b"not json",
        60,
        "t",
        "i",
        &Attributes::default(),
    ))
    .unwrap();
    assert_eq!(raw["body"], "not json");
}

#[test]
fn post_data_templates_embed_the_message() {
    let t = json!({"wrapped": "$zaqar_message$", "k": "v"});
    let out: Value = serde_json::from_str(&apply_template(&t, r#"{"body":1}"#)).unwrap();
    assert_eq!(out, json!({"wrapped": {"body": 1}, "k": "v"}));
}

#[test]
fn delay_naks_are_not_counted_as_attempts() {
    assert_eq!(attempt_number(1, 1000, None), 1);
    assert_eq!(attempt_number(3, 1000, None), 3);
    assert_eq!(attempt_number(1, 1000, Some(5000)), 1);
    assert_eq!(attempt_number(2, 1000, Some(5000)), 1);
    assert_eq!(attempt_number(4, 1000, Some(5000)), 3);
}

#[test]
fn subscription_policies_override_unless_ignored() {
    let own = json!({"_retry_policy": {"retries_with_no_delay": 1}});
    let own = own.as_object().unwrap();
    let topic = RetryPolicy::default();
    assert_eq!(
        Target::effective_policy(topic.clone(), own).retries_with_no_delay,
        1
    );
    let strict = RetryPolicy {
        ignore_subscription_override: true,
        ..RetryPolicy::default()
    };
    assert_eq!(
        Target::effective_policy(strict, own).retries_with_no_delay,
        3
    );
}

#[test]
fn signatures_follow_standard_webhooks() {
    // Vector from the Standard Webhooks reference implementation.
    let h = signature_headers(
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "msg_p5jXN8AQM9LWM0D4loKWxJek",
        1614265330,
        br#"{"test": 2432232314}"#,
    )
    .unwrap();
    assert_eq!(
        h["webhook-signature"],
        "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    );
}

#[test]
fn a_string_post_data_is_zaqars_form_and_is_sent_as_it_is() {
    let t = json!(r#"{"event": "$zaqar_message$", "note": "raw"}"#);
    let out: Value = serde_json::from_str(&apply_template(&t, r#"{"body":1}"#)).unwrap();
    assert_eq!(out, json!({"event": {"body": 1}, "note": "raw"}));
    assert_eq!(
        apply_template(&json!("no placeholder"), "{}"),
        "no placeholder"
    );
}

#[test]
fn message_ids_with_control_characters_are_undeliverable_not_a_panic() {
    for bad in ["a\u{1}b", "tab\there", "lone\rcr", "nl\nx", "del\u{7f}"] {
        let err = check_message_id(bad).unwrap_err();
        assert!(err.is_permanent(), "{bad:?}");
        assert!(err.to_string().contains("control characters"), "{err}");
        assert!(!printable_id(bad).chars().any(char::is_control));
    }
    check_message_id("order-42").unwrap();
    check_message_id("заказ-42").unwrap();
    assert!(check_message_id(&"x".repeat(MAX_MESSAGE_ID_BYTES + 1)).is_err());
    let (long_a, long_b) = ("x".repeat(2000) + "a", "x".repeat(2000) + "b");
    assert_ne!(printable_id(&long_a), printable_id(&long_b));
    assert!(printable_id(&long_a).len() <= MAX_MESSAGE_ID_BYTES);
    assert_eq!(printable_id("a\u{1}b"), "a\\u{1}b");
    assert!(signature_headers("s", "a\u{1}b", 1, b"{}").is_err());
}

#[test]
fn not_before_beyond_the_longest_delay_or_unparseable_is_undeliverable() {
    let published = 1_700_000_000_000;
    assert_eq!(not_before(None, published).unwrap(), None);
    assert_eq!(
        not_before(Some("1700000005000"), published).unwrap(),
        Some(1_700_000_005_000)
    );
    for bad in [
        "9223372036854775807",
        "abc",
        "",
        "1e9",
        "99999999999999999999",
    ] {
        let err = not_before(Some(bad), published).unwrap_err();
        assert!(err.is_permanent(), "{bad:?}");
    }
    // Far in the past is simply due.
    let past = not_before(Some("-9223372036854775808"), published).unwrap();
    assert_eq!(remaining_delay(past.unwrap(), published), Duration::ZERO);
    assert_eq!(
        remaining_delay(i64::MAX, i64::MIN),
        Duration::from_millis(960_000)
    );
}

#[test]
fn nats_ttl_values_are_parsed_and_bounded() {
    assert_eq!(parse_ttl("3600s"), Some(3600));
    assert_eq!(parse_ttl("120"), Some(120));
    assert_eq!(parse_ttl("2h"), Some(7200));
    assert_eq!(parse_ttl("never"), None);
    assert_eq!(
        parse_ttl("18446744073709551615h"),
        Some(MAX_MESSAGE_TTL_SECS)
    );
    assert_eq!(parse_ttl(""), None);
}

mod props {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn signature_headers_never_panic_and_sign_every_acceptable_id(
            secret in ".*", id in ".*", ts in any::<i64>(), body in proptest::collection::vec(any::<u8>(), 0..256)
        ) {
            match signature_headers(&secret, &id, ts, &body) {
                Ok(h) => {
                    prop_assert_eq!(h["webhook-id"].as_bytes(), id.as_bytes());
                    prop_assert!(h["webhook-signature"].to_str().unwrap().starts_with("v1,"));
                }
                Err(e) => prop_assert!(e.is_permanent()),
            }
            if check_message_id(&id).is_ok() {
                prop_assert!(signature_headers(&secret, &id, ts, &body).is_ok());
                prop_assert!(id.parse::<async_nats::HeaderValue>().is_ok());
            }
            prop_assert!(check_message_id(&printable_id(&id)).is_ok());
        }

        #[test]
        fn notifications_are_always_json_with_the_given_fields(
            body in proptest::collection::vec(any::<u8>(), 0..256), ttl in any::<u64>(), topic in ".*", id in ".*"
        ) {
            let n: Value = serde_json::from_str(&notification(&body, ttl, &topic, &id, &Attributes::default())).unwrap();
            prop_assert_eq!(n["ttl"].as_u64(), Some(ttl));
            prop_assert_eq!(n["topic_name"].as_str(), Some(topic.as_str()));
            prop_assert_eq!(n["message_id"].as_str(), Some(id.as_str()));
            let templated = apply_template(&json!({"m": "$zaqar_message$"}), &n.to_string());
            prop_assert!(serde_json::from_str::<Value>(&templated).is_ok());
        }

        #[test]
        fn not_before_never_overflows_and_never_parks_beyond_the_longest_delay(
            value in prop_oneof![any::<i64>().prop_map(|v| v.to_string()), ".*"],
            published in any::<i64>(), now in any::<i64>()
        ) {
            match not_before(Some(&value), published) {
                Ok(Some(nb)) => {
                    prop_assert!(nb.saturating_sub(published) <= MAX_NOT_BEFORE_AHEAD_MS);
                    prop_assert!(remaining_delay(nb, now) <= Duration::from_millis(MAX_NOT_BEFORE_AHEAD_MS as u64));
                    let _ = attempt_number(now, published, Some(nb));
                }
                Ok(None) => prop_assert!(false, "a present header is never absent"),
                Err(e) => prop_assert!(e.is_permanent()),
            }
        }

        #[test]
        fn ttl_and_attempt_arithmetic_never_panic(value in ".*", delivered in any::<i64>(), published in any::<i64>()) {
            if let Some(ttl) = parse_ttl(&value) {
                prop_assert!(ttl <= MAX_MESSAGE_TTL_SECS);
            }
            prop_assert!(attempt_number(delivered, published, None) >= 1);
        }
    }
}
