//! The outbound HTTP client for webhook and `trust+` subscribers: built once (connection
//! reuse, bounded timeouts), with the SSRF guard inside it: every resolved address, and
//! every IP-literal URL, must be public or inside `outbound_allow`.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use bytes::Bytes;
use ipnet::IpNet;
use reqwest::{
    dns::{Addrs, Name, Resolve, Resolving},
    header::{HeaderMap, HeaderName, HeaderValue, CONTENT_TYPE, RETRY_AFTER},
    Url,
};

use super::outcome::DeliveryError;

/// Idle keep-alive connections kept per receiving host.
const MAX_IDLE_PER_HOST: usize = 1024;

/// Longest `Retry-After` Herald honours.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// Which outbound addresses may be contacted.
#[derive(Debug, Clone, Default)]
pub struct AddressGuard {
    allow: Arc<Vec<IpNet>>,
}

impl AddressGuard {
    pub fn new(allow: Vec<IpNet>) -> Self {
        Self {
            allow: Arc::new(allow),
        }
    }

    /// Public addresses pass; loopback, private, link-local (incl. cloud metadata),
    /// unspecified, CGNAT, multicast and documentation ranges pass only when allowed.
    pub fn permits(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        if self.allow.iter().any(|net| net.contains(&ip)) {
            return true;
        }
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                !(v4.is_loopback()
                    || v4.is_private()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_broadcast()
                    || v4.is_multicast()
                    || v4.is_documentation()
                    || o[0] == 0
                    || (o[0] == 100 && (64..128).contains(&o[1])))
            }
            IpAddr::V6(v6) => {
                let seg0 = v6.segments()[0];
                !(v6.is_loopback()
                    || v6.is_unspecified()
                    || v6.is_multicast()
                    || (seg0 & 0xfe00) == 0xfc00
                    || (seg0 & 0xffc0) == 0xfe80)
            }
        }
    }
}

/// The address a blocked name resolved to, as a resolver error reqwest carries back.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct BlockedName(String);

/// Resolves with the system resolver and drops addresses the guard refuses.
struct GuardedResolver(AddressGuard);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| guard.permits(a.ip()))
                .collect();
            if addrs.is_empty() {
                return Err(Box::new(BlockedName(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

/// One client for all webhook deliveries.
#[derive(Clone)]
pub struct WebhookClient {
    http: reqwest::Client,
    guard: AddressGuard,
    timeout: Duration,
}

impl WebhookClient {
    pub fn new(guard: AddressGuard, timeout: Duration) -> Self {
        let http = reqwest::Client::builder()
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            // Up to `delivery_max_in_flight` requests per subscription run at once, often to
            // one host; a small idle pool closed and re-opened connections on every burst
            // (connect/shutdown were a fifth of the delivery CPU profile).
            .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("Herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the webhook client builds");
        Self {
            http,
            guard,
            timeout,
        }
    }

    /// POSTs `body` as JSON; `Ok` on 2xx.
    ///
    /// # Errors
    /// A [`DeliveryError`] that says whether a retry can help.
    pub async fn post(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<(), DeliveryError> {
        self.post_with_reply(url, headers, body, 0).await.0
    }

    /// [`Self::post`], also returning what the subscriber answered: its status and the
    /// first `excerpt_bytes` of its body (no more is kept in memory, however long it is).
    pub async fn post_with_reply(
        &self,
        url: &Url,
        headers: HeaderMap,
        body: Bytes,
        excerpt_bytes: usize,
    ) -> (Result<(), DeliveryError>, Reply) {
        let host = url.host_str().unwrap_or_default();
        let literal = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        if let Some(ip) = literal.filter(|ip| !self.guard.permits(*ip)) {
            return (
                Err(DeliveryError::Blocked(ip.to_string())),
                Reply::default(),
            );
        }
        let sent = self
            .http
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .headers(headers)
            .body(body)
            .send()
            .await;
        let res = match sent {
            Ok(res) => res,
            Err(e) => return (Err(self.classify(e)), Reply::default()),
        };
        let status = res.status();
        let retry_after = res
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, chrono::Utc::now()));
        let excerpt = drain(res, excerpt_bytes).await;
        let reply = Reply {
            status: Some(status.as_u16()),
            excerpt,
        };
        if status.is_success() {
            return (Ok(()), reply);
        }
        let error = DeliveryError::Status {
            status: status.as_u16(),
            retry_after,
        };
        (Err(error), reply)
    }

    fn classify(&self, e: reqwest::Error) -> DeliveryError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if let Some(b) = s.downcast_ref::<BlockedName>() {
                return DeliveryError::Blocked(b.0.clone());
            }
            source = s.source();
        }
        if e.is_timeout() {
            DeliveryError::Timeout(self.timeout)
        } else {
            DeliveryError::Connect(error_chain(&e))
        }
    }
}

/// `Retry-After` as delay-seconds or an HTTP date (RFC 9110), capped at an hour.
fn parse_retry_after(v: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = v.trim();
    let delay = match v.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
            (at.with_timezone(&chrono::Utc) - now)
                .to_std()
                .unwrap_or_default()
        }
    };
    Some(delay.min(MAX_RETRY_AFTER))
}

