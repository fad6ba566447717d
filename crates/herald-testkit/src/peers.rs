//! Real peers for delivery tests: an HTTP receiver (axum on a random loopback port) whose
//! answer the test controls, an SMTP server (aiosmtpd from the venv, writing a maildir),
//! and a responder for `herald.user_messages.create`.

use std::{
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
    Router,
};
use futures::StreamExt;
use reqwest::Method;
use serde_json::{json, Value};

use crate::{
    app::{json_with, spawn_app_on, TestApp},
    eventually, free_port,
    nats::NatsServer,
};

/// A request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Value,
    /// The body as sent (signatures cover these bytes).
    pub raw: Bytes,
    pub at: Instant,
}

#[derive(Clone)]
struct ReceiverState {
    received: Arc<Mutex<Vec<Received>>>,
    /// Status to answer, `Retry-After` seconds, and a delay before answering.
    answer: Arc<Mutex<(u16, Option<u64>, Duration)>>,
    /// The reply body (empty by default).
    body: Arc<Mutex<Bytes>>,
}

/// A webhook receiver on 127.0.0.1.
pub struct Receiver {
    pub url: String,
    pub port: u16,
    state: ReceiverState,
    task: tokio::task::JoinHandle<()>,
}

async fn receive(State(state): State<ReceiverState>, headers: HeaderMap, body: Bytes) -> Response {
    let (status, retry_after, delay) = *state.answer.lock().unwrap();
    tokio::time::sleep(delay).await;
    let raw = body;
    let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    state.received.lock().unwrap().push(Received {
        headers,
        body,
        raw,
        at: Instant::now(),
    });
    let reply = state.body.lock().unwrap().clone();
    let mut res = (StatusCode::from_u16(status).unwrap(), reply).into_response();
    if let Some(s) = retry_after {
        res.headers_mut()
            .insert("retry-after", s.to_string().parse().unwrap());
    }
    res
}

impl Receiver {
    pub async fn start() -> Self {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Self {
        let state = ReceiverState {
            received: Arc::default(),
            answer: Arc::new(Mutex::new((200, None, Duration::ZERO))),
            body: Arc::default(),
        };
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            port,
            state,
            task,
        }
    }

    pub fn answer(&self, status: u16, retry_after: Option<u64>, delay: Duration) {
        *self.state.answer.lock().unwrap() = (status, retry_after, delay);
    }

