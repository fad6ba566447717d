//! Keystone trusts for `trust+` subscribers, as Zaqar uses them: the caller (trustor)
//! delegates its roles on its project to Herald's service user (trustee) with
//! impersonation until the subscription expires; Herald keeps only the trust id. At
//! delivery Herald authenticates as itself scoped to the trust and presents that token,
//! which acts as the trustor. Trust-scoped tokens are cached per trust until shortly
//! before they expire; a trust Keystone no longer honours is a [`TrustTokenError::Gone`].

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::http::HeaderValue;
use chrono::{DateTime, SecondsFormat, Utc};
use moka::future::Cache;
use serde::Deserialize;
use serde_json::json;

use super::{issued_token, Keystone, KeystoneError, TokenInfo};
use crate::domain::ProjectId;

/// Trust tokens held at once (one per live `trust+` subscription that delivered lately).
const TRUST_CACHE_CAPACITY: u64 = 10_000;

/// A trust token is replaced when less than this (or a quarter of its lifetime) remains,
/// so a subscriber never gets a token that expires while it handles the message.
const TRUST_TOKEN_RENEW_BEFORE: Duration = Duration::from_secs(60);

/// A trust-scoped token and when to stop using it.
#[derive(Debug)]
pub(super) struct TrustToken {
    token: HeaderValue,
    use_until: Instant,
}

struct UseUntil;

impl moka::Expiry<String, Arc<TrustToken>> for UseUntil {
    fn expire_after_create(
        &self,
        _trust: &String,
        token: &Arc<TrustToken>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(token.use_until.saturating_duration_since(Instant::now()))
    }
}

pub(super) fn token_cache() -> Cache<String, Arc<TrustToken>> {
    Cache::builder()
        .max_capacity(TRUST_CACHE_CAPACITY)
        .expire_after(UseUntil)
        .build()
}

/// Why a trust could not be created for the caller.
#[derive(Debug, thiserror::Error)]
pub enum TrustCreateError {
    /// Keystone refused the caller (its token cannot create trusts: an application
    /// credential's, a trust's; or it lacks the roles on the project).
    #[error("Keystone refused to create the trust ({status}): {message}")]
    Refused {
        status: reqwest::StatusCode,
        message: String,
    },
    /// The request has no token, or the caller's token is no longer valid.
    #[error("the caller's token cannot create a trust")]
    NoToken,
    #[error(transparent)]
    Keystone(#[from] KeystoneError),
}

/// Why no token for a trust could be had.
#[derive(Debug, thiserror::Error)]
pub enum TrustTokenError {
    /// Keystone no longer honours the trust: revoked, deleted, expired, or its trustor
    /// disabled (401, 403 or 404 when scoping to it). Permanent.
    #[error("Keystone answered {0} when scoping to the trust (revoked, deleted, expired or its user disabled)")]
    Gone(reqwest::StatusCode),
    /// Keystone could not answer; worth retrying.
    #[error(transparent)]
    Keystone(#[from] KeystoneError),
}

#[derive(Deserialize)]
struct TrustBody {
    trust: TrustOut,
}

#[derive(Deserialize)]
struct TrustOut {
    id: String,
}

impl Keystone {
    /// Creates a trust from the caller (`caller` is what its `token` validated to) to
    /// Herald's service user on `project`, with the caller's roles and impersonation,
    /// expiring at `expires_at`. Returns the trust id.
    #[tracing::instrument(name = "keystone_create_trust", skip_all, fields(project = %project))]
    pub async fn create_trust(
        &self,
        token: &str,
        caller: &TokenInfo,
        project: &ProjectId,
        expires_at: DateTime<Utc>,
    ) -> Result<String, TrustCreateError> {
        const WHAT: &str = "a trust creation";
        let mut token = HeaderValue::from_str(token).map_err(|_| TrustCreateError::NoToken)?;
        token.set_sensitive(true);
        let (_, trustee) = self.service_identity(None).await?;
        let roles: Vec<_> = caller
            .role_names
            .iter()
            .map(|name| json!({"name": name}))
            .collect();
        let body = json!({"trust": {
            "trustor_user_id": caller.user_id,
            "trustee_user_id": trustee,
            "project_id": project.as_str(),
            "roles": roles,
            "impersonation": true,
            "expires_at": expires_at.to_rfc3339_opts(SecondsFormat::Micros, true),
        }});
        let res = self
            .0
            .http
            .post(format!("{}/v3/OS-TRUST/trusts", self.0.url))
            .header("x-auth-token", token)
            .json(&body)
            .send()
            .await
            .map_err(KeystoneError::Transport)?;
        let status = res.status();
        match status.as_u16() {
            201 => {
                let body: TrustBody = res.json().await.map_err(|e| KeystoneError::Malformed {
                    what: WHAT,
                    source: e.into(),
                })?;
                tracing::info!(trust = %body.trust.id, "trust created");
                Ok(body.trust.id)
            }
            401 => Err(TrustCreateError::NoToken),
            400 | 403 | 404 => Err(TrustCreateError::Refused {
                status,
                message: keystone_message(res).await,
            }),
            _ => Err(KeystoneError::Status { what: WHAT, status }.into()),
        }
    }

