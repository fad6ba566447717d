//! The permitted user messages catalog: the only texts a user message may carry.
//!
//! A catalog is a TOML file with two kinds of entries:
//!
//! ```toml
//! # One event, one vetted text.
//! [[event]]
//! id = "HERALD_SUBSCRIPTION_001_001"
//! message = "Delivery to the subscription failed: the subscriber rejected the message."
//! level = "ERROR"                 # ERROR | WARNING | INFO
//! resource_type = "SUBSCRIPTION"
//!
//! # Cinder's scheme: an action table crossed with a detail table. The event id is
//! # "{prefix}_{resource_type}_{action_id}_{detail_id}" and the text "{action}:{detail}".
//! [[table]]
//! prefix = "VOLUME"
//! level = "ERROR"
//! resource_types = ["VOLUME", "VOLUME_SNAPSHOT"]
//! [table.actions]
//! "001" = "schedule allocate volume"
//! [table.details]
//! "001" = "An unknown error occurred."
//! ```
//!
//! Herald's built-in events ([`BUILTIN`]) are always present; an operator's file
//! (`HERALD_CATALOG`) adds to them and may reword them. Every error names the file line.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

use serde::Deserialize;
use toml::Spanned;

/// Longest accepted catalog text (Cinder stores user messages in a 255-character column
/// after composition; Herald allows room for longer vetted sentences).
pub const MAX_TEXT_CHARS: usize = 1024;
/// Longest event id and resource type name.
pub const MAX_NAME_CHARS: usize = 255;

/// Herald's own events, on the `SUBSCRIPTION` resource (the delivery engine creates them).
pub const BUILTIN: &str = r#"
[[event]]
id = "HERALD_SUBSCRIPTION_001_001"
message = "deliver message:The subscriber rejected the message; it will not be retried."
level = "ERROR"
resource_type = "SUBSCRIPTION"

[[event]]
id = "HERALD_SUBSCRIPTION_001_002"
message = "deliver message:The message could not be delivered after all retries."
level = "ERROR"
resource_type = "SUBSCRIPTION"

[[event]]
id = "HERALD_SUBSCRIPTION_001_006"
message = "deliver message:The Keystone trust of this trust+ subscription no longer works (revoked, deleted, or its user disabled), so Herald cannot act for the subscriber; create the subscription again."
level = "ERROR"
resource_type = "SUBSCRIPTION"

[[event]]
id = "HERALD_SUBSCRIPTION_001_007"
message = "deliver message:Herald's outbound policy does not allow sending to this subscriber's address, so the message was not sent; change the subscriber or ask the operator."
level = "ERROR"
resource_type = "SUBSCRIPTION"

[[event]]
id = "HERALD_SUBSCRIPTION_002_003"
message = "expire subscription:The subscription reached its time to live and was removed."
level = "WARNING"
resource_type = "SUBSCRIPTION"

[[event]]
id = "HERALD_SUBSCRIPTION_003_004"
message = "confirm subscription:The subscription was never confirmed by its subscriber."
level = "WARNING"
resource_type = "SUBSCRIPTION"

[[event]]
id = "HERALD_SUBSCRIPTION_004_005"
message = "disable subscription:Every delivery attempt failed for too long, so the subscription was disabled; its messages wait until they expire. Fix the subscriber, then enable it again (options.enabled = true)."
level = "ERROR"
resource_type = "SUBSCRIPTION"
"#;

