//! A subscription's `options`, read once when the subscription is created, changed or
//! loaded: the keys delivery acts on as typed fields, and the whole document as the client
//! sent it (Zaqar echoes every option back, including ones Herald does not know).

use serde_json::{Map, Value};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionOptions {
    doc: Map<String, Value>,
    /// `ordered`: one delivery at a time, in publish order.
    pub ordered: bool,
    /// `secret`: the webhook signing secret.
    pub secret: Option<String>,
    /// `subject`: the email subject when the `mailto:` URI names none.
    pub subject: Option<String>,
    /// `from`: the email sender.
    pub from: Option<String>,
    /// `max_rate`: deliveries per second across all Herald processes (> 0).
    pub max_rate: Option<f64>,
}

impl SubscriptionOptions {
    /// Reads the typed keys of `doc`. A key of the wrong type reads as absent: the API
    /// refuses such documents (`subscriptions::parse_options`), so only a hand-edited
    /// consumer can hold one, and delivery then behaves as if the key were unset.
    pub fn from_doc(doc: Map<String, Value>) -> Self {
        let text = |key: &str| doc.get(key).and_then(Value::as_str).map(str::to_owned);
        Self {
            ordered: doc.get("ordered").and_then(Value::as_bool) == Some(true),
            secret: text("secret"),
            subject: text("subject"),
            from: text("from"),
            max_rate: doc
                .get("max_rate")
                .and_then(Value::as_f64)
                .filter(|r| valid_max_rate(*r)),
            doc,
        }
    }

    /// The options as the client sent them.
    pub fn doc(&self) -> &Map<String, Value> {
        &self.doc
    }

    /// One option as sent, for the keys parsed where they are used (`_retry_policy`,
    /// `filter_policy`, `post_data`, `post_headers`, `sms_template`).
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.doc.get(key)
    }
}

/// A usable `max_rate`: a finite number of deliveries per second above zero.
pub fn valid_max_rate(rate: f64) -> bool {
    rate.is_finite() && rate > 0.0
}

impl From<Map<String, Value>> for SubscriptionOptions {
    fn from(doc: Map<String, Value>) -> Self {
        Self::from_doc(doc)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn options(v: Value) -> SubscriptionOptions {
        SubscriptionOptions::from_doc(v.as_object().unwrap().clone())
    }

    #[test]
    fn typed_keys_are_read_and_the_document_is_kept_whole() {
        let o = options(json!({
            "ordered": true, "secret": "s", "subject": "Hi", "from": "a@b.c",
            "post_data": {"x": "$zaqar_message$"}, "vendor": 1, "max_rate": 2.5,
        }));
        assert_eq!(o.max_rate, Some(2.5));
        assert!(o.ordered);
        assert_eq!(o.secret.as_deref(), Some("s"));
        assert_eq!(o.subject.as_deref(), Some("Hi"));
        assert_eq!(o.from.as_deref(), Some("a@b.c"));
        assert_eq!(o.get("vendor"), Some(&json!(1)));
        assert_eq!(o.doc().len(), 7);
    }

    #[test]
    fn a_key_of_the_wrong_type_reads_as_unset() {
        let o = options(json!({"ordered": "yes", "secret": 5, "from": null, "max_rate": 0}));
        assert!(!o.ordered);
        assert_eq!(o.max_rate, None);
        assert_eq!(o.secret, None);
        assert_eq!(o.from, None);
        assert_eq!(
            o,
            options(json!({"ordered": "yes", "secret": 5, "from": null, "max_rate": 0}))
        );
        assert_eq!(SubscriptionOptions::default().doc().len(), 0);
    }
}