/// What a subscriber answered, for the attempt log.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Option<u16>,
    /// The start of the body (UTF-8, lossy), when asked for and not empty.
    pub excerpt: Option<String>,
}

/// Reads a bounded response body so the connection goes back to the pool, keeping its
/// first `excerpt_bytes`; a larger body closes the connection instead of being buffered.
async fn drain(mut res: reqwest::Response, excerpt_bytes: usize) -> Option<String> {
    const MAX_DRAIN_BYTES: usize = 64 * 1024;
    let mut excerpt = Vec::new();
    let mut read = 0;
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = excerpt_bytes.saturating_sub(excerpt.len());
        excerpt.extend_from_slice(&chunk[..room.min(chunk.len())]);
        read += chunk.len();
        if read > MAX_DRAIN_BYTES {
            break;
        }
    }
    excerpt_text(excerpt)
}

/// The excerpt as text: a character cut at the end is dropped, other invalid UTF-8 shows
/// as U+FFFD.
fn excerpt_text(mut bytes: Vec<u8>) -> Option<String> {
    if let Err(e) = std::str::from_utf8(&bytes) {
        if e.error_len().is_none() {
            bytes.truncate(e.valid_up_to());
        }
    }
    if bytes.is_empty() {
        return None;
    }
    Some(match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    })
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Turns `options.post_headers` into headers; names and values must be valid HTTP.
pub fn extra_headers(post_headers: Option<&serde_json::Value>) -> Result<HeaderMap, DeliveryError> {
    let mut out = HeaderMap::new();
    let Some(map) = post_headers.and_then(|v| v.as_object()) else {
        return Ok(out);
    };
    for (k, v) in map {
        let value = match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let name = HeaderName::from_bytes(k.as_bytes())
            .map_err(|_| DeliveryError::Misconfigured(format!("invalid header name {k:?}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| DeliveryError::Misconfigured(format!("invalid value of header {k}")))?;
        out.insert(name, value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        assert_eq!(
            super::parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            super::parse_retry_after("Wed, 21 Oct 2015 07:29:30 GMT", now),
            Some(Duration::from_secs(90))
        );
        assert_eq!(
            super::parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(
            super::parse_retry_after("99999", now),
            Some(super::MAX_RETRY_AFTER)
        );
        assert_eq!(super::parse_retry_after("soon", now), None);
    }

    use super::*;

    #[test]
    fn an_excerpt_drops_a_character_cut_at_its_end() {
        assert_eq!(excerpt_text(b"ok".to_vec()).as_deref(), Some("ok"));
        assert_eq!(excerpt_text(Vec::new()), None);
        let mut cut = "é".repeat(3).into_bytes();
        cut.pop();
        assert_eq!(excerpt_text(cut).as_deref(), Some("éé"));
        assert_eq!(
            excerpt_text(b"a\xffb".to_vec()).as_deref(),
            Some("a\u{fffd}b")
        );
    }

    #[test]
    fn the_guard_refuses_internal_addresses_unless_allowed() {
        let strict = AddressGuard::new(vec![]);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!strict.permits(ip.parse().unwrap()), "{ip} permitted");
        }
        assert!(strict.permits("93.184.216.34".parse().unwrap()));
        assert!(strict.permits("2606:2800:220:1::1".parse().unwrap()));
        let tests = AddressGuard::new(vec!["127.0.0.0/8".parse().unwrap()]);
        assert!(tests.permits("127.0.0.1".parse().unwrap()));
        assert!(!tests.permits("10.0.0.1".parse().unwrap()));
    }
}
