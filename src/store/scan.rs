//! Reads the latest message of every subject under a filter: how a KV "directory"
//! (`{project}.>`) is listed without touching other projects' keys.

use async_nats::jetstream::{
    consumer::{pull, Consumer, DeliverPolicy, ReplayPolicy},
    stream::Stream,
    Message,
};
use futures::StreamExt;

use super::{errors::classify, StoreError};

/// Latest live message per subject matching `filter` (deleted, purged and expired keys
/// are skipped). Costs O(matching subjects), not O(stream).
pub async fn scan_latest(stream: &Stream, filter: String) -> Result<Vec<Message>, StoreError> {
    scan(stream, filter, false).await
}

/// Like [`scan_latest`], but without payloads: for counting keys.
pub async fn scan_latest_headers(
    stream: &Stream,
    filter: String,
) -> Result<Vec<Message>, StoreError> {
    scan(stream, filter, true).await
}

async fn scan(
    stream: &Stream,
    filter: String,
    headers_only: bool,
) -> Result<Vec<Message>, StoreError> {
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            headers_only,
            deliver_policy: DeliverPolicy::LastPerSubject,
            replay_policy: ReplayPolicy::Instant,
            ..Default::default()
        })
        .await
        .map_err(classify)?;
    // The ordered consumer would otherwise linger for its inactivity threshold (30 s), and
    // nats-server 2.15 caps a stream at 1,000 consumers: a burst of listings (or quota
    // checks) would fill the bucket's stream and every further one would be refused. The
    // guard deletes it in the background however the scan ends (also when the request is
    // dropped), so the caller does not wait for it.
    let _cleanup = DeleteOnDrop::new(stream, consumer.cached_info().name.clone());
    read_all(consumer).await
}

async fn read_all(consumer: Consumer<pull::OrderedConfig>) -> Result<Vec<Message>, StoreError> {
    let pending = consumer.cached_info().num_pending as usize;
    let mut out = Vec::with_capacity(pending);
    if pending == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(classify)?;
    let mut seen = 0;
    while let Some(message) = messages.next().await {
        let message = message.map_err(classify)?;
        seen += 1;
        let remaining = message.info().map(|i| i.pending).unwrap_or(0);
        if is_live(&message) {
            out.push(message);
        }
        if remaining == 0 || seen >= pending {
            break;
        }
    }
    Ok(out)
}

/// Deletes a scan's ephemeral consumer in the background, however the scan ended, so
/// listing costs no extra round trip.
pub(super) struct DeleteOnDrop {
    stream: Stream,
    name: String,
}

impl DeleteOnDrop {
    pub(super) fn new(stream: &Stream, name: String) -> Self {
        Self {
            stream: stream.clone(),
            name,
        }
    }
}

impl Drop for DeleteOnDrop {
    fn drop(&mut self) {
        let (stream, name) = (self.stream.clone(), std::mem::take(&mut self.name));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = stream.delete_consumer(&name).await;
            });
        }
    }
}

/// A KV tombstone (delete/purge) or a TTL delete marker is not a live value.
fn is_live(message: &Message) -> bool {
    let Some(headers) = message.headers.as_ref() else {
        return true;
    };
    let op = headers.get("KV-Operation").map(|v| v.as_str());
    !matches!(op, Some("DEL") | Some("PURGE")) && headers.get("Nats-Marker-Reason").is_none()
}
