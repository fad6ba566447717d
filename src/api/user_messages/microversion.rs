//! Microversion negotiation and the headers Cinder puts on every `/v3` response.

use super::*;

/// A negotiated microversion `3.x`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Microversion {
    pub major: u32,
    pub minor: u32,
}

/// Why a requested microversion cannot be served.
#[derive(Debug, PartialEq, Eq)]
pub enum VersionError {
    /// 400: not `Major.Minor`.
    Malformed(String),
    /// 406: outside `MIN_VERSION..=MAX_VERSION`.
    Unsupported(Microversion),
}

impl Microversion {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Cinder's `^([1-9]\d*)\.([1-9]\d*|0)$`, or `latest`.
    pub(crate) fn parse(s: &str) -> Result<Self, VersionError> {
        if s.eq_ignore_ascii_case("latest") {
            return Ok(MAX_VERSION);
        }
        let number = |p: &str| {
            let ok = !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
                && (p == "0" || !p.starts_with('0'));
            ok.then(|| p.parse::<u32>().ok()).flatten()
        };
        let parsed = s
            .split_once('.')
            .and_then(|(a, b)| Some(Self::new(number(a)?, number(b)?)))
            .filter(|v| v.major > 0);
        parsed.ok_or_else(|| VersionError::Malformed(s.to_owned()))
    }

    /// The version a request asks for: the `volume` entry of `OpenStack-API-Version`
    /// (entries for other services are ignored); 3.0 when there is none.
    pub fn from_header(value: Option<&str>) -> Result<Self, VersionError> {
        let Some(value) = value else {
            return Ok(MIN_VERSION);
        };
        let mut found = None;
        for entry in value.split(',') {
            let mut words = entry.split_whitespace();
            if words
                .next()
                .is_some_and(|w| w.eq_ignore_ascii_case("volume"))
            {
                let rest: Vec<&str> = words.collect();
                found = Some(rest.join(" "));
            }
        }
        let Some(requested) = found else {
            return Ok(MIN_VERSION);
        };
        let v = Self::parse(requested.trim())?;
        if v < MIN_VERSION || v > MAX_VERSION {
            return Err(VersionError::Unsupported(v));
        }
        Ok(v)
    }
}

impl std::fmt::Display for Microversion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl From<VersionError> for CinderError {
    fn from(e: VersionError) -> Self {
        match e {
            VersionError::Malformed(s) => CinderError::bad_request(format!(
                "API Version String {s} is of invalid format. Must be of format MajorNum.MinorNum."
            )),
            VersionError::Unsupported(v) => CinderError::new(
                StatusCode::NOT_ACCEPTABLE,
                format!(
                    "Version {v} is not supported by the API. Minimum is {MIN_VERSION} and maximum is {MAX_VERSION}."
                ),
            ),
        }
    }
}

/// Negotiates the microversion of every `/v3` request and stamps Cinder's headers on
/// every `/v3` response, errors included: `OpenStack-API-Version`, `Vary`,
/// `x-compute-request-id` (same id as `x-openstack-request-id`).
pub(crate) async fn cinder_headers(mut req: Request, next: Next) -> Response {
    if !is_cinder_path(req.uri().path()) {
        return next.run(req).await;
    }
    let request_id = req.extensions().get::<RequestId>().cloned();
    let header = req
        .headers()
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or("\u{0}"));
    let (version, mut res) = match Microversion::from_header(header) {
        Ok(v) => {
            req.extensions_mut().insert(v);
            (v, next.run(req).await)
        }
        Err(e) => (MIN_VERSION, CinderError::from(e).into_response()),
    };
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&format!("volume {version}")) {
        headers.insert(VERSION_HEADER, v);
    }
    headers.insert(header::VARY, HeaderValue::from_static(VERSION_HEADER));
    if let Some(id) = request_id.and_then(|r| HeaderValue::from_str(&r.0).ok()) {
        headers.insert("x-compute-request-id", id);
    }
    res
}
