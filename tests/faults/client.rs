//! The REST client side of the fault tests: topic and subscription set-up, and a load
//! generator that publishes batches concurrently (retrying a failed batch with the same
//! `Idempotency-Key`, on the next Herald when there are several) and keeps the ids the API
//! acknowledged with a 201.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde_json::{json, Value};

/// Herald's REST API, as one project, on one or more Herald processes.
pub struct Api {
    http: reqwest::Client,
    pub bases: Vec<String>,
    pub project: String,
    /// Whether a retried batch carries the same `Idempotency-Key` (on by default); without
    /// one, a retry publishes new messages, as a plain Zaqar client does.
    pub idempotency_keys: bool,
}

impl Api {
    pub fn new(bases: Vec<String>) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(15))
                .build()
                .unwrap(),
            bases,
            project: format!("faults{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            idempotency_keys: true,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.bases[0]))
            .header("X-Project-ID", &self.project)
    }

    pub async fn put_topic(&self, name: &str) {
        let r = self
            .req(reqwest::Method::PUT, &format!("/v2/topics/{name}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201, "topic {name} created");
    }

    /// Subscribes `subscriber` with `options`; returns the subscription id.
    pub async fn subscribe(&self, topic: &str, subscriber: &str, options: Value) -> String {
        let r = self
            .req(
                reqwest::Method::POST,
                &format!("/v2/topics/{topic}/subscriptions"),
            )
            .json(&json!({"subscriber": subscriber, "options": options}))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let doc: Value = r.json().await.unwrap();
        assert_eq!(status, 201, "subscription created: {doc}");
        doc["subscription_id"].as_str().unwrap().to_owned()
    }

    /// Messages not yet acked by the topic's subscriptions (`stats.subscriptions.pending`),
    /// from any Herald that answers.
    pub async fn pending(&self, topic: &str) -> Option<u64> {
        for base in &self.bases {
            let Ok(r) = self
                .http
                .get(format!("{base}/v2/topics/{topic}/stats"))
                .header("X-Project-ID", &self.project)
                .send()
                .await
            else {
                continue;
            };
            if let Ok(doc) = r.json::<Value>().await {
                if let Some(p) = doc["subscriptions"]["pending"].as_u64() {
                    return Some(p);
                }
            }
        }
        None
    }

    /// Waits until every subscription of `topic` has settled every message: nothing more
    /// can reach a receiver, so its tally is final.
    pub async fn wait_drained(&self, topic: &str, timeout: Duration) {
        crate::harness::eventually(
            timeout,
            Duration::from_millis(100),
            "the topic to drain",
            || async { (self.pending(topic).await == Some(0)).then_some(()) },
        )
        .await;
    }

    /// One POST of `bodies`; `Ok(ids)` on 201, `Err(what went wrong)` otherwise.
    async fn post_batch(
        &self,
        base: &str,
        topic: &str,
        key: &str,
        bodies: &[Value],
    ) -> Result<Vec<String>, String> {
        let messages: Vec<Value> = bodies.iter().map(|b| json!({"body": b})).collect();
        let mut r = self
            .http
            .post(format!("{base}/v2/topics/{topic}/messages"))
            .header("X-Project-ID", &self.project);
        if self.idempotency_keys {
            r = r.header("Idempotency-Key", key);
        }
        let r = r
            .json(&json!({"messages": messages}))
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timeout".to_owned()
                } else {
                    "connection error".to_owned()
                }
            })?;
        let status = r.status().as_u16();
        if status != 201 {
            let body = r.text().await.unwrap_or_default();
            return Err(format!("{status} {body}"));
        }
        let doc: Value = r
            .json()
            .await
            .map_err(|e| format!("201 with a bad body: {e}"))?;
        Ok(doc["resources"]
            .as_array()
            .expect("resources")
            .iter()
            .map(|href| {
                let href = href.as_str().expect("an href");
                href.rsplit('/').next().unwrap().to_owned()
            })
            .collect())
    }
}

