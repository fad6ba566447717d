//! Configuration: embedded defaults, an optional TOML file, then `HERALD_*` environment
//! variables. Parsed and validated once at start-up into [`Config`].

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// How callers are identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// Development: identity comes from `X-Project-ID` / `X-User-ID` / `X-Roles` headers.
    Noauth,
    /// `X-Auth-Token` looked up in the tokens file.
    Tokens,
    /// `X-Auth-Token` validated against Keystone (`keystone_*` keys).
    Keystone,
}

/// Which subjects a project's `nats:` subscribers may target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NatsSubscriberScope {
    /// Any subject that passes validation (single tenant, or projects without NATS users).
    Any,
    /// Only subjects under `{project}.` (multi-tenant deployments with per-project NATS users).
    Project,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The whole configuration. Keys are flat so that every key `k` maps to `HERALD_K`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the REST API listens on.
    pub listen: SocketAddr,
    /// NATS server URL(s), comma-separated.
    pub nats_url: String,
    pub nats_user: Option<String>,
    pub nats_password: Option<String>,
    pub nats_token: Option<String>,
    /// Path of a NATS `.creds` file.
    pub nats_creds: Option<PathBuf>,
    /// Credentials of the separate connection `nats:` deliveries go out on (its NATS user
    /// should be allowed to publish only where subscribers may be reached). All unset: the
    /// main connection's credentials, still on a connection of its own.
    pub nats_delivery_user: Option<String>,
    pub nats_delivery_password: Option<String>,
    pub nats_delivery_token: Option<String>,
    pub nats_delivery_creds: Option<PathBuf>,
    /// Which subjects `nats:` subscribers may target.
    pub nats_subscriber_scope: NatsSubscriberScope,
    /// Upper bound of any single NATS request made while serving an API call.
    pub nats_timeout_ms: u64,
    /// Replicas of every stream and bucket Herald creates (3 on a cluster).
    pub replicas: usize,
    pub auth_mode: AuthMode,
    pub tokens_file: Option<PathBuf>,
    /// Keystone's base URL (`http://host:5000`, without `/v3`), for `auth_mode = keystone`.
    pub keystone_url: Option<String>,
    /// Herald's service user, which needs the `service` (or `admin`) role on
    /// `keystone_project` to validate tokens.
    pub keystone_user: Option<String>,
    pub keystone_password: Option<String>,
    pub keystone_project: Option<String>,
    pub keystone_user_domain: String,
    pub keystone_project_domain: String,
    /// Other Keystone role names mapped to Herald's roles: `"operator=admin,viewer=reader"`.
    /// `reader`, `member` and `admin` always map to themselves; other roles are ignored.
    pub keystone_role_map: String,
    /// Upper bound of one request to Keystone, in milliseconds.
    pub keystone_timeout_ms: u64,
    /// How long a validated token is trusted without asking Keystone again (never past the
    /// token's own expiry): a revoked token keeps working for up to this long.
    pub token_cache_seconds: u64,
    /// NATS auth callout (`auth_mode = keystone`): seed (`SA…`) of the account nkey that
    /// signs the users Herald issues to native NATS clients presenting a Keystone token;
    /// unset: no callout responder. Its public key is the server's `auth_callout.issuer`.
    #[serde(default, deserialize_with = "de_non_empty")]
    pub nats_callout_issuer_seed: Option<String>,
    /// Curve seed (`SX…`) whose public key is the server's `auth_callout.xkey`: requests
    /// and responses are then encrypted. Unset: the server must not set `xkey`.
    #[serde(default, deserialize_with = "de_non_empty")]
    pub nats_callout_xkey_seed: Option<String>,
    /// The responder's own NATS user, in the callout account and listed in `auth_users`.
    #[serde(default, deserialize_with = "de_non_empty")]
    pub nats_callout_user: Option<String>,
    #[serde(default, deserialize_with = "de_non_empty")]
    pub nats_callout_password: Option<String>,
    /// The account native clients are placed in: the one holding Herald's streams.
    pub nats_callout_account: String,
    /// Make the `Client-ID` header mandatory on `/v2`, as Zaqar does.
    pub require_client_id: bool,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Upper bound of a whole HTTP request, in milliseconds.
    pub request_timeout_ms: u64,
    pub smtp_url: Option<String>,
    pub mail_from: String,
    pub require_confirmation: bool,
    pub signed_url_secret: Option<String>,
    /// Base URL of links sent to subscribers.
    pub public_url: String,
    /// CIDRs the outbound SSRF guard lets through.
    #[serde(deserialize_with = "de_cidrs")]
    pub outbound_allow: Vec<IpNet>,
    /// Most topics one project may hold (403 beyond; 0 = unlimited).
    pub max_topics_per_project: usize,
    /// Most subscriptions one topic may hold: the topic stream's `max_consumers` (403
    /// beyond). nats-server 2.15 caps a stream at 1,000 consumers unless it says otherwise.
    pub max_subscriptions_per_topic: u32,
    /// TTL of user messages, in seconds.
    pub message_ttl: u64,
    /// Permitted user messages catalog file; built-in catalog when unset.
    pub catalog: Option<PathBuf>,
    pub log_format: LogFormat,
    /// Length of one "second" of a retry policy, in milliseconds (1000; tests shorten it).
    pub retry_delay_unit_ms: u64,
    /// Upper bound of one outbound delivery attempt (webhook, email, NATS request).
    pub delivery_timeout_ms: u64,
    /// Deliveries in flight per subscription (its consumer's `max_ack_pending`).
    pub delivery_max_in_flight: usize,
    /// How long a pull request waits on the server before it is renewed, in seconds: an
    /// idle subscription costs one request per this period. Longer is cheaper; a request
    /// lost without a reconnect or leader change (which renew at once) is noticed this
    /// long (plus 5 s) after it was sent.
    pub pull_expires_secs: u64,
    /// Smallest subscription `ttl` accepted, in seconds (60 as in Zaqar; tests lower it).
    pub min_subscription_ttl: u64,
    /// Kannel's sendsms URL (`http://host:13013/cgi-bin/sendsms`) for `sms:` subscribers.
    /// An empty value means unset, as for the other `sms_*` strings (compose passes `""`).
    #[serde(default, deserialize_with = "de_non_empty")]
    pub sms_gateway_url: Option<String>,
    #[serde(default, deserialize_with = "de_non_empty")]
    pub sms_gateway_user: Option<String>,
    #[serde(default, deserialize_with = "de_non_empty")]
    pub sms_gateway_password: Option<String>,
    /// Sender (`from`) of every SMS; the gateway's default when unset.
    #[serde(default, deserialize_with = "de_non_empty")]
    pub sms_from: Option<String>,
    /// Most parts one SMS may be split into; longer texts are permanent failures.
    pub sms_max_parts: usize,
    /// Record every delivery attempt in `HERALD_ATTEMPTS` (off only to measure its cost).
    pub attempt_log: bool,
    /// How long attempt records are kept, in seconds (7 days).
    pub attempt_log_max_age: u64,
    /// Most bytes the attempt log holds; the oldest records go first beyond it.
    pub attempt_log_max_bytes: u64,
    /// Bytes of a webhook's reply body kept in its attempt record (0 = none).
    pub attempt_log_response_bytes: usize,
    /// A subscription whose attempts have all failed for this long, in seconds, is
    /// disabled (5 days; tests shorten it).
    pub disable_after: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8888".parse().expect("valid default address"),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_user: None,
            nats_password: None,
            nats_token: None,
            nats_creds: None,
            nats_delivery_user: None,
            nats_delivery_password: None,
            nats_delivery_token: None,
            nats_delivery_creds: None,
            nats_subscriber_scope: NatsSubscriberScope::Any,
            nats_timeout_ms: 3000,
            replicas: 1,
            auth_mode: AuthMode::Noauth,
            tokens_file: None,
            keystone_url: None,
            keystone_user: None,
            keystone_password: None,
            keystone_project: None,
            keystone_user_domain: "Default".into(),
            keystone_project_domain: "Default".into(),
            keystone_role_map: String::new(),
            keystone_timeout_ms: 3000,
            token_cache_seconds: 300,
            nats_callout_issuer_seed: None,
            nats_callout_xkey_seed: None,
            nats_callout_user: None,
            nats_callout_password: None,
            nats_callout_account: "HERALD".into(),
            require_client_id: false,
            max_body_bytes: 1024 * 1024,
            request_timeout_ms: 30_000,
            smtp_url: None,
            mail_from: "herald@localhost".into(),
            require_confirmation: false,
            signed_url_secret: None,
            public_url: "http://127.0.0.1:8888".into(),
            outbound_allow: Vec::new(),
            max_topics_per_project: 1000,
            // ≈ 57 KB of nats-server memory per consumer with its pull request
            // (design.md "Scale"): a full topic costs ≈ 57 MB, and 1,000 is also the
            // replicated-asset count NATS advises per server at R3.
            max_subscriptions_per_topic: 1000,
            message_ttl: 2_592_000,
            catalog: None,
            log_format: LogFormat::Text,
            retry_delay_unit_ms: 1000,
            delivery_timeout_ms: 10_000,
            delivery_max_in_flight: 256,
            pull_expires_secs: 120,
            min_subscription_ttl: 60,
            sms_gateway_url: None,
            sms_gateway_user: None,
            sms_gateway_password: None,
            sms_from: None,
            sms_max_parts: 3,
            attempt_log: true,
            attempt_log_max_age: 7 * 86_400,
            attempt_log_max_bytes: 1 << 30,
            attempt_log_response_bytes: 1024,
            disable_after: 5 * 86_400,
        }
    }
}

