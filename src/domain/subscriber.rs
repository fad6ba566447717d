//! A subscriber URI (`http(s)://`, `mailto:`, `trust+http(s)://`, `nats:{subject}`,
//! `sms:+{E.164}`), parsed once into the protocol it is delivered with.

use std::fmt;

use reqwest::Url;

use super::{Invalid, Protocol};

/// Longest accepted subscriber URI.
const MAX_SUBSCRIBER_LEN: usize = 2048;

/// Where a subscription's messages go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subscriber {
    /// `http(s)://...`: a JSON POST.
    Webhook { url: Url },
    /// `trust+http(s)://...`: a JSON POST to the URL without the `trust+` prefix, carrying
    /// a delegated `X-Auth-Token`.
    Trust { url: Url },
    /// `mailto:addr?subject=...`: an email through the SMTP relay.
    Email {
        address: String,
        subject: Option<String>,
    },
    /// `nats:{subject}`: a NATS request; any reply acks it.
    Nats { subject: String },
    /// `sms:+{E.164}`: a text message through the SMS gateway; `number` keeps the `+`.
    Sms { number: String },
}

impl Subscriber {
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let bad = |why: &str| Invalid(format!("Invalid subscriber {raw:?}: {why}"));
        if raw.is_empty() || raw.len() > MAX_SUBSCRIBER_LEN {
            return Err(bad("expected 1 to 2048 characters."));
        }
        let (scheme, _) = raw
            .split_once(':')
            .ok_or_else(|| bad("expected a URI with a scheme."))?;
        match scheme.to_ascii_lowercase().as_str() {
            "http" | "https" => Ok(Self::Webhook {
                url: http_url(raw).map_err(&bad)?,
            }),
            "trust+http" | "trust+https" => Ok(Self::Trust {
                url: http_url(&raw["trust+".len()..]).map_err(&bad)?,
            }),
            "mailto" => {
                let rest = &raw["mailto:".len()..];
                let (address, query) = rest.split_once('?').unwrap_or((rest, ""));
                let address = percent_decode(address);
                let ok = address.split_once('@').is_some_and(|(user, host)| {
                    !user.is_empty()
                        && !host.is_empty()
                        && !address.contains([' ', ',', '<', '>', '\r', '\n'])
                });
                if !ok {
                    return Err(bad("expected mailto:user@host."));
                }
                let subject = form_urlencoded::parse(query.as_bytes())
                    .find(|(k, _)| k.eq_ignore_ascii_case("subject"))
                    .map(|(_, v)| v.into_owned());
                Ok(Self::Email { address, subject })
            }
            "nats" => {
                let subject = &raw["nats:".len()..];
                nats_subject(subject).map_err(&bad)?;
                Ok(Self::Nats {
                    subject: subject.to_owned(),
                })
            }
            "sms" => Ok(Self::Sms {
                number: e164(&raw["sms:".len()..]).map_err(&bad)?,
            }),
            _ => Err(bad(
                "the scheme must be http, https, mailto, trust+http, trust+https, nats or sms.",
            )),
        }
    }

    pub fn protocol(&self) -> Protocol {
        match self {
            Self::Webhook { .. } => Protocol::Webhook,
            Self::Trust { .. } => Protocol::Trust,
            Self::Email { .. } => Protocol::Email,
            Self::Nats { .. } => Protocol::Nats,
            Self::Sms { .. } => Protocol::Sms,
        }
    }

    /// Whether the subscriber must confirm before receiving (when confirmation is on).
    pub fn needs_confirmation(&self) -> bool {
        matches!(self, Self::Webhook { .. } | Self::Email { .. })
    }

    /// Whether confirmation applies to this subscriber at all (`require_confirmation` and a
    /// webhook or email subscriber).
    pub fn confirmation_applies(&self, require_confirmation: bool) -> bool {
        require_confirmation && self.needs_confirmation()
    }

    /// Whether nothing may be delivered to this subscriber until it is confirmed: the one
    /// place the API, the worker and expiry decide "awaiting confirmation".
    pub fn awaits_confirmation(&self, require_confirmation: bool, confirmed: bool) -> bool {
        !confirmed && self.confirmation_applies(require_confirmation)
    }
}

