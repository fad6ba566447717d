//! Tells JetStream failures apart by what JetStream answered (its API error codes), never
//! by an error's text: "did not answer" (unavailable), "no such thing", "already exists",
//! "a limit says no", "out of resources", and any other refusal with its code.
//!
//! async-nats reports the server's answer in different places: some error kinds carry the
//! `jetstream::Error` inline (`ConsumerErrorKind::JetStream(..)`), others keep it as the
//! `source()` of a wrapper (KV errors wrap a publish error that wraps it), and a few
//! already turned a code into a kind (`ConsumerInfoErrorKind::NotFound`). [`failure_of`]
//! walks the whole chain and looks at all three.

use std::error::Error as StdError;

use async_nats::jetstream::{
    self,
    context::{
        AccountError, AccountErrorKind, ConsumerInfoError, ConsumerInfoErrorKind,
        CreateStreamError, CreateStreamErrorKind, GetStreamByNameError, GetStreamByNameErrorKind,
        GetStreamError, GetStreamErrorKind, PublishError, PublishErrorKind,
    },
    kv,
    stream::{
        ConsumerCreateStrictError, ConsumerCreateStrictErrorKind, ConsumerError, ConsumerErrorKind,
        ConsumerUpdateError, ConsumerUpdateErrorKind, DeleteMessageError, DeleteMessageErrorKind,
        PurgeError, PurgeErrorKind, RawMessageError, RawMessageErrorKind,
    },
    ErrorCode,
};

use super::StoreError;

/// A JetStream limit that refused a request: quotas the caller cannot go past (403).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limit {
    /// The stream's (or account's) maximum number of consumers, met by a subscription
    /// create: subscriptions per topic; `max` when the caller knows it.
    Subscriptions { max: Option<u64> },
    /// The maximum number of consumers, met by anything else (Herald's own short-lived
    /// consumers): not the caller's quota, so it answers 503.
    Consumers,
    /// The account's maximum number of streams, i.e. topics across the account.
    Streams,
    /// The account's or a stream's storage quota.
    Storage,
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Subscriptions { max: Some(n) } => write!(f, "at most {n} consumers per stream"),
            Self::Subscriptions { max: None } | Self::Consumers => f.write_str("maximum consumers"),
            Self::Streams => f.write_str("maximum streams"),
            Self::Storage => f.write_str("storage quota"),
        }
    }
}

/// What a failed call says about its cause.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Failure {
    /// JetStream answered with an API error.
    Refusal(jetstream::Error),
    /// async-nats recognised a "does not exist" answer.
    NotFound,
    /// async-nats recognised an "already exists" answer.
    AlreadyExists,
    /// A compare-and-set lost (KV revision, expected last sequence).
    WrongRevision,
    /// No usable answer: not connected, timed out, no responders, connection lost.
    NoAnswer,
}

/// Turns a NATS/JetStream error into the [`StoreError`] the API reports.
pub(crate) fn classify<E: StdError + Send + Sync + 'static>(e: E) -> StoreError {
    match failure_of(&e) {
        Failure::Refusal(api) => classify_refusal(api),
        Failure::NotFound => StoreError::NotFound,
        Failure::AlreadyExists => StoreError::Conflict("the resource already exists".into()),
        Failure::WrongRevision => {
            StoreError::Conflict("the resource was changed concurrently; retry".into())
        }
        Failure::NoAnswer => StoreError::Unavailable(Box::new(e)),
    }
}

/// True when `e` says the stream, consumer or message does not exist (by error code).
pub fn is_not_found<E: StdError + 'static>(e: &E) -> bool {
    match failure_of(e) {
        Failure::NotFound => true,
        Failure::Refusal(api) => is_not_found_code(&api),
        _ => false,
    }
}

/// True when `e` says the consumer does not exist (code `CONSUMER_NOT_FOUND`), and not
/// merely its stream: while JetStream recovers after a restart it briefly answers "stream
/// not found", which must not stop a worker.
pub fn is_consumer_not_found<E: StdError + 'static>(e: &E) -> bool {
    if let Some(info) = (e as &(dyn StdError + 'static)).downcast_ref::<ConsumerInfoError>() {
        return info.kind() == ConsumerInfoErrorKind::NotFound;
    }
    matches!(failure_of(e), Failure::Refusal(api) if matches!(api.error_code(),
        ErrorCode::CONSUMER_NOT_FOUND | ErrorCode::CONSUMER_DOES_NOT_EXIST))
}