/// Accepts a list of CIDRs or one comma-separated string (the environment's form).
fn de_cidrs<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let items = match Raw::deserialize(d)? {
        Raw::One(s) => s.split(',').map(str::to_owned).collect(),
        Raw::Many(v) => v,
    };
    items
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("invalid CIDR {s:?}")))
        })
        .collect()
}

/// Upper bounds of the durations Herald computes with: below these no `Duration` or
/// `chrono` arithmetic downstream can overflow (chrono panics above `i64::MAX / 1000`
/// seconds, NATS takes nanoseconds in an `i64`, `ack_wait` is 3 × `delivery_timeout_ms`, a
/// retry delay is up to 86,400 × 2 units), and larger values are mistakes anyway.
const MAX_TIMEOUT_MS: u64 = 86_400_000;
const MAX_DELIVERY_TIMEOUT_MS: u64 = 3_600_000;
const MAX_RETRY_DELAY_UNIT_MS: u64 = 60_000;
/// 100 years.
const MAX_MESSAGE_TTL_SECS: u64 = 3_153_600_000;
/// Subscription `ttl`s are accepted up to `i32::MAX` seconds.
const MAX_MIN_SUBSCRIPTION_TTL_SECS: u64 = i32::MAX as u64;
/// Attempt records stay small (a JetStream message, listed 100 at a time).
const MAX_RESPONSE_EXCERPT_BYTES: u64 = 64 * 1024;
/// An optional string where `""` means unset.
fn de_non_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(d)?.filter(|s| !s.is_empty()))
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("invalid configuration: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

impl Config {
    /// Defaults, then `file` if given, then `HERALD_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            figment = figment.merge(Toml::file_exact(file));
        }
        // Only variables naming a config key are configuration: others under the prefix
        // belong to the tools around Herald (HERALD_CONFIG for the CLI, HERALD_PROFILE for
        // scripts/run) and must not stop start-up.
        let keys = Self::keys();
        figment = figment.merge(
            Env::prefixed("HERALD_").filter(move |k| keys.iter().any(|key| k == key.as_str())),
        );
        let config: Config = figment.extract().map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Every configuration key (the fields of [`Config`]).
    fn keys() -> Vec<String> {
        match serde_json::to_value(Config::default()) {
            Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
            _ => Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.validate_auth()?;
        if self.require_confirmation && self.signed_url_secret.is_none() {
            return Err(invalid(
                "signed_url_secret",
                "required when require_confirmation = true",
            ));
        }
        self.validate_bounds()?;
        if let Some(url) = &self.sms_gateway_url {
            if !reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
                return Err(invalid("sms_gateway_url", "must be an http(s) URL"));
            }
        }
        Ok(())
    }

    fn validate_auth(&self) -> Result<(), ConfigError> {
        if self.auth_mode == AuthMode::Tokens && self.tokens_file.is_none() {
            return Err(invalid("tokens_file", "required when auth_mode = tokens"));
        }
        if self.auth_mode != AuthMode::Keystone {
            if self.nats_callout_issuer_seed.is_some() {
                return Err(invalid(
                    "nats_callout_issuer_seed",
                    "the NATS auth callout needs auth_mode = keystone",
                ));
            }
            return Ok(());
        }
        let required: [(&'static str, &Option<String>); 4] = [
            ("keystone_url", &self.keystone_url),
            ("keystone_user", &self.keystone_user),
            ("keystone_password", &self.keystone_password),
            ("keystone_project", &self.keystone_project),
        ];
        for (field, value) in required {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err(invalid(field, "required when auth_mode = keystone"));
            }
        }
        let url = self.keystone_url.as_deref().unwrap_or_default();
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "keystone_url",
                "must be an http:// or https:// URL",
            ));
        }
        crate::auth::parse_role_map(&self.keystone_role_map)
            .map_err(|reason| invalid("keystone_role_map", &reason))?;
        crate::auth::callout::check_config(self)?;
        in_range("keystone_timeout_ms", self.keystone_timeout_ms, 1, u64::MAX)
            .map_err(|_| invalid("keystone_timeout_ms", "must be positive"))
    }

    /// Numeric keys: each bound is what a downstream type or API accepts.
    fn validate_bounds(&self) -> Result<(), ConfigError> {
        in_range("replicas", self.replicas as u64, 1, 5)
            .map_err(|_| invalid("replicas", "must be 1..=5"))?;
        in_range("nats_timeout_ms", self.nats_timeout_ms, 1, MAX_TIMEOUT_MS)?;
        in_range(
            "request_timeout_ms",
            self.request_timeout_ms,
            1,
            MAX_TIMEOUT_MS,
        )?;
        in_range(
            "delivery_timeout_ms",
            self.delivery_timeout_ms,
            1,
            MAX_DELIVERY_TIMEOUT_MS,
        )?;
        in_range(
            "retry_delay_unit_ms",
            self.retry_delay_unit_ms,
            1,
            MAX_RETRY_DELAY_UNIT_MS,
        )?;
        in_range("message_ttl", self.message_ttl, 1, MAX_MESSAGE_TTL_SECS)?;
        in_range(
            "min_subscription_ttl",
            self.min_subscription_ttl,
            0,
            MAX_MIN_SUBSCRIPTION_TTL_SECS,
        )?;
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        in_range(
            "delivery_max_in_flight",
            self.delivery_max_in_flight as u64,
            1,
            10_000,
        )
        .map_err(|_| invalid("delivery_max_in_flight", "must be 1..=10000"))?;
        in_range("pull_expires_secs", self.pull_expires_secs, 1, 3600)?;
        // JetStream reads `max_consumers` as an i32, and 0 or less as "server default".
        in_range(
            "max_subscriptions_per_topic",
            self.max_subscriptions_per_topic.into(),
            1,
            i32::MAX as u64,
        )
        .map_err(|_| invalid("max_subscriptions_per_topic", "must be 1..=2147483647"))?;
        in_range(
            "attempt_log_max_age",
            self.attempt_log_max_age,
            1,
            MAX_MESSAGE_TTL_SECS,
        )?;
        in_range(
            "attempt_log_max_bytes",
            self.attempt_log_max_bytes,
            1024,
            i64::MAX as u64,
        )?;
        in_range(
            "attempt_log_response_bytes",
            self.attempt_log_response_bytes as u64,
            0,
            MAX_RESPONSE_EXCERPT_BYTES,
        )?;
        in_range("disable_after", self.disable_after, 1, MAX_MESSAGE_TTL_SECS)?;
        // A concatenated SMS carries an 8-bit part counter.
        in_range("sms_max_parts", self.sms_max_parts as u64, 1, 255)
            .map_err(|_| invalid("sms_max_parts", "must be 1..=255"))
    }

    pub fn nats_timeout(&self) -> Duration {
        Duration::from_millis(self.nats_timeout_ms)
    }

    pub fn keystone_timeout(&self) -> Duration {
        Duration::from_millis(self.keystone_timeout_ms)
    }

    pub fn retry_delay_unit(&self) -> Duration {
        Duration::from_millis(self.retry_delay_unit_ms)
    }

    pub fn delivery_timeout(&self) -> Duration {
        Duration::from_millis(self.delivery_timeout_ms)
    }

    pub fn attempt_log_max_age(&self) -> Duration {
        Duration::from_secs(self.attempt_log_max_age)
    }

    pub fn disable_after(&self) -> Duration {
        Duration::from_secs(self.disable_after)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    /// The `outbound_allow` entries that open loopback, private, link-local or unspecified
    /// addresses to the SSRF guard (worth a warning outside development).
    pub fn risky_outbound_allow(&self) -> Vec<IpNet> {
        self.outbound_allow
            .iter()
            .filter(|net| {
                let ip = net.network();
                let last = net.broadcast();
                [ip, last].iter().any(|ip| match ip {
                    std::net::IpAddr::V4(v4) => {
                        v4.is_loopback()
                            || v4.is_private()
                            || v4.is_link_local()
                            || v4.is_unspecified()
                    }
                    std::net::IpAddr::V6(v6) => {
                        v6.is_loopback()
                            || v6.is_unspecified()
                            || (v6.segments()[0] & 0xfe00) == 0xfc00
                            || (v6.segments()[0] & 0xffc0) == 0xfe80
                    }
                }) || net.prefix_len() == 0
            })
            .copied()
            .collect()
    }
}

