//! One integration-test binary: every module drives a real nats-server and Herald.

mod bad_input;
mod cinderclient;
#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod filter_policies;
mod helpers;
mod http_layer;
mod jetstream_errors;
mod kannel;
mod messages;
mod nats_permissions;
mod ops;
mod peers;
mod schemathesis;
mod sms;
mod subscription_changes;
mod subscriptions;
mod topics;
mod undecodable;
mod undeliverable;
mod user_messages;
