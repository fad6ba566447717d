//! Real peers for Herald's tests (`tests/api`, `tests/faults`, `tests/keystone`) and its
//! benchmark (`herald-bench`), one copy of each.
//!
//! # Layout
//! - [`nats`]: a nats-server with JetStream (alone, with a config, or three clustered
//!   over routes), each with a temporary store on random loopback ports.
//! - [`receiver`]: the webhook receiver (an answer the test controls; every request, and
//!   the attempts per `message_id`, or only a count and latencies for the benchmark).
//! - [`peers`]: the SMTP server, the `herald.user_messages.create` responder, and the
//!   delivery helpers of [`app::TestApp`].
//! - [`keystone`]: a real Keystone (one per process), its admin API, and a relay to cut it.
//! - [`app`]: Herald in-process on a random port (`spawn_app`) with one method per route.
//! - [`poll`]: waiting for an event with a deadline instead of sleeping.

pub mod app;
pub mod keystone;
pub mod nats;
pub mod peers;
pub mod poll;
pub mod receiver;

use std::{net::TcpListener, path::PathBuf};

pub use poll::{eventually, poll_until};

/// The repository root (the `herald` package), where `.venv` lives.
pub fn repo_root() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

/// A loopback port nobody listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}
