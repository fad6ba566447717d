//! The 3.5+ list engine: Cinder's `limit`/`marker`/`offset` paging, `sort` (or the
//! deprecated `sort_key`/`sort_dir`) and the message filters, applied to a project's
//! messages.

use std::cmp::Ordering;

use axum::{
    extract::{FromRequestParts, Query},
    http::request::Parts,
};

use crate::{domain::timestamps, error::CinderError, store::user_messages::UserMessage};

/// Default and largest page (Cinder's `osapi_max_limit`).
const MAX_LIMIT: usize = 1000;
/// Query keys that are not filters. `all_tenants` is ignored as Cinder does
/// (cinderclient's find sends it); the list stays scoped to one project.
const RESERVED_KEYS: [&str; 7] = [
    "limit",
    "marker",
    "offset",
    "sort",
    "sort_key",
    "sort_dir",
    "all_tenants",
];

/// A message field usable as a sort key or filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Id,
    EventId,
    UserMessage,
    MessageLevel,
    ResourceType,
    ResourceUuid,
    CreatedAt,
    GuaranteedUntil,
    RequestId,
}

impl Field {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "id" => Self::Id,
            "event_id" => Self::EventId,
            "user_message" => Self::UserMessage,
            "message_level" => Self::MessageLevel,
            "resource_type" => Self::ResourceType,
            "resource_uuid" => Self::ResourceUuid,
            "created_at" => Self::CreatedAt,
            "guaranteed_until" => Self::GuaranteedUntil,
            "request_id" => Self::RequestId,
            _ => return None,
        })
    }

    /// Filters a non-admin may use (Cinder's resource_filters for `message`).
    fn is_filter(self) -> bool {
        matches!(
            self,
            Self::ResourceUuid
                | Self::ResourceType
                | Self::EventId
                | Self::RequestId
                | Self::MessageLevel
        )
    }

    fn text(self, m: &UserMessage) -> Option<String> {
        Some(match self {
            Self::Id => m.id.as_hyphenated().to_string(),
            Self::EventId => m.event_id.clone(),
            Self::UserMessage => m.user_message.clone(),
            Self::MessageLevel => m.message_level.clone(),
            Self::ResourceType => m.resource_type.clone()?,
            Self::ResourceUuid => m.resource_uuid.clone()?,
            Self::CreatedAt => timestamps::cinder(m.created_at),
            Self::GuaranteedUntil => timestamps::cinder(m.guaranteed_until),
            Self::RequestId => m.request_id.clone(),
        })
    }

    fn cmp(self, a: &UserMessage, b: &UserMessage) -> Ordering {
        match self {
            Self::CreatedAt => a.created_at.cmp(&b.created_at),
            Self::GuaranteedUntil => a.guaranteed_until.cmp(&b.guaranteed_until),
            Self::Id => a.id.cmp(&b.id),
            // A missing value sorts first, as NULL does in Cinder's database.
            _ => self.text(a).cmp(&self.text(b)),
        }
    }
}

/// A validated 3.5+ list query.
#[derive(Debug, PartialEq)]
pub(super) struct ListParams {
    limit: usize,
    marker: Option<String>,
    offset: usize,
    /// Sort keys with `true` for ascending; `created_at` and `id` end every list.
    sort: Vec<(Field, bool)>,
    filters: Vec<(Field, String)>,
}

impl Default for ListParams {
    fn default() -> Self {
        Self {
            limit: MAX_LIMIT,
            marker: None,
            offset: 0,
            sort: vec![(Field::CreatedAt, false), (Field::Id, false)],
            filters: Vec::new(),
        }
    }
}

fn parse_direction(d: &str) -> Result<bool, CinderError> {
    match d.trim().to_ascii_lowercase().as_str() {
        "" | "desc" => Ok(false),
        "asc" => Ok(true),
        _ => Err(CinderError::bad_request(
            "Invalid input received: Unknown sort direction, must be 'desc' or 'asc'.",
        )),
    }
}

fn parse_sort_key(k: &str) -> Result<Field, CinderError> {
    Field::parse(k.trim()).ok_or_else(|| {
        CinderError::bad_request(format!("Invalid input received: Invalid sort key {k}."))
    })
}

/// The trimmed value of the first `key` in the query.
fn get<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.trim())
}

impl ListParams {
    /// Cinder's rules for `limit`, `marker`, `offset`, `sort`/`sort_key`/`sort_dir` and
    /// the message filters (unknown filters: 400 for non-admins, ignored for admins).
    pub(super) fn parse(pairs: &[(String, String)], is_admin: bool) -> Result<Self, CinderError> {
        let mut p = Self::default();
        p.parse_paging(pairs)?;
        p.parse_sort(pairs)?;
        p.parse_filters(pairs, is_admin)?;
        Ok(p)
    }

