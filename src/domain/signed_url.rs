//! Zaqar's pre-signed URLs: HMAC-SHA256 over `paths\nmethods\nproject\nexpires` with a
//! configured secret, carried in `URL-Signature`, `URL-Paths`, `URL-Methods`, `URL-Expires`
//! and `X-Project-ID` headers. Used for subscription confirmation links.

use chrono::{DateTime, NaiveDateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Zaqar's expiry format.
const EXPIRES_FORMAT: &str = "%Y-%m-%dT%H:%M:%S";

/// A signed grant, as sent to a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedUrl {
    pub paths: Vec<String>,
    pub methods: Vec<String>,
    pub project: String,
    pub expires: String,
    pub signature: String,
}

fn digest(
    secret: &str,
    paths: &[String],
    methods: &[String],
    project: &str,
    expires: &str,
) -> String {
    let body = format!(
        "{}\n{}\n{}\n{}",
        paths.join(","),
        methods.join(","),
        project,
        expires
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

impl SignedUrl {
    pub fn sign(
        secret: &str,
        mut paths: Vec<String>,
        mut methods: Vec<String>,
        project: &str,
        expires: DateTime<Utc>,
    ) -> Self {
        paths.sort();
        methods.sort();
        let expires = expires.format(EXPIRES_FORMAT).to_string();
        let signature = digest(secret, &paths, &methods, project, &expires);
        Self {
            paths,
            methods,
            project: project.to_owned(),
            expires,
            signature,
        }
    }

    /// Whether this grant is authentic, unexpired and covers `method` on `path`.
    pub fn allows(&self, secret: &str, method: &str, path: &str, now: DateTime<Utc>) -> bool {
        let mut paths = self.paths.clone();
        let mut methods = self.methods.clone();
        paths.sort();
        methods.sort();
        let expected = digest(secret, &paths, &methods, &self.project, &self.expires);
        let authentic = constant_time_eq(expected.as_bytes(), self.signature.as_bytes());
        let unexpired = NaiveDateTime::parse_from_str(&self.expires, EXPIRES_FORMAT)
            .is_ok_and(|e| e.and_utc() > now);
        authentic
            && unexpired
            && methods.iter().any(|m| m.eq_ignore_ascii_case(method))
            && paths.iter().any(|p| p == path)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use chrono::Duration;

    use super::*;

    #[test]
    fn a_signed_url_allows_exactly_what_it_names_until_it_expires() {
        let now = Utc::now();
        let s = SignedUrl::sign(
            "k",
            vec!["/v2/topics/t/subscriptions/1/confirm".into()],
            vec!["PUT".into()],
            "p1",
            now + Duration::hours(1),
        );
        let path = "/v2/topics/t/subscriptions/1/confirm";
        assert!(s.allows("k", "PUT", path, now));
        assert!(!s.allows("other", "PUT", path, now));
        assert!(!s.allows("k", "DELETE", path, now));
        assert!(!s.allows("k", "PUT", "/v2/topics/t", now));
        assert!(!s.allows("k", "PUT", path, now + Duration::hours(2)));
        let forged = SignedUrl {
            project: "p2".into(),
            ..s.clone()
        };
        assert!(!forged.allows("k", "PUT", path, now));
    }
}
