//! Console sessions: a random id in an HttpOnly, SameSite=Strict cookie, mapped to a
//! server-side entry (the login and a CSRF token) that expires when idle. The cookie holds
//! no secret but the id; tokens stay in this process.
//!
//! Sessions live in this process only: a restart logs everybody out, and several API
//! processes behind one address need sticky sessions.

use std::{
    fmt,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::http::{header, HeaderMap, HeaderValue};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use moka::future::Cache;
use rand::RngCore;

use crate::domain::ProjectId;

/// The session cookie's name.
pub(crate) const COOKIE: &str = "herald_console";
/// A session nobody used for this long is forgotten.
const IDLE: Duration = Duration::from_secs(2 * 3600);
/// No session outlives this, used or not.
const MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions held at once (anonymous ones included: the login form needs one).
const CAPACITY: u64 = 20_000;

/// Who a session is logged in as: what the API would read from the request headers.
#[derive(Clone)]
pub(crate) enum Login {
    /// `noauth`: the project the form named.
    Project(ProjectId),
    /// `tokens` and `keystone`: the caller's token, and the project an admin switched to.
    Token {
        token: String,
        project: Option<ProjectId>,
    },
}

/// Never prints the token.
impl fmt::Debug for Login {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Project(p) => f.debug_tuple("Project").field(p).finish(),
            Self::Token { project, .. } => f
                .debug_struct("Token")
                .field("token", &"***")
                .field("project", project)
                .finish(),
        }
    }
}

impl Login {
    /// The request headers the API's authenticator resolves into the same identity.
    pub(crate) fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let (token, project) = match self {
            Self::Project(p) => (None, Some(p)),
            Self::Token { token, project } => (Some(token), project.as_ref()),
        };
        if let Some(v) = token.and_then(|t| HeaderValue::from_str(t).ok()) {
            h.insert("x-auth-token", v);
        }
        if let Some(v) = project.and_then(|p| HeaderValue::from_str(p.as_str()).ok()) {
            h.insert("x-project-id", v);
        }
        h
    }

    /// The same login acting on `project` (noauth: any; tokens/keystone: honoured for admins
    /// only, by the authenticator).
    pub(crate) fn switched_to(&self, project: ProjectId) -> Self {
        match self {
            Self::Project(_) => Self::Project(project),
            Self::Token { token, .. } => Self::Token {
                token: token.clone(),
                project: Some(project),
            },
        }
    }
}

/// A one-shot notice shown on the next page (after a form's redirect).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Flash {
    pub(crate) error: bool,
    pub(crate) text: String,
}

#[derive(Debug)]
pub(crate) struct Session {
    pub(crate) id: String,
    /// The synchronizer token every state-changing form must carry.
    pub(crate) csrf: String,
    pub(crate) login: Option<Login>,
    flash: Mutex<Option<Flash>>,
}

impl Session {
    /// Whether `given` is this session's CSRF token (compared in constant time).
    pub(crate) fn csrf_ok(&self, given: &str) -> bool {
        constant_time_eq(self.csrf.as_bytes(), given.as_bytes())
    }

    pub(crate) fn flash(&self, error: bool, text: impl Into<String>) {
        *self.flash.lock().unwrap_or_else(|e| e.into_inner()) = Some(Flash {
            error,
            text: text.into(),
        });
    }

    pub(crate) fn take_flash(&self) -> Option<Flash> {
        self.flash.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 256 random bits, URL-safe.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The session map; cloning shares it.
#[derive(Clone)]
pub(crate) struct Sessions {
    map: Cache<String, Arc<Session>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Self {
            map: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(IDLE)
                .time_to_live(MAX_AGE)
                .build(),
        }
    }
}

impl Sessions {
    /// The live session the request's cookie names, if any.
    pub(crate) async fn find(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = cookie_value(headers, COOKIE)?;
        self.map.get(id).await
    }

    pub(crate) async fn find_by_id(&self, id: &str) -> Option<Arc<Session>> {
        self.map.get(id).await
    }

    /// A new session with fresh id and CSRF token (a login always gets a new id, so an id
    /// planted before login is worth nothing after it).
    pub(crate) async fn start(&self, login: Option<Login>) -> Arc<Session> {
        let session = Arc::new(Session {
            id: random_token(),
            csrf: random_token(),
            login,
            flash: Mutex::new(None),
        });
        self.map.insert(session.id.clone(), session.clone()).await;
        session
    }

