//! Subscription filter policies with AWS SNS semantics, compiled once per subscription.
//!
//! A policy is a JSON object: its keys are ANDed, the list under a key is ORed, `$or` takes
//! a list of alternative sub-policies. A condition is a literal (string, number, `null`) or
//! one operator object: `prefix`, `suffix`, `equals-ignore-case`, `anything-but` (a value,
//! a list, or `{"prefix"|"suffix"|"equals-ignore-case": …}`), `numeric` (comparisons and
//! ranges), `exists` and `cidr`. With the `MessageAttributes` scope keys name message
//! attributes; with `MessageBody` they are paths into the JSON body (nested objects).
//!
//! Matching a message costs O(keys): the policy is compiled into [`FilterPolicy`] when the
//! subscription's worker starts, never re-parsed per message.

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde_json::{Map, Value};

use super::Invalid;

/// The one `(operator, argument)` of an operator object such as `{"prefix": "a"}`.
fn single(op: &Map<String, Value>) -> Option<(&String, &Value)> {
    let mut entries = op.iter();
    match (entries.next(), entries.next()) {
        (Some(entry), None) => Some(entry),
        _ => None,
    }
}

/// SNS's limits (filter policy constraints).
const MAX_KEYS: usize = 5;
const MAX_COMBINATIONS: usize = 150;
const MAX_POLICY_BYTES: usize = 256 * 1024;
/// SNS accepts numbers in this range in `numeric` conditions and numeric literals.
const MAX_NUMBER: f64 = 1e9;

/// Most attributes on one message.
pub const MAX_ATTRIBUTES: usize = 10;
/// Header prefix native publishers use for attributes: `Herald-Attr-{name}`.
pub const ATTRIBUTE_HEADER_PREFIX: &str = "Herald-Attr-";
const MAX_ATTRIBUTE_NAME: usize = 128;
const MAX_ATTRIBUTE_ITEMS: usize = 100;
const MAX_ATTRIBUTE_VALUE_BYTES: usize = 4096;

/// What a policy looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scope {
    #[default]
    MessageAttributes,
    MessageBody,
}

impl Scope {
    /// Parses `options.filter_policy_scope`.
    ///
    /// # Errors
    /// Anything but the two SNS names.
    pub fn parse(v: Option<&Value>) -> Result<Self, Invalid> {
        match v {
            None => Ok(Self::MessageAttributes),
            Some(Value::String(s)) if s == "MessageAttributes" => Ok(Self::MessageAttributes),
            Some(Value::String(s)) if s == "MessageBody" => Ok(Self::MessageBody),
            Some(_) => Err(Invalid::new(
                "options.filter_policy_scope must be \"MessageAttributes\" or \"MessageBody\".",
            )),
        }
    }
}

/// One attribute value: a string, a number or a list of them (SNS `String.Array`).
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    String(String),
    /// Kept as sent, so `5` reaches subscribers as `5`, not `5.0`.
    Number(serde_json::Number),
    Array(Vec<Value>),
}

impl AttributeValue {
    fn to_json(&self) -> Value {
        match self {
            Self::String(s) => Value::String(s.clone()),
            Self::Number(n) => Value::Number(n.clone()),
            Self::Array(a) => Value::Array(a.clone()),
        }
    }

    /// How the value travels in a `Herald-Attr-*` header: JSON, so types survive.
    pub fn header_value(&self) -> String {
        self.to_json().to_string()
    }

    /// Reads a header value: JSON (a string literal, number or list) when it parses as
    /// such, otherwise the raw text as a string, so `Herald-Attr-color: red` works.
    pub fn from_header(raw: &str) -> Self {
        match serde_json::from_str::<Value>(raw) {
            Ok(Value::String(s)) => Self::String(s),
            Ok(Value::Number(n)) if n.as_f64().is_some_and(f64::is_finite) => Self::Number(n),
            Ok(Value::Array(a)) if a.iter().all(|v| v.is_string() || v.is_number()) => {
                Self::Array(a)
            }
            _ => Self::String(raw.to_owned()),
        }
    }

    fn values(&self) -> Vec<Value> {
        match self {
            Self::Array(a) => a.clone(),
            v => vec![v.to_json()],
        }
    }
}

/// A message's attributes, validated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Attributes(pub BTreeMap<String, AttributeValue>);

