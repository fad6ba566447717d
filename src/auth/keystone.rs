//! `auth_mode = keystone`: validates `X-Auth-Token` against Keystone as keystonemiddleware's
//! auth_token does. Herald authenticates as its service user (password, project-scoped),
//! asks `GET /v3/auth/tokens` about each caller's token and caches the answer.
//!
//! The cache ([`moka`]) is bounded, lock-free on reads and coalesces concurrent misses of
//! one token into a single validation. An entry lives at most `token_cache_seconds` and
//! never past the token's `expires_at`; a token revoked in Keystone keeps working until its
//! entry expires (the trade-off keystonemiddleware documents). Definite "no" answers are
//! cached too (for at most [`INVALID_CACHE`]); transport errors never are.
//!
//! Keystone trusts for `trust+` subscribers are in [`trusts`].

mod trusts;

pub use trusts::{TrustCreateError, TrustTokenError};

use std::{
    collections::HashMap,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use axum::http::HeaderValue;
use chrono::{DateTime, Utc};
use moka::future::Cache;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Mutex;

use super::Role;
use crate::{config::Config, domain::ProjectId};

/// Most validations held at once: ≈ 300 B each, so the cache stays under ≈ 30 MB.
const CACHE_CAPACITY: u64 = 100_000;

/// Longest a token Keystone rejected stays rejected without asking again. Keystone never
/// turns a rejected token valid, so this only bounds memory held by garbage tokens.
const INVALID_CACHE: Duration = Duration::from_secs(60);

/// Herald's service token is renewed when less than this (or half its lifetime) remains.
const SERVICE_TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(120);

/// What a caller's token turned out to be.
#[derive(Debug, Clone)]
pub(super) enum Validation {
    Valid(Arc<TokenInfo>),
    /// Unknown, expired or revoked (Keystone's 404).
    Invalid,
    /// Valid, but scoped to a domain or the system, or unscoped.
    NotProjectScoped,
}

/// The identity a valid project-scoped token carries.
#[derive(Debug)]
pub struct TokenInfo {
    pub user_id: String,
    pub project: ProjectId,
    /// Herald's roles the token's roles map to (empty: none Herald knows).
    pub roles: Vec<Role>,
    /// The token's Keystone role names, as Keystone spells them: what a trust the caller
    /// creates delegates.
    pub role_names: Vec<String>,
    pub expires_at: DateTime<Utc>,
}

/// Keystone could not answer (or refused Herald's own credentials): 503, never cached.
#[derive(Debug, thiserror::Error)]
pub enum KeystoneError {
    #[error("cannot reach Keystone")]
    Transport(#[source] reqwest::Error),
    #[error("Keystone answered {status} to {what}")]
    Status {
        what: &'static str,
        status: reqwest::StatusCode,
    },
    #[error("Keystone's answer to {what} is malformed")]
    Malformed {
        what: &'static str,
        #[source]
        source: anyhow::Error,
    },
}

/// The service token, its user (the trustee of every trust) and when to renew it.
struct ServiceToken {
    token: HeaderValue,
    user_id: String,
    renew_at: Instant,
}

/// The Keystone client and validation cache; cloning shares both.
#[derive(Clone)]
pub struct Keystone(Arc<Inner>);

struct Inner {
    http: reqwest::Client,
    /// Keystone's base URL, without `/v3`.
    url: String,
    tokens_url: String,
    auth_request: serde_json::Value,
    /// Trust-scoped tokens by trust id, each until shortly before it expires.
    trust_tokens: Cache<String, Arc<trusts::TrustToken>>,
    service: Mutex<Option<ServiceToken>>,
    cache: Cache<String, Validation>,
    role_map: HashMap<String, Role>,
    challenge: HeaderValue,
    validations: AtomicU64,
}

/// Per-entry lifetime: the cache's bound, cut short by the token's own expiry.
struct Lifetime {
    max: Duration,
}

impl moka::Expiry<String, Validation> for Lifetime {
    fn expire_after_create(
        &self,
        _token: &String,
        validation: &Validation,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(match validation {
            Validation::Valid(info) => {
                let left = (info.expires_at - Utc::now()).to_std().unwrap_or_default();
                left.min(self.max)
            }
            Validation::Invalid | Validation::NotProjectScoped => self.max.min(INVALID_CACHE),
        })
    }
}

/// Parses `keystone_role_map` (`"operator=admin,viewer=reader"`); Keystone's own `reader`,
/// `member` and `admin` always map to themselves.
pub fn parse_role_map(spec: &str) -> Result<HashMap<String, Role>, String> {
    let mut map: HashMap<String, Role> = [
        ("reader", Role::Reader),
        ("member", Role::Member),
        ("admin", Role::Admin),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for pair in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (keystone, herald) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not keystone_role=herald_role"))?;
        let role = match herald.trim() {
            "reader" => Role::Reader,
            "member" => Role::Member,
            "admin" => Role::Admin,
            other => return Err(format!("{other:?} is not reader, member or admin")),
        };
        map.insert(keystone.trim().to_ascii_lowercase(), role);
    }
    Ok(map)
}

impl Keystone {
    pub fn new(config: &Config) -> anyhow::Result<Self> {
        let required = |v: &Option<String>, key: &str| {
            v.clone()
                .ok_or_else(|| anyhow::anyhow!("{key} is required when auth_mode = keystone"))
        };
        let url = required(&config.keystone_url, "keystone_url")?;
        let url = url.trim_end_matches('/').trim_end_matches("/v3").to_owned();
        let auth_request = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": required(&config.keystone_user, "keystone_user")?,
                "domain": {"name": config.keystone_user_domain},
                "password": required(&config.keystone_password, "keystone_password")?,
            }}},
            "scope": {"project": {
                "name": required(&config.keystone_project, "keystone_project")?,
                "domain": {"name": config.keystone_project_domain},
            }},
        }});
        let role_map = parse_role_map(&config.keystone_role_map).map_err(anyhow::Error::msg)?;
        let http = reqwest::Client::builder()
            .connect_timeout(config.keystone_timeout())
            .timeout(config.keystone_timeout())
            .build()?;
        let challenge = HeaderValue::try_from(format!("Keystone uri=\"{url}\""))?;
        let cache = Cache::builder()
            .max_capacity(CACHE_CAPACITY)
            .expire_after(Lifetime {
                max: Duration::from_secs(config.token_cache_seconds),
            })
            .build();
        Ok(Self(Arc::new(Inner {
            http,
            tokens_url: format!("{url}/v3/auth/tokens?nocatalog"),
            url,
            auth_request,
            trust_tokens: trusts::token_cache(),
            service: Mutex::new(None),
            cache,
            role_map,
            challenge,
            validations: AtomicU64::new(0),
        })))
    }

    /// `WWW-Authenticate` of every 401, telling clients where to get a token.
    pub fn challenge(&self) -> &HeaderValue {
        &self.0.challenge
    }

    /// Validation requests sent to Keystone so far (cache misses that reached it).
    pub fn validations(&self) -> u64 {
        self.0.validations.load(Ordering::Relaxed)
    }

    /// A cache hit is one lock-free lookup; a miss asks Keystone once however many
    /// requests wait for the same token.
    pub(super) async fn validate(&self, token: &str) -> Result<Validation, Arc<KeystoneError>> {
        if let Some(hit) = self.0.cache.get(token).await {
            return Ok(hit);
        }
        self.0
            .cache
            .try_get_with_by_ref(token, self.ask_keystone(token))
            .await
    }

    #[tracing::instrument(name = "keystone_validate", skip_all)]
    async fn ask_keystone(&self, token: &str) -> Result<Validation, KeystoneError> {
        let Ok(subject) = HeaderValue::from_str(token) else {
            return Ok(Validation::Invalid);
        };
        let mut stale = None;
        loop {
            let service = self.service_token(stale.as_ref()).await?;
            self.0.validations.fetch_add(1, Ordering::Relaxed);
            let res = self
                .0
                .http
                .get(&self.0.tokens_url)
                .header("x-auth-token", service.clone())
                .header("x-subject-token", subject.clone())
                .send()
                .await
                .map_err(|e| self.count(KeystoneError::Transport(e)))?;
            let status = res.status();
            let outcome = match status.as_u16() {
                200 => {
                    let body: TokenBody = res.json().await.map_err(|e| {
                        self.count(KeystoneError::Malformed {
                            what: "a token validation",
                            source: e.into(),
                        })
                    })?;
                    self.interpret(body)
                }
                // Unknown, expired, revoked or malformed subject token.
                400 | 404 => Validation::Invalid,
                // Herald's own token no longer works (revoked, or Keystone's keys rotated):
                // obtain a new one, once.
                401 if stale.is_none() => {
                    stale = Some(service);
                    continue;
                }
                _ => {
                    return Err(self.count(KeystoneError::Status {
                        what: "a token validation",
                        status,
                    }))
                }
            };
            let label = match outcome {
                Validation::Valid(_) => "valid",
                Validation::Invalid | Validation::NotProjectScoped => "invalid",
            };
            metrics::counter!("herald_keystone_validations_total", "outcome" => label).increment(1);
            return Ok(outcome);
        }
    }

    fn count(&self, e: KeystoneError) -> KeystoneError {
        metrics::counter!("herald_keystone_validations_total", "outcome" => "error").increment(1);
        e
    }

    fn interpret(&self, body: TokenBody) -> Validation {
        let token = body.token;
        let Some(project) = token.project.and_then(|p| ProjectId::parse(&p.id).ok()) else {
            return Validation::NotProjectScoped;
        };
        if token.expires_at <= Utc::now() {
            return Validation::Invalid;
        }
        let role_names = token.roles.iter().map(|r| r.name.clone()).collect();
        let mut roles: Vec<Role> = token
            .roles
            .iter()
            .filter_map(|r| self.0.role_map.get(&r.name.to_ascii_lowercase()).copied())
            .collect();
        roles.sort();
        roles.dedup();
        Validation::Valid(Arc::new(TokenInfo {
            user_id: token.user.id,
            project,
            roles,
            role_names,
            expires_at: token.expires_at,
        }))
    }

    /// Herald's own token: obtained lazily, renewed before it expires, and obtained anew
    /// when the caller found `stale` refused. The lock makes concurrent callers share one
    /// request to Keystone.
    async fn service_token(
        &self,
        stale: Option<&HeaderValue>,
    ) -> Result<HeaderValue, KeystoneError> {
        Ok(self.service_identity(stale).await?.0)
    }

    /// [`Self::service_token`] with the service user's id.
    async fn service_identity(
        &self,
        stale: Option<&HeaderValue>,
    ) -> Result<(HeaderValue, String), KeystoneError> {
        let mut current = self.0.service.lock().await;
        if let Some(t) = current.as_ref() {
            if Instant::now() < t.renew_at && Some(&t.token) != stale {
                return Ok((t.token.clone(), t.user_id.clone()));
            }
        }
        let fresh = self
            .issue_service_token()
            .await
            .map_err(|e| self.count(e))?;
        let out = (fresh.token.clone(), fresh.user_id.clone());
        *current = Some(fresh);
        Ok(out)
    }

    /// A user's own project-scoped token from their password (the console's login form);
    /// `None` when Keystone refuses the credentials or the scope.
    ///
    /// # Errors
    /// Keystone unreachable or answering something other than 201, 400 or 401.
    #[tracing::instrument(name = "keystone_password_login", skip_all)]
    pub async fn password_login(
        &self,
        user: &str,
        password: &str,
        project: &str,
        domain: &str,
    ) -> Result<Option<String>, KeystoneError> {
        const WHAT: &str = "a password login";
        let request = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "domain": {"name": domain}, "password": password,
            }}},
            "scope": {"project": {"name": project, "domain": {"name": domain}}},
        }});
        let res = self
            .0
            .http
            .post(&self.0.tokens_url)
            .json(&request)
            .send()
            .await
            .map_err(KeystoneError::Transport)?;
        match res.status().as_u16() {
            201 => {}
            400 | 401 | 403 | 404 => return Ok(None),
            _ => {
                return Err(KeystoneError::Status {
                    what: WHAT,
                    status: res.status(),
                })
            }
        }
        let token = res
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| KeystoneError::Malformed {
                what: WHAT,
                source: anyhow::anyhow!("no X-Subject-Token header"),
            })?;
        Ok(Some(token))
    }

    #[tracing::instrument(name = "keystone_service_token", skip_all)]
    async fn issue_service_token(&self) -> Result<ServiceToken, KeystoneError> {
        const WHAT: &str = "Herald's service user authentication";
        let res = self
            .0
            .http
            .post(&self.0.tokens_url)
            .json(&self.0.auth_request)
            .send()
            .await
            .map_err(KeystoneError::Transport)?;
        let status = res.status();
        if status != reqwest::StatusCode::CREATED {
            tracing::error!(%status, "Keystone refused Herald's service user (keystone_user, keystone_password, keystone_project)");
            return Err(KeystoneError::Status { what: WHAT, status });
        }
        let (token, body, lifetime) = issued_token(res, WHAT).await?;
        let margin = SERVICE_TOKEN_RENEW_BEFORE.min(lifetime / 2);
        Ok(ServiceToken {
            token,
            user_id: body.token.user.id,
            renew_at: Instant::now() + lifetime - margin,
        })
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenOut,
}