    /// `limit` (capped at [`MAX_LIMIT`]), `marker` and `offset`.
    fn parse_paging(&mut self, pairs: &[(String, String)]) -> Result<(), CinderError> {
        if let Some(l) = get(pairs, "limit") {
            let n: i64 = l
                .parse()
                .map_err(|_| CinderError::bad_request("limit param must be an integer"))?;
            if n < 0 {
                return Err(CinderError::bad_request("limit param must be positive"));
            }
            self.limit = usize::try_from(n).unwrap_or(MAX_LIMIT).min(MAX_LIMIT);
        }
        self.marker = get(pairs, "marker").map(str::to_owned);
        if let Some(o) = get(pairs, "offset") {
            let n: i64 = o
                .parse()
                .map_err(|_| CinderError::bad_request("offset must be an integer."))?;
            self.offset =
                usize::try_from(n).map_err(|_| CinderError::bad_request("offset must be >= 0."))?;
        }
        Ok(())
    }

    /// `sort`, or the deprecated `sort_key`/`sort_dir` (never both); `created_at` and `id`
    /// are appended as tie-breakers in the first key's direction.
    fn parse_sort(&mut self, pairs: &[(String, String)]) -> Result<(), CinderError> {
        let (sort, key, dir) = (
            get(pairs, "sort"),
            get(pairs, "sort_key"),
            get(pairs, "sort_dir"),
        );
        let mut keys: Vec<(Field, bool)> = Vec::new();
        if let Some(sort) = sort {
            if key.is_some() || dir.is_some() {
                return Err(CinderError::bad_request(
                    "The 'sort_key' and 'sort_dir' parameters are deprecated and cannot be used with the 'sort' parameter.",
                ));
            }
            for item in sort.split(',') {
                let (k, d) = item.split_once(':').unwrap_or((item, ""));
                keys.push((parse_sort_key(k)?, parse_direction(d)?));
            }
        } else if key.is_some() || dir.is_some() {
            keys.push((
                parse_sort_key(key.unwrap_or("created_at"))?,
                parse_direction(dir.unwrap_or("desc"))?,
            ));
        }
        if !keys.is_empty() {
            let first_dir = keys[0].1;
            for tie in [Field::CreatedAt, Field::Id] {
                if !keys.iter().any(|(f, _)| *f == tie) {
                    keys.push((tie, first_dir));
                }
            }
            self.sort = keys;
        }
        Ok(())
    }

    /// Every other key is a filter; unknown ones are 400 unless the caller is an admin.
    fn parse_filters(
        &mut self,
        pairs: &[(String, String)],
        is_admin: bool,
    ) -> Result<(), CinderError> {
        let mut invalid = Vec::new();
        for (k, v) in pairs {
            if RESERVED_KEYS.contains(&k.as_str()) {
                continue;
            }
            match Field::parse(k).filter(|f| f.is_filter()) {
                Some(f) => self.filters.push((f, v.clone())),
                None if is_admin => {}
                None => invalid.push(k.as_str()),
            }
        }
        if !invalid.is_empty() {
            return Err(CinderError::bad_request(format!(
                "Invalid filters {} are found in query options.",
                invalid.join(",")
            )));
        }
        Ok(())
    }

    fn order(&self, a: &UserMessage, b: &UserMessage) -> Ordering {
        for (field, asc) in &self.sort {
            let o = field.cmp(a, b);
            let o = if *asc { o } else { o.reverse() };
            if o != Ordering::Equal {
                return o;
            }
        }
        Ordering::Equal
    }

    fn matches(&self, m: &UserMessage) -> bool {
        self.filters
            .iter()
            .all(|(f, v)| f.text(m).as_deref() == Some(v.as_str()))
    }

    /// Filters, sorts and cuts one page; also says whether another page follows.
    pub(super) fn page(
        &self,
        all: Vec<UserMessage>,
    ) -> Result<(Vec<UserMessage>, bool), CinderError> {
        let marker = match &self.marker {
            None => None,
            Some(id) => Some(
                all.iter()
                    .find(|m| m.id.as_hyphenated().to_string() == *id)
                    .cloned()
                    .ok_or_else(|| {
                        CinderError::not_found(format!("Marker {id} could not be found."))
                    })?,
            ),
        };
        let mut list: Vec<UserMessage> = all
            .into_iter()
            .filter(|m| self.matches(m))
            .filter(|m| {
                marker
                    .as_ref()
                    .is_none_or(|mk| self.order(m, mk) == Ordering::Greater)
            })
            .collect();
        list.sort_by(|a, b| self.order(a, b));
        let rest: Vec<UserMessage> = list.into_iter().skip(self.offset).collect();
        let more = rest.len() > self.limit;
        Ok((rest.into_iter().take(self.limit).collect(), more))
    }
}

