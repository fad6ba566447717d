//! The console in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed by scripts/test) driven by Selenium (pinned in
//! scripts/requirements.txt) runs tests/python/console_check.py against this Herald and a
//! real webhook receiver the script runs. Screenshots land in target/console-shots/.

use std::path::PathBuf;

use reqwest::Method;

use crate::helpers::spawn_app;

/// `$HERALD_PYTHON`, else the repository's `.venv` interpreter.
fn python() -> PathBuf {
    std::env::var_os("HERALD_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// Server time allowed per page. The target is 50 ms for an optimised build; a debug build
/// on a busy test machine gets five times that, so the check stays meaningful yet stable.
const MAX_SERVER_MS: f64 = if cfg!(debug_assertions) { 250.0 } else { 50.0 };

#[tokio::test]
async fn the_console_logs_in_manages_topics_and_replays_dead_letters_in_chromium() {
    // Arrange: Herald (noauth) and another project's topic the console must not reach.
    let app = spawn_app().await;
    let other = format!("{}other", app.project);
    let res = app
        .anon(Method::PUT, "/v2/topics/secret-topic")
        .header("X-Project-ID", &other)
        .json(&serde_json::json!({"owner": "someone else"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let shots = root.join("target/console-shots");
    std::fs::create_dir_all(&shots).unwrap();

    // Act
    let out = tokio::process::Command::new(python())
        .arg(root.join("tests/python/console_check.py"))
        .arg(&app.address)
        .arg(&app.project)
        .arg("secret-topic")
        .arg(&shots)
        .arg(MAX_SERVER_MS.to_string())
        .output()
        .await
        .expect("python runs (scripts/test installs selenium into .venv)");

    // Assert
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "console checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all console checks passed"), "{stdout}");
    println!("{stdout}");
    // The other project's topic is untouched by anything the browser did.
    let res = app
        .anon(Method::GET, "/v2/topics/secret-topic")
        .header("X-Project-ID", &other)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

/// A browser stand-in for the console's login flow: one cookie, no redirects followed.
struct Browser<'a> {
    app: &'a crate::helpers::TestApp,
    http: reqwest::Client,
    cookie: Option<String>,
}

impl<'a> Browser<'a> {
    fn new(app: &'a crate::helpers::TestApp) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        Self {
            app,
            http,
            cookie: None,
        }
    }

    fn keep_cookie(&mut self, res: &reqwest::Response) {
        if let Some(v) = res.headers().get("set-cookie") {
            let v = v.to_str().unwrap();
            let pair = v.split(';').next().unwrap().to_owned();
            self.cookie = (!pair.ends_with('=')).then_some(pair);
        }
    }

    async fn get(&mut self, path: &str) -> (u16, String, String) {
        let mut req = self.http.get(format!("{}{path}", self.app.address));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        self.keep_cookie(&res);
        let status = res.status().as_u16();
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (status, location, res.text().await.unwrap())
    }

    /// Posts `fields` with the CSRF token of the page at `form_page`.
    async fn post(
        &mut self,
        form_page: &str,
        action: &str,
        fields: &[(&str, &str)],
    ) -> (u16, String) {
        let (_, _, page) = self.get(form_page).await;
        let csrf = csrf_of(&page);
        let mut form: Vec<(&str, &str)> = fields.to_vec();
        form.push(("csrf", &csrf));
        self.post_raw(action, &form).await
    }

    async fn post_raw(&mut self, action: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let mut req = self
            .http
            .post(format!("{}{action}", self.app.address))
            .form(fields);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        let res = req.send().await.unwrap();
        self.keep_cookie(&res);
        let location = res
            .headers()
            .get("location")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        (res.status().as_u16(), location)
    }
}

fn csrf_of(page: &str) -> String {
    let start = page
        .find(r#"name="csrf" value=""#)
        .expect("a form with a CSRF token")
        + 19;
    page[start..start + page[start..].find('"').unwrap()].to_owned()
}

#[tokio::test]
async fn in_tokens_mode_the_console_logs_in_with_a_token_and_only_an_admin_switches_project() {
    // Arrange: a member of `p-alice`, an admin of `ops`, and a topic in `p-alice`.
    let tokens = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        tokens.path(),
        serde_json::json!({"tokens": {
            "tok-alice": {"user_id": "alice", "project_id": "p-alice"},
            "tok-root": {"user_id": "root", "project_id": "ops", "roles": ["admin"]}
        }})
        .to_string(),
    )
    .unwrap();
    let path = tokens.path().to_owned();
    let app = crate::helpers::spawn_app_with(|c| {
        c.auth_mode = herald::config::AuthMode::Tokens;
        c.tokens_file = Some(path);
    })
    .await;
    let res = app
        .anon(Method::PUT, "/v2/topics/alices-topic")
        .header("X-Auth-Token", "tok-alice")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let mut b = Browser::new(&app);

    // Not logged in: redirected to the login form, which asks for a token.
    let (status, location, _) = b.get("/console/topics").await;
    assert_eq!((status, location.as_str()), (303, "/console/login"));
    let (status, _, page) = b.get("/console/login").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"name="token""#));
    let anonymous = b.cookie.clone().expect("the login form starts a session");

    // A wrong token is refused on the form; a login without its CSRF token is a 403.
    let (status, location) = b
        .post("/console/login", "/console/login", &[("token", "nope")])
        .await;
    assert_eq!((status, location.as_str()), (303, "/console/login"));
    let (_, _, page) = b.get("/console/login").await;
    assert!(page.contains("Login refused"), "{page}");
    let (status, _) = b
        .post_raw("/console/login", &[("token", "tok-alice")])
        .await;
    assert_eq!(status, 403);

    // The right token: a new session id (the anonymous one is worth nothing now).
    let (status, location) = b
        .post(
            "/console/login",
            "/console/login",
            &[("token", "tok-alice")],
        )
        .await;
    assert_eq!((status, location.as_str()), (303, "/console/"));
    let alice = b.cookie.clone().unwrap();
    assert_ne!(alice, anonymous);
    let (status, _, page) = b.get("/console/topics").await;
    assert_eq!(status, 200);
    assert!(page.contains("alices-topic") && page.contains("p-alice"));
    assert!(
        !page.contains("tok-alice"),
        "the token never reaches a page"
    );
    b.cookie = Some(anonymous);
    let (status, location, _) = b.get("/console/topics").await;
    assert_eq!((status, location.as_str()), (303, "/console/login"));

    // A member may not switch project.
    b.cookie = Some(alice);
    let (status, _) = b
        .post("/console/", "/console/project", &[("project", "ops")])
        .await;
    assert_eq!(status, 403);

    // Log out: the session is gone.
    let (status, location) = b.post("/console/", "/console/logout", &[]).await;
    assert_eq!((status, location.as_str()), (303, "/console/login"));
    assert_eq!(b.cookie, None, "the cookie is cleared");

    // An admin switches to alice's project and sees her topic.
    b.post("/console/login", "/console/login", &[("token", "tok-root")])
        .await;
    let (_, _, page) = b.get("/console/topics").await;
    assert!(!page.contains("alices-topic"));
    let (status, _) = b
        .post("/console/", "/console/project", &[("project", "p-alice")])
        .await;
    assert_eq!(status, 303);
    let (_, _, page) = b.get("/console/topics").await;
    assert!(page.contains("alices-topic"), "{page}");
}
