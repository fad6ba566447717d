//! Table-driven tests of every operator. The examples are those of the AWS SNS developer
//! guide's filter-policy pages ("Amazon SNS example filter policies", "Attribute string
//! value matching", "Numeric value matching", "Key matching", "AND/OR logic", "Filter
//! policy constraints"), with its example message:
//! attributes `customer_interests` = ["soccer", "rugby", "hockey"], `store` =
//! "example_corp", `event` = "order_placed", `price_usd` = 210.75.

use serde_json::{json, Value};

use super::*;

fn sns_attributes() -> Attributes {
    Attributes::parse(&json!({
        "customer_interests": ["soccer", "rugby", "hockey"],
        "store": "example_corp",
        "event": "order_placed",
        "price_usd": 210.75,
        "source_ip": "10.0.0.255",
    }))
    .unwrap()
}

const SNS_BODY: &str = r#"{"store": "example_corp", "event": "order_placed",
  "customer_interests": ["soccer", "rugby", "hockey"], "price_usd": 210.75,
  "delivery": {"address": {"zip": "98101", "city": "Seattle"}},
  "items": [{"sku": "a-1", "qty": 2}, {"sku": "b-7", "qty": 1}], "coupon": null}"#;

fn attrs_match(policy: Value) -> bool {
    FilterPolicy::compile(&policy, Scope::MessageAttributes)
        .unwrap_or_else(|e| panic!("{policy}: {e}"))
        .matches(&sns_attributes(), b"{}")
}

fn body_match(policy: Value) -> bool {
    FilterPolicy::compile(&policy, Scope::MessageBody)
        .unwrap_or_else(|e| panic!("{policy}: {e}"))
        .matches(&Attributes::default(), SNS_BODY.as_bytes())
}

#[test]
fn every_operator_matches_and_rejects_like_sns_on_message_attributes() {
    let table: Vec<(Value, bool)> = vec![
        // The guide's complete example policy: AND across keys, OR within a list.
        (
            json!({"store": ["example_corp"], "event": [{"anything-but": "order_cancelled"}],
                   "customer_interests": ["rugby", "football", "baseball"],
                   "price_usd": [{"numeric": [">=", 100]}]}),
            true,
        ),
        (
            json!({"store": ["example_corp"], "event": ["order_cancelled"]}),
            false,
        ),
        // Exact string matching; a list attribute matches when any element does.
        (json!({"customer_interests": ["rugby", "tennis"]}), true),
        (json!({"customer_interests": ["tennis", "baseball"]}), false),
        (json!({"store": ["Example_Corp"]}), false),
        // anything-but: a value, a list, a prefix, a suffix, ignoring case.
        (
            json!({"event": [{"anything-but": "order_cancelled"}]}),
            true,
        ),
        (
            json!({"event": [{"anything-but": ["order_placed", "order_cancelled"]}]}),
            false,
        ),
        (
            json!({"event": [{"anything-but": {"prefix": "order-"}}]}),
            true,
        ),
        (
            json!({"event": [{"anything-but": {"prefix": "order_"}}]}),
            false,
        ),
        (
            json!({"event": [{"anything-but": {"suffix": "_placed"}}]}),
            false,
        ),
        (
            json!({"event": [{"anything-but": {"equals-ignore-case": ["ORDER_PLACED"]}}]}),
            false,
        ),
        (json!({"price_usd": [{"anything-but": [100, 500]}]}), true),
        (json!({"price_usd": [{"anything-but": 210.75}]}), false),
        // anything-but needs the key to be there.
        (json!({"missing": [{"anything-but": "x"}]}), false),
        // prefix, suffix, equals-ignore-case.
        (json!({"customer_interests": [{"prefix": "hock"}]}), true),
        (json!({"customer_interests": [{"prefix": "bas"}]}), false),
        (json!({"customer_interests": [{"suffix": "by"}]}), true),
        (json!({"customer_interests": [{"suffix": "ball"}]}), false),
        (
            json!({"store": [{"equals-ignore-case": "EXAMPLE_CORP"}]}),
            true,
        ),
        (
            json!({"store": [{"equals-ignore-case": "other_corp"}]}),
            false,
        ),
        // Numeric: equality, comparisons, ranges; a number never matches a string.
        (json!({"price_usd": [{"numeric": ["=", 210.75]}]}), true),
        (json!({"price_usd": [{"numeric": ["=", 301.5]}]}), false),
        (
            json!({"price_usd": [{"numeric": [">", 0, "<=", 150]}]}),
            false,
        ),
        (
            json!({"price_usd": [{"numeric": [">", 200, "<", 211]}]}),
            true,
        ),
        (json!({"price_usd": [{"numeric": ["<", 210.75]}]}), false),
        (json!({"price_usd": [{"numeric": ["<=", 210.75]}]}), true),
        (json!({"price_usd": [210.75]}), true),
        (json!({"price_usd": ["210.75"]}), false),
        (json!({"store": [{"numeric": [">", 0]}]}), false),
        // Key matching.
        (json!({"store": [{"exists": true}]}), true),
        (json!({"store": [{"exists": false}]}), false),
        (json!({"coupon": [{"exists": false}]}), true),
        (json!({"coupon": [{"exists": true}]}), false),
        // IP address matching.
        (json!({"source_ip": [{"cidr": "10.0.0.0/24"}]}), true),
        (json!({"source_ip": [{"cidr": "10.0.1.0/24"}]}), false),
        // $or: the guide's example shape.
        (
            json!({"store": ["example_corp"], "$or": [{"event": ["order_cancelled"]}, {"price_usd": [{"numeric": [">", 200]}]}]}),
            true,
        ),
        (
            json!({"store": ["example_corp"], "$or": [{"event": ["order_cancelled"]}, {"price_usd": [{"numeric": ["<", 200]}]}]}),
            false,
        ),
        // OR inside one list across operators.
        (
            json!({"event": ["order_cancelled", {"prefix": "order_p"}]}),
            true,
        ),
    ];
    for (policy, want) in table {
        assert_eq!(attrs_match(policy.clone()), want, "{policy}");
    }
}

