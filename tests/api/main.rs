//! One integration-test binary: every module drives a real nats-server and Herald.

mod cinderclient;
mod helpers;
mod http_layer;
mod ops;
mod topics;
mod user_messages;
