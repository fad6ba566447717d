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
    /// Smallest subscription `ttl` accepted, in seconds (60 as in Zaqar; tests lower it).
    pub min_subscription_ttl: u64,
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
            min_subscription_ttl: 60,
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
        let invalid = |field, reason: &str| ConfigError::Invalid {
            field,
            reason: reason.to_owned(),
        };
        if self.auth_mode == AuthMode::Tokens && self.tokens_file.is_none() {
            return Err(invalid("tokens_file", "required when auth_mode = tokens"));
        }
        if self.auth_mode == AuthMode::Keystone {
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
            if self.keystone_timeout_ms == 0 {
                return Err(invalid("keystone_timeout_ms", "must be positive"));
            }
        }
        if self.require_confirmation && self.signed_url_secret.is_none() {
            return Err(invalid(
                "signed_url_secret",
                "required when require_confirmation = true",
            ));
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(invalid("replicas", "must be 1..=5"));
        }
        if self.nats_timeout_ms == 0 || self.request_timeout_ms == 0 {
            return Err(invalid("nats_timeout_ms", "timeouts must be positive"));
        }
        if self.max_body_bytes < 1024 {
            return Err(invalid("max_body_bytes", "must be at least 1024"));
        }
        if self.retry_delay_unit_ms == 0 || self.delivery_timeout_ms == 0 {
            return Err(invalid(
                "delivery_timeout_ms",
                "delivery timeouts and retry_delay_unit_ms must be positive",
            ));
        }
        if !(1..=10_000).contains(&self.delivery_max_in_flight) {
            return Err(invalid("delivery_max_in_flight", "must be 1..=10000"));
        }
        // JetStream reads `max_consumers` as an i32, and 0 or less as "server default".
        if !(1..=i32::MAX as u32).contains(&self.max_subscriptions_per_topic) {
            return Err(invalid(
                "max_subscriptions_per_topic",
                "must be 1..=2147483647",
            ));
        }
        if self.message_ttl == 0 {
            return Err(invalid("message_ttl", "must be positive"));
        }
        Ok(())
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

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

fn mask(secret: &Option<String>) -> &'static str {
    if secret.is_some() {
        "\"***\""
    } else {
        "none"
    }
}

/// Prints the effective configuration with secrets masked.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("nats_url", &self.nats_url)
            .field("nats_user", &self.nats_user)
            .field(
                "nats_password",
                &format_args!("{}", mask(&self.nats_password)),
            )
            .field("nats_token", &format_args!("{}", mask(&self.nats_token)))
            .field("nats_creds", &self.nats_creds)
            .field("nats_timeout_ms", &self.nats_timeout_ms)
            .field("replicas", &self.replicas)
            .field("auth_mode", &self.auth_mode)
            .field("tokens_file", &self.tokens_file)
            .field("keystone_url", &self.keystone_url)
            .field("keystone_user", &self.keystone_user)
            .field(
                "keystone_password",
                &format_args!("{}", mask(&self.keystone_password)),
            )
            .field("keystone_project", &self.keystone_project)
            .field("keystone_user_domain", &self.keystone_user_domain)
            .field("keystone_project_domain", &self.keystone_project_domain)
            .field("keystone_role_map", &self.keystone_role_map)
            .field("keystone_timeout_ms", &self.keystone_timeout_ms)
            .field("token_cache_seconds", &self.token_cache_seconds)
            .field("require_client_id", &self.require_client_id)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout_ms", &self.request_timeout_ms)
            .field("smtp_url", &self.smtp_url.as_deref().map(mask_url))
            .field("mail_from", &self.mail_from)
            .field("require_confirmation", &self.require_confirmation)
            .field(
                "signed_url_secret",
                &format_args!("{}", mask(&self.signed_url_secret)),
            )
            .field("public_url", &self.public_url)
            .field("outbound_allow", &self.outbound_allow)
            .field("max_topics_per_project", &self.max_topics_per_project)
            .field(
                "max_subscriptions_per_topic",
                &self.max_subscriptions_per_topic,
            )
            .field("message_ttl", &self.message_ttl)
            .field("catalog", &self.catalog)
            .field("log_format", &self.log_format)
            .field("retry_delay_unit_ms", &self.retry_delay_unit_ms)
            .field("delivery_timeout_ms", &self.delivery_timeout_ms)
            .field("delivery_max_in_flight", &self.delivery_max_in_flight)
            .field("min_subscription_ttl", &self.min_subscription_ttl)
            .finish()
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
            keystone_password: Some("hunter2".into()),
            smtp_url: Some("smtp://u:pw@127.0.0.1:25".into()),
            ..Config::default()
        };
        let printed = format!("{c:?}");
        assert!(!printed.contains("hunter2"));
        assert!(!printed.contains("pw@"));
        assert!(printed.contains("u:***@127.0.0.1:25"));
    }
}
