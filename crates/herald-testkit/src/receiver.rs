//! A webhook receiver that counts by `message_id`: every attempt (arrival time and the
//! answer it gets; counted on arrival, as a real receiver has the message once it read the
//! body), the requests in flight for each id (a second one while the first is unanswered is a
//! concurrent duplicate), and an answer the test can switch (200, 503, slow).

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{body::Bytes, extract::State, http::StatusCode, routing::post, Router};
use serde::Deserialize;

use crate::poll_until;

/// One request for a message id: when it arrived and the answer it was given.
#[derive(Debug, Clone, Copy)]
pub struct Attempt {
    pub at: Instant,
    pub status: u16,
}

#[derive(Default)]
struct PerId {
    attempts: Vec<Attempt>,
    in_flight: u32,
}

#[derive(Default)]
struct Book {
    by_id: HashMap<String, PerId>,
    concurrent_duplicates: u64,
}

#[derive(Clone)]
struct Shared {
    book: Arc<Mutex<Book>>,
    /// Status to answer and how long to take.
    answer: Arc<Mutex<(u16, Duration)>>,
}

/// What the receiver saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Distinct ids received (to be answered 2xx) at least once.
    pub delivered: usize,
    /// Receptions (to be answered 2xx) beyond the first for an id.
    pub duplicates: usize,
    /// Requests that arrived while another for the same id was unanswered.
    pub concurrent_duplicates: u64,
    pub requests: usize,
}

#[derive(Deserialize)]
struct Notification {
    message_id: String,
}

async fn receive(State(s): State<Shared>, body: Bytes) -> StatusCode {
    let Ok(n) = serde_json::from_slice::<Notification>(&body) else {
        return StatusCode::BAD_REQUEST;
    };
    let (status, delay) = *s.answer.lock().unwrap();
    let at = Instant::now();
    {
        let mut book = s.book.lock().unwrap();
        // Counted on arrival: the receiver has the message even if the sender dies before
        // the answer reaches it (a killed Herald then delivers it again).
        let entry = book.by_id.entry(n.message_id.clone()).or_default();
        entry.attempts.push(Attempt { at, status });
        entry.in_flight += 1;
        if entry.in_flight > 1 {
            book.concurrent_duplicates += 1;
        }
    }
    let _in_flight = InFlight {
        book: s.book.clone(),
        id: n.message_id,
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    StatusCode::from_u16(status).unwrap()
}

/// Ends a request's time in flight, also when the sender hangs up (a killed Herald) and
/// the handler is dropped unanswered.
struct InFlight {
    book: Arc<Mutex<Book>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut book = self.book.lock().unwrap();
        if let Some(e) = book.by_id.get_mut(&self.id) {
            e.in_flight -= 1;
        }
    }
}

pub struct Receiver {
    pub url: String,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Self {
        let shared = Shared {
            book: Arc::default(),
            answer: Arc::new(Mutex::new((200, Duration::ZERO))),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            url: format!("http://127.0.0.1:{port}/hook"),
            shared,
            task,
        }
    }

    /// From now on, answer `status` after `delay`.
    pub fn answer(&self, status: u16, delay: Duration) {
        *self.shared.answer.lock().unwrap() = (status, delay);
    }

    pub fn tally(&self) -> Tally {
        let book = self.shared.book.lock().unwrap();
        let mut t = Tally {
            delivered: 0,
            duplicates: 0,
            concurrent_duplicates: book.concurrent_duplicates,
            requests: 0,
        };
        for e in book.by_id.values() {
            let ok = e.attempts.iter().filter(|a| a.status < 300).count();
            t.requests += e.attempts.len();
            if ok > 0 {
                t.delivered += 1;
                t.duplicates += ok - 1;
            }
        }
        t
    }

    /// Every attempt for `id`, in arrival order.
    pub fn attempts(&self, id: &str) -> Vec<Attempt> {
        let book = self.shared.book.lock().unwrap();
        let mut a = book
            .by_id
            .get(id)
            .map(|e| e.attempts.clone())
            .unwrap_or_default();
        a.sort_by_key(|a| a.at);
        a
    }

    /// How many of `ids` no 2xx answer was given for yet.
    pub fn missing(&self, ids: &HashSet<String>) -> usize {
        let book = self.shared.book.lock().unwrap();
        ids.iter()
            .filter(|id| {
                !book
                    .by_id
                    .get(*id)
                    .is_some_and(|e| e.attempts.iter().any(|a| a.status < 300))
            })
            .count()
    }

    /// Waits until every id of `ids` was answered 2xx; panics with the count still missing.
    pub async fn wait_for_all(&self, ids: &HashSet<String>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        poll_until(
            timeout + Duration::from_secs(1),
            Duration::from_millis(250),
            "every acknowledged message at the receiver",
            || async {
                let missing = self.missing(ids);
                if missing > 0 && Instant::now() > deadline {
                    panic!(
                        "{missing} of {} acknowledged messages never reached the receiver",
                        ids.len()
                    );
                }
                (missing == 0).then_some(())
            },
        )
        .await;
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
