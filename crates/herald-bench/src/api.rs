//! A small client of Herald's REST API, for the scenarios.

use anyhow::{bail, Result};
use reqwest::Client;
use serde_json::{json, Value};

pub const PROJECT: &str = "bench";

#[derive(Clone)]
pub struct HeraldApi {
    pub base: String,
    pub http: Client,
    /// `X-Project-ID` (noauth), or the token's project (keystone).
    pub project: String,
    /// `X-Auth-Token` of every request (keystone mode).
    token: Option<String>,
}

impl HeraldApi {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_owned(),
            http: Client::builder()
                .pool_max_idle_per_host(256)
                .build()
                .expect("client"),
            project: PROJECT.to_owned(),
            token: None,
        }
    }

    /// A client of a keystone-mode Herald with a token scoped to `project`.
    pub fn with_token(base: &str, token: &str, project: &str) -> Self {
        Self {
            project: project.to_owned(),
            token: Some(token.to_owned()),
            ..Self::new(base)
        }
    }

    /// The caller's identity headers.
    fn identify(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => r.header("X-Auth-Token", t),
            None => r.header("X-Project-ID", &self.project),
        }
    }

    pub async fn create_topic(&self, name: &str) -> Result<()> {
        let r = self
            .identify(self.http.put(format!("{}/v2/topics/{name}", self.base)))
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
            .identify(
                self.http
                    .post(format!("{}/v2/topics/{topic}/subscriptions", self.base)),
            )
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
        Ok(self.post_raw_status(topic, body).await? == 201)
    }

    /// Posts a pre-serialised `{"messages": [...]}` body; the status, or why there is none.
    pub async fn post_raw_status(
        &self,
        topic: &str,
        body: bytes::Bytes,
    ) -> reqwest::Result<reqwest::StatusCode> {
        let r = self
            .identify(
                self.http
                    .post(format!("{}/v2/topics/{topic}/messages", self.base)),
            )
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        Ok(r.status())
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
