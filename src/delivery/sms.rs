//! `sms:+{E.164}` delivery through an SMS gateway's HTTP interface (Kannel's `sendsms`):
//! the text (`options.sms_template`), its encoding and part count (GSM-7 or UCS-2), and the
//! gateway client.
//!
//! Herald counts the parts itself and refuses a text that needs more than `sms_max_parts`
//! (a permanent failure) instead of letting the gateway cut it: Kannel silently truncates
//! at its sendsms-user `max-messages`, which must therefore be at least `sms_max_parts`
//! (with `concatenation = true`). Herald's count never splits a character, so it is never
//! lower than the gateway's.

use std::{fmt, time::Duration};

use reqwest::Url;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::outcome::DeliveryError;
use crate::config::Config;

/// The placeholder `options.sms_template` replaces with the message text.
pub const PLACEHOLDER: &str = "$zaqar_message$";

/// GSM 03.38 basic character set (one septet each), in code order; 0x1B is the escape.
const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";

/// GSM 03.38 extension table: an escape plus one septet, so two each.
const GSM7_EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// Longest gateway answer kept in `last_error`.
const MAX_ANSWER_CHARS: usize = 200;

/// How the text is encoded on the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    /// GSM 03.38 7-bit default alphabet: 160 septets, 153 per concatenated part.
    Gsm7,
    /// UCS-2 (UTF-16 code units): 70 units, 67 per concatenated part.
    Ucs2,
}

impl Coding {
    /// Capacity of a single SMS and of each part of a concatenated one (the UDH takes
    /// the rest).
    fn capacity(self) -> (usize, usize) {
        match self {
            Self::Gsm7 => (160, 153),
            Self::Ucs2 => (70, 67),
        }
    }
}

impl fmt::Display for Coding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gsm7 => "GSM-7",
            Self::Ucs2 => "UCS-2",
        })
    }
}

/// The encoding and size of one text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub coding: Coding,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2).
    pub units: usize,
    /// SMS parts needed (1 when it fits a single SMS).
    pub parts: usize,
}

/// Septets a character takes in GSM-7, `None` when it has no GSM-7 form.
fn gsm7_septets(c: char) -> Option<usize> {
    if GSM7_BASIC.contains(c) {
        Some(1)
    } else if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else {
        None
    }
}

/// GSM-7 when every character has a GSM-7 form, else UCS-2; then the parts, packed
/// without splitting an escape sequence or a surrogate pair across parts.
pub fn parts(text: &str) -> Parts {
    let gsm: Option<Vec<usize>> = text.chars().map(gsm7_septets).collect();
    let (coding, sizes) = match gsm {
        Some(sizes) => (Coding::Gsm7, sizes),
        None => (
            Coding::Ucs2,
            text.chars().map(char::len_utf16).collect::<Vec<_>>(),
        ),
    };
    let units = sizes.iter().sum();
    let (single, per_part) = coding.capacity();
    if units <= single {
        return Parts {
            coding,
            units,
            parts: 1,
        };
    }
    let (mut parts, mut used) = (1, 0);
    for size in sizes {
        if used + size > per_part {
            parts += 1;
            used = 0;
        }
        used += size;
    }
    Parts {
        coding,
        units,
        parts,
    }
}

/// The body as text: a JSON string is the string itself, other JSON is compact JSON.
fn body_text(body: &RawValue) -> String {
    serde_json::from_str::<String>(body.get()).unwrap_or_else(|_| compact_json(body.get()))
}

/// Drops the whitespace between JSON tokens, keeping key order and number spelling.
fn compact_json(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    let (mut in_string, mut escaped) = (false, false);
    for c in json.chars() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
        } else if !c.is_ascii_whitespace() {
            in_string = c == '"';
            out.push(c);
        }
    }
    out
}