    /// A token acting for the trust's trustor: cached until shortly before it expires;
    /// concurrent deliveries of one trust cause one request to Keystone.
    pub async fn trust_token(&self, trust_id: &str) -> Result<HeaderValue, Arc<TrustTokenError>> {
        if let Some(hit) = self.0.trust_tokens.get(trust_id).await {
            return Ok(hit.token.clone());
        }
        self.0
            .trust_tokens
            .try_get_with_by_ref(trust_id, self.scope_to_trust(trust_id))
            .await
            .map(|t| t.token.clone())
    }

    /// Drops the cached token of the trust (the subscriber refused it): the next
    /// [`Self::trust_token`] asks Keystone again.
    pub async fn forget_trust_token(&self, trust_id: &str) {
        self.0.trust_tokens.invalidate(trust_id).await;
    }

    #[tracing::instrument(name = "keystone_trust_token", skip_all, fields(trust = %trust_id))]
    async fn scope_to_trust(&self, trust_id: &str) -> Result<Arc<TrustToken>, TrustTokenError> {
        const WHAT: &str = "a trust-scoped authentication";
        let identity = &self.0.auth_request["auth"]["identity"];
        let body = json!({"auth": {
            "identity": identity,
            "scope": {"OS-TRUST:trust": {"id": trust_id}},
        }});
        let res = self
            .0
            .http
            .post(&self.0.tokens_url)
            .json(&body)
            .send()
            .await
            .map_err(KeystoneError::Transport)?;
        let status = res.status();
        match status.as_u16() {
            201 => {}
            // 401 is also what Herald's own wrong password gets: that is Herald's problem
            // (retried, and logged by the service token path), not the trust's.
            401 if self.issue_service_token().await.is_err() => {
                return Err(KeystoneError::Status { what: WHAT, status }.into())
            }
            401 | 403 | 404 => return Err(TrustTokenError::Gone(status)),
            _ => return Err(KeystoneError::Status { what: WHAT, status }.into()),
        }
        let (token, _, lifetime) = issued_token(res, WHAT).await?;
        let margin = TRUST_TOKEN_RENEW_BEFORE.min(lifetime / 4);
        Ok(Arc::new(TrustToken {
            token,
            use_until: Instant::now() + lifetime - margin,
        }))
    }

    /// Deletes the trust, best effort (logged): a trust-scoped token acts as the trustor,
    /// and Keystone lets the trustor delete its trust. A trust that already stopped
    /// working (expired, deleted) is left to Keystone (`keystone-manage trust_flush`).
    #[tracing::instrument(name = "keystone_delete_trust", skip_all, fields(trust = %trust_id))]
    pub async fn delete_trust(&self, trust_id: &str) {
        let result = async {
            self.forget_trust_token(trust_id).await;
            let token = match self.trust_token(trust_id).await {
                Ok(t) => t,
                // Nothing left that Keystone would honour.
                Err(e) if matches!(*e, TrustTokenError::Gone(_)) => return Ok(false),
                Err(e) => return Err(e.to_string()),
            };
            self.forget_trust_token(trust_id).await;
            let res = self
                .0
                .http
                .delete(format!("{}/v3/OS-TRUST/trusts/{trust_id}", self.0.url))
                .header("x-auth-token", token)
                .send()
                .await
                .map_err(|e| KeystoneError::Transport(e).to_string())?;
            match res.status().as_u16() {
                204 => Ok(true),
                404 => Ok(false),
                status => Err(format!("Keystone answered {status}")),
            }
        }
        .await;
        match result {
            Ok(true) => tracing::info!("trust deleted"),
            Ok(false) => {
                tracing::info!("trust already unusable (expired or deleted); left to Keystone")
            }
            Err(e) => tracing::warn!(error = %e, "trust not deleted"),
        }
    }
}

/// Keystone's `{"error": {"message": …}}`, or nothing.
async fn keystone_message(res: reqwest::Response) -> String {
    #[derive(Deserialize)]
    struct ErrorBody {
        error: ErrorOut,
    }
    #[derive(Deserialize)]
    struct ErrorOut {
        message: String,
    }
    res.json::<ErrorBody>()
        .await
        .map(|b| b.error.message)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use moka::Expiry;

    use super::*;

    #[test]
    fn a_trust_token_is_cached_until_its_use_by_time() {
        let token = Arc::new(TrustToken {
            token: HeaderValue::from_static("t"),
            use_until: Instant::now() + Duration::from_secs(100),
        });
        let ttl = UseUntil
            .expire_after_create(&"trust".to_owned(), &token, Instant::now())
            .unwrap();
        assert!(ttl <= Duration::from_secs(100) && ttl > Duration::from_secs(98));
        let past = Arc::new(TrustToken {
            token: HeaderValue::from_static("t"),
            use_until: Instant::now(),
        });
        assert_eq!(
            UseUntil
                .expire_after_create(&"trust".to_owned(), &past, Instant::now())
                .unwrap(),
            Duration::ZERO
        );
    }
}
