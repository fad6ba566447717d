//! Herald: topics, subscriptions and user messages on NATS JetStream.
//! `main.rs` parses the command line and calls [`startup::Application`].
//!
//! # Layout
//! What each module owns, and what it may touch:
//! - [`api`]: one module per REST resource (`api/cinder/` for the Cinder v3 family),
//!   extractors and middleware. Handlers extract, call a service or the store, and shape
//!   the response; they never talk to NATS.
//! - [`domain`]: types that parse once at the edge (names, ids, metadata, subscribers,
//!   subscription options, filter policies, signed URLs, timestamps). No I/O.
//! - [`subscriptions`]: the rules of subscriptions (uniqueness, ACL, delegation,
//!   confirmation), testable without HTTP.
//! - [`user_messages`] and [`catalog`]: the rules of user messages (the one create path,
//!   used by REST, delivery and the NATS responder in `user_messages::nats`) and the
//!   permitted-messages catalog.
//! - [`store`]: every JetStream and KV access; [`store::names`] is the one place that
//!   names subjects, streams, buckets, keys and metadata; `store::errors` tells JetStream
//!   errors apart by code; `store::discovery` is how delivery finds subscriptions (events,
//!   consumers); `store::pull` sends the delivery engine's pull requests and reads their
//!   answers; `store::leases` keeps delivery leases. Nothing outside `store` talks to NATS
//!   for state; only
//!   `names` and `topic_stream_config` are public beyond the crate.
//! - [`delivery`]: discovery, the multiplexed pull engine (`delivery::pull`: one task and
//!   one inbox for every subscription), `deliver_one` (retries, dead letters) and one
//!   module per protocol; its transports (webhook, email, NATS on its own connection, SMS)
//!   and the user-message responder are the only other code that opens network connections.
//! - [`console`]: the operator web console at `/console/` (server-rendered HTML); it calls
//!   the same services and store functions as the API handlers.
//! - [`auth`]: identities from headers, a tokens file or Keystone; Keystone trusts for
//!   `trust+` subscribers; the NATS auth callout for native clients with Keystone tokens.
//! - [`config`], [`telemetry`], [`server`], [`shutdown`], [`startup`]: process plumbing.
//! - [`error`]: the API error types (Zaqar and Cinder bodies) and their status mapping.

pub mod api;
pub mod auth;
pub mod catalog;
pub mod config;
pub mod console;
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
