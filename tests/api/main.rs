//! One integration-test binary: every module drives a real nats-server and Herald.

mod attempts;
mod bad_input;
mod cinderclient;
mod delivery;
mod filter_policies;
mod http_layer;
mod jetstream_errors;
mod kannel;
mod messages;
mod nats_permissions;
mod ops;
mod rate_limit;
mod schemathesis;
mod sms;
mod subscription_changes;
mod subscriptions;
mod topics;
mod undecodable;
mod undeliverable;
mod user_messages;

// The shared peers, under the names the modules use.
use herald_testkit::{app as helpers, peers};
