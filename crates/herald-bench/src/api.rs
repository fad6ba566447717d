//! A small client of Herald's REST API, for the scenarios.

use anyhow::{bail, Result};
use reqwest::Client;
use serde_json::{json, Value};

pub const PROJECT: &str = "bench";

#[derive(Clone)]
pub struct HeraldApi {
    pub base: String,
    pub http: Client,
}

impl HeraldApi {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .expect("client"),
        }
    }

    pub async fn create_topic(&self, name: &str) -> Result<()> {
        let r = self
            .http
            .put(format!("{}/v2/topics/{name}", self.base))
            .header("X-Project-ID", PROJECT)
            .send()
            .await?;
        if !r.status().is_success() {
            bail!(
                "create topic {name}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        Ok(())
    }

    pub async fn subscribe(&self, topic: &str, subscriber: &str, options: Value) -> Result<String> {
        let r = self
            .http
            .post(format!("{}/v2/topics/{topic}/subscriptions", self.base))
            .header("X-Project-ID", PROJECT)
            .json(&json!({"subscriber": subscriber, "ttl": 86400, "options": options}))
            .send()
            .await?;
        if r.status() != 201 {
            bail!(
                "subscribe {subscriber}: {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            );
        }
        let v: Value = r.json().await?;
        Ok(v["subscription_id"].as_str().unwrap_or_default().to_owned())
    }

    /// Posts a pre-serialised `{"messages": [...]}` body; true on 201.
    pub async fn post_raw(&self, topic: &str, body: bytes::Bytes) -> Result<bool> {
        let r = self
            .http
            .post(format!("{}/v2/topics/{topic}/messages", self.base))
            .header("X-Project-ID", PROJECT)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok(r.status() == 201)
    }
}

/// `{"messages": [{"body": "<size bytes>"}, ... n]}`
pub fn batch_body(n: usize, size: usize) -> bytes::Bytes {
    let filler = "x".repeat(size);
    let msgs: Vec<Value> = (0..n).map(|_| json!({"body": filler})).collect();
    serde_json::to_vec(&json!({"messages": msgs}))
        .expect("json")
        .into()
}