/// A `nats:` subject Herald may publish to on a project's behalf: a literal subject outside
/// every namespace that belongs to NATS or to Herald. Herald's delivery connection can
/// publish anywhere its permissions allow, so this is a tenant boundary.
///
/// # Errors
/// The rule the subject breaks, as a sentence.
pub fn nats_subject(subject: &str) -> Result<(), &'static str> {
    if subject.is_empty() {
        return Err("expected nats:{subject} with a non-empty subject.");
    }
    if !subject.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "a nats: subject must not contain whitespace, control or non-ASCII characters.",
        );
    }
    if subject.split('.').any(str::is_empty) {
        return Err(
            "a nats: subject must not have empty tokens (leading, trailing or double dots).",
        );
    }
    if subject.contains(['*', '>']) {
        return Err("a nats: subject must be literal: no wildcards (* or >).");
    }
    let first = subject.split('.').next().unwrap_or_default();
    if first.starts_with('$') {
        return Err(
            "a nats: subject must not be in a $-prefixed namespace ($JS, $KV, $O, $SYS, ...): those belong to NATS.",
        );
    }
    if first == "_INBOX" {
        return Err(
            "a nats: subject must not be under _INBOX: reply subjects belong to their requesters.",
        );
    }
    if first == "herald" {
        return Err("a nats: subject must not be under herald.: that namespace is Herald's own.");
    }
    Ok(())
}

/// Whether a `nats:` subject lies in the project's own namespace `{project}.` (what
/// `nats_subscriber_scope = project` requires).
pub fn nats_subject_in_project(subject: &str, project: &str) -> bool {
    subject
        .strip_prefix(project)
        .is_some_and(|rest| rest.starts_with('.') && rest.len() > 1)
}

fn http_url(raw: &str) -> Result<Url, &'static str> {
    let url = Url::parse(raw).map_err(|_| "not a valid URL.")?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none_or(str::is_empty) {
        return Err("expected an http(s) URL with a host.");
    }
    Ok(url)
}

/// An E.164 number: `+`, then 8 to 15 digits, the first not 0 (no spaces or dashes).
fn e164(raw: &str) -> Result<String, &'static str> {
    let digits = raw.strip_prefix('+').unwrap_or_default();
    let ok = (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0');
    if !ok {
        return Err("expected sms:+ and an E.164 number (8 to 15 digits, the first not 0).");
    }
    Ok(raw.to_owned())
}