/// The query string as pairs, rejected in Cinder's shape when malformed.
pub struct CinderQuery(pub Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for CinderQuery {
    type Rejection = CinderError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, CinderError> {
        Query::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| Self(q))
            .map_err(|e| CinderError::bad_request(format!("Malformed query string: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use axum::http::StatusCode;
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    fn pairs(q: &[(&str, &str)]) -> Vec<(String, String)> {
        q.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn list_parameters_follow_cinders_rules() {
        let p = ListParams::parse(&pairs(&[]), false).unwrap();
        assert_eq!(p, ListParams::default());

        let p = ListParams::parse(
            &pairs(&[
                ("limit", "5000"),
                ("offset", "2"),
                ("marker", "m"),
                ("event_id", "E"),
            ]),
            false,
        )
        .unwrap();
        assert_eq!(p.limit, MAX_LIMIT, "capped");
        assert_eq!(p.offset, 2);
        assert_eq!(p.marker.as_deref(), Some("m"));
        assert_eq!(p.filters, vec![(Field::EventId, "E".to_owned())]);

        let p = ListParams::parse(&pairs(&[("sort", "event_id:asc,created_at")]), false).unwrap();
        assert_eq!(
            p.sort,
            vec![
                (Field::EventId, true),
                (Field::CreatedAt, false),
                (Field::Id, true)
            ]
        );
        let p = ListParams::parse(&pairs(&[("sort_key", "request_id")]), false).unwrap();
        assert_eq!(p.sort[0], (Field::RequestId, false));

        for bad in [
            vec![("limit", "x")],
            vec![("limit", "-1")],
            vec![("offset", "-3")],
            vec![("sort", "nope")],
            vec![("sort", "created_at:up")],
            vec![("sort", "id"), ("sort_key", "id")],
            vec![("sort_dir", "sideways")],
            vec![("project_id", "p")],
        ] {
            let err = ListParams::parse(&pairs(&bad), false).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{bad:?}");
        }
        let err = ListParams::parse(&pairs(&[("foo", "1"), ("bar", "2")]), false).unwrap_err();
        assert_eq!(
            err.message,
            "Invalid filters foo,bar are found in query options."
        );
        assert!(
            ListParams::parse(&pairs(&[("foo", "1")]), true).is_ok(),
            "admins may pass other filters"
        );
    }

    fn message(n: u8, event: &str) -> UserMessage {
        let created = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, n.into()).unwrap();
        UserMessage {
            id: Uuid::from_bytes([n; 16]),
            project_id: "p".into(),
            event_id: event.into(),
            user_message: "m".into(),
            message_level: "ERROR".into(),
            resource_type: Some("SUBSCRIPTION".into()),
            resource_uuid: None,
            request_id: format!("req-{n}"),
            created_at: created,
            guaranteed_until: created + chrono::Duration::days(30),
        }
    }

    #[test]
    fn pages_follow_the_sort_order_the_marker_and_the_offset() {
        let all: Vec<UserMessage> = (1..=5).map(|n| message(n, "E")).collect();
        let ids = |v: &[UserMessage]| v.iter().map(|m| m.id.as_bytes()[0]).collect::<Vec<_>>();

        let p = ListParams::parse(&pairs(&[("limit", "2")]), false).unwrap();
        let (page, more) = p.page(all.clone()).unwrap();
        assert_eq!(ids(&page), vec![5, 4], "newest first by default");
        assert!(more);

        let marker = Uuid::from_bytes([4; 16]).to_string();
        let p = ListParams::parse(
            &pairs(&[("limit", "2"), ("marker", &marker), ("offset", "1")]),
            false,
        )
        .unwrap();
        let (page, more) = p.page(all.clone()).unwrap();
        assert_eq!(ids(&page), vec![2, 1]);
        assert!(!more);

        let p = ListParams::parse(&pairs(&[("sort", "created_at:asc"), ("limit", "5")]), false)
            .unwrap();
        let (page, more) = p.page(all.clone()).unwrap();
        assert_eq!(ids(&page), vec![1, 2, 3, 4, 5]);
        assert!(!more, "exactly one full page: no next link");

        let p = ListParams::parse(&pairs(&[("marker", "unknown")]), false).unwrap();
        assert_eq!(
            p.page(all).unwrap_err().status,
            StatusCode::NOT_FOUND,
            "unknown marker"
        );
    }
}