/// Delivery rejected by the subscriber (a permanent failure).
pub const EVENT_DELIVERY_REJECTED: &str = "HERALD_SUBSCRIPTION_001_001";
/// Delivery retries exhausted.
pub const EVENT_DELIVERY_RETRIES_EXHAUSTED: &str = "HERALD_SUBSCRIPTION_001_002";
/// The Keystone trust of a `trust+` subscription stopped working (a permanent failure).
pub const EVENT_DELIVERY_TRUST_GONE: &str = "HERALD_SUBSCRIPTION_001_006";
/// Delivery refused by Herald's own outbound policy, not by the subscriber.
pub const EVENT_DELIVERY_REFUSED_BY_POLICY: &str = "HERALD_SUBSCRIPTION_001_007";
/// Subscription expired.
pub const EVENT_SUBSCRIPTION_EXPIRED: &str = "HERALD_SUBSCRIPTION_002_003";
/// Confirmation never completed.
pub const EVENT_CONFIRMATION_NEVER_COMPLETED: &str = "HERALD_SUBSCRIPTION_003_004";
/// Auto-disabled after failing for `disable_after`.
pub const EVENT_SUBSCRIPTION_DISABLED: &str = "HERALD_SUBSCRIPTION_004_005";

/// Severity of a user message, as Cinder's `message_level`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl Level {
    /// Case-insensitive `ERROR`, `WARNING` or `INFO`.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "ERROR" => Some(Self::Error),
            "WARNING" => Some(Self::Warning),
            "INFO" => Some(Self::Info),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Warning => "WARNING",
            Self::Info => "INFO",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an event id stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub message: String,
    pub level: Level,
    pub resource_type: String,
}

/// One action × detail table (Cinder's scheme).
#[derive(Debug, Clone)]
struct Table {
    prefix: String,
    level: Level,
    resource_types: Vec<String>,
    actions: BTreeMap<String, String>,
    details: BTreeMap<String, String>,
}

/// The permitted messages. Immutable once loaded; shared behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    events: HashMap<String, Entry>,
    tables: Vec<Table>,
}

/// A catalog that cannot be used; start-up stops with this message.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read the user messages catalog {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid user messages catalog {path}, line {line}: {reason}")]
    Invalid {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    event: Vec<RawEvent>,
    #[serde(default)]
    table: Vec<RawTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEvent {
    id: Spanned<String>,
    message: Spanned<String>,
    #[serde(default)]
    level: Option<Spanned<String>>,
    resource_type: Spanned<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    prefix: Spanned<String>,
    #[serde(default)]
    level: Option<Spanned<String>>,
    resource_types: Spanned<Vec<Spanned<String>>>,
    actions: Spanned<BTreeMap<String, Spanned<String>>>,
    details: Spanned<BTreeMap<String, Spanned<String>>>,
}

/// A problem at a byte range of the file (turned into a line by the caller).
struct At(Range<usize>, String);

fn at<T>(s: &Spanned<T>, reason: impl Into<String>) -> At {
    At(s.span(), reason.into())
}

/// `[A-Z][A-Z0-9_]*`, at most [`MAX_NAME_CHARS`].
fn is_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_uppercase())
        && s.len() <= MAX_NAME_CHARS
        && bytes.all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

