//! The page shell (header, navigation, identity, flash notice), the error page and small
//! view helpers shared by every console page. Everything interpolated is escaped by maud.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use maud::{html, Markup, DOCTYPE};
use serde_json::Value;

use super::{html as html_response, Viewer};
use crate::{error::ApiError, store::StoreError};

/// Which navigation entry is current.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Nav {
    Overview,
    Topics,
    Messages,
}

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            title { (title) " · Herald console" }
            link rel="stylesheet" href="/console/static/console.css";
            script src="/console/static/console.js" defer {}
        }
    }
}

/// A full page for a logged-in viewer; `refresh` (seconds) asks the optional script to
/// reload it.
pub(crate) fn page(
    viewer: &Viewer,
    nav: Nav,
    title: &str,
    refresh: Option<u32>,
    body: Markup,
) -> Response {
    let id = &viewer.identity;
    let roles: Vec<&str> = id
        .roles
        .iter()
        .map(|r| match r {
            crate::auth::Role::Reader => "reader",
            crate::auth::Role::Member => "member",
            crate::auth::Role::Admin => "admin",
        })
        .collect();
    let flash = viewer.session.take_flash();
    let item = |target: Nav, href: &str, label: &str| {
        html! { a href=(href) class=[(nav == target).then_some("current")] { (label) } }
    };
    html_response(html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body data-refresh=[refresh] {
                header.top {
                    a.brand href="/console/" { "Herald" }
                    nav {
                        (item(Nav::Overview, "/console/", "Overview"))
                        (item(Nav::Topics, "/console/topics", "Topics"))
                        (item(Nav::Messages, "/console/messages", "User messages"))
                    }
                    div.who {
                        span { "project " b id="project" { (id.project.as_str()) } }
                        @if let Some(u) = &id.user_id { span { " · " (u) } }
                        span.roles { " · " (roles.join(", ")) }
                        @if id.is_admin() || viewer.session.login.as_ref().is_some_and(|l| matches!(l, super::session::Login::Project(_))) {
                            form.inline method="post" action="/console/project" {
                                (csrf(viewer))
                                input type="text" name="project" placeholder="switch project" required size="12" aria-label="Project";
                                button type="submit" { "Switch" }
                            }
                        }
                        form.inline method="post" action="/console/logout" {
                            (csrf(viewer))
                            button.link type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    @if let Some(f) = flash {
                        p class={ "flash " (if f.error { "error" } else { "ok" }) } role="status" { (f.text) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    })
}

/// A page without the navigation (login, errors).
pub(crate) fn bare(title: &str, flash: Option<super::session::Flash>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body.bare {
                header.top { a.brand href="/console/" { "Herald" } }
                main.narrow {
                    @if let Some(f) = flash {
                        p class={ "flash " (if f.error { "error" } else { "ok" }) } role="status" { (f.text) }
                    }
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

/// The hidden CSRF field of a state-changing form.
pub(crate) fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.session.csrf); }
}

/// A JSON document, pretty-printed and escaped.
pub(crate) fn json(v: &Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_default();
    html! { pre.json { (text) } }
}

/// `2026-12-03 17:10:16 UTC`, with the age as a tooltip-free suffix.
pub(crate) fn when(t: DateTime<Utc>) -> Markup {
    let age = (Utc::now() - t).num_seconds();
    let span = |secs: i64| match secs {
        0..=59 => format!("{secs} s"),
        60..=3599 => format!("{} min", secs / 60),
        3600..=86_399 => format!("{} h", secs / 3600),
        _ => format!("{} d", secs / 86_400),
    };
    let ago = if age < 0 {
        format!("in {}", span(-age))
    } else {
        format!("{} ago", span(age))
    };
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S UTC")) } " " span.muted { "(" (ago) ")" } }
}

/// "Next page" (and "first page") links.
pub(crate) fn pager(first: Option<&str>, next: Option<String>) -> Markup {
    html! {
        @if first.is_some() || next.is_some() {
            nav.pager {
                @if let Some(f) = first { a href=(f) { "⇤ First page" } }
                @if let Some(n) = next { a rel="next" href=(n) { "Next page →" } }
            }
        }
    }
}

/// URL query text from pairs (percent-encoded).
pub(crate) fn query(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        s.append_pair(k, v);
    }
    s.finish()
}

/// A failed console request: an HTML error page with the API's status and message.
#[derive(Debug)]
pub(crate) struct Failure {
    status: StatusCode,
    message: String,
}

impl Failure {
    pub(crate) fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// The caller's mistake (4xx): worth showing on the form's own page.
    pub(crate) fn is_client_error(&self) -> bool {
        self.status.is_client_error()
    }

    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let message = match &e {
            ApiError::Internal(cause) => {
                tracing::error!(error.cause_chain = ?cause, error.message = %cause, "console: internal error");
                "An unexpected error prevented the console from answering.".to_owned()
            }
            other => other.to_string(),
        };
        Self::new(e.status(), message)
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        ApiError::from(e).into()
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            p.error-text { (self.message) }
            p { a href="/console/" { "Back to the console" } }
        };
        let mut res = html_response(bare(
            &format!("{} {title}", self.status.as_u16()),
            None,
            body,
        ));
        *res.status_mut() = self.status;
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_documents_are_escaped() {
        let v = serde_json::json!({"x": "<script>alert(1)</script>", "q": "\"&'"});
        let out = json(&v).into_string();
        assert!(!out.contains("<script>"), "{out}");
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(out.contains("&amp;"));
    }

    #[test]
    fn error_pages_escape_the_message_and_keep_the_status() {
        let res =
            Failure::new(StatusCode::BAD_REQUEST, "<img src=x onerror=alert(1)>").into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    }

    #[tokio::test]
    async fn error_page_bodies_escape_user_text() {
        let res = Failure::not_found("<img src=x onerror=alert(1)>").into_response();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(
            text.contains("&lt;img src=x onerror=alert(1)&gt;"),
            "{text}"
        );
        assert!(!text.contains("<img"));
    }

    #[test]
    fn queries_are_percent_encoded_and_skip_empty_values() {
        assert_eq!(
            query(&[("marker", "a&b=c"), ("name", ""), ("limit", "20")]),
            "marker=a%26b%3Dc&limit=20"
        );
    }
}
