//! A real Keystone (pinned in scripts/requirements-keystone.txt, in `.venv-keystone`) for
//! the tests (`tests/keystone`) and the benchmark (`herald-bench ingest-keystone`): bootstrapped once per test binary by scripts/keystone/bootstrap into a
//! template directory, served by gunicorn (one worker, one thread). [`shared_url`] is the
//! server every test uses; a test that needs Keystone unreachable puts a [`Relay`] between
//! Herald and it and cuts that. Users and projects are made through Keystone's REST API
//! ([`Admin`]).

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::OnceLock,
    time::Duration,
};

use serde_json::{json, Value};

use crate::{free_port, poll_until};

pub const ADMIN_PASSWORD: &str = "admin-secret";
pub const SERVICE_PROJECT: &str = "service";

fn root() -> PathBuf {
    crate::repo_root()
}

fn keystone_bin(name: &str) -> PathBuf {
    root().join(".venv-keystone/bin").join(name)
}

/// The bootstrapped template (database, keys) and the shared server.
struct Shared {
    _template: tempfile::TempDir,
    server: KeystoneProcess,
}

static SHARED: OnceLock<Shared> = OnceLock::new();

/// The shared Keystone's URL, bootstrapping and starting it on first use.
pub fn shared_url() -> String {
    SHARED
        .get_or_init(|| {
            // Its own thread and runtime: the first caller's runtime ends with its test.
            std::thread::spawn(bootstrap_shared)
                .join()
                .expect("keystone bootstrap")
        })
        .server
        .url
        .clone()
}

fn bootstrap_shared() -> Shared {
    let started = std::time::Instant::now();
    let status = Command::new("bash")
        .arg("-c")
        .arg("source scripts/lib.sh && ensure_keystone")
        .current_dir(root())
        .status()
        .expect("bash runs");
    assert!(status.success(), "ensure_keystone failed");
    let template = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let out = Command::new(root().join("scripts/keystone/bootstrap"))
        .arg(template.path())
        .arg(&url)
        .arg(ADMIN_PASSWORD)
        .output()
        .expect("bootstrap runs");
    assert!(
        out.status.success(),
        "keystone bootstrap failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(template.path().join("bootstrap.log")).unwrap_or_default()
    );
    let server = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(KeystoneProcess::start_copy(template.path(), port));
    eprintln!(
        "keystone bootstrapped and serving at {url} after {:?}",
        started.elapsed()
    );
    Shared {
        _template: template,
        server,
    }
}

/// A gunicorn serving Keystone from its own copy of the template. It is stopped when
/// dropped, and also when the test binary exits (its watchdog shell reads stdin to EOF).
pub struct KeystoneProcess {
    pub url: String,
    _dir: tempfile::TempDir,
    stdin: Option<ChildStdin>,
    child: Child,
}

impl KeystoneProcess {
    async fn start_copy(template: &Path, port: u16) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", template.display()))
            .arg(dir.path())
            .status()
            .expect("cp runs");
        assert!(status.success());
        let conf = std::fs::read_to_string(template.join("keystone.conf"))
            .unwrap()
            .replace(
                &template.display().to_string(),
                &dir.path().display().to_string(),
            );
        std::fs::write(dir.path().join("keystone.conf"), conf).unwrap();
        let log = std::fs::File::create(dir.path().join("keystone.log")).unwrap();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$@" & pid=$!; read _; kill $pid; wait $pid"#)
            .arg("sh")
            .arg(keystone_bin("gunicorn"))
            .arg("-c")
            .arg(root().join("scripts/keystone/gunicorn.conf.py"))
            .env("KEYSTONE_BIND", format!("127.0.0.1:{port}"))
            .env("OS_KEYSTONE_CONFIG_FILES", dir.path().join("keystone.conf"))
            .stdin(Stdio::piped())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("gunicorn runs (scripts/lib.sh ensure_keystone installs it)");
        let stdin = child.stdin.take();
        let server = Self {
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
            stdin,
            child,
        };
        // One serial validation first: Keystone loads its policy lazily, and concurrent
        // first requests could get a spurious 403.
        let admin = poll_until(
            Duration::from_secs(120),
            Duration::from_millis(200),
            "keystone to issue tokens",
            || async { Admin::connect(&server.url).await.ok() },
        )
        .await;
        let res = admin
            .http
            .get(format!("{}/v3/auth/tokens", server.url))
            .header("X-Auth-Token", &admin.token)
            .header("X-Subject-Token", &admin.token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "first validation");
        server
    }

    /// Stops gunicorn and waits until it has exited.
    pub fn stop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.child.wait();
    }
}