pub(crate) fn invalid(field: &'static str, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.to_owned(),
    }
}

fn in_range(field: &'static str, value: u64, min: u64, max: u64) -> Result<(), ConfigError> {
    if (min..=max).contains(&value) {
        Ok(())
    } else {
        Err(invalid(
            field,
            &format!("must be {min}..={max}, not {value}"),
        ))
    }
}

/// Whether a key holds a secret: its value is never printed. A rule on the name rather
/// than a list, so a new secret key is masked without anyone remembering to add it.
fn is_secret(key: &str) -> bool {
    ["_password", "_token", "_secret", "_seed"]
        .iter()
        .any(|suffix| key.ends_with(suffix))
}

/// Prints the effective configuration with secrets masked (every key, from `Serialize`).
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let serde_json::Value::Object(fields) =
            serde_json::to_value(self).map_err(|_| fmt::Error)?
        else {
            return Err(fmt::Error);
        };
        let mut out = f.debug_struct("Config");
        for (key, value) in &fields {
            match value {
                serde_json::Value::Null => out.field(key, &format_args!("none")),
                _ if is_secret(key) => out.field(key, &format_args!("\"***\"")),
                serde_json::Value::String(url) if key.ends_with("_url") => {
                    out.field(key, &mask_url(url))
                }
                value => out.field(key, &format_args!("{value}")),
            };
        }
        out.finish()
    }
}