/// The SMS text for a notification (the JSON [`super::payload::notification`] built):
/// `template` with [`PLACEHOLDER`] replaced by the message body as text, else that text.
///
/// # Errors
/// A permanent failure when the template is not a string.
pub fn text(
    template: Option<&serde_json::Value>,
    notification: &str,
) -> Result<String, DeliveryError> {
    #[derive(Deserialize)]
    struct Notification<'a> {
        #[serde(borrow)]
        body: &'a RawValue,
    }
    let body = serde_json::from_str::<Notification<'_>>(notification)
        .map(|n| body_text(n.body))
        .map_err(|e| DeliveryError::Misconfigured(format!("unreadable notification: {e}")))?;
    match template {
        None => Ok(body),
        Some(serde_json::Value::String(t)) => Ok(t.replace(PLACEHOLDER, &body)),
        Some(_) => Err(DeliveryError::Misconfigured(
            "options.sms_template must be a string".into(),
        )),
    }
}

/// The gateway client, built once from `sms_gateway_*` when `sms_gateway_url` is set.
#[derive(Clone)]
pub struct SmsGateway {
    http: reqwest::Client,
    url: Url,
    user: Option<String>,
    /// Sent as a query parameter; never logged, never in `last_error` (errors are
    /// stripped of the URL).
    password: Option<String>,
    from: Option<String>,
    max_parts: usize,
    timeout: Duration,
}