#[derive(Deserialize)]
struct TokenOut {
    expires_at: DateTime<Utc>,
    user: IdOut,
    project: Option<IdOut>,
    #[serde(default)]
    roles: Vec<RoleOut>,
}

#[derive(Deserialize)]
struct IdOut {
    id: String,
}

#[derive(Deserialize)]
struct RoleOut {
    name: String,
}

#[derive(Deserialize)]
struct ExpiryBody {
    token: ExpiryOut,
}

#[derive(Deserialize)]
struct ExpiryOut {
    expires_at: DateTime<Utc>,
    user: IdOut,
}

/// The token a `POST /v3/auth/tokens` answer issued (its `X-Subject-Token`, marked
/// sensitive so it is never logged), the answer's body and the token's remaining life.
async fn issued_token(
    res: reqwest::Response,
    what: &'static str,
) -> Result<
    (
        reqwest::header::HeaderValue,
        ExpiryBody,
        std::time::Duration,
    ),
    KeystoneError,
> {
    let malformed = |source: anyhow::Error| KeystoneError::Malformed { what, source };
    let mut token = res
        .headers()
        .get("x-subject-token")
        .cloned()
        .ok_or_else(|| malformed(anyhow::anyhow!("no X-Subject-Token header")))?;
    token.set_sensitive(true);
    let body: ExpiryBody = res.json().await.map_err(|e| malformed(e.into()))?;
    let lifetime = (body.token.expires_at - Utc::now())
        .to_std()
        .unwrap_or_default();
    Ok((token, body, lifetime))
}

