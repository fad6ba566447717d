//! Herald: topics, subscriptions and user messages on NATS JetStream.
//! `main.rs` parses the command line and calls [`startup::Application`].

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