    /// The body of every following reply.
    pub fn answer_body(&self, body: impl Into<Bytes>) {
        *self.state.body.lock().unwrap() = body.into();
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        eventually(timeout, &format!("{n} webhook requests"), || async {
            let got = self.received();
            (got.len() >= n).then_some(got)
        })
        .await
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Records `herald.user_messages.create` requests and answers like the real service.
pub struct UserMessages {
    seen: Arc<Mutex<Vec<Value>>>,
}

impl UserMessages {
    pub async fn start(app: &TestApp) -> Self {
        let client = async_nats::connect(app.nats.url()).await.unwrap();
        let mut sub = client
            .subscribe("herald.user_messages.create")
            .await
            .unwrap();
        client.flush().await.unwrap();
        let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
        let store = seen.clone();
        tokio::spawn(async move {
            while let Some(m) = sub.next().await {
                let v: Value = serde_json::from_slice(&m.payload).unwrap_or(Value::Null);
                store.lock().unwrap().push(v);
                if let Some(reply) = m.reply {
                    let _ = client
                        .publish(
                            reply,
                            json!({"id": uuid::Uuid::new_v4()}).to_string().into(),
                        )
                        .await;
                }
            }
        });
        Self { seen }
    }

    pub fn seen(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

/// aiosmtpd writing every mail to a maildir.
pub struct SmtpServer {
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    pub async fn start() -> Self {
        let python = crate::repo_root().join(".venv/bin/python");
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("mail");
        let child = Command::new(python)
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}")])
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("aiosmtpd runs (pip install -r scripts/requirements.txt)");
        eventually(Duration::from_secs(10), "aiosmtpd to listen", || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()
                .map(|_| ())
        })
        .await;
        Self { port, dir, child }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Raw RFC 822 texts of the received mails.
    pub fn mails(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(entries) = std::fs::read_dir(self.dir.path().join("mail").join(sub)) {
                for e in entries.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Herald with short retry delays (1 policy second = 20 ms) and short attempt timeouts.
pub async fn spawn_delivery_app() -> TestApp {
    spawn_delivery_app_with(|_| {}).await
}

pub async fn spawn_delivery_app_with(
    configure: impl FnOnce(&mut herald::config::Config),
) -> TestApp {
    spawn_delivery_app_on(NatsServer::start().await, configure).await
}

/// [`spawn_delivery_app_with`] against a nats-server the test started.
pub async fn spawn_delivery_app_on(
    nats: NatsServer,
    configure: impl FnOnce(&mut herald::config::Config),
) -> TestApp {
    spawn_app_on(nats, |c| {
        c.retry_delay_unit_ms = 20;
        c.delivery_timeout_ms = 1000;
        configure(c);
    })
    .await
}

impl TestApp {
    pub async fn post_messages(&self, topic: &str, body: Value) -> reqwest::Response {
        self.req(Method::POST, &format!("/v2/topics/{topic}/messages"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn post_subscription(&self, topic: &str, body: Value) -> reqwest::Response {
        self.req(Method::POST, &format!("/v2/topics/{topic}/subscriptions"))
            .json(&body)
            .send()
            .await
            .expect("request sent")
    }

    /// Creates a subscription and returns its id.
    pub async fn subscribe(&self, topic: &str, body: Value) -> String {
        let doc = json_with(self.post_subscription(topic, body).await, 201).await;
        doc["subscription_id"].as_str().unwrap().to_owned()
    }

    pub async fn get_path(&self, path: &str) -> reqwest::Response {
        self.req(Method::GET, path)
            .send()
            .await
            .expect("request sent")
    }

    /// Waits until every engine of this app runs the subscription's worker: a message
    /// published now reaches it. (Consumers use `deliver_policy = new`.)
    pub async fn dead_letters(&self, topic: &str, id: &str) -> Value {
        json_with(
            self.get_path(&format!(
                "/v2/topics/{topic}/subscriptions/{id}/dead_letters"
            ))
            .await,
            200,
        )
        .await
    }

    /// Waits until the subscription's consumer has settled (acked or terminated) every
    /// message of its topic: the event that says each message was handled, delivered or not.
    pub async fn settled(&self, topic: &str, id: &str) {
        self.consumer_reaches(
            topic,
            id,
            "the consumer to settle every message",
            |last, i| {
                i.ack_floor.stream_sequence >= last && i.num_ack_pending == 0 && i.num_pending == 0
            },
        )
        .await;
    }

    /// Waits until delivery has pulled every message of the topic from the subscription's
    /// consumer (each has had its first attempt started), settled or not.
    pub async fn pulled(&self, topic: &str, id: &str) {
        self.consumer_reaches(topic, id, "delivery to pull every message", |last, i| {
            i.delivered.stream_sequence >= last && i.num_pending == 0
        })
        .await;
    }

    /// Polls the consumer's info until `done(last stream sequence, info)` holds.
    async fn consumer_reaches(
        &self,
        topic: &str,
        id: &str,
        what: &str,
        done: impl Fn(u64, &async_nats::jetstream::consumer::Info) -> bool,
    ) {
        let js = async_nats::jetstream::new(async_nats::connect(self.nats.url()).await.unwrap());
        let stream = herald::store::names::stream_name(
            &herald::domain::ProjectId::parse(&self.project).unwrap(),
            &herald::domain::TopicName::parse(topic).unwrap(),
        );
        let done = &done;
        crate::eventually(Duration::from_secs(15), what, || {
            let (js, stream) = (js.clone(), stream.clone());
            async move {
                let mut s = js.get_stream(&stream).await.ok()?;
                let last = s.info().await.ok()?.state.last_sequence;
                let c = s
                    .get_consumer::<async_nats::jetstream::consumer::pull::Config>(id)
                    .await
                    .ok()?;
                done(last, c.cached_info()).then_some(())
            }
        })
        .await;
    }
}
