//! Herald: topics, subscriptions and user messages on NATS JetStream.
//! `main.rs` parses the command line and calls [`startup::Application`].
//!
//! # Layout
//! What each module owns, and what it may touch:
//! - [`api`]: one module per REST resource, extractors and middleware. Handlers extract,
//!   call a service or the store, and shape the response; they never talk to NATS.
//! - [`domain`]: types that parse once at the edge (names, ids, metadata, subscribers,
//!   filter policies, signed URLs). No I/O.
//! - [`user_messages`] and [`catalog`]: the rules of user messages (the one create path,
//!   used by REST, the NATS responder and delivery) and the permitted-messages catalog.
//! - [`store`]: every JetStream and KV access; [`store::names`] is the one place that
//!   names subjects, streams, buckets, keys and metadata; `store::errors` tells JetStream
//!   errors apart by code. Nothing outside `store` talks to NATS for state (exception still
//!   to remove: `delivery`'s discovery lists streams and consumers via `Store::jetstream`).
//! - [`delivery`]: the engine (discovery, one worker per subscription, retries, dead
//!   letters) and one module per protocol; its transports (webhook, email, NATS on its own
//!   connection, SMS) are the only other code that opens network connections.
//! - [`auth`]: identities from headers, a tokens file or Keystone.
//! - [`config`], [`telemetry`], [`server`], [`shutdown`], [`startup`]: process plumbing.
//! - [`error`]: the API error types (Zaqar and Cinder bodies) and their status mapping.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod error;
pub mod server;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod subscriptions;
pub mod telemetry;
pub mod user_messages;