impl Drop for KeystoneProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A TCP relay to Keystone that the test can cut: Herald reaches Keystone through it.
pub struct Relay {
    pub url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    pub async fn to(url: &str) -> Self {
        let target = url.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            // Dropped with this task: cutting the relay cuts open connections too.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                let target = target.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        Self {
            url: format!("http://127.0.0.1:{port}"),
            task,
        }
    }

    /// Keystone is unreachable from now on (connections refused or reset).
    pub async fn cut(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// A user made for one test, with a project-scoped token.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub id: String,
    pub password: String,
    pub project_id: String,
    pub project_name: String,
    pub token: String,
}

/// Keystone's REST API as the bootstrap admin.
pub struct Admin {
    pub url: String,
    pub http: reqwest::Client,
    pub token: String,
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..10]
    )
}

impl Admin {
    pub async fn connect(url: &str) -> reqwest::Result<Self> {
        let http = reqwest::Client::new();
        let token = password_token(&http, url, "admin", ADMIN_PASSWORD, "admin").await?;
        Ok(Self {
            url: url.to_owned(),
            http,
            token,
        })
    }

    pub async fn shared() -> Self {
        Self::connect(&shared_url()).await.expect("admin token")
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut req = self
            .http
            .request(method.clone(), format!("{}/v3{path}", self.url))
            .header("X-Auth-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("keystone answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    pub async fn project(&self, name: &str) -> String {
        let found = self
            .call(
                reqwest::Method::GET,
                &format!("/projects?name={name}"),
                None,
            )
            .await;
        if let Some(id) = found["projects"][0]["id"].as_str() {
            return id.to_owned();
        }
        let created = self
            .http
            .post(format!("{}/v3/projects", self.url))
            .header("X-Auth-Token", &self.token)
            .json(&json!({"project": {"name": name, "domain_id": "default"}}))
            .send()
            .await
            .unwrap();
        if created.status() == 409 {
            // A concurrent test made it first.
            return Box::pin(self.project(name)).await;
        }
        created.json::<Value>().await.unwrap()["project"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// The id of role `name`, created when Keystone does not have it.
    pub async fn role(&self, name: &str) -> String {
        let found = self
            .call(reqwest::Method::GET, &format!("/roles?name={name}"), None)
            .await;
        if let Some(id) = found["roles"][0]["id"].as_str() {
            return id.to_owned();
        }
        let created = self
            .http
            .post(format!("{}/v3/roles", self.url))
            .header("X-Auth-Token", &self.token)
            .json(&json!({"role": {"name": name}}))
            .send()
            .await
            .unwrap();
        if created.status() == 409 {
            // A concurrent test made it first.
            return Box::pin(self.role(name)).await;
        }
        created.json::<Value>().await.unwrap()["role"]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn set_user_enabled(&self, user_id: &str, enabled: bool) {
        self.call(
            reqwest::Method::PATCH,
            &format!("/users/{user_id}"),
            Some(json!({"user": {"enabled": enabled}})),
        )
        .await;
    }

    /// A new user with `roles` on `project` (a new project when `None`), and its token.
    pub async fn user(&self, project: Option<&str>, roles: &[&str]) -> User {
        let project_name = project.map_or_else(|| unique("proj"), str::to_owned);
        let project_id = self.project(&project_name).await;
        let name = unique("user");
        let password = unique("pw");
        let id = self
            .call(
                reqwest::Method::POST,
                "/users",
                Some(json!({"user": {"name": name, "password": password, "domain_id": "default"}})),
            )
            .await["user"]["id"]
            .as_str()
            .unwrap()
            .to_owned();
        for role in roles {
            let role_id = self.role(role).await;
            self.call(
                reqwest::Method::PUT,
                &format!("/projects/{project_id}/users/{id}/roles/{role_id}"),
                None,
            )
            .await;
        }
        let token = password_token(&self.http, &self.url, &name, &password, &project_name)
            .await
            .expect("user token");
        User {
            name,
            id,
            password,
            project_id,
            project_name,
            token,
        }
    }

    /// A service user for one Herald (`service` role on the `service` project).
    pub async fn service_user(&self) -> User {
        self.user(Some(SERVICE_PROJECT), &["service"]).await
    }

    /// Another token of `user`.
    pub async fn token(&self, user: &User) -> String {
        password_token(
            &self.http,
            &self.url,
            &user.name,
            &user.password,
            &user.project_name,
        )
        .await
        .unwrap()
    }

    /// A token of `user` scoped to the Default domain (after granting `role` on it).
    pub async fn domain_token(&self, user: &User, role: &str) -> String {
        let role_id = self.role(role).await;
        self.call(
            reqwest::Method::PUT,
            &format!("/domains/default/users/{}/roles/{role_id}", user.id),
            None,
        )
        .await;
        let res = self
            .http
            .post(format!("{}/v3/auth/tokens?nocatalog", self.url))
            .json(&json!({"auth": {
                "identity": {"methods": ["password"], "password": {"user": {
                    "id": user.id, "password": user.password}}},
                "scope": {"domain": {"name": "Default"}},
            }}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "domain-scoped token");
        res.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// The trusts `user` gave (as trustor).
    pub async fn trusts_of(&self, user: &User) -> Vec<Value> {
        let found = self
            .call(
                reqwest::Method::GET,
                &format!("/OS-TRUST/trusts?trustor_user_id={}", user.id),
                None,
            )
            .await;
        found["trusts"].as_array().cloned().unwrap_or_default()
    }

    /// Keystone's status for `GET /v3/OS-TRUST/trusts/{id}` (200, or 404 once deleted).
    pub async fn trust_status(&self, id: &str) -> u16 {
        self.http
            .get(format!("{}/v3/OS-TRUST/trusts/{id}", self.url))
            .header("X-Auth-Token", &self.token)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// What Keystone says of `token`: its body when valid, `None` otherwise.
    pub async fn validate(&self, token: &str) -> Option<Value> {
        let res = self
            .http
            .get(format!("{}/v3/auth/tokens?nocatalog", self.url))
            .header("X-Auth-Token", &self.token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .ok()?;
        if res.status() != 200 {
            return None;
        }
        res.json().await.ok()
    }

    pub async fn revoke(&self, token: &str) {
        let res = self
            .http
            .delete(format!("{}/v3/auth/tokens", self.url))
            .header("X-Auth-Token", &self.token)
            .header("X-Subject-Token", token)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204, "revocation");
    }

    /// A token of `user` that expires at about `expires_at`: issued through an application
    /// credential with that expiry (Keystone caps the token's `expires_at` at it). Returns
    /// the token and its `expires_at` as Keystone says.
    pub async fn expiring_token(
        &self,
        user: &User,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> (String, chrono::DateTime<chrono::Utc>) {
        let http = &self.http;
        let user_token = self.token(user).await;
        let res = http
            .post(format!(
                "{}/v3/users/{}/application_credentials",
                self.url, user.id
            ))
            .header("X-Auth-Token", &user_token)
            .json(&json!({"application_credential": {
                "name": unique("appcred"),
                "expires_at": expires_at.format("%Y-%m-%dT%H:%M:%S%.6f").to_string(),
            }}))
            .send()
            .await
            .unwrap();
        let status = res.status();
        let cred: Value = res.json().await.unwrap();
        assert_eq!(status, 201, "application credential: {cred}");
        let cred = &cred["application_credential"];
        let res = http
            .post(format!("{}/v3/auth/tokens?nocatalog", self.url))
            .json(&json!({"auth": {"identity": {
                "methods": ["application_credential"],
                "application_credential": {"id": cred["id"], "secret": cred["secret"]},
            }}}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201, "application credential token");
        let token = res.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: Value = res.json().await.unwrap();
        let expires_at = body["token"]["expires_at"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        (token, expires_at)
    }
}

pub async fn password_token(
    http: &reqwest::Client,
    url: &str,
    user: &str,
    password: &str,
    project: &str,
) -> reqwest::Result<String> {
    let res = http
        .post(format!("{url}/v3/auth/tokens?nocatalog"))
        .json(&json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": "Default"}, "password": password}}},
            "scope": {"project": {"name": project, "domain": {"name": "Default"}}},
        }}))
        .send()
        .await?
        .error_for_status()?;
    Ok(res.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned())
}
