//! The operator console at `/console/`: server-rendered HTML pages (templates compiled
//! with [`maud`], which escapes every interpolated value unless told otherwise) over the
//! same services and store functions as the API handlers, with the API's identity (see
//! [`session`]), a CSRF token on every state-changing form, and strict security headers.
//! Assets (CSS and a small optional script) are compiled into the binary.

mod chart;
mod history;
mod login;
mod messages;
mod overview;
mod page;
mod session;
mod subscriptions;
mod topics;

use std::{sync::Arc, time::Instant};

use axum::{
    extract::{FromRequest, FromRequestParts, Request},
    http::{header, request::Parts, HeaderValue, StatusCode},
    middleware::{self, Next},
    response::{Html, IntoResponse, Redirect, Response},
    routing::{get, post},
    Router,
};
use bytes::Bytes;

pub use self::history::History;
use self::{
    page::Failure,
    session::{Session, Sessions},
};
use crate::{
    api::AppState,
    auth::{AuthError, Identity},
};

/// The console's state: sessions and the metrics history. Cloning shares both.
#[derive(Clone, Default)]
pub struct Console {
    sessions: Sessions,
    history: History,
    tallies: overview::Tallies,
}

impl Console {
    pub fn new() -> Self {
        Self::default()
    }

    /// The charts' history; `startup` runs its sampler.
    pub fn history(&self) -> &History {
        &self.history
    }
}

/// Whether `path` is the console's (answered with HTML, never with the API's JSON errors).
pub fn is_console_path(path: &str) -> bool {
    path == "/console" || path.starts_with("/console/")
}

/// No inline script or style anywhere; forms post only here; never framed.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The console's routes, merged into the API router.
pub(crate) fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(overview::show_overview))
        .route("/console/login", get(login::login_page).post(login::login))
        .route("/console/logout", post(login::logout))
        .route("/console/project", post(login::switch_project))
        .route(
            "/console/topics",
            get(topics::list_topics).post(topics::create_topic),
        )
        .route("/console/topics/{name}", get(topics::show_topic))
        .route(
            "/console/topics/{name}/delete",
            get(topics::confirm_delete_topic).post(topics::delete_topic),
        )
        .route("/console/topics/{name}/messages", post(topics::publish))
        .route(
            "/console/topics/{name}/subscriptions",
            post(topics::subscribe),
        )
        .route(
            "/console/topics/{name}/subscriptions/{id}",
            get(subscriptions::show_subscription),
        )
        .route(
            "/console/topics/{name}/subscriptions/{id}/delete",
            get(subscriptions::confirm_delete_subscription)
                .post(subscriptions::delete_subscription),
        )
        .route(
            "/console/topics/{name}/subscriptions/{id}/replay",
            post(subscriptions::replay),
        )
        .route(
            "/console/topics/{name}/subscriptions/{id}/recover",
            post(subscriptions::recover),
        )
        .route(
            "/console/topics/{name}/subscriptions/{id}/enabled",
            post(subscriptions::set_enabled),
        )
        .route("/console/messages", get(messages::list_messages))
        .route(
            "/console/messages/{id}/delete",
            post(messages::delete_message),
        )
        .route("/console/static/console.css", get(stylesheet))
        .route("/console/static/console.js", get(script))
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(middleware::from_fn(console_headers))
}

