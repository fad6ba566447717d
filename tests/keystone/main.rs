//! `auth_mode = keystone` against a real Keystone (one per test binary, [`server`]) and a
//! real nats-server per test: token validation, roles, projects, caching, revocation,
//! expiry, an unreachable Keystone, python-cinderclient with Keystone password auth,
//! `trust+` subscribers with Keystone trusts, and native NATS clients admitted by the
//! auth callout with Keystone tokens.

mod callout;
mod console;
mod identity;
mod trusts;

use herald_testkit::{app as helpers, keystone as server};
