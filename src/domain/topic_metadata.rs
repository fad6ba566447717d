//! A topic's metadata document: Zaqar's reserved `_` keys, validated, plus free user keys.

use serde_json::{Map, Value};

use super::{Invalid, RetryPolicy};
pub const DEFAULT_MESSAGE_TTL_SECS: u64 = 3600;
pub const MIN_MESSAGE_TTL_SECS: u64 = 60;
pub const MAX_MESSAGE_TTL_SECS: u64 = 1_209_600;
pub const MAX_MESSAGES_POST_SIZE: u64 = 262_144;
pub const MAX_MESSAGE_DELAY_SECS: u64 = 900;

/// Subscription protocols, as named in `_allowed_subscribe_protocols`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Webhook,
    Email,
    Trust,
    Nats,
    /// *Herald*: `sms:+{E.164}` through the SMS gateway; never allowed by default.
    Sms,
}

impl Protocol {
    pub const ALL: [Protocol; 5] = [
        Self::Email,
        Self::Webhook,
        Self::Trust,
        Self::Nats,
        Self::Sms,
    ];

    /// Allowed when a topic sets no `_allowed_subscribe_protocols`: Zaqar's email, webhook,
    /// trust plus Herald's nats. SMS costs money per message, so a topic must opt in.
    pub const DEFAULT_ALLOWED: [Protocol; 4] =
        [Self::Email, Self::Webhook, Self::Trust, Self::Nats];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Webhook => "webhook",
            Self::Email => "email",
            Self::Trust => "trust",
            Self::Nats => "nats",
            Self::Sms => "sms",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

const STRING_LISTS: [&str; 4] = [
    "_allowed_sending_users",
    "_allowed_sending_projects",
    "_allowed_subscribe_users",
    "_allowed_subscribe_projects",
];

/// Validated metadata. Only the keys the user set are stored; defaults are filled on read.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TopicMetadata(Map<String, Value>);

impl TopicMetadata {
    pub fn parse(value: Value) -> Result<Self, Invalid> {
        let Value::Object(map) = value else {
            return Err(Invalid::new("Topic metadata must be a JSON object."));
        };
        for key in STRING_LISTS {
            if let Some(v) = map.get(key) {
                string_list(key, v)?;
            }
        }
        if let Some(v) = map.get("_allowed_subscribe_protocols") {
            for p in string_list("_allowed_subscribe_protocols", v)? {
                if Protocol::parse(p).is_none() {
                    return Err(Invalid(format!(
                        "_allowed_subscribe_protocols: unknown protocol {p:?} (expected email, webhook, trust, nats or sms)."
                    )));
                }
            }
        }
        if let Some(v) = map.get("_retry_policy") {
            RetryPolicy::parse(v)?;
        }
        int_in(
            "_default_message_ttl",
            &map,
            MIN_MESSAGE_TTL_SECS,
            MAX_MESSAGE_TTL_SECS,
        )?;
        int_in("_max_messages_post_size", &map, 1, MAX_MESSAGES_POST_SIZE)?;
        int_in("_default_message_delay", &map, 0, MAX_MESSAGE_DELAY_SECS)?;
        Ok(Self(map))
    }

    /// The keys as stored (what the user set).
    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_map(self) -> Map<String, Value> {
        self.0
    }

    /// The document shown to users: stored keys plus every reserved default.
    pub fn with_defaults(&self) -> Map<String, Value> {
        let mut out = self.0.clone();
        let mut fill = |k: &str, v: Value| {
            out.entry(k.to_owned()).or_insert(v);
        };
        fill("_default_message_ttl", DEFAULT_MESSAGE_TTL_SECS.into());
        fill("_max_messages_post_size", MAX_MESSAGES_POST_SIZE.into());
        fill("_default_message_delay", 0.into());
        fill(
            "_allowed_subscribe_protocols",
            Protocol::DEFAULT_ALLOWED
                .iter()
                .map(|p| Value::from(p.as_str()))
                .collect(),
        );
        fill(
            "_retry_policy",
            Value::Object(self.retry_policy().to_json()),
        );
        out
    }

    fn int(&self, key: &str, default: u64) -> u64 {
        self.0.get(key).and_then(Value::as_u64).unwrap_or(default)
    }

    pub fn default_message_ttl(&self) -> u64 {
        self.int("_default_message_ttl", DEFAULT_MESSAGE_TTL_SECS)
    }

    pub fn max_messages_post_size(&self) -> u64 {
        self.int("_max_messages_post_size", MAX_MESSAGES_POST_SIZE)
    }

    pub fn default_message_delay(&self) -> u64 {
        self.int("_default_message_delay", 0)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.0
            .get("_retry_policy")
            .and_then(|v| RetryPolicy::parse(v).ok())
            .unwrap_or_default()
    }

    /// The list under `key`, or `None` when unset (meaning: everybody, within the default rule).
    pub fn list(&self, key: &str) -> Option<Vec<&str>> {
        let v = self.0.get(key)?.as_array()?;
        Some(v.iter().filter_map(Value::as_str).collect())
    }

