//! Who is calling: [`Identity`] resolved from headers (`noauth`), from the tokens file
//! (`tokens`) or by Keystone (`keystone`, in [`keystone`]). The API wraps it in extractors
//! that reject with each family's error type.

pub mod callout;
pub mod keystone;

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use axum::http::HeaderMap;
use serde::Deserialize;

use crate::{
    config::AuthMode,
    domain::{ProjectId, TopicMetadata},
};

pub use keystone::{parse_role_map, Keystone, TokenInfo, TrustCreateError, TrustTokenError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Reader,
    Member,
    Admin,
}

impl Role {
    fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "reader" => Some(Self::Reader),
            "member" | "_member_" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            _ => None,
        }
    }
}

/// The caller, as every handler sees it.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: Option<String>,
    pub project: ProjectId,
    pub roles: Vec<Role>,
    /// The caller's own token, when Herald may present it on the caller's behalf
    /// (`delegable` in the tokens file).
    pub delegable_token: Option<String>,
    /// What the caller's Keystone token validated to (`keystone` mode): a `trust+`
    /// subscription delegates its roles in a trust.
    pub keystone: Option<Arc<keystone::TokenInfo>>,
}

impl Identity {
    /// Whether each list the topic sets (`_allowed_{kind}_users`, `_allowed_{kind}_projects`)
    /// names this caller. Unset lists allow everybody who can see the topic.
    pub fn allowed_by(&self, meta: &TopicMetadata, kind: &str) -> bool {
        if self.is_admin() {
            return true;
        }
        let users_ok = meta
            .list(&format!("_allowed_{kind}_users"))
            .is_none_or(|users| self.user_id.as_deref().is_some_and(|u| users.contains(&u)));
        let projects_ok = meta
            .list(&format!("_allowed_{kind}_projects"))
            .is_none_or(|projects| projects.contains(&self.project.as_str()));
        users_ok && projects_ok
    }

    pub fn is_admin(&self) -> bool {
        self.roles.contains(&Role::Admin)
    }

    /// `member` or `admin`: may change things.
    pub fn can_write(&self) -> bool {
        self.roles
            .iter()
            .any(|r| matches!(r, Role::Member | Role::Admin))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("The header X-Project-ID was missing")]
    MissingProject,
    #[error("{0}")]
    InvalidProject(String),
    #[error("Authentication required: X-Auth-Token is missing.")]
    MissingToken,
    #[error("Authentication failed: the token is not valid.")]
    UnknownToken,
    #[error("Authentication failed: the token is not scoped to a project.")]
    NotProjectScoped,
    #[error("The token carries no role Herald knows (reader, member, admin, or one mapped by keystone_role_map).")]
    NoRole,
    #[error("The identity service is not reachable right now; retry later.")]
    IdentityUnavailable,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    pub user_id: String,
    pub project_id: String,
    #[serde(default = "default_roles")]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub delegable: bool,
}

fn default_roles() -> Vec<Role> {
    vec![Role::Member]
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    tokens: HashMap<String, TokenEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error("cannot read tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tokens file {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid tokens file {path}: token {token_hint}: {reason}")]
    Entry {
        path: PathBuf,
        token_hint: String,
        reason: String,
    },
}

/// Resolves identities; in `tokens` mode holds the tokens file, re-read on SIGHUP.
#[derive(Clone)]
pub struct Authenticator {
    mode: AuthMode,
    path: Option<PathBuf>,
    tokens: Arc<RwLock<Arc<HashMap<String, TokenEntry>>>>,
    keystone: Option<Keystone>,
}

fn load_tokens(path: &Path) -> Result<HashMap<String, TokenEntry>, TokensError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
        path: path.to_owned(),
        source,
    })?;
    let file: TokensFile = serde_json::from_str(&text).map_err(|source| TokensError::Parse {
        path: path.to_owned(),
        source,
    })?;
    for (token, entry) in &file.tokens {
        let hint = format!("{}…", token.chars().take(4).collect::<String>());
        let bad = |reason: &str| TokensError::Entry {
            path: path.to_owned(),
            token_hint: hint.clone(),
            reason: reason.to_owned(),
        };
        if ProjectId::parse(&entry.project_id).is_err() {
            return Err(bad("project_id must match [A-Za-z0-9_-]{1,256}"));
        }
        if entry.user_id.is_empty() {
            return Err(bad("user_id must not be empty"));
        }
    }
    Ok(file.tokens)
}

