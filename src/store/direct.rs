//! Batched direct get (`$JS.API.DIRECT.GET.{stream}`, nats-server ≥ 2.11): reads a range
//! of one subject's messages without creating a consumer. The stream (any replica of it)
//! answers from its per-subject index, so the cost follows the subject's records, not the
//! stream's size. Needs `allow_direct` on the stream.

use std::time::Duration;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use super::StoreError;

/// Messages asked for per request; the server streams them back, then an end-of-batch.
const BATCH: usize = 256;
/// How long one batch may take to arrive.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Serialize)]
struct Request<'a> {
    seq: u64,
    next_by_subj: &'a str,
    batch: usize,
}

/// What a range read found.
pub(super) enum Range {
    /// The messages with sequences in the range, oldest first.
    Read(Vec<(u64, Bytes)>),
    /// Nobody answered: the stream does not allow direct get (yet).
    NoResponders,
}

/// The messages on `subject` with sequences in `lo..hi`, oldest first.
pub(super) async fn range(
    client: &Client,
    stream: &str,
    subject: &str,
    lo: u64,
    hi: u64,
) -> Result<Range, StoreError> {
    let api = format!("$JS.API.DIRECT.GET.{stream}");
    let mut out = Vec::new();
    let mut from = lo;
    while from < hi {
        let inbox = client.new_inbox();
        // Dropping the subscriber unsubscribes, so a batch cut short leaves nothing behind.
        let mut replies = client.subscribe(inbox.clone()).await.map_err(unavailable)?;
        let request = Request {
            seq: from,
            next_by_subj: subject,
            batch: BATCH,
        };
        let body = serde_json::to_vec(&request).expect("a direct get request serializes");
        client
            .publish_with_reply(api.clone(), inbox, body.into())
            .await
            .map_err(unavailable)?;
        let mut got = 0;
        let mut past_range = false;
        loop {
            let reply = tokio::time::timeout(BATCH_TIMEOUT, replies.next())
                .await
                .map_err(|_| StoreError::Unavailable("direct get timed out".into()))?
                .ok_or_else(|| StoreError::Unavailable("direct get: connection closed".into()))?;
            match reply.status.map(|s| s.as_u16()) {
                None | Some(200) => {}
                // End of the batch.
                Some(204) => break,
                // Nothing (more) on the subject from `from` on.
                Some(404) => return Ok(Range::Read(out)),
                Some(503) if got == 0 && out.is_empty() => return Ok(Range::NoResponders),
                Some(code) => {
                    return Err(StoreError::Unavailable(
                        format!(
                            "direct get answered {code} {}",
                            reply.description.unwrap_or_default()
                        )
                        .into(),
                    ))
                }
            }
            got += 1;
            let Some(seq) = sequence(reply.headers.as_ref()) else {
                return Err(StoreError::Unavailable(
                    "direct get: a message without Nats-Sequence".into(),
                ));
            };
            from = seq + 1;
            if seq >= hi {
                past_range = true;
                break;
            }
            out.push((seq, reply.payload));
        }
        if past_range || got < BATCH {
            break;
        }
    }
    Ok(Range::Read(out))
}

fn sequence(headers: Option<&HeaderMap>) -> Option<u64> {
    headers?.get("Nats-Sequence")?.as_str().parse().ok()
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}
