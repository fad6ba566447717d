//! Creating user messages: the one path every producer takes (REST `POST`, the NATS
//! request/reply subject [`CREATE_SUBJECT`], the delivery engine's dead letters).
//!
//! [`UserMessages::create`] checks a request against the permitted messages
//! [`Catalog`](crate::catalog::Catalog) and stores it with the configured TTL; nothing is
//! stored when any check fails. [`serve_nats`] answers [`CREATE_SUBJECT`] in a queue group,
//! so any number of Herald processes share the requests.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

pub use self::nats::{serve_nats, CREATE_SUBJECT, QUEUE_GROUP};
use crate::{
    catalog::{Catalog, Entry, Level},
    domain::ProjectId,
    store::{user_messages::UserMessage, Store, StoreError},
};

mod nats;

/// Longest `request_id` and `resource_uuid`.
const MAX_ID_CHARS: usize = 255;

/// A request to create a user message (REST body and NATS request alike).
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserMessage {
    /// Owning project; optional on REST (the path names it), required on NATS.
    #[serde(default)]
    pub project_id: Option<String>,
    /// A catalog event id, or else `action_id` + `detail_id` (Cinder's scheme).
    #[serde(default)]
    pub event_id: Option<String>,
    #[serde(default)]
    pub action_id: Option<String>,
    #[serde(default)]
    pub detail_id: Option<String>,
    /// Must equal the catalog entry's resource type when given.
    #[serde(default)]
    pub resource_type: Option<String>,
    /// The resource the message is about: a UUID.
    #[serde(default)]
    pub resource_uuid: Option<String>,
    /// The request that failed; a new `req-<uuid>` when absent.
    #[serde(default)]
    pub request_id: Option<String>,
    /// `ERROR`, `WARNING` or `INFO`; the catalog entry's level when absent.
    #[serde(default)]
    pub message_level: Option<String>,
}

impl CreateUserMessage {
    /// A request for catalog event `event_id` in `project` (the delivery engine's form).
    pub fn event(project: &ProjectId, event_id: &str) -> Self {
        Self {
            project_id: Some(project.to_string()),
            event_id: Some(event_id.to_owned()),
            ..Self::default()
        }
    }

    /// Names the resource the message is about.
    pub fn about(mut self, resource_type: &str, resource_uuid: &str) -> Self {
        self.resource_type = Some(resource_type.to_owned());
        self.resource_uuid = Some(resource_uuid.to_owned());
        self
    }
}

/// Why a message was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The request breaks a rule; the text is meant for the caller.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CreateError {
    /// The HTTP-style status of the error (also the `code` of a NATS error reply).
    pub fn code(&self) -> u16 {
        match self {
            Self::Invalid(_) => 400,
            Self::Store(e) => crate::error::store_error_status(e).as_u16(),
        }
    }
}

/// The user messages service: catalog, store and TTL. Cheap to clone.
#[derive(Clone)]
pub struct UserMessages {
    store: Store,
    catalog: Arc<Catalog>,
    ttl: Duration,
}

fn invalid(msg: impl Into<String>) -> CreateError {
    CreateError::Invalid(msg.into())
}

fn printable(s: &str) -> bool {
    !s.chars().any(char::is_control)
}

