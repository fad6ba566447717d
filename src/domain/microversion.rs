//! Cinder's microversions (`3.x`): the range Herald serves and how a request's
//! `OpenStack-API-Version` header is read. Negotiation and the response headers live in
//! `api::cinder::microversion`.

/// Oldest and newest microversions (Cinder's range; python-cinderclient's maximum).
pub const MIN_VERSION: Microversion = Microversion::new(3, 0);
pub const MAX_VERSION: Microversion = Microversion::new(3, 71);

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
    fn parse(s: &str) -> Result<Self, VersionError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microversions_are_negotiated_as_cinder_does() {
        let v = |h: Option<&str>| Microversion::from_header(h);
        assert_eq!(v(None), Ok(MIN_VERSION));
        assert_eq!(v(Some("volume 3.5")), Ok(Microversion::new(3, 5)));
        assert_eq!(v(Some("volume latest")), Ok(MAX_VERSION));
        assert_eq!(v(Some("compute 2.1")), Ok(MIN_VERSION), "another service");
        assert_eq!(
            v(Some("compute 2.1, volume 3.40")),
            Ok(Microversion::new(3, 40))
        );
        assert_eq!(
            v(Some("volume 3.72")),
            Err(VersionError::Unsupported(Microversion::new(3, 72)))
        );
        assert_eq!(
            v(Some("volume 2.0")),
            Err(VersionError::Unsupported(Microversion::new(2, 0)))
        );
        for bad in [
            "volume 3",
            "volume 3.x",
            "volume 3.05",
            "volume",
            "volume 0.1",
        ] {
            assert!(
                matches!(v(Some(bad)), Err(VersionError::Malformed(_))),
                "{bad} is malformed"
            );
        }
    }
}
