//! `auth_mode = keystone` against a real Keystone (one per test binary, [`server`]) and a
//! real nats-server per test: token validation, roles, projects, caching, revocation,
//! expiry, an unreachable Keystone, and python-cinderclient with Keystone password auth.

#[path = "../common/mod.rs"]
mod common;
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
mod identity;
mod server;
