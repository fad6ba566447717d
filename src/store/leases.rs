//! Delivery leases: which one Herald process pulls for a subscription that only one
//! process may deliver at a time (a rate-limited one: one token bucket in one process makes
//! `max_rate` hold for the subscription as a whole, whatever the number of processes).
//!
//! A lease is a key in the KV bucket `herald_leases` whose values age out after
//! [`LEASE_TTL`]: the holder renews it with a compare-and-set on its revision; when the
//! holder dies its key ages out and another process's create succeeds.

use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;

use super::{errors::classify, names::LEASES_BUCKET, Store, StoreError};

/// How long a lease outlives its holder's last renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// A lease as this process knows it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    /// The key's revision when this process last wrote it; `None` when not held.
    revision: Option<u64>,
}

impl Lease {
    pub fn is_held(&self) -> bool {
        self.revision.is_some()
    }
}

impl Store {
    async fn leases(&self) -> Result<&kv::Store, StoreError> {
        if !self.is_connected() {
            return Err(StoreError::Unavailable("not connected to NATS".into()));
        }
        self.leases
            .get_or_try_init(|| {
                self.kv_bucket(kv::Config {
                    bucket: LEASES_BUCKET.into(),
                    description: "Herald delivery leases, key {stream}.{consumer}".into(),
                    history: 1,
                    max_age: LEASE_TTL,
                    ..Default::default()
                })
            })
            .await
    }

    /// Takes the lease `key` for `holder`, or renews it when this process holds it. The
    /// lease is lost when another process took it meanwhile (this one was away longer than
    /// [`LEASE_TTL`]).
    ///
    /// # Errors
    /// When NATS does not answer: the caller must then assume it no longer holds the lease
    /// once [`LEASE_TTL`] has passed since its last renewal.
    pub async fn hold_lease(
        &self,
        key: &str,
        holder: &str,
        lease: Lease,
    ) -> Result<Lease, StoreError> {
        let kv = self.leases().await?;
        let value = Bytes::copy_from_slice(holder.as_bytes());
        let written = match lease.revision {
            Some(revision) => match kv.update(key, value, revision).await {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => None,
                Err(e) => return Err(classify(e)),
            },
            None => match kv.create(key, value).await {
                Ok(r) => Some(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => None,
                Err(e) => return Err(classify(e)),
            },
        };
        Ok(Lease { revision: written })
    }

    /// Gives a held lease up at once (on shutdown or when it is no longer needed), so
    /// another process need not wait for it to age out.
    pub async fn release_lease(&self, key: &str, lease: Lease) {
        let Some(revision) = lease.revision else {
            return;
        };
        if let Ok(kv) = self.leases().await {
            let _ = kv.delete_expect_revision(key, Some(revision)).await;
        }
    }
}
