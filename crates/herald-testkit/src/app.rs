//! Test harness: a real `nats-server -js` per test (random loopback port, temporary store)
//! and Herald started in-process on a random port (`spawn_app`).

use std::time::Duration;

use herald::{
    config::Config,
    startup::{Application, Roles},
};
use reqwest::{Method, RequestBuilder, Response};
use tokio_util::sync::CancellationToken;

pub use crate::{
    eventually, free_port,
    nats::{connect_as, nats_server_bin, NatsServer},
};

/// Herald running in-process against its own nats-server.
pub struct TestApp {
    pub address: String,
    pub nats: NatsServer,
    pub config: Config,
    pub http: reqwest::Client,
    /// Project sent as `X-Project-ID` by the helpers.
    pub project: String,
    /// The running Herald's authenticator (its Keystone client counts validations).
    pub auth: Option<herald::auth::Authenticator>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

pub fn test_config(nats: &NatsServer) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        nats_url: nats.url(),
        nats_timeout_ms: 1500,
        public_url: "http://127.0.0.1:0".into(),
        outbound_allow: vec!["127.0.0.0/8".parse().unwrap()],
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_on(NatsServer::start().await, configure).await
}

/// Herald against a nats-server the test started (e.g. with users and permissions).
pub async fn spawn_app_on(nats: NatsServer, configure: impl FnOnce(&mut Config)) -> TestApp {
    init_test_logs();
    let mut config = test_config(&nats);
    configure(&mut config);
    let mut app = TestApp {
        address: String::new(),
        nats,
        config,
        http: reqwest::Client::new(),
        project: format!("proj{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
        shutdown: CancellationToken::new(),
        task: None,
        auth: None,
    };
    app.start().await;
    app
}

fn init_test_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        herald::telemetry::init_tracing(herald::config::LogFormat::Text);
    }
}

impl TestApp {
    async fn start(&mut self) {
        let mut config = self.config.clone();
        if !self.address.is_empty() {
            // Restart on the same port so clients keep their base URL.
            config.listen = self.address.trim_start_matches("http://").parse().unwrap();
        }
        let app = Application::build(config, Roles::default())
            .await
            .expect("herald starts");
        self.address = format!("http://127.0.0.1:{}", app.port());
        self.auth = Some(app.state().auth.clone());
        self.shutdown = CancellationToken::new();
        let token = self.shutdown.clone();
        self.task = Some(tokio::spawn(async move {
            app.run(token).await.expect("herald runs");
        }));
        let url = format!("{}/readyz", self.address);
        let http = self.http.clone();
        eventually(Duration::from_secs(10), "herald to be ready", || {
            let (url, http) = (url.clone(), http.clone());
            async move {
                let r = http.get(url).send().await.ok()?;
                r.status().is_success().then_some(())
            }
        })
        .await;
    }

    /// Graceful stop, then start again against the same NATS.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start().await;
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), task).await;
        }
    }

    /// A request with the test project's identity.
    pub fn req(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.address))
            .header("X-Project-ID", &self.project)
    }

    /// A request with no identity headers at all.
    pub fn anon(&self, method: Method, path: &str) -> RequestBuilder {
        self.http.request(method, format!("{}{path}", self.address))
    }

    pub async fn put_topic(&self, name: &str, metadata: Option<serde_json::Value>) -> Response {
        let mut r = self.req(Method::PUT, &format!("/v2/topics/{name}"));
        if let Some(m) = metadata {
            r = r.json(&m);
        }
        r.send().await.expect("request sent")
    }

    pub async fn get_topic(&self, name: &str) -> Response {
        self.req(Method::GET, &format!("/v2/topics/{name}"))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn list_topics(&self, query: &str) -> Response {
        self.req(Method::GET, &format!("/v2/topics{query}"))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn patch_topic(&self, name: &str, patch: serde_json::Value) -> Response {
        self.req(Method::PATCH, &format!("/v2/topics/{name}"))
            .header(
                "Content-Type",
                "application/openstack-messaging-v2.0-json-patch",
            )
            .body(patch.to_string())
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete_topic(&self, name: &str) -> Response {
        self.req(Method::DELETE, &format!("/v2/topics/{name}"))
            .send()
            .await
            .expect("request sent")
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Reads a JSON body, asserting the status first.
pub async fn json_with(res: Response, status: u16) -> serde_json::Value {
    let got = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    assert_eq!(got, status, "unexpected status; body: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("body is not JSON ({e}): {text}"))
}

/// User messages (Cinder v3) helpers.
impl TestApp {
    /// A `/v3` request as python-cinderclient's noauth mode sends it (`user:project`
    /// token), at microversion `version` (none: 3.0), with optional `X-Roles`.
    pub fn cinder(
        &self,
        method: Method,
        path: &str,
        project: &str,
        version: Option<&str>,
        roles: Option<&str>,
    ) -> RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.address))
            .header("X-Auth-Token", format!("tester:{project}"));
        if let Some(v) = version {
            r = r.header("OpenStack-API-Version", format!("volume {v}"));
        }
        if let Some(roles) = roles {
            r = r.header("X-Roles", roles);
        }
        r
    }

    /// Creates a user message in `project` through the admin REST route; returns the
    /// message document.
    pub async fn create_user_message(
        &self,
        project: &str,
        body: serde_json::Value,
    ) -> serde_json::Value {
        let res = self
            .cinder(
                Method::POST,
                &format!("/v3/{project}/messages"),
                project,
                Some("3.3"),
                Some("admin"),
            )
            .json(&body)
            .send()
            .await
            .expect("request sent");
        json_with(res, 201).await["message"].clone()
    }

    /// Lists `project`'s messages at `version` with `query` (e.g. `?limit=2`).
    pub async fn list_user_messages(&self, project: &str, version: &str, query: &str) -> Response {
        self.cinder(
            Method::GET,
            &format!("/v3/{project}/messages{query}"),
            project,
            Some(version),
            None,
        )
        .send()
        .await
        .expect("request sent")
    }

    /// A NATS request on `herald.user_messages.create`; returns the JSON reply.
    pub async fn nats_create_user_message(&self, payload: &[u8]) -> serde_json::Value {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("nats connects");
        let reply = client
            .request("herald.user_messages.create", payload.to_vec().into())
            .await
            .expect("a reply to the create request");
        serde_json::from_slice(&reply.payload).expect("the reply is JSON")
    }
}
