//! Logging in and out, and switching project. `noauth`: a project form. `tokens`: a token
//! form. `keystone`: user name, password and project, exchanged with Keystone for the
//! user's own token. Each login is checked by resolving it exactly as the API would.

use axum::{
    extract::State,
    http::{header, HeaderMap, StatusCode},
    response::Response,
};
use maud::html;

use super::{
    html, page,
    page::Failure,
    secure, see_other,
    session::{self, Login},
    Form, Viewer,
};
use crate::{api::AppState, config::AuthMode, domain::ProjectId};

/// The login form (a session, anonymous until login, carries its CSRF token).
pub(crate) async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let sessions = &state.console.sessions;
    let existing = sessions.find(&headers).await;
    if existing.as_ref().is_some_and(|s| s.login.is_some()) {
        return see_other("/console/");
    }
    let (session, new) = match existing {
        Some(s) => (s, false),
        None => (sessions.start(None).await, true),
    };
    let mode = state.config.auth_mode;
    let form = html! {
        form.card method="post" action="/console/login" {
            input type="hidden" name="csrf" value=(session.csrf);
            @match mode {
                AuthMode::Noauth => {
                    p.muted { "This Herald runs without authentication (auth_mode = noauth): name the project to work in." }
                    label { "Project id" input type="text" name="project" required autofocus pattern="[A-Za-z0-9_-]{1,256}"; }
                }
                AuthMode::Tokens => {
                    p.muted { "Log in with an API token from Herald's tokens file." }
                    label { "Token" input type="password" name="token" required autofocus autocomplete="current-password"; }
                }
                AuthMode::Keystone => {
                    p.muted { "Log in with your OpenStack (Keystone) account." }
                    label { "User name" input type="text" name="user" required autofocus autocomplete="username"; }
                    label { "Password" input type="password" name="password" required autocomplete="current-password"; }
                    label { "Project" input type="text" name="project" required; }
                    label { "Domain" input type="text" name="domain" value="Default" required; }
                }
            }
            button type="submit" { "Log in" }
        }
    };
    let mut res = html(page::bare("Log in", session.take_flash(), form));
    if new {
        res.headers_mut().insert(
            header::SET_COOKIE,
            session::set_cookie(&session.id, secure(&state)),
        );
    }
    res
}

/// Checks the form's credentials; on success a new session (new id) replaces the old.
pub(crate) async fn login(State(state): State<AppState>, form: Form) -> Result<Response, Failure> {
    let login = match credentials(&state, &form).await {
        Ok(login) => login,
        Err(message) => {
            form.session.flash(true, message);
            return Ok(see_other("/console/login"));
        }
    };
    if let Err(e) = state.auth.resolve(&login.headers()).await {
        form.session.flash(true, format!("Login refused: {e}"));
        return Ok(see_other("/console/login"));
    }
    let sessions = &state.console.sessions;
    sessions.end(&form.session.id).await;
    let session = sessions.start(Some(login)).await;
    let mut res = see_other("/console/");
    res.headers_mut().insert(
        header::SET_COOKIE,
        session::set_cookie(&session.id, secure(&state)),
    );
    Ok(res)
}

/// The login the form describes, or what is wrong with it.
async fn credentials(state: &AppState, form: &Form) -> Result<Login, String> {
    match state.config.auth_mode {
        AuthMode::Noauth => ProjectId::parse(form.get("project"))
            .map(Login::Project)
            .map_err(|e| e.0),
        AuthMode::Tokens => match form.get("token") {
            "" => Err("Enter a token.".into()),
            t => Ok(Login::Token {
                token: t.to_owned(),
                project: None,
            }),
        },
        AuthMode::Keystone => {
            let keystone = state.auth.keystone().ok_or("Keystone is not configured.")?;
            let domain = match form.get("domain") {
                "" => "Default",
                d => d,
            };
            match keystone
                .password_login(
                    form.get("user"),
                    form.get("password"),
                    form.get("project"),
                    domain,
                )
                .await
            {
                Ok(Some(token)) => Ok(Login::Token {
                    token,
                    project: None,
                }),
                Ok(None) => Err("Keystone refused this user name, password and project.".into()),
                Err(e) => {
                    tracing::warn!(error.cause_chain = ?e, error.message = %e, "console login: Keystone failed");
                    Err("The identity service is not reachable right now; retry later.".into())
                }
            }
        }
    }
}

pub(crate) async fn logout(State(state): State<AppState>, form: Form) -> Response {
    state.console.sessions.end(&form.session.id).await;
    let mut res = see_other("/console/login");
    res.headers_mut()
        .insert(header::SET_COOKIE, session::clear_cookie(secure(&state)));
    res
}

/// Switches the project the session acts on: anybody in `noauth`, admins otherwise (the
/// authenticator ignores a non-admin's project choice, so this is checked here to say so).
pub(crate) async fn switch_project(
    State(state): State<AppState>,
    viewer: Viewer,
    form: Form,
) -> Result<Response, Failure> {
    let Some(login) = &viewer.session.login else {
        return Ok(see_other("/console/login"));
    };
    let noauth = matches!(login, Login::Project(_));
    if !noauth && !viewer.identity.is_admin() {
        return Err(Failure::new(
            StatusCode::FORBIDDEN,
            "Only an admin may switch project.",
        ));
    }
    match ProjectId::parse(form.get("project")) {
        Ok(project) => {
            let text = format!("Now working in project {project}.");
            state
                .console
                .sessions
                .relogin(&viewer.session, login.switched_to(project))
                .await;
            // The new session entry carries the notice.
            if let Some(s) = state.console.sessions.find_by_id(&viewer.session.id).await {
                s.flash(false, text);
            }
        }
        Err(e) => viewer.session.flash(true, e.0),
    }
    Ok(see_other("/console/"))
}
