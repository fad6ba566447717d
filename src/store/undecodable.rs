//! Records Herald did not write (an older version, an operator, another program) and cannot
//! read. They never break a listing: the caller skips them and reports them here, which
//! logs each key once per process and counts it in `herald_undecodable_records_total`.

use std::{
    collections::HashSet,
    sync::{Mutex, OnceLock},
};

/// Keys remembered as already reported; beyond it the set starts over (a key may then be
/// reported again, which is harmless).
const MAX_REPORTED_KEYS: usize = 4096;

/// The kind of record, the metric's `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RecordKind {
    Topic,
    UserMessage,
    Subscription,
    DeadLetter,
    Attempt,
}

impl RecordKind {
    fn label(self) -> &'static str {
        match self {
            Self::Topic => "topic",
            Self::UserMessage => "user_message",
            Self::Subscription => "subscription",
            Self::DeadLetter => "dead_letter",
            Self::Attempt => "attempt",
        }
    }
}

/// Reports a record that does not decode: the first time this process meets `key`, logs it
/// and counts it (so the counter is the number of distinct bad records seen, not how often
/// they were listed). Returns nothing: the caller skips the record.
pub(crate) fn report_undecodable(kind: RecordKind, key: &str, reason: &dyn std::fmt::Display) {
    static REPORTED: OnceLock<Mutex<HashSet<(RecordKind, String)>>> = OnceLock::new();
    let first = {
        let mut reported = REPORTED
            .get_or_init(Default::default)
            .lock()
            .expect("undecodable keys lock");
        if reported.len() >= MAX_REPORTED_KEYS {
            reported.clear();
        }
        reported.insert((kind, key.to_owned()))
    };
    if first {
        tracing::warn!(kind = kind.label(), key, %reason, "skipping a record that does not decode");
        metrics::counter!("herald_undecodable_records_total", "kind" => kind.label()).increment(1);
    }
}
