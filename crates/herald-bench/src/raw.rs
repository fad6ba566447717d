//! The raw-JetStream baselines: what the same work costs with async-nats and reqwest and no
//! Herald in between. Same stream configuration as a Herald topic.

use std::{
    future::IntoFuture,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Result;
use async_nats::jetstream::{self, consumer::pull, stream::Stream, AckKind};
use futures::{stream::FuturesUnordered, StreamExt};
use herald::{
    domain::{ProjectId, TopicName},
    store::{names::topic_subject, topic_stream_config},
};

pub struct RawTopic {
    pub js: jetstream::Context,
    pub stream: Stream,
    pub subject: String,
}

impl RawTopic {
    pub async fn create(nats_url: &str, topic: &str) -> Result<Self> {
        let client = async_nats::connect(nats_url).await?;
        let js = jetstream::new(client);
        let project = ProjectId::parse("rawbench").expect("valid");
        let topic = TopicName::parse(topic).expect("valid");
        let stream = js
            .create_stream(topic_stream_config(
                &project,
                &topic,
                1,
                herald::config::Config::default().max_subscriptions_per_topic as i32,
            ))
            .await?;
        Ok(Self {
            js,
            stream,
            subject: topic_subject(&project, &topic),
        })
    }

    pub async fn durable(
        &self,
        name: &str,
        max_ack_pending: i64,
    ) -> Result<jetstream::consumer::Consumer<pull::Config>> {
        Ok(self
            .stream
            .create_consumer(pull::Config {
                durable_name: Some(name.into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                deliver_policy: jetstream::consumer::DeliverPolicy::New,
                max_ack_pending,
                ..Default::default()
            })
            .await?)
    }

    /// Publishes for `duration` keeping `window` acks outstanding; returns acked msgs/s.
    pub async fn publish_windowed(
        &self,
        payload: bytes::Bytes,
        window: usize,
        duration: Duration,
    ) -> Result<f64> {
        let start = Instant::now();
        let mut pending = FuturesUnordered::new();
        let mut acked = 0u64;
        while start.elapsed() < duration {
            while pending.len() < window {
                pending.push(
                    self.js
                        .publish(self.subject.clone(), payload.clone())
                        .await?
                        .into_future(),
                );
            }
            if let Some(ack) = pending.next().await {
                ack?;
                acked += 1;
            }
        }
        while let Some(ack) = pending.next().await {
            ack?;
            acked += 1;
        }
        Ok(acked as f64 / start.elapsed().as_secs_f64())
    }
}

/// The raw delivery loop: pull from a durable consumer, POST each message to `url` with up
/// to `concurrency` requests in flight, ack after a 2xx, NAK otherwise.
pub fn spawn_forwarder(
    consumer: jetstream::consumer::Consumer<pull::Config>,
    http: reqwest::Client,
    url: String,
    concurrency: usize,
    stop: Arc<AtomicBool>,
    forwarded: Arc<AtomicU64>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut messages) = consumer
            .stream()
            .max_messages_per_batch(concurrency.max(1))
            .messages()
            .await
        else {
            return;
        };
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        while !stop.load(Ordering::Relaxed) {
            let next = tokio::time::timeout(Duration::from_millis(200), messages.next()).await;
            let Ok(Some(Ok(message))) = next else {
                continue;
            };
            let Ok(permit) = limit.clone().acquire_owned().await else {
                return;
            };
            let (http, url, forwarded) = (http.clone(), url.clone(), forwarded.clone());
            tokio::spawn(async move {
                let ok = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(message.payload.clone())
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ok {
                    let _ = message.ack().await;
                    forwarded.fetch_add(1, Ordering::Relaxed);
                } else {
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                }
                drop(permit);
            });
        }
    })
}