    /// Replaces the login of session `old` (same id and CSRF token: an admin's project
    /// switch keeps the open pages' forms valid).
    pub(crate) async fn relogin(&self, old: &Session, login: Login) {
        let session = Arc::new(Session {
            id: old.id.clone(),
            csrf: old.csrf.clone(),
            login: Some(login),
            flash: Mutex::new(None),
        });
        self.map.insert(session.id.clone(), session).await;
    }

    pub(crate) async fn end(&self, id: &str) {
        self.map.invalidate(id).await;
    }
}

/// `Set-Cookie` for session `id`; `secure` when the console is served over TLS.
pub(crate) fn set_cookie(id: &str, secure: bool) -> HeaderValue {
    cookie_header(id, secure, None)
}

/// `Set-Cookie` that removes the session cookie.
pub(crate) fn clear_cookie(secure: bool) -> HeaderValue {
    cookie_header("", secure, Some(0))
}

fn cookie_header(value: &str, secure: bool, max_age: Option<u64>) -> HeaderValue {
    let mut c = format!("{COOKIE}={value}; Path=/console; HttpOnly; SameSite=Strict");
    if let Some(age) = max_age {
        c.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        c.push_str("; Secure");
    }
    // Only URL-safe base64 and fixed text: always a valid header value.
    HeaderValue::from_str(&c).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
        h
    }

    #[tokio::test]
    async fn a_session_is_found_by_its_cookie_and_gone_after_logout() {
        let sessions = Sessions::default();
        let s = sessions.start(None).await;
        let h = with_cookie(&format!("other=1; {COOKIE}={}; x=y", s.id));
        assert_eq!(sessions.find(&h).await.unwrap().id, s.id);
        assert!(sessions
            .find(&with_cookie(&format!("{COOKIE}=forged")))
            .await
            .is_none());
        assert!(sessions.find(&HeaderMap::new()).await.is_none());
        sessions.end(&s.id).await;
        assert!(sessions.find(&h).await.is_none());
    }

    #[tokio::test]
    async fn every_session_gets_its_own_random_id_and_csrf_token() {
        let sessions = Sessions::default();
        let (a, b) = (sessions.start(None).await, sessions.start(None).await);
        assert_ne!(a.id, b.id);
        assert_ne!(a.csrf, b.csrf);
        assert_ne!(a.id, a.csrf);
        assert_eq!(a.id.len(), 43, "256 bits in unpadded base64");
    }

    #[tokio::test]
    async fn the_csrf_check_accepts_only_the_sessions_own_token() {
        let sessions = Sessions::default();
        let (a, b) = (sessions.start(None).await, sessions.start(None).await);
        assert!(a.csrf_ok(&a.csrf));
        assert!(!a.csrf_ok(&b.csrf));
        assert!(!a.csrf_ok(""));
        assert!(!a.csrf_ok(&a.csrf[..42]));
    }

    #[tokio::test]
    async fn a_project_switch_keeps_the_id_and_csrf_token() {
        let sessions = Sessions::default();
        let p = |s: &str| ProjectId::parse(s).unwrap();
        let login = Login::Token {
            token: "t".into(),
            project: None,
        };
        let s = sessions.start(Some(login.clone())).await;
        sessions.relogin(&s, login.switched_to(p("p2"))).await;
        let h = with_cookie(&format!("{COOKIE}={}", s.id));
        let now = sessions.find(&h).await.unwrap();
        assert_eq!(now.csrf, s.csrf);
        let headers = now.login.as_ref().unwrap().headers();
        assert_eq!(headers["x-auth-token"], "t");
        assert_eq!(headers["x-project-id"], "p2");
    }

    #[test]
    fn the_cookie_is_http_only_strict_and_secure_over_tls() {
        let plain = set_cookie("abc", false);
        assert_eq!(
            plain,
            "herald_console=abc; Path=/console; HttpOnly; SameSite=Strict"
        );
        let tls = set_cookie("abc", true).to_str().unwrap().to_owned();
        assert!(tls.ends_with("; Secure"), "{tls}");
        assert!(clear_cookie(false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn a_token_login_never_prints_its_token() {
        let login = Login::Token {
            token: "s3cret".into(),
            project: None,
        };
        assert!(!format!("{login:?}").contains("s3cret"));
    }

    #[test]
    fn a_flash_is_shown_once() {
        let s = Session {
            id: "i".into(),
            csrf: "c".into(),
            login: None,
            flash: Mutex::new(None),
        };
        s.flash(true, "boom");
        assert_eq!(
            s.take_flash(),
            Some(Flash {
                error: true,
                text: "boom".into()
            })
        );
        assert_eq!(s.take_flash(), None);
    }
}
