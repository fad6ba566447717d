//! Cinder error conversions and the project scope of a request.

use super::*;

impl From<AuthError> for CinderError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::MissingProject | AuthError::InvalidProject(_) => {
                CinderError::bad_request(e.to_string())
            }
            AuthError::MissingToken | AuthError::UnknownToken | AuthError::NotProjectScoped => {
                CinderError::new(StatusCode::UNAUTHORIZED, e.to_string())
            }
            AuthError::NoRole => CinderError::forbidden(e.to_string()),
            AuthError::IdentityUnavailable => {
                CinderError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
        }
    }
}

impl From<CreateError> for CinderError {
    fn from(e: CreateError) -> Self {
        match e {
            CreateError::Invalid(msg) => CinderError::bad_request(msg),
            CreateError::Store(e) => e.into(),
        }
    }
}

pub(crate) fn resource_not_found() -> CinderError {
    CinderError::not_found("The resource could not be found.")
}

pub(crate) fn message_not_found(id: &str) -> CinderError {
    CinderError::not_found(format!("Message {id} could not be found."))
}

pub(crate) fn policy_forbids(action: &str) -> CinderError {
    CinderError::forbidden(format!(
        "Policy doesn't allow message:{action} to be performed."
    ))
}

/// Who calls, on which project, at which microversion (3.3 or later, else 404).
/// The project is the path's `{project_id}` when present: it must be the caller's own
/// unless the caller is an admin ("Malformed request url" otherwise, as Cinder says).
pub struct Scope {
    pub identity: Identity,
    pub project: ProjectId,
    pub version: Microversion,
    /// The path's `{id}`, for routes that have one.
    pub id: Option<String>,
}

impl FromRequestParts<AppState> for Scope {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, CinderError> {
        let identity = state.auth.resolve(&parts.headers).await?;
        let version = parts
            .extensions
            .get::<Microversion>()
            .copied()
            .unwrap_or(MIN_VERSION);
        if version < MESSAGES_VERSION {
            return Err(resource_not_found());
        }
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| resource_not_found())?;
        let project = match params.get("project_id") {
            None => identity.project.clone(),
            Some(p) if p == identity.project.as_str() => identity.project.clone(),
            Some(p) if identity.is_admin() => ProjectId::parse(p)
                .map_err(|_| CinderError::bad_request("Malformed request url"))?,
            Some(_) => return Err(CinderError::bad_request("Malformed request url")),
        };
        Ok(Self {
            identity,
            project,
            version,
            id: params.get("id").cloned(),
        })
    }
}

impl Scope {
    /// The path's message id as a UUID; anything else cannot exist (404).
    pub(crate) fn message_id(&self) -> Result<Uuid, CinderError> {
        let raw = self.id.as_deref().unwrap_or_default();
        Uuid::parse_str(raw).map_err(|_| message_not_found(raw))
    }
}

// ---------------------------------------------------------------- views