#[cfg(test)]
mod tests {
    use moka::Expiry;

    use super::*;

    fn valid(expires_in: chrono::Duration) -> Validation {
        Validation::Valid(Arc::new(TokenInfo {
            user_id: "u".into(),
            project: ProjectId::parse("p").unwrap(),
            roles: vec![Role::Member],
            role_names: vec!["member".into()],
            expires_at: Utc::now() + expires_in,
        }))
    }

    #[test]
    fn an_entry_lives_at_most_the_cache_time_and_never_past_the_tokens_expiry() {
        let lifetime = Lifetime {
            max: Duration::from_secs(300),
        };
        let ttl = |v: &Validation| {
            lifetime
                .expire_after_create(&"t".to_owned(), v, Instant::now())
                .unwrap()
        };
        assert_eq!(
            ttl(&valid(chrono::Duration::hours(1))),
            Duration::from_secs(300)
        );
        let short = ttl(&valid(chrono::Duration::seconds(10)));
        assert!(short <= Duration::from_secs(10) && short > Duration::from_secs(8));
        assert_eq!(ttl(&valid(chrono::Duration::seconds(-5))), Duration::ZERO);
        assert_eq!(ttl(&Validation::Invalid), INVALID_CACHE);
    }

    #[test]
    fn standard_roles_map_to_themselves_and_the_map_adds_others() {
        let map = parse_role_map("operator=admin, viewer=reader").unwrap();
        assert_eq!(map["member"], Role::Member);
        assert_eq!(map["operator"], Role::Admin);
        assert_eq!(map["viewer"], Role::Reader);
        assert!(!map.contains_key("service"));
        assert!(parse_role_map("operator").is_err());
        assert!(parse_role_map("operator=root").is_err());
        assert_eq!(parse_role_map("").unwrap().len(), 3);
    }
}