impl Authenticator {
    pub fn new(mode: AuthMode, path: Option<PathBuf>) -> Result<Self, TokensError> {
        let tokens = match (&mode, &path) {
            (AuthMode::Tokens, Some(p)) => load_tokens(p)?,
            _ => HashMap::new(),
        };
        Ok(Self {
            mode,
            path,
            tokens: Arc::new(RwLock::new(Arc::new(tokens))),
            keystone: None,
        })
    }

    /// Resolves identities with Keystone (`auth_mode = keystone`).
    pub fn with_keystone(mut self, keystone: Keystone) -> Self {
        self.keystone = Some(keystone);
        self
    }

    pub fn keystone(&self) -> Option<&Keystone> {
        self.keystone.as_ref()
    }

    /// Re-reads the tokens file; on error the previous tokens stay in force.
    pub fn reload(&self) -> Result<usize, TokensError> {
        let Some(path) = self
            .path
            .as_deref()
            .filter(|_| self.mode == AuthMode::Tokens)
        else {
            return Ok(0);
        };
        let tokens = load_tokens(path)?;
        let n = tokens.len();
        *self.tokens.write().expect("tokens lock poisoned") = Arc::new(tokens);
        Ok(n)
    }

    pub async fn resolve(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        match &self.keystone {
            Some(keystone) => Self::resolve_keystone(keystone, headers).await,
            None => self.resolve_local(headers),
        }
    }

    async fn resolve_keystone(
        keystone: &Keystone,
        headers: &HeaderMap,
    ) -> Result<Identity, AuthError> {
        let header = |name: &str| header_value(headers, name);
        let token = header("x-auth-token").ok_or(AuthError::MissingToken)?;
        let info = match keystone.validate(token).await {
            Ok(keystone::Validation::Valid(info)) => info,
            Ok(keystone::Validation::Invalid) => return Err(AuthError::UnknownToken),
            Ok(keystone::Validation::NotProjectScoped) => return Err(AuthError::NotProjectScoped),
            Err(e) => {
                tracing::warn!(error.cause_chain = ?e, error.message = %e, "token validation failed");
                return Err(AuthError::IdentityUnavailable);
            }
        };
        if info.roles.is_empty() {
            return Err(AuthError::NoRole);
        }
        let is_admin = info.roles.contains(&Role::Admin);
        let project = match header("x-project-id") {
            Some(p) if is_admin => {
                ProjectId::parse(p).map_err(|e| AuthError::InvalidProject(e.0))?
            }
            _ => info.project.clone(),
        };
        Ok(Identity {
            user_id: Some(info.user_id.clone()),
            project,
            roles: info.roles.clone(),
            delegable_token: None,
            keystone: Some(info),
        })
    }

    /// `noauth` and `tokens`: resolved from the request alone.
    fn resolve_local(&self, headers: &HeaderMap) -> Result<Identity, AuthError> {
        let header = |name: &str| header_value(headers, name);
        let project_header = header("x-project-id");
        match self.mode {
            AuthMode::Noauth => {
                // Cinder's noauth token is "user:project".
                let (token_user, token_project) = match header("x-auth-token") {
                    Some(t) => match t.split_once(':') {
                        Some((u, p)) => (Some(u), Some(p)),
                        None => (None, Some(t)),
                    },
                    None => (None, None),
                };
                let project = project_header
                    .or(token_project)
                    .ok_or(AuthError::MissingProject)?;
                let project =
                    ProjectId::parse(project).map_err(|e| AuthError::InvalidProject(e.0))?;
                let mut roles: Vec<Role> = header("x-roles")
                    .map(|r| r.split(',').filter_map(Role::parse).collect())
                    .unwrap_or_default();
                if roles.is_empty() {
                    roles.push(Role::Member);
                }
                Ok(Identity {
                    user_id: header("x-user-id").or(token_user).map(str::to_owned),
                    project,
                    roles,
                    delegable_token: None,
                    keystone: None,
                })
            }
            // Without a Keystone client (`resolve` uses it when configured) no token is known.
            AuthMode::Tokens | AuthMode::Keystone => {
                let token = header("x-auth-token").ok_or(AuthError::MissingToken)?;
                let tokens = self.tokens.read().expect("tokens lock poisoned").clone();
                let entry = tokens.get(token).ok_or(AuthError::UnknownToken)?;
                let own = ProjectId::parse(&entry.project_id)
                    .map_err(|e| AuthError::InvalidProject(e.0))?;
                let is_admin = entry.roles.contains(&Role::Admin);
                // Only an admin may act on another project, by naming it.
                let project = match project_header {
                    Some(p) if is_admin => {
                        ProjectId::parse(p).map_err(|e| AuthError::InvalidProject(e.0))?
                    }
                    _ => own,
                };
                Ok(Identity {
                    user_id: Some(entry.user_id.clone()),
                    project,
                    roles: entry.roles.clone(),
                    delegable_token: entry.delegable.then(|| token.to_owned()),
                    keystone: None,
                })
            }
        }
    }
}

