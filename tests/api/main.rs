//! One integration-test binary: every module drives a real nats-server and Herald.

mod bad_input;
mod cinderclient;
#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod helpers;
mod http_layer;
mod kannel;
mod messages;
mod ops;
mod peers;
mod schemathesis;
mod sms;
mod subscription_changes;
mod subscriptions;
mod topics;
mod user_messages;
