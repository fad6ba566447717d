//! The fault suite: real nats-server and `herald` processes, killed and restarted while
//! messages are published and delivered; every test asserts that nothing the API
//! acknowledged is lost, and reports (`eprintln!`) the figures of its run.
//!
//! The tests take turns ([`serial`]): they load both cores, and their figures mean more
//! when they do not compete with each other.

mod client;
mod cluster;
mod harness;
mod herald_crash;
mod nats_crash;
mod receiver_faults;

use herald_testkit::receiver;

use std::{future::Future, time::Duration};

/// One fault test at a time.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// Runs a test body with an overall deadline, so a hang fails instead of blocking CI.
pub async fn bounded<F: Future<Output = ()>>(limit: Duration, body: F) {
    if tokio::time::timeout(limit, body).await.is_err() {
        panic!("the test did not finish within {limit:?}");
    }
}