/// A request header as trimmed, non-empty text.
fn header_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use axum::http::HeaderValue;

    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn noauth_reads_project_user_and_roles_from_headers() {
        let a = Authenticator::new(AuthMode::Noauth, None).unwrap();
        let id = a
            .resolve_local(&headers(&[
                ("x-project-id", "p1"),
                ("x-user-id", "u1"),
                ("x-roles", "reader,admin"),
            ]))
            .unwrap();
        assert_eq!(id.project.as_str(), "p1");
        assert_eq!(id.user_id.as_deref(), Some("u1"));
        assert!(id.is_admin());
        assert_eq!(
            a.resolve_local(&HeaderMap::new()).unwrap_err(),
            AuthError::MissingProject
        );
    }

    #[test]
    fn noauth_accepts_cinders_user_colon_project_token() {
        let a = Authenticator::new(AuthMode::Noauth, None).unwrap();
        let id = a
            .resolve_local(&headers(&[("x-auth-token", "alice:proj9")]))
            .unwrap();
        assert_eq!(id.project.as_str(), "proj9");
        assert_eq!(id.user_id.as_deref(), Some("alice"));
        assert_eq!(id.roles, vec![Role::Member]);
    }

    #[test]
    fn tokens_mode_maps_tokens_and_reloads() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        write!(
            f,
            r#"{{"tokens": {{"t1": {{"user_id": "u1", "project_id": "p1"}}}}}}"#
        )
        .unwrap();
        let a = Authenticator::new(AuthMode::Tokens, Some(f.path().to_owned())).unwrap();
        let id = a
            .resolve_local(&headers(&[
                ("x-auth-token", "t1"),
                ("x-project-id", "other"),
            ]))
            .unwrap();
        assert_eq!(
            id.project.as_str(),
            "p1",
            "a non-admin cannot pick another project"
        );
        assert_eq!(
            a.resolve_local(&HeaderMap::new()).unwrap_err(),
            AuthError::MissingToken
        );
        assert_eq!(
            a.resolve_local(&headers(&[("x-auth-token", "t2")]))
                .unwrap_err(),
            AuthError::UnknownToken
        );
        std::fs::write(
            f.path(),
            r#"{"tokens": {"t2": {"user_id": "u2", "project_id": "p2", "roles": ["admin"], "delegable": true}}}"#,
        )
        .unwrap();
        assert_eq!(a.reload().unwrap(), 1);
        let id = a
            .resolve_local(&headers(&[("x-auth-token", "t2"), ("x-project-id", "p3")]))
            .unwrap();
        assert_eq!(id.project.as_str(), "p3", "an admin may act on any project");
        assert_eq!(id.delegable_token.as_deref(), Some("t2"));
    }

    #[test]
    fn a_broken_tokens_file_is_refused_and_the_old_tokens_stay() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            r#"{"tokens": {"t1": {"user_id": "u1", "project_id": "p1"}}}"#,
        )
        .unwrap();
        let a = Authenticator::new(AuthMode::Tokens, Some(f.path().to_owned())).unwrap();
        std::fs::write(
            f.path(),
            r#"{"tokens": {"t1": {"user_id": "u1", "project_id": "p.1"}}}"#,
        )
        .unwrap();
        assert!(a.reload().is_err());
        assert!(a.resolve_local(&headers(&[("x-auth-token", "t1")])).is_ok());
    }
}