impl UserMessages {
    pub fn new(store: Store, catalog: Arc<Catalog>, ttl: Duration) -> Self {
        Self {
            store,
            catalog,
            ttl,
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Checks `req` against the catalog and builds the message, stamped now.
    ///
    /// # Errors
    /// [`CreateError::Invalid`] naming the first broken rule.
    pub fn prepare(&self, req: CreateUserMessage) -> Result<UserMessage, CreateError> {
        prepare(&self.catalog, self.ttl, req)
    }

    /// Validates and stores a message; the one create path of Herald.
    ///
    /// # Errors
    /// `Invalid` (nothing stored) or a store error.
    #[tracing::instrument(name = "create user message", skip_all)]
    pub async fn create(&self, req: CreateUserMessage) -> Result<UserMessage, CreateError> {
        let message = self.prepare(req)?;
        // `prepare` checked the id; parsing it again gives the store the typed key.
        let project = ProjectId::parse(&message.project_id).map_err(|e| invalid(e.0))?;
        self.store
            .create_user_message(&project, &message, self.ttl)
            .await?;
        metrics::counter!("herald_user_messages_created_total", "event_id" => message.event_id.clone())
            .increment(1);
        tracing::info!(id = %message.id, project = %message.project_id, event_id = %message.event_id, "user message created");
        Ok(message)
    }
}

/// Checks `req` against `catalog` and builds the message, stamped now and kept for `ttl`.
/// Needs no store, so the rules can be tested on their own.
///
/// # Errors
/// [`CreateError::Invalid`] naming the first broken rule.
pub fn prepare(
    catalog: &Catalog,
    ttl: Duration,
    req: CreateUserMessage,
) -> Result<UserMessage, CreateError> {
    let project = req
        .project_id
        .as_deref()
        .ok_or_else(|| invalid("project_id is required."))?;
    let project = ProjectId::parse(project).map_err(|e| invalid(e.0))?;
    let (event_id, entry) = resolve_event(catalog, &req)?;
    if let Some(rt) = &req.resource_type {
        if *rt != entry.resource_type {
            return Err(invalid(format!(
                "resource_type {rt:?} does not match event {event_id}, which is about {}.",
                entry.resource_type
            )));
        }
    }
    let resource_uuid = req.resource_uuid.as_deref().map(parse_uuid).transpose()?;
    let request_id = parse_request_id(req.request_id)?;
    let level = match &req.message_level {
        None => entry.level,
        Some(l) => Level::parse(l)
            .ok_or_else(|| invalid("message_level must be ERROR, WARNING or INFO."))?,
    };
    let created_at = Utc::now();
    let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    Ok(UserMessage {
        id: Uuid::new_v4(),
        project_id: project.to_string(),
        event_id,
        user_message: entry.message,
        message_level: level.to_string(),
        resource_type: Some(entry.resource_type),
        resource_uuid,
        request_id,
        created_at,
        // `message_ttl` is bounded at start-up; saturate rather than panic regardless.
        guaranteed_until: created_at
            .checked_add_signed(ttl)
            .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
    })
}

/// The event a request names, by `event_id` or by `action_id` + `detail_id` (with
/// `resource_type`), and its catalog entry.
fn resolve_event(
    catalog: &Catalog,
    req: &CreateUserMessage,
) -> Result<(String, Entry), CreateError> {
    match (&req.event_id, &req.action_id, &req.detail_id) {
        (Some(event_id), None, None) => {
            if event_id.len() > crate::catalog::MAX_NAME_CHARS {
                return Err(invalid("event_id is longer than 255 characters."));
            }
            let entry = catalog.lookup(event_id).ok_or_else(|| {
                invalid(format!(
                    "Unknown event_id {event_id:?}: not in the permitted messages catalog."
                ))
            })?;
            Ok((event_id.clone(), entry))
        }
        (None, Some(action), Some(detail)) => {
            let resource_type = req.resource_type.as_deref().ok_or_else(|| {
                invalid("resource_type is required with action_id and detail_id.")
            })?;
            catalog
                .compose_any(resource_type, action, detail)
                .ok_or_else(|| {
                    invalid(format!(
                        "Unknown message: resource_type {resource_type:?}, action_id \
                         {action:?}, detail_id {detail:?} are not in the permitted \
                         messages catalog."
                    ))
                })
        }
        _ => Err(invalid(
            "Give either event_id, or action_id and detail_id (with resource_type).",
        )),
    }
}

/// `resource_uuid` in its hyphenated form.
fn parse_uuid(u: &str) -> Result<String, CreateError> {
    Uuid::parse_str(u)
        .map(|u| u.as_hyphenated().to_string())
        .map_err(|_| invalid(format!("resource_uuid {u:?} is not a valid UUID.")))
}

/// The caller's `request_id`, or a new `req-<uuid>`.
fn parse_request_id(request_id: Option<String>) -> Result<String, CreateError> {
    match request_id {
        None => Ok(format!("req-{}", Uuid::new_v4())),
        Some(r) if r.is_empty() || r.chars().count() > MAX_ID_CHARS || !printable(&r) => {
            Err(invalid("request_id must be 1 to 255 printable characters."))
        }
        Some(r) => Ok(r),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::catalog::EVENT_DELIVERY_REJECTED;

    const VOLUME_TABLE: &str = r#"
[[table]]
prefix = "VOLUME"
resource_types = ["VOLUME"]

[table.actions]
"002" = "attach volume"

[table.details]
"006" = "Not enough quota resource for operation."
"#;

    const TTL: Duration = Duration::from_secs(3600);

    fn catalog() -> Catalog {
        let mut c = Catalog::builtin();
        c.extend(Catalog::parse(VOLUME_TABLE, Path::new("catalog.toml")).unwrap());
        c
    }

    fn rejection(req: CreateUserMessage) -> String {
        match prepare(&catalog(), TTL, req) {
            Err(CreateError::Invalid(msg)) => msg,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn rejected_event() -> CreateUserMessage {
        CreateUserMessage::event(&ProjectId::parse("p1").unwrap(), EVENT_DELIVERY_REJECTED)
    }

    #[test]
    fn an_event_id_takes_text_level_and_resource_type_from_the_catalog() {
        // Arrange
        let req = rejected_event().about("SUBSCRIPTION", "6F9619FF8B86D011B42D00C04FC964FF");

        // Act
        let m = prepare(&catalog(), TTL, req).unwrap();

        // Assert
        assert_eq!(m.project_id, "p1");
        assert_eq!(m.event_id, EVENT_DELIVERY_REJECTED);
        assert_eq!(
            m.user_message,
            "deliver message:The subscriber rejected the message; it will not be retried."
        );
        assert_eq!(m.message_level, "ERROR");
        assert_eq!(m.resource_type.as_deref(), Some("SUBSCRIPTION"));
        assert_eq!(
            m.resource_uuid.as_deref(),
            Some("6f9619ff-8b86-d011-b42d-00c04fc964ff"),
            "hyphenated"
        );
        assert!(m.request_id.starts_with("req-"), "{}", m.request_id);
        assert_eq!(
            m.guaranteed_until - m.created_at,
            chrono::Duration::hours(1)
        );
    }

    #[test]
    fn action_and_detail_ids_compose_the_event_id_and_the_caller_may_set_level_and_request_id() {
        // Arrange
        let req = CreateUserMessage {
            project_id: Some("p1".into()),
            action_id: Some("002".into()),
            detail_id: Some("006".into()),
            resource_type: Some("VOLUME".into()),
            request_id: Some("req-mine".into()),
            message_level: Some("warning".into()),
            ..CreateUserMessage::default()
        };

        // Act
        let m = prepare(&catalog(), TTL, req).unwrap();

        // Assert
        assert_eq!(m.event_id, "VOLUME_VOLUME_002_006");
        assert_eq!(
            m.user_message,
            "attach volume:Not enough quota resource for operation."
        );
        assert_eq!(m.message_level, "WARNING");
        assert_eq!(m.request_id, "req-mine");
        assert!(m.resource_uuid.is_none());
    }

    #[test]
    fn a_request_breaking_a_rule_is_rejected_naming_the_rule() {
        let no_project = CreateUserMessage {
            project_id: None,
            ..rejected_event()
        };
        assert_eq!(rejection(no_project), "project_id is required.");
        let unknown = CreateUserMessage {
            event_id: Some("NOPE_001".into()),
            ..rejected_event()
        };
        assert_eq!(
            rejection(unknown),
            "Unknown event_id \"NOPE_001\": not in the permitted messages catalog."
        );
        let both = CreateUserMessage {
            action_id: Some("002".into()),
            ..rejected_event()
        };
        assert_eq!(
            rejection(both),
            "Give either event_id, or action_id and detail_id (with resource_type)."
        );
        let without_type = CreateUserMessage {
            event_id: None,
            action_id: Some("002".into()),
            detail_id: Some("006".into()),
            ..rejected_event()
        };
        assert_eq!(
            rejection(without_type),
            "resource_type is required with action_id and detail_id."
        );
        assert_eq!(
            rejection(rejected_event().about("VOLUME", "6f9619ff-8b86-d011-b42d-00c04fc964ff")),
            "resource_type \"VOLUME\" does not match event HERALD_SUBSCRIPTION_001_001, \
             which is about SUBSCRIPTION."
        );
        assert_eq!(
            rejection(rejected_event().about("SUBSCRIPTION", "x")),
            "resource_uuid \"x\" is not a valid UUID."
        );
        assert_eq!(
            rejection(CreateUserMessage {
                message_level: Some("DEBUG".into()),
                ..rejected_event()
            }),
            "message_level must be ERROR, WARNING or INFO."
        );
    }

    #[test]
    fn request_ids_and_event_ids_are_bounded() {
        for bad in [
            String::new(),
            "a\nb".to_owned(),
            "r".repeat(MAX_ID_CHARS + 1),
        ] {
            let req = CreateUserMessage {
                request_id: Some(bad.clone()),
                ..rejected_event()
            };
            assert_eq!(
                rejection(req),
                "request_id must be 1 to 255 printable characters.",
                "{bad:?}"
            );
        }
        let long = CreateUserMessage {
            event_id: Some("E".repeat(crate::catalog::MAX_NAME_CHARS + 1)),
            ..rejected_event()
        };
        assert_eq!(rejection(long), "event_id is longer than 255 characters.");
        let longest = CreateUserMessage {
            request_id: Some("r".repeat(MAX_ID_CHARS)),
            ..rejected_event()
        };
        assert!(prepare(&catalog(), TTL, longest).is_ok());
    }
}