impl Attributes {
    /// Parses the `attributes` object of a published message.
    ///
    /// # Errors
    /// Too many names, a bad name, or a value that is not a string, a number or a list of
    /// them; the message names the attribute.
    pub fn parse(v: &Value) -> Result<Self, Invalid> {
        let map = v
            .as_object()
            .ok_or_else(|| Invalid::new("attributes must be a JSON object."))?;
        if map.len() > MAX_ATTRIBUTES {
            return Err(Invalid::new(format!(
                "A message may carry at most {MAX_ATTRIBUTES} attributes."
            )));
        }
        let mut out = BTreeMap::new();
        for (name, value) in map {
            check_attribute_name(name)?;
            let bad = |why: &str| Invalid::new(format!("Invalid attribute {name:?}: {why}"));
            let value =
                match value {
                    Value::String(s) => AttributeValue::String(s.clone()),
                    Value::Number(n) if n.as_f64().is_some_and(f64::is_finite) => {
                        AttributeValue::Number(n.clone())
                    }
                    Value::Number(_) => return Err(bad("the number is out of range.")),
                    Value::Array(a)
                        if a.len() <= MAX_ATTRIBUTE_ITEMS
                            && a.iter().all(|v| v.is_string() || v.is_number()) =>
                    {
                        AttributeValue::Array(a.clone())
                    }
                    _ => return Err(bad(
                        "expected a string, a number or a list of at most 100 strings and numbers.",
                    )),
                };
            // JSON-encoded (control characters escaped), so any string fits a header.
            if value.header_value().len() > MAX_ATTRIBUTE_VALUE_BYTES {
                return Err(bad("the value must be at most 4096 bytes encoded as JSON."));
            }
            out.insert(name.clone(), value);
        }
        Ok(Self(out))
    }

    /// Attributes from a message's `Herald-Attr-*` headers; unusable ones are left out.
    pub fn from_headers<'a>(headers: impl Iterator<Item = (&'a str, &'a str)>) -> Self {
        let mut out = BTreeMap::new();
        for (name, raw) in headers {
            let Some(attr) = strip_prefix_ignore_case(name, ATTRIBUTE_HEADER_PREFIX) else {
                continue;
            };
            if out.len() < MAX_ATTRIBUTES && check_attribute_name(attr).is_ok() {
                out.insert(attr.to_owned(), AttributeValue::from_header(raw));
            }
        }
        Self(out)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The JSON object subscribers see.
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.0
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn check_attribute_name(name: &str) -> Result<(), Invalid> {
    let ok = !name.is_empty()
        && name.len() <= MAX_ATTRIBUTE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(format!(
            "Invalid attribute name {name:?}: expected 1 to 128 characters of A-Z, a-z, 0-9, '_', '-' and '.'."
        )))
    }
}

/// One compiled condition.
#[derive(Debug, Clone)]
enum Cond {
    Exact(Value),
    Prefix(String),
    Suffix(String),
    EqualsIgnoreCase(String),
    AnythingBut(Vec<Value>),
    AnythingButPrefix(String),
    AnythingButSuffix(String),
    AnythingButIgnoreCase(Vec<String>),
    Numeric(Vec<(Cmp, f64)>),
    Exists(bool),
    Cidr(IpNet),
}

#[derive(Debug, Clone, Copy)]
enum Cmp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
}

/// A key (attribute name or body path) and its ORed conditions.
#[derive(Debug, Clone)]
struct Field {
    path: Vec<String>,
    conds: Vec<Cond>,
}

/// Fields ANDed, and `$or` groups of which one alternative must match each.
#[derive(Debug, Clone, Default)]
struct Conj {
    fields: Vec<Field>,
    ors: Vec<Vec<Conj>>,
}

/// A compiled filter policy.
#[derive(Debug, Clone)]
pub struct FilterPolicy {
    scope: Scope,
    root: Conj,
}