fn percent_decode(s: &str) -> String {
    form_urlencoded::parse(format!("a={}", s.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

impl fmt::Display for Subscriber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Webhook { url } => write!(f, "{url}"),
            Self::Trust { url } => write!(f, "trust+{url}"),
            Self::Email { address, .. } => write!(f, "mailto:{address}"),
            Self::Nats { subject } => write!(f, "nats:{subject}"),
            Self::Sms { number } => write!(f, "sms:{number}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scheme_maps_to_its_protocol() {
        let cases = [
            ("http://127.0.0.1:9/hook", Protocol::Webhook),
            ("https://example.com/x?y=1", Protocol::Webhook),
            ("trust+https://example.com/t", Protocol::Trust),
            ("mailto:ops@example.com?subject=Hi%20there", Protocol::Email),
            ("nats:alerts.orders", Protocol::Nats),
            ("sms:+15551234567", Protocol::Sms),
        ];
        for (raw, protocol) in cases {
            assert_eq!(
                Subscriber::parse(raw).unwrap().protocol(),
                protocol,
                "{raw}"
            );
        }
    }

    #[test]
    fn mailto_reads_the_subject_query() {
        let s = Subscriber::parse("mailto:ops@example.com?subject=Hi%20there").unwrap();
        assert_eq!(
            s,
            Subscriber::Email {
                address: "ops@example.com".into(),
                subject: Some("Hi there".into())
            }
        );
    }

    #[test]
    fn trust_strips_its_prefix() {
        let Subscriber::Trust { url } = Subscriber::parse("trust+http://h:1/p").unwrap() else {
            panic!("not trust");
        };
        assert_eq!(url.as_str(), "http://h:1/p");
    }

    #[test]
    fn nats_subjects_outside_reserved_namespaces_are_accepted() {
        for ok in [
            "a",
            "alerts.orders",
            "acme.x-y_z",
            "INBOX.x",
            "heraldic.x",
            "x.$KV.y",
            "x.herald",
        ] {
            assert_eq!(nats_subject(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn nats_subjects_with_wildcards_empty_tokens_or_odd_characters_are_refused() {
        for (bad, rule) in [
            ("", "non-empty"),
            ("a.*", "wildcards"),
            ("a.>", "wildcards"),
            ("a.b*", "wildcards"),
            ("a..b", "empty tokens"),
            (".a", "empty tokens"),
            ("a.", "empty tokens"),
            ("a b", "whitespace"),
            ("a\tb", "whitespace"),
            ("a\u{7f}", "control"),
            ("caf\u{e9}", "non-ASCII"),
        ] {
            let why = nats_subject(bad).expect_err(bad);
            assert!(why.contains(rule), "{bad:?}: {why}");
        }
    }

    #[test]
    fn nats_subjects_in_dollar_namespaces_are_refused() {
        for bad in [
            "$JS.API.INFO",
            "$KV.herald_topics.p.t",
            "$O.bucket.x",
            "$SYS.REQ.SERVER.PING",
            "$G",
            "$anything.x",
        ] {
            let why = nats_subject(bad).expect_err(bad);
            assert!(why.contains("$-prefixed namespace"), "{bad:?}: {why}");
        }
    }

    #[test]
    fn nats_subjects_under_inbox_or_herald_are_refused() {
        for bad in [
            "_INBOX",
            "_INBOX.abc.1",
            "herald",
            "herald.topics.p.t",
            "herald.user_messages.create",
        ] {
            let why = nats_subject(bad).expect_err(bad);
            assert!(
                why.contains("_INBOX") || why.contains("herald."),
                "{bad:?}: {why}"
            );
        }
    }

    #[test]
    fn the_project_scope_is_the_projects_own_prefix() {
        assert!(nats_subject_in_project("acme.orders", "acme"));
        assert!(nats_subject_in_project("acme.a.b", "acme"));
        assert!(!nats_subject_in_project("acme", "acme"));
        assert!(!nats_subject_in_project("acmecorp.x", "acme"));
        assert!(!nats_subject_in_project("globex.acme.x", "acme"));
    }

    #[test]
    fn a_refused_nats_subscriber_names_the_rule() {
        let Invalid(why) = Subscriber::parse("nats:$KV.herald_topics.x").unwrap_err();
        assert!(why.contains("$-prefixed namespace"), "{why}");
    }

    #[test]
    fn sms_numbers_are_e164_at_both_length_bounds() {
        for ok in [
            "sms:+12345678",
            "sms:+123456789012345",
            "SMS:+4915112345678",
        ] {
            let Subscriber::Sms { number } = Subscriber::parse(ok).unwrap() else {
                panic!("{ok} is not sms");
            };
            assert_eq!(format!("sms:{number}"), ok.to_ascii_lowercase());
        }
        let err = Subscriber::parse("sms:+0123456789").unwrap_err();
        assert!(err.0.starts_with("Invalid subscriber"), "{err}");
    }

    #[test]
    fn malformed_subscribers_are_refused() {
        for bad in [
            "",
            "ftp://x",
            "http://",
            "mailto:nobody",
            "nats:",
            "nats:a.*",
            "nats:a..b",
            "nats:$JS.API.INFO",
            "nats:$KV.herald_topics.x",
            "nats:_INBOX.x",
            "nats:herald.topics.p.t",
            "example.com",
            "sms:",
            "sms:15551234567",
            "sms:+0155512345",
            "sms:+1234567",
            "sms:+1234567890123456",
            "sms:+1 555 123 4567",
            "sms:+1555-123-4567",
            "sms:+1555123456a",
        ] {
            assert!(Subscriber::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