#[test]
fn body_scope_matches_nested_keys_lists_of_objects_and_null() {
    let table: Vec<(Value, bool)> = vec![
        (
            json!({"store": ["example_corp"], "price_usd": [{"numeric": [">", 100]}]}),
            true,
        ),
        (
            json!({"delivery": {"address": {"city": ["Seattle"]}}}),
            true,
        ),
        (
            json!({"delivery": {"address": {"city": ["Portland"]}}}),
            false,
        ),
        (
            json!({"delivery": {"address": {"zip": [{"prefix": "981"}]}}}),
            true,
        ),
        (json!({"items": {"sku": [{"prefix": "b-"}]}}), true),
        (json!({"items": {"qty": [{"numeric": [">", 5]}]}}), false),
        (json!({"coupon": [null]}), true),
        (json!({"coupon": [{"exists": true}]}), true),
        (json!({"delivery": {"phone": [{"exists": false}]}}), true),
        (
            json!({"delivery": {"$or": [{"address": {"city": ["Portland"]}}, {"address": {"zip": ["98101"]}}]}}),
            true,
        ),
    ];
    for (policy, want) in table {
        assert_eq!(body_match(policy.clone()), want, "{policy}");
    }
    // A body that is not JSON matches only absence.
    let p = FilterPolicy::compile(&json!({"a": [{"exists": false}]}), Scope::MessageBody).unwrap();
    assert!(p.matches(&Attributes::default(), b"not json"));
    let p = FilterPolicy::compile(&json!({"a": ["x"]}), Scope::MessageBody).unwrap();
    assert!(!p.matches(&Attributes::default(), b"not json"));
}