impl FilterPolicy {
    /// Compiles `options.filter_policy` under `scope`.
    ///
    /// # Errors
    /// A policy that breaks SNS's syntax or limits; the message names the rule.
    pub fn compile(policy: &Value, scope: Scope) -> Result<Self, Invalid> {
        if policy.to_string().len() > MAX_POLICY_BYTES {
            return Err(Invalid::new(
                "options.filter_policy is larger than 256 KiB.",
            ));
        }
        let obj = policy
            .as_object()
            .ok_or_else(|| Invalid::new("options.filter_policy must be a JSON object."))?;
        if obj.is_empty() {
            return Err(Invalid::new("options.filter_policy must not be empty."));
        }
        let root = compile_object(obj, &[], scope)?;
        let (keys, combinations) = measure(&root);
        if keys > MAX_KEYS {
            return Err(Invalid::new(format!(
                "options.filter_policy has {keys} keys; at most {MAX_KEYS} are allowed."
            )));
        }
        if combinations > MAX_COMBINATIONS {
            return Err(Invalid::new(format!(
                "options.filter_policy has {combinations} combinations of values; at most {MAX_COMBINATIONS} are allowed."
            )));
        }
        Ok(Self { scope, root })
    }

    /// Compiles the policy in a subscription's options, if it has one.
    ///
    /// # Errors
    /// As [`FilterPolicy::compile`], or a bad scope.
    pub fn from_options(options: &Map<String, Value>) -> Result<Option<Self>, Invalid> {
        let scope = Scope::parse(options.get("filter_policy_scope"))?;
        match options.get("filter_policy") {
            None | Some(Value::Null) => Ok(None),
            Some(p) => Self::compile(p, scope).map(Some),
        }
    }

    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Whether a message with these attributes and this body passes the policy.
    pub fn matches(&self, attributes: &Attributes, body: &[u8]) -> bool {
        match self.scope {
            Scope::MessageAttributes => self.root.matches(&|path: &[String]| {
                path.first()
                    .and_then(|name| attributes.0.get(name))
                    .map(AttributeValue::values)
                    .unwrap_or_default()
            }),
            Scope::MessageBody => {
                let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
                self.root.matches(&|path: &[String]| lookup(&body, path))
            }
        }
    }
}

/// The leaf values at `path`, flattening lists on the way (SNS matches any element).
fn lookup(body: &Value, path: &[String]) -> Vec<Value> {
    let mut current = vec![body];
    for key in path {
        let mut next = Vec::new();
        for v in current {
            match v {
                Value::Object(m) => next.extend(m.get(key)),
                Value::Array(items) => next.extend(
                    items
                        .iter()
                        .filter_map(|i| i.as_object().and_then(|m| m.get(key))),
                ),
                _ => {}
            }
        }
        current = next;
    }
    current
        .into_iter()
        .flat_map(|v| match v {
            Value::Array(items) => items.clone(),
            v => vec![v.clone()],
        })
        .collect()
}

impl Conj {
    fn matches(&self, values_at: &dyn Fn(&[String]) -> Vec<Value>) -> bool {
        self.fields.iter().all(|f| {
            let values = values_at(&f.path);
            f.conds.iter().any(|c| c.matches(&values))
        }) && self
            .ors
            .iter()
            .all(|alternatives| alternatives.iter().any(|c| c.matches(values_at)))
    }
}

/// (keys, combinations) of the worst `$or` expansion, as SNS counts them.
fn measure(c: &Conj) -> (usize, usize) {
    let mut keys = c.fields.len();
    let mut combos: usize = c.fields.iter().map(|f| f.conds.len().max(1)).product();
    for group in &c.ors {
        let (k, n) = group
            .iter()
            .map(measure)
            .fold((0usize, 0usize), |(k, n), (k2, n2)| {
                (k.max(k2), n.saturating_add(n2))
            });
        keys += k;
        combos = combos.saturating_mul(n.max(1));
    }
    (keys, combos)
}

