//! A webhook receiver on loopback: answers 200 at once and counts what arrives; when a
//! body carries `"t"` (intended send time, ns since the epoch) it records the latency.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{SystemTime, UNIX_EPOCH},
};

use axum::{
    body::Bytes,
    extract::State,
    http::{StatusCode, Uri},
    routing::post,
    Router,
};
use tokio::sync::mpsc;

#[derive(Clone)]
struct Shared {
    count: Arc<AtomicU64>,
    latencies: mpsc::UnboundedSender<f64>,
    /// (path and query, intended send time) of each request, when recording.
    records: Option<mpsc::UnboundedSender<(String, u64)>>,
}

pub struct Receiver {
    pub addr: SocketAddr,
    count: Arc<AtomicU64>,
    latencies: mpsc::UnboundedReceiver<f64>,
    records: Option<mpsc::UnboundedReceiver<(String, u64)>>,
}

pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
}

/// Finds `"t":<digits>` without parsing the whole JSON: the receiver must stay cheap so it
/// does not slow what it measures.
fn intended_ns(body: &[u8]) -> Option<u64> {
    let pos = body.windows(4).position(|w| w == b"\"t\":")? + 4;
    let digits: Vec<u8> = body[pos..]
        .iter()
        .copied()
        .skip_while(|b| *b == b' ')
        .take_while(u8::is_ascii_digit)
        .collect();
    std::str::from_utf8(&digits).ok()?.parse().ok()
}

async fn hook(State(s): State<Shared>, uri: Uri, body: Bytes) -> StatusCode {
    let arrived = now_ns();
    s.count.fetch_add(1, Ordering::Relaxed);
    if let Some(t) = intended_ns(&body) {
        let _ = s.latencies.send(arrived.saturating_sub(t) as f64 / 1e6);
        if let Some(records) = &s.records {
            let _ = records.send((uri.to_string(), t));
        }
    }
    StatusCode::OK
}

impl Receiver {
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(false).await
    }

    /// Also records which URL received which message (see [`Receiver::drain_records`]).
    pub async fn start_recording() -> anyhow::Result<Self> {
        Self::start_with(true).await
    }

    async fn start_with(record: bool) -> anyhow::Result<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (records_tx, records_rx) = if record {
            let (tx, rx) = mpsc::unbounded_channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let count = Arc::new(AtomicU64::new(0));
        let state = Shared {
            count: count.clone(),
            latencies: tx,
            records: records_tx,
        };
        let app = Router::new()
            .route("/hook", post(hook))
            .route("/hook/{n}", post(hook))
            .with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            count,
            latencies: rx,
            records: records_rx,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Latencies recorded so far (drains them).
    pub fn drain_latencies(&mut self) -> Vec<f64> {
        let mut out = Vec::new();
        while let Ok(v) = self.latencies.try_recv() {
            out.push(v);
        }
        out
    }

    /// (URL path and query, message's `"t"`) of each request since the last call, when
    /// recording.
    pub fn drain_records(&mut self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        if let Some(records) = &mut self.records {
            while let Ok(r) = records.try_recv() {
                out.push(r);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn intended_time_is_found_in_a_zaqar_shaped_body() {
        let body = br#"{"body":{"seq":3,"t":1700000000123456789},"ttl":3600,"Message_Type":"Notification"}"#;
        assert_eq!(super::intended_ns(body), Some(1_700_000_000_123_456_789));
        assert_eq!(super::intended_ns(b"{}"), None);
    }
}