impl SmsGateway {
    /// `None` when no gateway is configured.
    ///
    /// # Errors
    /// When `sms_gateway_url` is not a URL.
    pub fn from_config(config: &Config) -> anyhow::Result<Option<Self>> {
        let Some(url) = config.sms_gateway_url.as_deref() else {
            return Ok(None);
        };
        let url = Url::parse(url).map_err(|e| anyhow::anyhow!("sms_gateway_url: {e}"))?;
        let timeout = config.delivery_timeout();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Some(Self {
            http,
            url,
            user: config.sms_gateway_user.clone(),
            password: config.sms_gateway_password.clone(),
            from: config.sms_from.clone(),
            max_parts: config.sms_max_parts,
            timeout,
        }))
    }

    /// Sends `text` to `to` (E.164 with `+`); `Ok` when the gateway accepted it (2xx:
    /// Kannel's "0: Accepted for delivery" or "3: Queued for later delivery").
    ///
    /// # Errors
    /// Permanent: a text over `sms_max_parts`, a gateway 4xx (bad credentials, refused
    /// number) other than 408 and 429. Retryable: 5xx, 408, 429, timeouts, connection errors.
    pub async fn send(&self, to: &str, text: &str) -> Result<(), DeliveryError> {
        let size = parts(text);
        if size.parts > self.max_parts {
            return Err(DeliveryError::Misconfigured(format!(
                "the SMS text needs {} parts ({} {} units), more than sms_max_parts = {}; not sent",
                size.parts, size.units, size.coding, self.max_parts
            )));
        }
        let mut query: Vec<(&str, &str)> = vec![("to", to), ("text", text), ("charset", "UTF-8")];
        query.push((
            "coding",
            match size.coding {
                Coding::Gsm7 => "0",
                Coding::Ucs2 => "2",
            },
        ));
        for (key, value) in [
            ("username", &self.user),
            ("password", &self.password),
            ("from", &self.from),
        ] {
            if let Some(v) = value {
                query.push((key, v));
            }
        }
        let res = self
            .http
            .get(self.url.clone())
            .query(&query)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let status = res.status();
        if status.is_success() {
            return Ok(());
        }
        let answer = res.text().await.unwrap_or_default();
        let answer: String = answer.trim().chars().take(MAX_ANSWER_CHARS).collect();
        let code = status.as_u16();
        Err(DeliveryError::Gateway {
            message: format!("HTTP {code}: {answer}"),
            permanent: status.is_client_error() && code != 408 && code != 429,
        })
    }

    fn classify(&self, e: reqwest::Error) -> DeliveryError {
        if e.is_timeout() {
            return DeliveryError::Timeout(self.timeout);
        }
        // The URL carries the password in its query: never let it reach `last_error`.
        let e = e.without_url();
        let mut message = format!("cannot reach it: {e}");
        let mut source = std::error::Error::source(&e);
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        DeliveryError::Gateway {
            message,
            permanent: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn p(coding: Coding, units: usize, parts: usize) -> Parts {
        Parts {
            coding,
            units,
            parts,
        }
    }

    #[test]
    fn gsm7_texts_fit_160_alone_and_153_per_part() {
        use Coding::Gsm7;
        let cases = [
            ("", p(Gsm7, 0, 1)),
            ("hello", p(Gsm7, 5, 1)),
            (&"a".repeat(160), p(Gsm7, 160, 1)),
            (&"a".repeat(161), p(Gsm7, 161, 2)),
            (&"a".repeat(306), p(Gsm7, 306, 2)),
            (&"a".repeat(307), p(Gsm7, 307, 3)),
            (&"a".repeat(459), p(Gsm7, 459, 3)),
            (&"a".repeat(460), p(Gsm7, 460, 4)),
            // Basic-set letters outside ASCII are still one septet.
            (&"é".repeat(160), p(Gsm7, 160, 1)),
            ("Øre £5 @ Ærø, ¿Qué? ΔΣΩ §", p(Gsm7, 25, 1)),
        ];
        for (text, want) in cases {
            assert_eq!(parts(text), want, "{} chars", text.chars().count());
        }
    }

    #[test]
    fn gsm7_extension_characters_count_two_and_are_never_split() {
        use Coding::Gsm7;
        let cases: [(&str, Parts); 7] = [
            (&"€".repeat(80), p(Gsm7, 160, 1)),
            (&format!("{}a", "€".repeat(80)), p(Gsm7, 161, 2)),
            (&format!("{}{{", "a".repeat(158)), p(Gsm7, 160, 1)),
            (&format!("{}{{", "a".repeat(159)), p(Gsm7, 161, 2)),
            ("{}[]~^|\\\u{c}€", p(Gsm7, 20, 1)),
            // 152 septets, then `€` does not fit the part's last septet: it opens part 2.
            (
                &format!("{}€{}", "a".repeat(152), "a".repeat(10)),
                p(Gsm7, 164, 2),
            ),
            // 306 septets would fill two parts, but the `€` straddling them needs a third.
            (
                &format!("{}€{}", "a".repeat(152), "a".repeat(152)),
                p(Gsm7, 306, 3),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parts(text), want, "{text}");
        }
    }

    #[test]
    fn anything_outside_gsm7_makes_the_whole_text_ucs2_at_70_and_67_per_part() {
        use Coding::Ucs2;
        let cases: [(&str, Parts); 10] = [
            ("Привет", p(Ucs2, 6, 1)),
            (&"я".repeat(70), p(Ucs2, 70, 1)),
            (&"я".repeat(71), p(Ucs2, 71, 2)),
            (&"я".repeat(134), p(Ucs2, 134, 2)),
            (&"я".repeat(135), p(Ucs2, 135, 3)),
            // One non-GSM character switches everything, ASCII included.
            (&format!("{}ç", "a".repeat(69)), p(Ucs2, 70, 1)),
            (&format!("{}ç", "a".repeat(70)), p(Ucs2, 71, 2)),
            // Emoji are surrogate pairs: two units, never split across parts.
            (&"👋".repeat(35), p(Ucs2, 70, 1)),
            (&format!("{}👋", "я".repeat(69)), p(Ucs2, 71, 2)),
            (
                &format!("{}👋{}", "я".repeat(66), "я".repeat(66)),
                p(Ucs2, 134, 3),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parts(text), want, "{text}");
        }
    }

    #[test]
    fn the_text_is_the_template_with_the_body_as_text() {
        let n = |body: &str| format!(r#"{{"body":{body},"ttl":60,"queue_name":"t"}}"#);
        assert_eq!(text(None, &n(r#""Disk full""#)).unwrap(), "Disk full");
        assert_eq!(
            text(None, &n(r#"{ "b": [1, 2.50], "a" : "x y\"}" }"#)).unwrap(),
            r#"{"b":[1,2.50],"a":"x y\"}"}"#
        );
        assert_eq!(text(None, &n("42")).unwrap(), "42");
        let template = json!("Alert: $zaqar_message$ (herald)");
        assert_eq!(
            text(Some(&template), &n(r#""Disk full""#)).unwrap(),
            "Alert: Disk full (herald)"
        );
        let err = text(Some(&json!({"t": 1})), &n("1")).unwrap_err();
        assert!(err.is_permanent());
        assert!(err.to_string().contains("sms_template"), "{err}");
    }
}