fn compile_object(
    obj: &Map<String, Value>,
    prefix: &[String],
    scope: Scope,
) -> Result<Conj, Invalid> {
    let mut conj = Conj::default();
    for (key, value) in obj {
        if key == "$or" {
            let alternatives = value.as_array().filter(|a| a.len() >= 2).ok_or_else(|| {
                Invalid::new("filter_policy: \"$or\" takes a list of at least two policies.")
            })?;
            let group = alternatives
                .iter()
                .map(|alt| {
                    alt.as_object()
                        .filter(|o| !o.is_empty())
                        .ok_or_else(|| {
                            Invalid::new("filter_policy: each \"$or\" alternative must be a non-empty object.")
                        })
                        .and_then(|o| compile_object(o, prefix, scope))
                })
                .collect::<Result<Vec<_>, _>>()?;
            conj.ors.push(group);
            continue;
        }
        let mut path = prefix.to_vec();
        path.push(key.clone());
        match value {
            Value::Array(conds) => {
                if conds.is_empty() {
                    return Err(Invalid::new(format!(
                        "filter_policy: the list for {key:?} must not be empty."
                    )));
                }
                let conds = conds
                    .iter()
                    .map(|c| compile_cond(key, c, scope))
                    .collect::<Result<Vec<_>, _>>()?;
                conj.fields.push(Field { path, conds });
            }
            Value::Object(inner) if scope == Scope::MessageBody => {
                let nested = compile_object(inner, &path, scope)?;
                conj.fields.extend(nested.fields);
                conj.ors.extend(nested.ors);
            }
            Value::Object(_) => {
                return Err(Invalid::new(format!(
                    "filter_policy: nested keys ({key:?}) need filter_policy_scope \"MessageBody\"."
                )))
            }
            _ => {
                return Err(Invalid::new(format!(
                    "filter_policy: the value of {key:?} must be a list of conditions."
                )))
            }
        }
    }
    Ok(conj)
}

fn number(key: &str, v: &Value) -> Result<f64, Invalid> {
    v.as_f64().filter(|n| n.abs() <= MAX_NUMBER).ok_or_else(|| {
        Invalid::new(format!(
            "filter_policy: numbers for {key:?} must be between -1000000000 and 1000000000."
        ))
    })
}

fn string<'a>(key: &str, op: &str, v: &'a Value) -> Result<&'a str, Invalid> {
    v.as_str().ok_or_else(|| {
        Invalid::new(format!(
            "filter_policy: \"{op}\" for {key:?} takes a string."
        ))
    })
}

fn compile_cond(key: &str, c: &Value, scope: Scope) -> Result<Cond, Invalid> {
    match c {
        Value::String(_) => Ok(Cond::Exact(c.clone())),
        Value::Number(_) => Ok(Cond::Exact(Value::from(number(key, c)?))),
        Value::Null if scope == Scope::MessageBody => Ok(Cond::Exact(Value::Null)),
        Value::Object(op) => match single(op) {
            Some((name, arg)) => compile_operator(key, name, arg),
            None => Err(Invalid::new(format!(
                "filter_policy: an operator object for {key:?} holds exactly one operator."
            ))),
        },
        _ => Err(Invalid::new(format!(
            "filter_policy: conditions for {key:?} must be strings, numbers or one-operator objects."
        ))),
    }
}

fn compile_operator(key: &str, name: &str, arg: &Value) -> Result<Cond, Invalid> {
    match name {
        "prefix" => Ok(Cond::Prefix(string(key, name, arg)?.to_owned())),
        "suffix" => Ok(Cond::Suffix(string(key, name, arg)?.to_owned())),
        "equals-ignore-case" => Ok(Cond::EqualsIgnoreCase(
            string(key, name, arg)?.to_lowercase(),
        )),
        "exists" => arg.as_bool().map(Cond::Exists).ok_or_else(|| {
            Invalid::new(format!(
                "filter_policy: \"exists\" for {key:?} takes true or false."
            ))
        }),
        "cidr" => string(key, name, arg)?
            .parse::<IpNet>()
            .map(Cond::Cidr)
            .map_err(|_| {
                Invalid::new(format!(
                    "filter_policy: \"cidr\" for {key:?} takes a CIDR block such as \"10.0.0.0/24\"."
                ))
            }),
        "numeric" => compile_numeric(key, arg),
        "anything-but" => compile_anything_but(key, arg),
        other => Err(Invalid::new(format!(
            "filter_policy: unknown operator {other:?} for {key:?}."
        ))),
    }
}