#[test]
fn sns_limits_and_syntax_errors_are_refused_naming_the_rule() {
    let bad = |policy: Value, scope: Scope, needle: &str| {
        let err = FilterPolicy::compile(&policy, scope).unwrap_err().0;
        assert!(err.contains(needle), "{policy}: {err}");
    };
    let attrs = Scope::MessageAttributes;
    bad(
        json!({"a": ["1"], "b": ["1"], "c": ["1"], "d": ["1"], "e": ["1"], "f": ["1"]}),
        attrs,
        "at most 5 are allowed",
    );
    // The guide's combination example: 3 × 1 × 2 = 6 is fine; 151 is not.
    assert!(FilterPolicy::compile(
        &json!({"key_a": ["value_one", "value_two", "value_three"], "key_b": ["value_one"], "key_c": ["value_one", "value_two"]}),
        attrs
    )
    .is_ok());
    let many: Vec<Value> = (0..151).map(|i| json!(format!("v{i}"))).collect();
    bad(json!({"a": many}), attrs, "at most 150 are allowed");
    let big = "x".repeat(300 * 1024);
    bad(json!({"a": [big]}), attrs, "256 KiB");
    bad(json!([]), attrs, "must be a JSON object");
    bad(json!({}), attrs, "must not be empty");
    bad(json!({"a": "x"}), attrs, "must be a list");
    bad(json!({"a": []}), attrs, "must not be empty");
    bad(json!({"a": {"b": ["x"]}}), attrs, "MessageBody");
    bad(json!({"a": [{"wat": 1}]}), attrs, "unknown operator");
    bad(
        json!({"a": [{"numeric": ["<", 5, ">", 1]}]}),
        attrs,
        "lower bound",
    );
    bad(
        json!({"a": [{"numeric": [">", 5, "<", 1]}]}),
        attrs,
        "lower bound",
    );
    bad(json!({"a": [{"numeric": ["~", 5]}]}), attrs, "\"numeric\"");
    bad(json!({"a": [{"numeric": ["=", 1e10]}]}), attrs, "between");
    bad(json!({"a": [{"cidr": "ten"}]}), attrs, "CIDR");
    bad(json!({"a": [{"exists": "yes"}]}), attrs, "true or false");
    bad(json!({"a": [{"prefix": 1}]}), attrs, "takes a string");
    bad(
        json!({"a": [{"anything-but": [true]}]}),
        attrs,
        "anything-but",
    );
    bad(json!({"$or": [{"a": ["x"]}]}), attrs, "at least two");
    bad(json!({"a": [null]}), attrs, "conditions");
    assert!(Scope::parse(Some(&json!("Body"))).is_err());
}

#[test]
fn the_or_example_of_the_guide_counts_seven_combinations() {
    let p = json!({"source": ["aws.cloudwatch"], "$or": [
        {"metricName": ["CPUUtilization", "ReadLatency"]},
        {"metricType": ["MetricType"], "$or": [{"metricId": [1234, 4321]}, {"spaceId": [1000, 2000, 3000]}]}
    ]});
    let compiled = FilterPolicy::compile(&p, Scope::MessageAttributes).unwrap();
    assert_eq!(measure(&compiled.root), (3, 7));
}

#[test]
fn attributes_are_validated_and_round_trip_through_headers() {
    let a = Attributes::parse(&json!({"color": "red", "n": 5, "tags": ["a", 1]})).unwrap();
    let headers: Vec<(String, String)> =
        a.0.iter()
            .map(|(k, v)| (format!("{ATTRIBUTE_HEADER_PREFIX}{k}"), v.header_value()))
            .collect();
    let back = Attributes::from_headers(headers.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    assert_eq!(back, a);
    assert_eq!(
        a.to_json(),
        json!({"color": "red", "n": 5, "tags": ["a", 1]})
    );
    // Native publishers may send plain text.
    let plain =
        Attributes::from_headers([("herald-attr-color", "red"), ("Other", "x")].into_iter());
    assert_eq!(plain.to_json(), json!({"color": "red"}));

    let too_many: serde_json::Map<String, Value> =
        (0..11).map(|i| (format!("a{i}"), json!("x"))).collect();
    assert!(Attributes::parse(&Value::Object(too_many))
        .unwrap_err()
        .0
        .contains("at most 10"));
    assert!(Attributes::parse(&json!({"bad name": "x"}))
        .unwrap_err()
        .0
        .contains("\"bad name\""));
    assert!(Attributes::parse(&json!({"a": {"b": 1}}))
        .unwrap_err()
        .0
        .contains("\"a\""));
    assert!(Attributes::parse(&json!({"a": [[1]]})).is_err());
    let nl = Attributes::parse(&json!({"a": "line\nbreak"})).unwrap();
    assert!(
        !nl.0["a"].header_value().contains('\n'),
        "escaped for the header"
    );
    assert!(Attributes::parse(&json!({"a": "x".repeat(5000)})).is_err());
    assert!(Attributes::parse(&json!("x")).is_err());
}