/// True when `e` says the stream does not exist (code `STREAM_NOT_FOUND`).
pub fn is_stream_not_found<E: StdError + 'static>(e: &E) -> bool {
    if let Some(info) = (e as &(dyn StdError + 'static)).downcast_ref::<ConsumerInfoError>() {
        return info.kind() == ConsumerInfoErrorKind::StreamNotFound;
    }
    matches!(failure_of(e), Failure::Refusal(api) if api.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

/// True when `e` says the stream or consumer already exists (by error code).
pub fn is_already_exists<E: StdError + 'static>(e: &E) -> bool {
    match failure_of(e) {
        Failure::AlreadyExists => true,
        Failure::Refusal(api) => matches!(
            api.error_code(),
            ErrorCode::CONSUMER_ALREADY_EXISTS
                | ErrorCode::CONSUMER_NAME_EXIST
                | ErrorCode::STREAM_NAME_EXIST
        ),
        _ => false,
    }
}

fn is_not_found_code(api: &jetstream::Error) -> bool {
    matches!(
        api.error_code(),
        ErrorCode::STREAM_NOT_FOUND
            | ErrorCode::CONSUMER_NOT_FOUND
            | ErrorCode::CONSUMER_DOES_NOT_EXIST
            | ErrorCode::NO_MESSAGE_FOUND
            | ErrorCode::SEQUENCE_NOT_FOUND
    )
}

/// Maps a JetStream API error by its code (then by its HTTP-like status).
pub(crate) fn classify_refusal(api: jetstream::Error) -> StoreError {
    let code = api.error_code();
    let limit = match code {
        ErrorCode::MAXIMUM_CONSUMERS_LIMIT => Some(Limit::Consumers),
        ErrorCode::MAXIMUM_STREAMS_LIMIT => Some(Limit::Streams),
        ErrorCode::STORAGE_RESOURCES_EXCEEDED
        | ErrorCode::MEMORY_RESOURCES_EXCEEDED
        | ErrorCode::ACCOUNT_RESOURCES_EXCEEDED
        | ErrorCode::STREAM_MAX_STREAM_BYTES_EXCEEDED
        | ErrorCode::STREAM_MAX_BYTES_REQUIRED => Some(Limit::Storage),
        _ => None,
    };
    if let Some(limit) = limit {
        return StoreError::LimitReached { limit, source: api };
    }
    match code {
        _ if is_not_found_code(&api) => StoreError::NotFound,
        ErrorCode::INSUFFICIENT_RESOURCES => StoreError::Exhausted(api),
        ErrorCode::STREAM_NAME_EXIST
        | ErrorCode::CONSUMER_NAME_EXIST
        | ErrorCode::CONSUMER_ALREADY_EXISTS
        | ErrorCode::CONSUMER_EXISTING_ACTIVE
        | ErrorCode::STREAM_WRONG_LAST_SEQUENCE
        | ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID => StoreError::Conflict(description(&api)),
        // JetStream says it cannot serve right now (no leader, offline, disabled): the
        // same situation for the caller as no answer at all.
        ErrorCode::CLUSTER_NOT_AVAILABLE
        | ErrorCode::CLUSTER_NOT_ACTIVE
        | ErrorCode::CLUSTER_NOT_LEADER
        | ErrorCode::CLUSTER_NO_PEERS
        | ErrorCode::STREAM_OFFLINE
        | ErrorCode::CONSUMER_OFFLINE
        | ErrorCode::JETSTREAM_NOT_ENABLED
        | ErrorCode::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT => StoreError::Unavailable(Box::new(api)),
        _ if api.code() == 404 => StoreError::NotFound,
        _ if api.code() == 503 => StoreError::Unavailable(Box::new(api)),
        _ => StoreError::Refused {
            code: code.0,
            description: description(&api),
        },
    }
}

/// The server's description of an API error (`jetstream::Error` has no getter for it, but
/// it is the serialised `description` field).
pub(crate) fn description(api: &jetstream::Error) -> String {
    serde_json::to_value(api)
        .ok()
        .and_then(|v| v.get("description")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "no description".to_owned())
}

/// Walks `e` and its sources for the first thing that says what happened.
pub(crate) fn failure_of(e: &(dyn StdError + 'static)) -> Failure {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(failure) = recognise(e) {
            return failure;
        }
        next = e.source();
    }
    Failure::NoAnswer
}