/// Security headers on every console response, and the server time it took
/// (`Server-Timing`, which browsers expose to the page's performance API).
async fn console_headers(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let mut res = next.run(req).await;
    let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if let Ok(v) = HeaderValue::from_str(&format!("app;dur={elapsed_ms:.2}")) {
        h.insert("server-timing", v);
    }
    res
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

async fn not_found() -> Failure {
    Failure::not_found("There is no such console page.")
}

/// Whether the console is served over TLS (then its cookie is `Secure`).
fn secure(state: &AppState) -> bool {
    state.config.public_url.starts_with("https://")
}

/// A 303 to `to` (after a form, the browser loads the page with GET).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// A logged-in visitor: the session and the identity the API resolves from its login.
pub(crate) struct Viewer {
    pub(crate) identity: Identity,
    pub(crate) session: Arc<Session>,
}

impl Viewer {
    /// The session's token (tokens and keystone modes), which the API would read from
    /// `X-Auth-Token` (e.g. to create a Keystone trust for a `trust+` subscriber).
    pub(crate) fn token(&self) -> Option<&str> {
        match &self.session.login {
            Some(session::Login::Token { token, .. }) => Some(token),
            _ => None,
        }
    }

    /// The identity, when it may change things (`member` or `admin`).
    pub(crate) fn writer(&self) -> Result<&Identity, Failure> {
        if self.identity.can_write() {
            Ok(&self.identity)
        } else {
            Err(Failure::new(
                StatusCode::FORBIDDEN,
                "This action needs the member or admin role.",
            ))
        }
    }
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let sessions = &state.console.sessions;
        let Some(session) = sessions.find(&parts.headers).await else {
            return Err(see_other("/console/login"));
        };
        let Some(login) = session.login.clone() else {
            return Err(see_other("/console/login"));
        };
        match state.auth.resolve(&login.headers()).await {
            Ok(identity) => Ok(Self { identity, session }),
            Err(AuthError::IdentityUnavailable) => Err(Failure::from(
                crate::error::ApiError::from(AuthError::IdentityUnavailable),
            )
            .into_response()),
            // The token expired, was revoked or left the tokens file: log in again.
            Err(e) => {
                sessions.end(&session.id).await;
                let fresh = sessions.start(None).await;
                fresh.flash(true, format!("Please log in again: {e}"));
                let mut res = see_other("/console/login");
                res.headers_mut().insert(
                    header::SET_COOKIE,
                    session::set_cookie(&fresh.id, secure(state)),
                );
                Err(res)
            }
        }
    }
}

/// Largest form body the console accepts.
const MAX_FORM_BYTES: usize = 256 * 1024;

/// A submitted form whose CSRF token matched the session's (403 otherwise).
pub(crate) struct Form {
    pub(crate) session: Arc<Session>,
    fields: Vec<(String, String)>,
}

impl Form {
    /// Field `name`, trimmed; empty when absent.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.trim())
    }

    /// Every value of field `name` (e.g. checkboxes).
    pub(crate) fn all(&self, name: &str) -> Vec<String> {
        self.fields
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

impl FromRequest<AppState> for Form {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let session = state.console.sessions.find(req.headers()).await;
        let body = axum::body::to_bytes(req.into_body(), MAX_FORM_BYTES)
            .await
            .map_err(|_| {
                Failure::new(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.")
                    .into_response()
            })?;
        let fields = parse_form(&body);
        let given = fields
            .iter()
            .find(|(k, _)| k == "csrf")
            .map_or("", |(_, v)| v.as_str());
        match session {
            Some(session) if session.csrf_ok(given) => Ok(Self { session, fields }),
            _ => Err(Failure::new(
                StatusCode::FORBIDDEN,
                "This form lacks a valid security token (CSRF), or your session ended. \
                 Reload the page and submit it again.",
            )
            .into_response()),
        }
    }
}

fn parse_form(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

/// Markup as an HTML response.
fn html(markup: maud::Markup) -> Response {
    Html(markup.into_string()).into_response()
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, http::Request as HttpRequest};

    use super::*;

    #[test]
    fn console_paths_are_told_from_api_paths() {
        assert!(is_console_path("/console"));
        assert!(is_console_path("/console/topics/x"));
        assert!(!is_console_path("/consoles"));
        assert!(!is_console_path("/v2/topics"));
    }

    #[test]
    fn forms_decode_percent_and_plus() {
        let f = parse_form(&Bytes::from_static(b"a=%3Cscript%3E&b=x+y&a=2"));
        assert_eq!(f[0], ("a".into(), "<script>".into()));
        assert_eq!(f[1], ("b".into(), "x y".into()));
        assert_eq!(f.len(), 3);
    }

    #[tokio::test]
    async fn every_console_response_carries_the_security_headers() {
        let app: Router = Router::new()
            .route("/console/x", get(|| async { "ok" }))
            .layer(middleware::from_fn(console_headers));
        let res = tower::ServiceExt::oneshot(
            app,
            HttpRequest::get("/console/x").body(Body::empty()).unwrap(),
        )
        .await
        .unwrap();
        let h = res.headers();
        let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("default-src 'self'"));
        assert!(!csp.contains("unsafe-inline"));
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        assert_eq!(h[header::CACHE_CONTROL], "no-store");
        assert!(h["server-timing"].to_str().unwrap().starts_with("app;dur="));
    }
}