fn is_table_id(s: &str) -> bool {
    s.len() == 3 && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_text(s: &Spanned<String>, what: &str) -> Result<String, At> {
    let text = s.get_ref().trim();
    if text.is_empty() {
        return Err(at(s, format!("{what} must not be empty")));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(at(
            s,
            format!("{what} is longer than {MAX_TEXT_CHARS} characters"),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(at(s, format!("{what} must not contain control characters")));
    }
    Ok(text.to_owned())
}

fn check_level(level: &Option<Spanned<String>>) -> Result<Level, At> {
    match level {
        None => Ok(Level::Error),
        Some(l) => {
            Level::parse(l.get_ref()).ok_or_else(|| at(l, "level must be ERROR, WARNING or INFO"))
        }
    }
}

fn check_name(s: &Spanned<String>, what: &str) -> Result<String, At> {
    if is_name(s.get_ref()) {
        Ok(s.get_ref().clone())
    } else {
        Err(at(
            s,
            format!(
                "{what} {:?} must match [A-Z][A-Z0-9_]{{0,254}}",
                s.get_ref()
            ),
        ))
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|b| **b == b'\n')
        .count()
        + 1
}

impl Catalog {
    /// Herald's built-in events only.
    pub fn builtin() -> Self {
        Self::parse(BUILTIN, Path::new("<built-in>")).expect("the built-in catalog is valid")
    }

    /// The built-in catalog, extended (and possibly reworded) by the file at `path`.
    ///
    /// # Errors
    /// The file cannot be read, is not valid TOML, or breaks a rule; the error names the line.
    pub fn load(path: Option<&Path>) -> Result<Self, CatalogError> {
        let mut catalog = Self::builtin();
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| CatalogError::Read {
                path: path.to_owned(),
                source,
            })?;
            catalog.extend(Self::parse(&text, path)?);
        }
        Ok(catalog)
    }

    /// Parses one catalog file's text; `path` only names it in errors.
    ///
    /// # Errors
    /// [`CatalogError::Invalid`] with the line of the first problem.
    pub fn parse(text: &str, path: &Path) -> Result<Self, CatalogError> {
        let invalid = |range: Option<Range<usize>>, reason: String| CatalogError::Invalid {
            path: path.to_owned(),
            line: range.map_or(1, |r| line_of(text, r.start)),
            reason,
        };
        let raw: RawFile =
            toml::from_str(text).map_err(|e| invalid(e.span(), e.message().to_owned()))?;
        Self::from_raw(raw).map_err(|At(range, reason)| invalid(Some(range), reason))
    }

    fn from_raw(raw: RawFile) -> Result<Self, At> {
        let mut events = HashMap::new();
        for e in raw.event {
            let id = check_name(&e.id, "event id")?;
            let entry = Entry {
                message: check_text(&e.message, "message")?,
                level: check_level(&e.level)?,
                resource_type: check_name(&e.resource_type, "resource_type")?,
            };
            if events.insert(id.clone(), entry).is_some() {
                return Err(at(&e.id, format!("event id {id} is defined twice")));
            }
        }
        let mut tables: Vec<Table> = Vec::new();
        for t in raw.table {
            let prefix = t.prefix.get_ref();
            if prefix.is_empty()
                || prefix.len() > 32
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
            {
                return Err(at(&t.prefix, "prefix must match [A-Z0-9]{1,32}"));
            }
            if tables.iter().any(|x| &x.prefix == prefix) {
                return Err(at(
                    &t.prefix,
                    format!("table prefix {prefix} is used twice"),
                ));
            }
            if t.resource_types.get_ref().is_empty() {
                return Err(at(&t.resource_types, "resource_types must not be empty"));
            }
            let resource_types = t
                .resource_types
                .get_ref()
                .iter()
                .map(|r| check_name(r, "resource_type"))
                .collect::<Result<Vec<_>, _>>()?;
            let ids = |m: &Spanned<BTreeMap<String, Spanned<String>>>, what: &str| {
                if m.get_ref().is_empty() {
                    return Err(at(m, format!("{what} must not be empty")));
                }
                m.get_ref()
                    .iter()
                    .map(|(k, v)| {
                        if !is_table_id(k) {
                            return Err(at(
                                v,
                                format!("{what} id {k:?} must be three digits, like \"001\""),
                            ));
                        }
                        Ok((k.clone(), check_text(v, what)?))
                    })
                    .collect::<Result<BTreeMap<_, _>, _>>()
            };
            tables.push(Table {
                prefix: prefix.clone(),
                level: check_level(&t.level)?,
                resource_types,
                actions: ids(&t.actions, "action")?,
                details: ids(&t.details, "detail")?,
            });
        }
        Ok(Self { events, tables })
    }

    /// Adds `other`'s entries; on the same event id or table prefix, `other` wins.
    pub fn extend(&mut self, other: Catalog) {
        self.events.extend(other.events);
        for table in other.tables {
            self.tables.retain(|t| t.prefix != table.prefix);
            self.tables.push(table);
        }
    }

    /// The entry for `event_id`: an explicit event, else a table composition.
    pub fn lookup(&self, event_id: &str) -> Option<Entry> {
        if let Some(e) = self.events.get(event_id) {
            return Some(e.clone());
        }
        // "{prefix}_{resource_type}_{action}_{detail}"; the resource type may hold '_'.
        let mut parts = event_id.rsplitn(3, '_');
        let detail = parts.next()?;
        let action = parts.next()?;
        let (prefix, resource_type) = parts.next()?.split_once('_')?;
        self.compose(prefix, resource_type, action, detail)
            .map(|(_, entry)| entry)
    }

    /// Cinder's `(resource_type, action_id, detail_id)` form; the first table listing the
    /// resource type answers. Returns the composed event id and its entry.
    pub fn compose_any(
        &self,
        resource_type: &str,
        action_id: &str,
        detail_id: &str,
    ) -> Option<(String, Entry)> {
        self.tables.iter().find_map(|t| {
            self.compose(&t.prefix, resource_type, action_id, detail_id)
                .filter(|_| t.resource_types.iter().any(|r| r == resource_type))
        })
    }

    fn compose(
        &self,
        prefix: &str,
        resource_type: &str,
        action_id: &str,
        detail_id: &str,
    ) -> Option<(String, Entry)> {
        let table = self.tables.iter().find(|t| t.prefix == prefix)?;
        if !table.resource_types.iter().any(|r| r == resource_type) {
            return None;
        }
        let action = table.actions.get(action_id)?;
        let detail = table.details.get(detail_id)?;
        Some((
            format!("{prefix}_{resource_type}_{action_id}_{detail_id}"),
            Entry {
                message: format!("{action}:{detail}"),
                level: table.level,
                resource_type: resource_type.to_owned(),
            },
        ))
    }

    /// Number of explicit events plus composable table events.
    pub fn len(&self) -> usize {
        self.events.len()
            + self
                .tables
                .iter()
                .map(|t| t.resource_types.len() * t.actions.len() * t.details.len())
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CINDER_STYLE: &str = r#"
[[event]]
id = "BILLING_INVOICE_001_001"
message = "charge invoice:The card was declined."
level = "warning"
resource_type = "INVOICE"

[[table]]
prefix = "VOLUME"
resource_types = ["VOLUME", "VOLUME_SNAPSHOT"]

[table.actions]
"001" = "schedule allocate volume"
"002" = "attach volume"

[table.details]
"001" = "An unknown error occurred."
"006" = "Not enough quota resource for operation."
"#;

    fn parse(text: &str) -> Result<Catalog, CatalogError> {
        Catalog::parse(text, Path::new("catalog.toml"))
    }

    fn error_line(text: &str) -> (usize, String) {
        match parse(text).unwrap_err() {
            CatalogError::Invalid { line, reason, .. } => (line, reason),
            other => panic!("unexpected error {other}"),
        }
    }

    #[test]
    fn the_built_in_catalog_has_heralds_subscription_events() {
        let c = Catalog::builtin();
        for id in [
            EVENT_DELIVERY_REJECTED,
            EVENT_DELIVERY_RETRIES_EXHAUSTED,
            EVENT_DELIVERY_REFUSED_BY_POLICY,
            EVENT_DELIVERY_TRUST_GONE,
            EVENT_SUBSCRIPTION_EXPIRED,
            EVENT_CONFIRMATION_NEVER_COMPLETED,
        ] {
            let e = c.lookup(id).unwrap_or_else(|| panic!("{id} is built in"));
            assert_eq!(e.resource_type, "SUBSCRIPTION");
        }
        assert!(c.lookup("HERALD_SUBSCRIPTION_009_009").is_none());
    }

    #[test]
    fn cinder_tables_compose_event_ids_and_texts() {
        let c = parse(CINDER_STYLE).unwrap();
        let e = c.lookup("VOLUME_VOLUME_SNAPSHOT_002_006").unwrap();
        assert_eq!(
            e.message,
            "attach volume:Not enough quota resource for operation."
        );
        assert_eq!(e.resource_type, "VOLUME_SNAPSHOT");
        assert_eq!(e.level, Level::Error);
        let (id, e) = c.compose_any("VOLUME", "001", "001").unwrap();
        assert_eq!(id, "VOLUME_VOLUME_001_001");
        assert_eq!(
            e.message,
            "schedule allocate volume:An unknown error occurred."
        );
        assert!(c.lookup("VOLUME_BACKUP_001_001").is_none(), "unlisted type");
        assert!(
            c.lookup("VOLUME_VOLUME_003_001").is_none(),
            "unknown action"
        );
        assert!(c.compose_any("VOLUME", "001", "999").is_none());
        assert_eq!(
            c.lookup("BILLING_INVOICE_001_001").unwrap().level,
            Level::Warning
        );
        assert_eq!(c.len(), 1 + 2 * 2 * 2);
    }

    #[test]
    fn an_operator_file_extends_and_rewords_the_built_in_catalog() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            f.path(),
            format!(
                "{CINDER_STYLE}\n[[event]]\nid = \"{EVENT_SUBSCRIPTION_EXPIRED}\"\nmessage = \"expired:Gone.\"\nresource_type = \"SUBSCRIPTION\"\n"
            ),
        )
        .unwrap();
        let c = Catalog::load(Some(f.path())).unwrap();
        assert_eq!(
            c.lookup(EVENT_SUBSCRIPTION_EXPIRED).unwrap().message,
            "expired:Gone."
        );
        assert!(c.lookup(EVENT_DELIVERY_REJECTED).is_some());
        assert!(c.lookup("VOLUME_VOLUME_001_001").is_some());
    }

    #[test]
    fn toml_syntax_errors_name_the_line() {
        let (line, _) = error_line("[[event]]\nid = \"A\"\nmessage = \"x\nresource_type = \"B\"\n");
        assert_eq!(line, 3);
    }

    #[test]
    fn rule_violations_name_the_line_of_the_offending_value() {
        let (line, reason) = error_line(
            "[[event]]\nid = \"OK_1\"\nmessage = \"fine\"\nresource_type = \"X\"\n\n[[event]]\nid = \"bad id\"\nmessage = \"m\"\nresource_type = \"X\"\n",
        );
        assert_eq!(line, 7);
        assert!(reason.contains("event id"), "{reason}");

        let (line, reason) = error_line(
            "[[event]]\nid = \"A\"\nmessage = \"m\"\nlevel = \"LOUD\"\nresource_type = \"X\"\n",
        );
        assert_eq!(line, 4);
        assert!(reason.contains("level"), "{reason}");

        let (line, reason) = error_line(
            "[[event]]\nid = \"A\"\nmessage = \"m\"\nresource_type = \"X\"\n[[event]]\nid = \"A\"\nmessage = \"n\"\nresource_type = \"X\"\n",
        );
        assert_eq!(line, 6);
        assert!(reason.contains("twice"), "{reason}");

        let (line, reason) = error_line(
            "[[table]]\nprefix = \"VOLUME\"\nresource_types = [\"VOLUME\"]\n[table.actions]\n\"1\" = \"attach\"\n[table.details]\n\"001\" = \"x\"\n",
        );
        assert_eq!(line, 5);
        assert!(reason.contains("three digits"), "{reason}");

        let (line, reason) =
            error_line("[[event]]\nid = \"A\"\nmessage = \"   \"\nresource_type = \"X\"\n");
        assert_eq!(line, 3);
        assert!(reason.contains("empty"), "{reason}");
    }

    #[test]
    fn unknown_keys_and_missing_fields_are_refused() {
        let (line, reason) = error_line("[[event]]\nid = \"A\"\nmesage = \"m\"\n");
        assert!(reason.contains("mesage"), "{reason}");
        assert_eq!(line, 3);
        let (_, reason) = error_line("[[event]]\nid = \"A\"\nresource_type = \"X\"\n");
        assert!(reason.contains("message"), "{reason}");
    }

    #[test]
    fn an_unreadable_file_is_a_read_error() {
        let err = Catalog::load(Some(Path::new("/nonexistent/catalog.toml"))).unwrap_err();
        assert!(matches!(err, CatalogError::Read { .. }));
        assert!(err.to_string().contains("/nonexistent/catalog.toml"));
    }
}