/// Hides the password part of `scheme://user:password@host`.
fn mask_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].find(':') {
            Some(c) => format!("{}:***{}", &url[..s + 3 + c], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_for_local_development() {
        let c = Config::default();
        c.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8888");
        assert_eq!(c.message_ttl, 2_592_000);
    }

    #[test]
    fn cidrs_parse_from_a_comma_separated_string() {
        let c: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(("outbound_allow", "127.0.0.0/8, ::1"))
            .extract()
            .unwrap();
        assert_eq!(c.outbound_allow.len(), 2);
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn herald_variables_that_are_not_config_keys_are_ignored() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_PROFILE", "dev");
            jail.set_env("HERALD_CONFIG", "/nonexistent.toml");
            jail.set_env("HERALD_NATS_URL", "nats://127.0.0.1:4333");
            jail.set_env("HERALD_OUTBOUND_ALLOW", "127.0.0.0/8");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.nats_url, "nats://127.0.0.1:4333");
            assert_eq!(c.outbound_allow.len(), 1);
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn delivery_credentials_and_the_subscriber_scope_load_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_NATS_DELIVERY_USER", "herald_delivery");
            jail.set_env("HERALD_NATS_DELIVERY_PASSWORD", "pw");
            jail.set_env("HERALD_NATS_SUBSCRIBER_SCOPE", "project");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.nats_delivery_user.as_deref(), Some("herald_delivery"));
            assert_eq!(c.nats_subscriber_scope, NatsSubscriberScope::Project);
            assert_eq!(
                Config::default().nats_subscriber_scope,
                NatsSubscriberScope::Any
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API fixes the closure's error type
    fn sms_settings_load_from_the_environment_and_empty_means_unset() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("HERALD_SMS_GATEWAY_URL", "");
            jail.set_env("HERALD_SMS_GATEWAY_USER", "herald");
            jail.set_env("HERALD_SMS_MAX_PARTS", "5");
            let c = Config::load(None).expect("loads");
            assert_eq!(c.sms_gateway_url, None);
            assert_eq!(c.sms_gateway_user.as_deref(), Some("herald"));
            assert_eq!(c.sms_max_parts, 5);
            jail.set_env("HERALD_SMS_GATEWAY_URL", "127.0.0.1:13013");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("sms_gateway_url"), "{err}");
            jail.set_env(
                "HERALD_SMS_GATEWAY_URL",
                "http://127.0.0.1:13013/cgi-bin/sendsms",
            );
            jail.set_env("HERALD_SMS_MAX_PARTS", "0");
            let err = Config::load(None).unwrap_err().to_string();
            assert!(err.contains("sms_max_parts"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn loopback_and_private_allow_entries_are_risky() {
        let allow = |s: &[&str]| Config {
            outbound_allow: s.iter().map(|n| n.parse().unwrap()).collect(),
            ..Config::default()
        };
        assert_eq!(
            allow(&["127.0.0.0/8", "::1/128", "10.1.0.0/16", "fd00::/8"])
                .risky_outbound_allow()
                .len(),
            4
        );
        assert!(allow(&["203.0.113.0/24"]).risky_outbound_allow().is_empty());
        assert!(Config::default().risky_outbound_allow().is_empty());
    }

    #[test]
    fn keystone_mode_needs_its_service_user_and_a_valid_role_map() {
        let mut c = Config {
            auth_mode: AuthMode::Keystone,
            keystone_url: Some("http://127.0.0.1:5000".into()),
            keystone_user: Some("herald".into()),
            keystone_password: Some("pw".into()),
            ..Config::default()
        };
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "keystone_project",
                ..
            })
        ));
        c.keystone_project = Some("service".into());
        c.validate().unwrap();
        c.keystone_role_map = "operator=root".into();
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Invalid {
                field: "keystone_role_map",
                ..
            })
        ));
    }

    #[test]
    fn secrets_are_masked_in_the_printed_config() {
        let c = Config {
            nats_password: Some("hunter2".into()),
            nats_delivery_password: Some("delivery-pw".into()),
            nats_delivery_token: Some("delivery-tok".into()),
            keystone_password: Some("hunter2".into()),
            smtp_url: Some("smtp://u:pw@127.0.0.1:25".into()),
            sms_gateway_password: Some("kannel-pw".into()),
            ..Config::default()
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("delivery-pw"));
        assert!(!printed.contains("delivery-tok"));
        assert!(!printed.contains("kannel-pw"));
        assert!(!printed.contains("pw@"));
        assert!(printed.contains("u:***@127.0.0.1:25"));
        assert!(printed.contains(r#"nats_password: "***""#), "{printed}");
        // Every key is printed, not only the ones someone listed.
        for key in Config::keys() {
            assert!(printed.contains(&format!("{key}: ")), "{key} missing");
        }
    }

    type Setter = fn(&mut Config);

    #[test]
    fn durations_that_would_overflow_downstream_are_refused_naming_the_key() {
        let cases: [(&str, Setter); 7] = [
            ("message_ttl", |c| c.message_ttl = u64::MAX),
            ("message_ttl", |c| {
                c.message_ttl = i64::MAX as u64 / 1000 + 1
            }),
            ("retry_delay_unit_ms", |c| c.retry_delay_unit_ms = u64::MAX),
            ("delivery_timeout_ms", |c| {
                c.delivery_timeout_ms = u64::MAX / 2
            }),
            ("request_timeout_ms", |c| c.request_timeout_ms = u64::MAX),
            ("nats_timeout_ms", |c| c.nats_timeout_ms = u64::MAX),
            ("min_subscription_ttl", |c| {
                c.min_subscription_ttl = u64::MAX
            }),
        ];
        for (key, set) in cases {
            let mut c = Config::default();
            set(&mut c);
            let err = c.validate().expect_err(key).to_string();
            assert!(err.contains(key), "{key}: {err}");
        }
        let zero: [(&str, Setter); 5] = [
            ("nats_timeout_ms", |c| c.nats_timeout_ms = 0),
            ("request_timeout_ms", |c| c.request_timeout_ms = 0),
            ("delivery_timeout_ms", |c| c.delivery_timeout_ms = 0),
            ("retry_delay_unit_ms", |c| c.retry_delay_unit_ms = 0),
            ("message_ttl", |c| c.message_ttl = 0),
        ];
        for (key, set) in zero {
            let mut c = Config::default();
            set(&mut c);
            assert!(c.validate().expect_err(key).to_string().contains(key));
        }
    }

    #[test]
    fn the_largest_accepted_durations_compute_without_overflow() {
        let c = Config {
            message_ttl: MAX_MESSAGE_TTL_SECS,
            retry_delay_unit_ms: MAX_RETRY_DELAY_UNIT_MS,
            delivery_timeout_ms: MAX_DELIVERY_TIMEOUT_MS,
            request_timeout_ms: MAX_TIMEOUT_MS,
            nats_timeout_ms: MAX_TIMEOUT_MS,
            min_subscription_ttl: MAX_MIN_SUBSCRIPTION_TTL_SECS,
            ..Config::default()
        };
        c.validate().unwrap();
        let ttl = chrono::Duration::from_std(Duration::from_secs(c.message_ttl)).unwrap();
        let _ = chrono::Utc::now() + ttl;
        assert!(Duration::from_secs(c.message_ttl).as_nanos() < i64::MAX as u128);
        let ack_wait = c.delivery_timeout() * 3;
        assert!(ack_wait.as_nanos() < i64::MAX as u128);
        // The longest retry delay: 86,400 policy seconds with full jitter.
        let delay = c.retry_delay_unit().mul_f64(86_400.0 * 2.0);
        assert!(delay.as_nanos() < i64::MAX as u128);
        let _ = chrono::Utc::now() + chrono::Duration::seconds(c.min_subscription_ttl as i64);
    }
}
