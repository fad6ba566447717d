//! Direct get (`$JS.API.DIRECT.GET.{stream}`, batched forms from nats-server 2.11): reads
//! messages without creating a consumer, answered by any replica of the stream. Needs
//! `allow_direct` on the stream.
//!
//! Three reads: a range of one subject (`next_by_subj` from a sequence, in batches), the
//! newest message of every subject matching a filter (`multi_last`), and single messages
//! by sequence, pipelined.

use std::time::Duration;

use async_nats::{Client, HeaderMap};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use super::StoreError;

/// Messages asked for per request; the server streams them back, then an end-of-batch.
const BATCH: usize = 256;
/// How long one batch may take to arrive.
const BATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Single gets in flight at once.
const GETS_IN_FLIGHT: usize = 64;

#[derive(Serialize, Default)]
struct Request<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    seq: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_by_subj: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    multi_last: Option<[&'a str; 1]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    batch: Option<usize>,
}

/// One message read.
#[derive(Debug)]
pub(super) struct Got {
    pub seq: u64,
    pub subject: Option<String>,
    pub payload: Bytes,
}

/// What a read found.
pub(super) enum Read {
    /// The messages, oldest first.
    Found(Vec<Got>),
    /// Nobody answered: the stream is missing or does not allow direct get (yet).
    NoResponders,
}

/// The messages on `subject` with sequences in `lo..hi`, oldest first.
pub(super) async fn range(
    client: &Client,
    stream: &str,
    subject: &str,
    lo: u64,
    hi: u64,
) -> Result<Read, StoreError> {
    let api = api(stream);
    let mut out = Vec::new();
    let mut from = lo;
    while from < hi {
        let request = Request {
            seq: Some(from),
            next_by_subj: Some(subject),
            batch: Some(BATCH),
            ..Default::default()
        };
        let mut got = Vec::new();
        let end = batch(client, &api, &request, |msg| {
            if msg.seq >= hi {
                return false;
            }
            got.push(msg);
            true
        })
        .await?;
        let n = got.len();
        if let Some(last) = got.last() {
            from = last.seq + 1;
        }
        out.extend(got);
        match end {
            End::NoResponders if out.is_empty() => return Ok(Read::NoResponders),
            End::Batch if n == BATCH => continue,
            _ => break,
        }
    }
    Ok(Read::Found(out))
}

/// The newest message of every subject matching `filter`, with their subjects.
pub(super) async fn multi_last(
    client: &Client,
    stream: &str,
    filter: &str,
) -> Result<Read, StoreError> {
    let request = Request {
        multi_last: Some([filter]),
        batch: Some(BATCH),
        ..Default::default()
    };
    let mut out = Vec::new();
    match batch(client, &api(stream), &request, |msg| {
        out.push(msg);
        true
    })
    .await?
    {
        End::NoResponders => Ok(Read::NoResponders),
        _ => Ok(Read::Found(out)),
    }
}

/// The messages with these sequences, in the same order; `None` for one that is gone.
pub(super) async fn by_seq(
    client: &Client,
    stream: &str,
    seqs: &[u64],
) -> Result<Vec<Option<Got>>, StoreError> {
    let api = api(stream);
    futures::stream::iter(seqs.to_vec())
        .map(|seq| get_one(client, &api, seq))
        .buffered(GETS_IN_FLIGHT)
        .try_collect()
        .await
}

async fn get_one(client: &Client, api: &str, seq: u64) -> Result<Option<Got>, StoreError> {
    let body = format!("{{\"seq\":{seq}}}");
    let reply = tokio::time::timeout(BATCH_TIMEOUT, client.request(api.to_owned(), body.into()))
        .await
        .map_err(|_| StoreError::Unavailable("direct get timed out".into()))?
        .map_err(unavailable)?;
    match reply.status.map(|s| s.as_u16()) {
        None | Some(200) => Ok(Some(Got {
            seq,
            subject: header(reply.headers.as_ref(), "Nats-Subject").map(str::to_owned),
            payload: reply.payload,
        })),
        // Removed by the stream's limits since it was indexed.
        Some(404) => Ok(None),
        Some(code) => Err(refused(code, reply.description)),
    }
}

/// How a batch ended.
enum End {
    /// End-of-batch: the server sent all it had, up to the batch size.
    Batch,
    /// The visitor stopped it, or nothing (more) matched.
    Stopped,
    NoResponders,
}

/// Sends one batched request and hands each message to `take` until it returns `false`
/// or the batch ends.
async fn batch(
    client: &Client,
    api: &str,
    request: &Request<'_>,
    mut take: impl FnMut(Got) -> bool,
) -> Result<End, StoreError> {
    let inbox = client.new_inbox();
    // Dropping the subscriber unsubscribes, so a batch cut short leaves nothing behind.
    let mut replies = client.subscribe(inbox.clone()).await.map_err(unavailable)?;
    let body = serde_json::to_vec(request).expect("a direct get request serializes");
    client
        .publish_with_reply(api.to_owned(), inbox, body.into())
        .await
        .map_err(unavailable)?;
    let mut got = 0;
    loop {
        let reply = tokio::time::timeout(BATCH_TIMEOUT, replies.next())
            .await
            .map_err(|_| StoreError::Unavailable("direct get timed out".into()))?
            .ok_or_else(|| StoreError::Unavailable("direct get: connection closed".into()))?;
        match reply.status.map(|s| s.as_u16()) {
            None | Some(200) => {}
            Some(204) => return Ok(End::Batch),
            // Nothing (more) matches.
            Some(404) => return Ok(End::Stopped),
            Some(503) if got == 0 => return Ok(End::NoResponders),
            Some(code) => return Err(refused(code, reply.description)),
        }
        got += 1;
        let headers = reply.headers.as_ref();
        let Some(seq) = header(headers, "Nats-Sequence").and_then(|s| s.parse().ok()) else {
            return Err(StoreError::Unavailable(
                "direct get: a message without Nats-Sequence".into(),
            ));
        };
        let subject = header(headers, "Nats-Subject").map(str::to_owned);
        if !take(Got {
            seq,
            subject,
            payload: reply.payload,
        }) {
            return Ok(End::Stopped);
        }
    }
}

fn api(stream: &str) -> String {
    format!("$JS.API.DIRECT.GET.{stream}")
}

fn header<'a>(headers: Option<&'a HeaderMap>, name: &str) -> Option<&'a str> {
    Some(headers?.get(name)?.as_str())
}

fn refused(code: u16, description: Option<String>) -> StoreError {
    StoreError::Unavailable(
        format!(
            "direct get answered {code} {}",
            description.unwrap_or_default()
        )
        .into(),
    )
}

fn unavailable<E: std::error::Error + Send + Sync + 'static>(e: E) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}