fn compile_numeric(key: &str, arg: &Value) -> Result<Cond, Invalid> {
    let bad = || {
        Invalid::new(format!(
            "filter_policy: \"numeric\" for {key:?} takes [\"=\", n] or one or two comparisons such as [\">\", 0, \"<=\", 150]."
        ))
    };
    let items = arg.as_array().ok_or_else(bad)?;
    if items.len() != 2 && items.len() != 4 {
        return Err(bad());
    }
    let mut out = Vec::new();
    for pair in items.chunks(2) {
        let cmp = match pair[0].as_str() {
            Some("=") => Cmp::Eq,
            Some("<") => Cmp::Lt,
            Some("<=") => Cmp::Le,
            Some(">") => Cmp::Gt,
            Some(">=") => Cmp::Ge,
            _ => return Err(bad()),
        };
        out.push((cmp, number(key, &pair[1])?));
    }
    // A range is a lower bound then an upper bound; "=" stands alone.
    if out.len() == 2 {
        let lower = matches!(out[0].0, Cmp::Gt | Cmp::Ge);
        let upper = matches!(out[1].0, Cmp::Lt | Cmp::Le);
        if !lower || !upper || out[0].1 >= out[1].1 {
            return Err(Invalid::new(format!(
                "filter_policy: a \"numeric\" range for {key:?} must be a lower bound (> or >=) below an upper bound (< or <=)."
            )));
        }
    }
    Ok(Cond::Numeric(out))
}

fn compile_anything_but(key: &str, arg: &Value) -> Result<Cond, Invalid> {
    let bad = || {
        Invalid::new(format!(
            "filter_policy: \"anything-but\" for {key:?} takes a string, a number, a list of them, or {{\"prefix\"|\"suffix\"|\"equals-ignore-case\": …}}."
        ))
    };
    match arg {
        Value::String(_) => Ok(Cond::AnythingBut(vec![arg.clone()])),
        Value::Number(_) => Ok(Cond::AnythingBut(vec![Value::from(number(key, arg)?)])),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|v| match v {
                Value::String(_) => Ok(v.clone()),
                Value::Number(_) => number(key, v).map(Value::from),
                _ => Err(bad()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Cond::AnythingBut),
        Value::Object(op) => {
            let Some((name, inner)) = single(op) else {
                return Err(bad());
            };
            match name.as_str() {
                "prefix" => Ok(Cond::AnythingButPrefix(
                    string(key, name, inner)?.to_owned(),
                )),
                "suffix" => Ok(Cond::AnythingButSuffix(
                    string(key, name, inner)?.to_owned(),
                )),
                "equals-ignore-case" => {
                    let list = match inner {
                        Value::String(s) => vec![s.to_lowercase()],
                        Value::Array(a) if !a.is_empty() => a
                            .iter()
                            .map(|v| v.as_str().map(str::to_lowercase).ok_or_else(bad))
                            .collect::<Result<_, _>>()?,
                        _ => return Err(bad()),
                    };
                    Ok(Cond::AnythingButIgnoreCase(list))
                }
                _ => Err(bad()),
            }
        }
        _ => Err(bad()),
    }
}

fn same_number(a: &Value, b: &Value) -> bool {
    matches!((a.as_f64(), b.as_f64()), (Some(x), Some(y)) if x == y)
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(_), Value::Number(_)) => same_number(a, b),
        _ => a == b,
    }
}

impl Cond {
    /// `values` are the key's values in the message; empty when the key is absent.
    fn matches(&self, values: &[Value]) -> bool {
        let strings = || values.iter().filter_map(Value::as_str);
        match self {
            Self::Exact(want) => values.iter().any(|v| equal(v, want)),
            Self::Prefix(p) => strings().any(|s| s.starts_with(p.as_str())),
            Self::Suffix(p) => strings().any(|s| s.ends_with(p.as_str())),
            Self::EqualsIgnoreCase(p) => strings().any(|s| s.to_lowercase() == *p),
            Self::AnythingBut(list) => values
                .iter()
                .any(|v| !v.is_null() && !list.iter().any(|l| equal(v, l))),
            Self::AnythingButPrefix(p) => strings().any(|s| !s.starts_with(p.as_str())),
            Self::AnythingButSuffix(p) => strings().any(|s| !s.ends_with(p.as_str())),
            Self::AnythingButIgnoreCase(list) => {
                strings().any(|s| !list.contains(&s.to_lowercase()))
            }
            Self::Numeric(cmps) => values.iter().filter_map(Value::as_f64).any(|n| {
                cmps.iter().all(|(cmp, x)| match cmp {
                    Cmp::Eq => n == *x,
                    Cmp::Lt => n < *x,
                    Cmp::Le => n <= *x,
                    Cmp::Gt => n > *x,
                    Cmp::Ge => n >= *x,
                })
            }),
            Self::Exists(want) => values.is_empty() != *want,
            Self::Cidr(net) => strings()
                .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
                .any(|ip| net.contains(&ip)),
        }
    }
}

#[cfg(test)]
mod tests;