    pub fn allows_protocol(&self, protocol: Protocol) -> bool {
        match self.list("_allowed_subscribe_protocols") {
            Some(list) => list.contains(&protocol.as_str()),
            None => Protocol::DEFAULT_ALLOWED.contains(&protocol),
        }
    }

    /// Whether every stored key equals the given filter (string comparison for scalars).
    pub fn matches(&self, filters: &[(String, String)]) -> bool {
        let doc = self.with_defaults();
        filters.iter().all(|(k, want)| match doc.get(k) {
            Some(Value::String(s)) => s == want,
            Some(v @ (Value::Number(_) | Value::Bool(_))) => {
                serde_json::from_str::<Value>(want).ok().as_ref() == Some(v)
            }
            _ => false,
        })
    }
}

fn string_list<'a>(key: &str, v: &'a Value) -> Result<Vec<&'a str>, Invalid> {
    let err = || Invalid(format!("{key} must be a list of strings."));
    v.as_array()
        .ok_or_else(err)?
        .iter()
        .map(|s| s.as_str().ok_or_else(err))
        .collect()
}

fn int_in(key: &str, map: &Map<String, Value>, min: u64, max: u64) -> Result<(), Invalid> {
    match map.get(key) {
        None => Ok(()),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(()),
            _ => Err(Invalid(format!(
                "{key} must be an integer between {min} and {max}."
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn defaults_are_filled_on_read_but_not_stored() {
        let m = TopicMetadata::parse(json!({"color": "blue"})).unwrap();
        assert_eq!(m.as_map().len(), 1);
        let doc = m.with_defaults();
        assert_eq!(doc["_default_message_ttl"], 3600);
        assert_eq!(doc["_max_messages_post_size"], 262144);
        assert_eq!(doc["_default_message_delay"], 0);
        assert_eq!(doc["_retry_policy"]["retries_with_no_delay"], 3);
        assert_eq!(doc["color"], "blue");
    }

    #[test]
    fn reserved_keys_are_validated_and_named_in_errors() {
        for (bad, key) in [
            (json!({"_default_message_ttl": 59}), "_default_message_ttl"),
            (
                json!({"_default_message_ttl": 1209601}),
                "_default_message_ttl",
            ),
            (
                json!({"_default_message_ttl": "60"}),
                "_default_message_ttl",
            ),
            (
                json!({"_max_messages_post_size": 0}),
                "_max_messages_post_size",
            ),
            (
                json!({"_max_messages_post_size": 262145}),
                "_max_messages_post_size",
            ),
            (
                json!({"_default_message_delay": 901}),
                "_default_message_delay",
            ),
            (
                json!({"_allowed_sending_users": "u1"}),
                "_allowed_sending_users",
            ),
            (
                json!({"_allowed_subscribe_projects": [1]}),
                "_allowed_subscribe_projects",
            ),
            (
                json!({"_allowed_subscribe_protocols": ["fax"]}),
                "_allowed_subscribe_protocols",
            ),
            (
                json!({"_retry_policy": {"minimum_delay": -5}}),
                "minimum_delay",
            ),
        ] {
            let err = TopicMetadata::parse(bad).unwrap_err();
            assert!(err.0.contains(key), "{err} does not name {key}");
        }
        assert!(TopicMetadata::parse(json!([])).is_err());
    }

    #[test]
    fn bounds_are_inclusive() {
        TopicMetadata::parse(json!({
            "_default_message_ttl": 60, "_max_messages_post_size": 1, "_default_message_delay": 900
        }))
        .unwrap();
        TopicMetadata::parse(json!({
            "_default_message_ttl": 1209600, "_max_messages_post_size": 262144, "_default_message_delay": 0
        }))
        .unwrap();
    }

    #[test]
    fn protocol_lists_restrict_subscriptions() {
        let m = TopicMetadata::parse(json!({"_allowed_subscribe_protocols": ["webhook"]})).unwrap();
        assert!(m.allows_protocol(Protocol::Webhook));
        assert!(!m.allows_protocol(Protocol::Email));
        assert!(TopicMetadata::default().allows_protocol(Protocol::Nats));
    }

    #[test]
    fn sms_must_be_listed_to_be_allowed() {
        assert!(!TopicMetadata::default().allows_protocol(Protocol::Sms));
        assert_eq!(
            TopicMetadata::default().with_defaults()["_allowed_subscribe_protocols"],
            json!(["email", "webhook", "trust", "nats"])
        );
        let m = TopicMetadata::parse(json!({"_allowed_subscribe_protocols": ["sms", "webhook"]}))
            .unwrap();
        assert!(m.allows_protocol(Protocol::Sms));
    }

    #[test]
    fn filters_compare_scalars_as_strings() {
        let m = TopicMetadata::parse(json!({"env": "prod", "tier": 2})).unwrap();
        assert!(m.matches(&[("env".into(), "prod".into()), ("tier".into(), "2".into())]));
        assert!(!m.matches(&[("env".into(), "dev".into())]));
        assert!(!m.matches(&[("missing".into(), "x".into())]));
    }
}
