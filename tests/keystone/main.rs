//! `auth_mode = keystone` against a real Keystone (one per test binary, [`server`]) and a
//! real nats-server per test: token validation, roles, projects, caching, revocation,
//! expiry, an unreachable Keystone, and python-cinderclient with Keystone password auth.

mod console;
mod identity;
mod server;

use herald_testkit::app as helpers;
