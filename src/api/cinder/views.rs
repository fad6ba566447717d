//! How Cinder shows user messages: the message, a page of them and their links.

use serde::Serialize;
use utoipa::ToSchema;

use crate::{
    domain::{timestamps, ProjectId},
    store::user_messages::UserMessage,
};

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageLinkOut {
    pub rel: String,
    pub href: String,
}

/// A user message as Cinder shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageOut {
    pub id: String,
    pub event_id: String,
    pub user_message: String,
    pub message_level: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource_uuid: Option<String>,
    /// UTC, `%Y-%m-%dT%H:%M:%S.%6f`.
    pub created_at: String,
    /// `created_at` + the message TTL.
    pub guaranteed_until: String,
    pub request_id: String,
    pub links: Vec<MessageLinkOut>,
}

#[derive(Serialize, ToSchema)]
pub struct MessageShowOut {
    pub message: MessageOut,
}

#[derive(Serialize, ToSchema)]
pub struct MessageListOut {
    pub messages: Vec<MessageOut>,
    /// Only when another page exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_links: Option<Vec<MessageLinkOut>>,
}

pub(super) fn view(m: UserMessage, base: &str, project: &ProjectId) -> MessageOut {
    let id = m.id.as_hyphenated().to_string();
    MessageOut {
        links: vec![
            MessageLinkOut {
                rel: "self".into(),
                href: format!("{base}/v3/{project}/messages/{id}"),
            },
            MessageLinkOut {
                rel: "bookmark".into(),
                href: format!("{base}/{project}/messages/{id}"),
            },
        ],
        id,
        event_id: m.event_id,
        user_message: m.user_message,
        message_level: m.message_level,
        resource_type: m.resource_type.filter(|s| !s.is_empty()),
        resource_uuid: m.resource_uuid.filter(|s| !s.is_empty()),
        created_at: timestamps::cinder(m.created_at),
        guaranteed_until: timestamps::cinder(m.guaranteed_until),
        request_id: m.request_id,
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;

    #[test]
    fn dates_have_microseconds_and_no_offset() {
        let d =
            Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(7);
        assert_eq!(timestamps::cinder(d), "2026-01-02T03:04:05.000007");
    }
}