/// What a load run did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Ids of every message the API acknowledged (201).
    pub acked: HashSet<String>,
    pub posts: usize,
    /// Failed POSTs by answer ("503 ...", "connection error", ...), body cut short.
    pub failures: BTreeMap<String, usize>,
    /// Batches given up after retrying until the deadline.
    pub abandoned_batches: usize,
    pub elapsed: Duration,
}

impl LoadReport {
    /// Failed POSTs whose answer was neither a 503 nor a connection problem: a 500 or
    /// any other answer is a bug while NATS or a Herald is down.
    pub fn unexpected_failures(&self) -> Vec<(&String, &usize)> {
        self.failures
            .iter()
            .filter(|(k, _)| {
                !(k.starts_with("503")
                    || k.as_str() == "connection error"
                    || k.as_str() == "timeout")
            })
            .collect()
    }
}

/// A load run in the background.
pub struct Load {
    /// Messages acknowledged so far.
    pub acked: Arc<AtomicUsize>,
    handle: tokio::task::JoinHandle<LoadReport>,
}

impl Load {
    /// Publishes `total` messages to `topic` in batches of `batch` with `concurrency`
    /// POSTs in flight; a failed batch is retried (same key, next Herald) until `give_up`
    /// after the start.
    pub fn start(
        api: Arc<Api>,
        topic: &str,
        total: usize,
        batch: usize,
        concurrency: usize,
        give_up: Duration,
    ) -> Self {
        let acked = Arc::new(AtomicUsize::new(0));
        let report = Arc::new(Mutex::new(LoadReport::default()));
        let next_batch = Arc::new(AtomicUsize::new(0));
        let batches = total.div_ceil(batch);
        let run = uuid::Uuid::new_v4().simple().to_string();
        let topic = topic.to_owned();
        let started = Instant::now();
        let deadline = started + give_up;
        let mut workers = Vec::new();
        for w in 0..concurrency {
            let (api, acked, report, next_batch, run, topic) = (
                api.clone(),
                acked.clone(),
                report.clone(),
                next_batch.clone(),
                run.clone(),
                topic.clone(),
            );
            workers.push(tokio::spawn(async move {
                let mut turn = w;
                loop {
                    let i = next_batch.fetch_add(1, Ordering::Relaxed);
                    if i >= batches {
                        return;
                    }
                    let bodies: Vec<Value> = (i * batch..((i + 1) * batch).min(total))
                        .map(|n| json!({"n": n, "pad": "x".repeat(64)}))
                        .collect();
                    let key = format!("{run}-{i}");
                    loop {
                        let base = &api.bases[turn % api.bases.len()];
                        let result = api.post_batch(base, &topic, &key, &bodies).await;
                        let failed = {
                            let mut r = report.lock().unwrap();
                            r.posts += 1;
                            match result {
                                Ok(ids) => {
                                    acked.fetch_add(ids.len(), Ordering::Relaxed);
                                    r.acked.extend(ids);
                                    false
                                }
                                Err(what) => {
                                    let what: String = what.chars().take(120).collect();
                                    *r.failures.entry(what).or_default() += 1;
                                    true
                                }
                            }
                        };
                        if !failed {
                            break;
                        }
                        turn += 1;
                        if Instant::now() > deadline {
                            report.lock().unwrap().abandoned_batches += 1;
                            break;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }));
        }
        let handle = tokio::spawn(async move {
            for w in workers {
                w.await.expect("a publisher task");
            }
            let mut r = std::mem::take(&mut *report.lock().unwrap());
            r.elapsed = started.elapsed();
            r
        });
        Self { acked, handle }
    }

    /// Waits until at least `n` messages were acknowledged (bounded).
    pub async fn wait_acked(&self, n: usize, timeout: Duration) {
        crate::harness::eventually(
            timeout,
            Duration::from_millis(20),
            &format!("{n} acknowledged messages"),
            || async { (self.acked.load(Ordering::Relaxed) >= n).then_some(()) },
        )
        .await;
    }

    pub async fn finish(self) -> LoadReport {
        self.handle.await.expect("the load task")
    }
}
