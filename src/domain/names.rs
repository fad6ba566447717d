//! Identifiers that end up in NATS subjects and keys, so they are token safe by construction.

use std::fmt;

use super::Invalid;

/// A project id: `[A-Za-z0-9_-]{1,256}` (Keystone ids are hex), safe as one NATS token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProjectId(String);

impl ProjectId {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let ok = (1..=256).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid::new(
                "Invalid project id: expected 1 to 256 characters of [A-Za-z0-9_-].",
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A topic name: `^[a-zA-Z0-9_.-]{1,64}$`. Dots separate NATS tokens, so a name may not
/// start or end with a dot or hold two in a row (that would be an empty token).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName(String);

impl TopicName {
    pub fn parse(s: &str) -> Result<Self, Invalid> {
        let chars_ok = (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        let tokens_ok = !s.starts_with('.') && !s.ends_with('.') && !s.contains("..");
        if chars_ok && tokens_ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(Invalid::new("Invalid topic identification"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TopicName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn project_ids_are_nats_token_safe() {
        assert!(ProjectId::parse("0123abcdef").is_ok());
        assert!(ProjectId::parse("my-project_1").is_ok());
        assert!(ProjectId::parse(&"a".repeat(256)).is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", &"a".repeat(257), "é"] {
            assert!(ProjectId::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn topic_names_follow_zaqar_and_map_to_tokens() {
        for ok in ["t", "orders.created", "a-b_c.D9", &"x".repeat(64)] {
            assert!(TopicName::parse(ok).is_ok(), "{ok:?} refused");
        }
        for bad in [
            "",
            &"x".repeat(65),
            "a b",
            "a/b",
            "a*",
            "a>",
            ".a",
            "a.",
            "a..b",
            "ü",
        ] {
            assert!(TopicName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