/// What one error in the chain says by itself, if anything.
fn recognise(e: &(dyn StdError + 'static)) -> Option<Failure> {
    use Failure::*;
    if let Some(api) = e.downcast_ref::<jetstream::Error>() {
        return Some(Refusal(api.clone()));
    }
    // Kinds that carry the server's answer inline, or that async-nats derived from it.
    macro_rules! kinds {
        ($e:expr, $($ty:ty => |$k:ident| $map:expr),+ $(,)?) => {
            $(if let Some(typed) = $e.downcast_ref::<$ty>() {
                let $k = typed.kind();
                return $map;
            })+
        };
    }
    kinds!(e,
        ConsumerInfoError => |k| match k {
            ConsumerInfoErrorKind::NotFound | ConsumerInfoErrorKind::StreamNotFound => Some(NotFound),
            ConsumerInfoErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        CreateStreamError => |k| match k {
            CreateStreamErrorKind::NotFound => Some(NotFound),
            CreateStreamErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        GetStreamError => |k| match k {
            GetStreamErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        GetStreamByNameError => |k| match k {
            GetStreamByNameErrorKind::NotFound => Some(NotFound),
            GetStreamByNameErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        AccountError => |k| match k {
            AccountErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        // `StreamNotFound` is a publish nobody answered (no responders): while JetStream
        // recovers its streams that is unavailability, so it stays `NoAnswer` (503).
        PublishError => |k| match k {
            PublishErrorKind::WrongLastMessageId | PublishErrorKind::WrongLastSequence => {
                Some(WrongRevision)
            }
            _ => None,
        },
        DeleteMessageError => |k| match k {
            DeleteMessageErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        PurgeError => |k| match k {
            PurgeErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        RawMessageError => |k| match k {
            RawMessageErrorKind::NoMessageFound => Some(NotFound),
            RawMessageErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        ConsumerError => |k| match k {
            ConsumerErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        ConsumerCreateStrictError => |k| match k {
            ConsumerCreateStrictErrorKind::AlreadyExists => Some(AlreadyExists),
            ConsumerCreateStrictErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        ConsumerUpdateError => |k| match k {
            ConsumerUpdateErrorKind::DoesNotExist => Some(NotFound),
            ConsumerUpdateErrorKind::JetStream(api) => Some(Refusal(api)),
            _ => None,
        },
        kv::CreateError => |k| match k {
            kv::CreateErrorKind::AlreadyExists => Some(AlreadyExists),
            _ => None,
        },
        kv::UpdateError => |k| match k {
            kv::UpdateErrorKind::WrongLastRevision => Some(WrongRevision),
            _ => None,
        },
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: u64, description: &str) -> jetstream::Error {
        serde_json::from_value(serde_json::json!({
            "code": status, "err_code": code, "description": description,
        }))
        .expect("a JetStream API error deserialises")
    }

    #[test]
    fn a_consumer_limit_refusal_inside_a_consumer_error_is_a_consumer_limit() {
        let e = ConsumerError::new(ConsumerErrorKind::JetStream(api(
            400,
            10026,
            "maximum consumers limit reached",
        )));
        match classify(e) {
            StoreError::LimitReached { limit, .. } => assert_eq!(limit, Limit::Consumers),
            other => panic!("not a limit: {other:?}"),
        }
    }

    #[test]
    fn not_found_codes_and_kinds_are_not_found() {
        let stream = GetStreamError::new(GetStreamErrorKind::JetStream(api(
            404,
            10059,
            "stream not found",
        )));
        assert!(is_not_found(&stream));
        assert!(is_stream_not_found(&stream));
        assert!(!is_consumer_not_found(&stream));
        assert!(matches!(classify(stream), StoreError::NotFound));
        let consumer = ConsumerInfoError::new(ConsumerInfoErrorKind::NotFound);
        assert!(is_not_found(&consumer));
        assert!(is_consumer_not_found(&consumer));
        let no_stream = ConsumerInfoError::new(ConsumerInfoErrorKind::StreamNotFound);
        assert!(!is_consumer_not_found(&no_stream));
        let deleted = ConsumerError::new(ConsumerErrorKind::JetStream(api(
            404,
            10014,
            "consumer not found",
        )));
        assert!(is_not_found(&deleted));
        assert!(is_consumer_not_found(&deleted));
    }

    #[test]
    fn a_refusal_wrapped_as_a_source_is_found() {
        // KV writes wrap a publish error whose source is the server's answer.
        let inner = PublishError::with_source(
            PublishErrorKind::Other,
            api(400, 10047, "insufficient storage resources available"),
        );
        let e = kv::CreateError::with_source(kv::CreateErrorKind::Publish, inner);
        assert!(matches!(
            classify(e),
            StoreError::LimitReached {
                limit: Limit::Storage,
                ..
            }
        ));
    }

    #[test]
    fn timeouts_and_no_responders_are_unavailability() {
        let e = ConsumerInfoError::new(ConsumerInfoErrorKind::TimedOut);
        assert!(matches!(classify(e), StoreError::Unavailable(_)));
        let e = PublishError::new(PublishErrorKind::TimedOut);
        assert!(matches!(classify(e), StoreError::Unavailable(_)));
        let e = PublishError::new(PublishErrorKind::StreamNotFound);
        assert!(matches!(classify(e), StoreError::Unavailable(_)));
        let e = api(503, 10008, "JetStream system temporarily unavailable");
        assert!(matches!(classify(e), StoreError::Unavailable(_)));
        assert!(!is_not_found(&ConsumerInfoError::new(
            ConsumerInfoErrorKind::TimedOut
        )));
    }

    #[test]
    fn other_refusals_keep_their_code_and_description() {
        let e = PurgeError::new(PurgeErrorKind::JetStream(api(
            500,
            10110,
            "stream purge not permitted",
        )));
        match classify(e) {
            StoreError::Refused { code, description } => {
                assert_eq!(code, 10110);
                assert_eq!(description, "stream purge not permitted");
            }
            other => panic!("not a refusal: {other:?}"),
        }
        assert!(matches!(
            classify(api(500, 10023, "insufficient resources")),
            StoreError::Exhausted(_)
        ));
        assert!(matches!(
            classify(api(400, 10058, "stream name already in use")),
            StoreError::Conflict(_)
        ));
    }

    #[test]
    fn losing_a_compare_and_set_is_a_conflict() {
        let e = kv::UpdateError::new(kv::UpdateErrorKind::WrongLastRevision);
        assert!(matches!(classify(e), StoreError::Conflict(_)));
    }
}
