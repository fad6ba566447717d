//! The minimal REST→JetStream bridge, the fairer ingest ceiling: the least an HTTP front end
//! must do for Herald's batch POST (parse the JSON batch, publish each message's body with
//! pipelined acks, answer 201 with one resource per message). It runs on its own runtime
//! and threads, like the separate process Herald is, and is driven by the same load
//! generator over the same route.

use std::{future::IntoFuture, net::SocketAddr};

use anyhow::Result;
use async_nats::jetstream;
use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::post,
    Json, Router,
};
use serde::Deserialize;
use serde_json::{json, value::RawValue};

/// The name of the bridge's runtime threads, so its CPU time can be told from the load
/// generator's in the same process (`env::threads_cpu_time`).
pub const THREAD_NAME: &str = "bench-bridge";

#[derive(Clone)]
struct Target {
    js: jetstream::Context,
    subject: String,
    /// Send what Herald's contract puts on every message: an id (`Herald-Id`) and its ttl
    /// (`Nats-TTL`, a JetStream per-message timer), so the bridge pays what the contract
    /// costs nats-server and only Herald's own code is left between them.
    headers: bool,
}

#[derive(Deserialize)]
struct BatchIn<'a> {
    #[serde(borrow)]
    messages: Vec<MessageIn<'a>>,
}

#[derive(Deserialize)]
struct MessageIn<'a> {
    #[serde(borrow)]
    body: &'a RawValue,
}

async fn post_messages(
    State(target): State<Target>,
    Path(topic): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(batch) = serde_json::from_slice::<BatchIn>(&body) else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    // Publish the whole batch, then await the acks: one round trip per batch, not per message.
    let mut acks = Vec::with_capacity(batch.messages.len());
    for m in &batch.messages {
        let payload = Bytes::copy_from_slice(m.body.get().as_bytes());
        let publish = if target.headers {
            let mut h = async_nats::HeaderMap::new();
            h.insert("Herald-Id", uuid::Uuid::new_v4().to_string().as_str());
            h.insert("Nats-TTL", "3600s");
            target
                .js
                .publish_with_headers(target.subject.clone(), h, payload)
                .await
        } else {
            target.js.publish(target.subject.clone(), payload).await
        };
        match publish {
            Ok(ack) => acks.push(ack.into_future()),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    let mut resources = Vec::with_capacity(acks.len());
    for ack in acks {
        match ack.await {
            Ok(a) => resources.push(format!("/v2/topics/{topic}/messages/{}", a.sequence)),
            Err(_) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        }
    }
    (StatusCode::CREATED, Json(json!({ "resources": resources }))).into_response()
}

/// A running bridge; stops when dropped.
pub struct Bridge {
    pub base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Bridge {
    /// Serves `POST /v2/topics/{topic}/messages` into `subject` (which a stream captures)
    /// on a runtime of `threads` workers of its own; with `headers`, each message carries
    /// Herald's `Herald-Id` and `Nats-TTL`.
    pub async fn start(
        nats_url: &str,
        subject: &str,
        threads: usize,
        headers: bool,
    ) -> Result<Self> {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<Result<SocketAddr>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (url, subject) = (nats_url.to_owned(), subject.to_owned());
        // Detached: it ends when told to stop, and the benchmark does not wait for that.
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads.max(1))
                .thread_name(THREAD_NAME)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                    return;
                }
            };
            rt.block_on(async move {
                let setup = async {
                    let js = jetstream::new(async_nats::connect(url).await?);
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    anyhow::Ok((js, listener))
                };
                let (js, listener) = match setup.await {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let addr = listener.local_addr();
                let app = Router::new()
                    .route("/v2/topics/{topic}/messages", post(post_messages))
                    .with_state(Target {
                        js,
                        subject,
                        headers,
                    });
                let _ = ready_tx.send(addr.map_err(Into::into));
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stop_rx.await;
                    })
                    .await;
            });
        });
        let addr = ready_rx.await??;
        Ok(Self {
            base: format!("http://{addr}"),
            stop: Some(stop_tx),
        })
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
