//! Subscriptions' rules, apart from HTTP: what a subscription document may hold, who may
//! subscribe (the topic's ACL and protocols), uniqueness by project + topic + subscriber,
//! the credential delegated to `trust+` subscribers, and confirmation
//! (`require_confirmation`). The REST handlers in `api/subscriptions.rs` extract, call
//! [`Subscriptions`] and shape the response.

use std::sync::Arc;

use chrono::{Duration, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    auth::{Identity, TrustCreateError},
    config::{AuthMode, Config, NatsSubscriberScope},
    delivery::{confirm, consumer_limits, Outbound},
    domain::{
        filter_policy::FilterPolicy, subscriber, subscription_options::valid_max_rate, ProjectId,
        Protocol, RetryPolicy, Subscriber, TopicName,
    },
    error::ApiError,
    store::{
        subscriptions::{Created, Subscription},
        topics::Topic,
        Store, StoreError,
    },
};

/// `ttl` of a subscription created without one.
pub const DEFAULT_TTL_SECS: u64 = 3600;

/// The 409 of a second subscription with the same subscriber URI.
pub const ALREADY_EXISTS: &str = "Such subscription already exists. Subscriptions are unique by project + topic + subscriber URI.";

pub fn not_found() -> ApiError {
    ApiError::NotFound("Subscription could not be found.".into())
}

/// A subscription document (`POST` body, `PATCH` body) as sent. Each field is checked by
/// its own parser in [`Changes::parse`], with the contract's message for that field.
#[derive(Debug, Default, Deserialize)]
pub struct SubscriptionDoc {
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub subscriber: Option<Value>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub ttl: Option<Value>,
    #[serde(default, deserialize_with = "crate::domain::present")]
    pub options: Option<Value>,
}

impl SubscriptionDoc {
    fn from_map(map: Map<String, Value>) -> Self {
        // Every field is a `Value`: deserializing an object cannot fail.
        serde_json::from_value(Value::Object(map)).unwrap_or_default()
    }

    /// The `POST` body: an object; other keys are ignored (as Zaqar does).
    pub fn for_create(body: Value) -> Result<Self, ApiError> {
        match body {
            Value::Object(map) => Ok(Self::from_map(map)),
            _ => Err(ApiError::BadRequest(
                "The subscription must be a JSON object.".into(),
            )),
        }
    }

    /// The `PATCH` body: a non-empty object of subscriber, ttl and options only.
    pub fn for_patch(body: Value) -> Result<Self, ApiError> {
        let map = match body {
            Value::Object(map) if !map.is_empty() => map,
            _ => {
                return Err(ApiError::BadRequest(
                    "The patch must be a JSON object with subscriber, ttl or options.".into(),
                ))
            }
        };
        if let Some(k) = map
            .keys()
            .find(|k| !matches!(k.as_str(), "subscriber" | "ttl" | "options"))
        {
            return Err(ApiError::BadRequest(format!(
                "Unknown field {k}: only subscriber, ttl and options can be changed."
            )));
        }
        Ok(Self::from_map(map))
    }
}

/// A validated subscriber: the parsed form and the URI exactly as sent (what is stored
/// and compared for uniqueness).
#[derive(Debug, Clone)]
pub struct SubscriberUri {
    pub parsed: Subscriber,
    pub raw: String,
}

/// A validated [`SubscriptionDoc`].
#[derive(Debug, Default)]
pub struct Changes {
    pub subscriber: Option<SubscriberUri>,
    pub ttl: Option<u64>,
    pub options: Option<Map<String, Value>>,
}

impl Changes {
    /// Checks subscriber, ttl and options, in that order.
    pub fn parse(
        config: &Config,
        project: &ProjectId,
        doc: SubscriptionDoc,
    ) -> Result<Self, ApiError> {
        Ok(Self {
            subscriber: doc
                .subscriber
                .map(|v| parse_subscriber(config, project, &v))
                .transpose()?,
            ttl: doc.ttl.map(|v| parse_ttl(config, &v)).transpose()?,
            options: doc.options.map(|v| parse_options(&v)).transpose()?,
        })
    }
}

pub fn parse_subscriber(
    config: &Config,
    project: &ProjectId,
    v: &Value,
) -> Result<SubscriberUri, ApiError> {
    let s = v
        .as_str()
        .ok_or_else(|| ApiError::BadRequest("subscriber must be a string.".into()))?;
    let parsed = Subscriber::parse(s)?;
    if let Subscriber::Nats { subject } = &parsed {
        if config.nats_subscriber_scope == NatsSubscriberScope::Project
            && !subscriber::nats_subject_in_project(subject, project.as_str())
        {
            return Err(ApiError::BadRequest(format!(
                "Invalid subscriber {s:?}: nats_subscriber_scope is project, so the subject must be under {project}. (the project's own NATS namespace).",
                project = project.as_str()
            )));
        }
    }
    Ok(SubscriberUri {
        parsed,
        raw: s.to_owned(),
    })
}

pub fn parse_ttl(config: &Config, v: &Value) -> Result<u64, ApiError> {
    let min = config.min_subscription_ttl;
    v.as_u64()
        .filter(|t| *t >= min && *t <= i32::MAX as u64)
        .ok_or_else(|| {
            ApiError::BadRequest(format!("ttl must be an integer of at least {min} seconds."))
        })
}

pub fn parse_options(v: &Value) -> Result<Map<String, Value>, ApiError> {
    let bad = |m: &str| ApiError::BadRequest(m.to_owned());
    let options = v
        .as_object()
        .ok_or_else(|| bad("options must be a JSON object."))?;
    if let Some(p) = options.get("_retry_policy") {
        RetryPolicy::parse(p)?;
    }
    FilterPolicy::from_options(options)?;
    if let Some(h) = options.get("post_headers") {
        let ok = h.as_object().is_some_and(|m| {
            m.iter().all(|(k, v)| {
                axum::http::HeaderName::from_bytes(k.as_bytes()).is_ok()
                    && v.as_str()
                        .is_some_and(|v| axum::http::HeaderValue::from_str(v).is_ok())
            })
        });
        if !ok {
            return Err(bad(
                "options.post_headers must be an object of valid header names and string values.",
            ));
        }
    }
    for key in ["secret", "from", "subject"] {
        if options.get(key).is_some_and(|v| !v.is_string()) {
            return Err(ApiError::BadRequest(format!(
                "options.{key} must be a string."
            )));
        }
    }
    for key in ["ordered", "enabled"] {
        if options.get(key).is_some_and(|v| !v.is_boolean()) {
            return Err(ApiError::BadRequest(format!(
                "options.{key} must be a boolean."
            )));
        }
    }
    if options
        .get("max_rate")
        .is_some_and(|v| !v.as_f64().is_some_and(valid_max_rate))
    {
        return Err(bad(
            "options.max_rate must be a number of deliveries per second greater than 0.",
        ));
    }
    Ok(options.clone())
}

/// Removes `options.enabled` (checked to be a boolean by [`parse_options`]): it switches
/// the subscription on or off and is not kept as an option.
pub fn take_enabled(options: &mut Map<String, Value>) -> Option<bool> {
    options.remove("enabled").and_then(|v| v.as_bool())
}

/// The subscribe ACL of the topic: projects, users and protocol.
pub fn check_subscribe(
    topic: &Topic,
    identity: &Identity,
    subscriber: &Subscriber,
) -> Result<(), ApiError> {
    if !identity.allowed_by(&topic.metadata, "subscribe") {
        return Err(ApiError::Forbidden(
            "You are not allowed to subscribe to this topic.".into(),
        ));
    }
    let protocol = subscriber.protocol();
    if !topic.metadata.allows_protocol(protocol) {
        return Err(ApiError::Forbidden(format!(
            "The protocol {} is not allowed by this topic.",
            protocol.as_str()
        )));
    }
    Ok(())
}

/// How Herald acts on the creator's behalf towards a `trust+` subscriber.
#[derive(Debug, PartialEq, Eq)]
pub enum Delegation {
    /// A token kept with the subscription (`noauth`, `tokens`).
    Token(String),
    /// A Keystone trust created for the subscription (`keystone`); Herald never keeps
    /// the caller's token.
    Trust,
}

/// The delegation a `trust+` subscription of this caller gets.
pub fn delegation(mode: AuthMode, identity: &Identity) -> Result<Delegation, ApiError> {
    match mode {
        AuthMode::Tokens => identity
            .delegable_token
            .clone()
            .map(Delegation::Token)
            .ok_or_else(|| {
                ApiError::Forbidden(
                    "trust subscriptions need a token marked \"delegable\" in the tokens file."
                        .into(),
                )
            }),
        AuthMode::Keystone => Ok(Delegation::Trust),
        // Cinder's noauth token form.
        AuthMode::Noauth => Ok(Delegation::Token(format!(
            "{}:{}",
            identity.user_id.as_deref().unwrap_or("herald"),
            identity.project
        ))),
    }
}

/// A trust that Keystone refused to create, or could not, as the API's error.
fn trust_create_error(e: TrustCreateError) -> ApiError {
    match e {
        TrustCreateError::NoToken => ApiError::Unauthorized(
            "Authentication failed: the token cannot create a Keystone trust.".into(),
        ),
        TrustCreateError::Refused { message, .. } => ApiError::Forbidden(format!(
            "Keystone refused to create the trust a trust+ subscription needs: {message}"
        )),
        TrustCreateError::Keystone(e) => {
            tracing::warn!(error.cause_chain = ?e, error.message = %e, "trust not created");
            ApiError::Unavailable(
                "The identity service is not reachable right now; retry later.".into(),
            )
        }
    }
}

/// Whether `raw` is already the subscriber of another subscription than `id`.
pub fn subscriber_taken(existing: &[Subscription], raw: &str, id: &str) -> bool {
    existing.iter().any(|s| s.subscriber == raw && s.id != id)
}

/// `sub` after `PUT …/confirm`, and whether that changed it (else nothing is stored).
pub fn confirmed_as(mut sub: Subscription, confirmed: bool) -> (Subscription, bool) {
    let changed = sub.confirmed != confirmed || sub.unsubscribed == confirmed;
    sub.confirmed = confirmed;
    sub.unsubscribed = !confirmed;
    (sub, changed)
}

/// The subscriptions service over the store, the configuration and the outbound clients
/// (confirmations are sent from here).
pub struct Subscriptions<'a> {
    pub store: &'a Store,
    pub config: &'a Arc<Config>,
    pub outbound: &'a Outbound,
}

impl Subscriptions<'_> {
    async fn topic(&self, project: &ProjectId, name: &TopicName) -> Result<Topic, ApiError> {
        self.store
            .get_topic(project, name)
            .await?
            .ok_or_else(ApiError::topic_not_found)
    }

    /// A live subscription, or 404.
    pub async fn get(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        id: &str,
    ) -> Result<Subscription, ApiError> {
        self.store
            .get_subscription(project, topic, id)
            .await?
            .filter(|s| !s.is_expired(Utc::now()))
            .ok_or_else(not_found)
    }

    /// What `GET …/subscriptions/{id}` says of it: `disabled`, `unconfirmed` (nothing
    /// is delivered until its subscriber confirms, or after it unsubscribed) or `active`.
    pub fn status(&self, sub: &Subscription) -> &'static str {
        let awaits = Subscriber::parse(&sub.subscriber)
            .is_ok_and(|s| s.awaits_confirmation(self.config.require_confirmation, sub.confirmed));
        if sub.disabled {
            "disabled"
        } else if awaits || sub.unsubscribed {
            "unconfirmed"
        } else {
            "active"
        }
    }

    /// One page of a topic's live subscriptions, by id after `marker`.
    pub async fn list(
        &self,
        project: &ProjectId,
        topic: &TopicName,
        marker: &str,
        limit: usize,
    ) -> Result<Vec<Subscription>, ApiError> {
        self.topic(project, topic).await?;
        let now = Utc::now();
        Ok(self
            .store
            .list_subscriptions(project, topic)
            .await?
            .into_iter()
            .filter(|s| !s.is_expired(now) && s.id.as_str() > marker)
            .take(limit)
            .collect())
    }

    /// A Keystone trust from the caller to Herald for a subscription of the caller's
    /// project that expires at `expires_at`.
    async fn create_trust(
        &self,
        identity: &Identity,
        caller_token: Option<&str>,
        expires_at: chrono::DateTime<Utc>,
    ) -> Result<String, ApiError> {
        let (Some(keystone), Some(caller), Some(token)) =
            (&self.outbound.keystone, &identity.keystone, caller_token)
        else {
            return Err(trust_create_error(TrustCreateError::NoToken));
        };
        keystone
            .create_trust(token, caller, &identity.project, expires_at)
            .await
            .map_err(trust_create_error)
    }

    /// Deletes a trust this service created but no subscription holds (best effort).
    async fn drop_trust(&self, trust_id: Option<&str>) {
        if let (Some(trust), Some(keystone)) = (trust_id, &self.outbound.keystone) {
            keystone.delete_trust(trust).await;
        }
    }

    fn send_confirmation(&self, sub: Subscription, unsubscribe: bool) {
        let (outbound, config) = (self.outbound.clone(), self.config.clone());
        tokio::spawn(async move { confirm::send(&outbound, &config, &sub, unsubscribe).await });
    }

    /// Subscribes; a repeated `POST` of an unconfirmed subscription returns it (and sends
    /// the confirmation again), of a confirmed one is a 409.
    /// `caller_token` is the request's `X-Auth-Token`: in keystone mode a `trust+`
    /// subscription's trust is created with it (never stored).
    pub async fn create(
        &self,
        identity: &Identity,
        caller_token: Option<&str>,
        name: &TopicName,
        doc: SubscriptionDoc,
    ) -> Result<Subscription, ApiError> {
        if doc.subscriber.is_none() {
            return Err(ApiError::BadRequest(
                "Missing parameter subscriber in body.".into(),
            ));
        }
        let changes = Changes::parse(self.config, &identity.project, doc)?;
        let subscriber = changes.subscriber.unwrap_or_else(|| unreachable!());
        let ttl = changes.ttl.unwrap_or(DEFAULT_TTL_SECS);
        let topic = self.topic(&identity.project, name).await?;
        check_subscribe(&topic, identity, &subscriber.parsed)?;
        let now = Utc::now();
        let mut options = changes.options.unwrap_or_default();
        let enabled = take_enabled(&mut options);
        let expires_at = now + Duration::seconds(ttl as i64);
        let (delegated_token, trust_id) = match subscriber.parsed.protocol() {
            Protocol::Trust => match delegation(self.config.auth_mode, identity)? {
                Delegation::Token(t) => (Some(t), None),
                Delegation::Trust => (
                    None,
                    Some(
                        self.create_trust(identity, caller_token, expires_at)
                            .await?,
                    ),
                ),
            },
            _ => (None, None),
        };
        let sub = Subscription {
            id: String::new(),
            project: identity.project.clone(),
            topic: name.clone(),
            subscriber: subscriber.raw,
            options: options.into(),
            ttl,
            created_at: now,
            expires_at,
            confirmed: false,
            unsubscribed: false,
            source_user: identity.user_id.clone(),
            delegated_token,
            disabled: enabled == Some(false),
            trust_id,
        };
        let limits = consumer_limits(self.config);
        let created = self.store.create_subscription(sub.clone(), limits).await;
        // A trust only the stored subscription may hold.
        if !matches!(&created, Ok(Created::New(_))) {
            self.drop_trust(sub.trust_id.as_deref()).await;
        }
        let sub = match created? {
            Created::Existing(sub) if sub.confirmed => {
                return Err(ApiError::Conflict(ALREADY_EXISTS.into()))
            }
            Created::New(sub) | Created::Existing(sub) => sub,
        };
        if subscriber
            .parsed
            .confirmation_applies(self.config.require_confirmation)
        {
            self.send_confirmation(sub.clone(), false);
        }
        Ok(sub)
    }

    /// Changes subscriber, ttl or options; a new subscriber must be unique on the topic.
    /// In keystone mode a `trust+` subscription whose subscriber or ttl changes gets a
    /// new trust from the caller (`caller_token`, never stored), and the old one is
    /// deleted.
    pub async fn update(
        &self,
        identity: &Identity,
        caller_token: Option<&str>,
        name: &TopicName,
        id: &str,
        doc: SubscriptionDoc,
    ) -> Result<(), ApiError> {
        let changes = Changes::parse(self.config, &identity.project, doc)?;
        let topic = self.topic(&identity.project, name).await?;
        let mut sub = self.get(&identity.project, name, id).await?;
        let old_trust = sub.trust_id.clone();
        let mut needs_trust = false;
        if let Some(subscriber) = changes.subscriber {
            check_subscribe(&topic, identity, &subscriber.parsed)?;
            if subscriber.raw != sub.subscriber {
                let existing = self
                    .store
                    .list_subscriptions(&identity.project, name)
                    .await?;
                if subscriber_taken(&existing, &subscriber.raw, &sub.id) {
                    return Err(ApiError::Conflict(ALREADY_EXISTS.into()));
                }
                sub.trust_id = None;
                if subscriber.parsed.protocol() == Protocol::Trust {
                    match delegation(self.config.auth_mode, identity)? {
                        Delegation::Token(t) => sub.delegated_token = Some(t),
                        Delegation::Trust => needs_trust = true,
                    }
                }
                sub.subscriber = subscriber.raw;
            }
        }
        if let Some(ttl) = changes.ttl {
            sub.ttl = ttl;
            sub.expires_at = Utc::now() + Duration::seconds(ttl as i64);
            // The trust must live as long as the subscription.
            needs_trust |= sub.trust_id.is_some();
        }
        let mut re_enabled = false;
        if let Some(mut options) = changes.options {
            let enabled = take_enabled(&mut options);
            if let Some(enabled) = enabled {
                re_enabled = enabled && sub.disabled;
                sub.disabled = !enabled;
            }
            // `{"options": {"enabled": …}}` alone switches the subscription on or off and
            // keeps its other options; any other document replaces them.
            if enabled.is_none() || !options.is_empty() {
                sub.options = options.into();
            }
        }
        if re_enabled {
            // The disable window starts over: old failures must not disable it again.
            self.store.forget_failures(&sub.project, &sub.id).await?;
        }
        if needs_trust {
            sub.trust_id = Some(
                self.create_trust(identity, caller_token, sub.expires_at)
                    .await?,
            );
        }
        let updated = self
            .store
            .update_subscription(&sub, consumer_limits(self.config))
            .await;
        // The trust the subscription no longer (or never) holds goes.
        let (kept, unused) = if updated.is_ok() {
            (&sub.trust_id, &old_trust)
        } else {
            (&old_trust, &sub.trust_id)
        };
        if unused != kept {
            self.drop_trust(unused.as_deref()).await;
        }
        updated.map_err(|e| match e {
            StoreError::NotFound => not_found(),
            e => e.into(),
        })
    }

    /// Deletes a topic with its subscriptions, and their Keystone trusts.
    pub async fn delete_topic(
        &self,
        project: &ProjectId,
        name: &TopicName,
    ) -> Result<(), ApiError> {
        let trusts: Vec<String> = if self.outbound.keystone.is_some() {
            self.store
                .list_subscriptions(project, name)
                .await?
                .into_iter()
                .filter_map(|s| s.trust_id)
                .collect()
        } else {
            Vec::new()
        };
        self.store.delete_topic(project, name).await?;
        for trust in &trusts {
            self.drop_trust(Some(trust)).await;
        }
        Ok(())
    }

    /// Unsubscribes (absent is fine) and deletes the subscription's Keystone trust.
    pub async fn delete(
        &self,
        project: &ProjectId,
        name: &TopicName,
        id: &str,
    ) -> Result<(), ApiError> {
        let trust = self
            .store
            .get_subscription(project, name, id)
            .await?
            .and_then(|s| s.trust_id);
        self.store.delete_subscription(project, name, id).await?;
        self.drop_trust(trust.as_deref()).await;
        Ok(())
    }

    /// Confirms (`true`) or unsubscribes (`false`); unsubscribing tells the subscriber.
    pub async fn confirm(
        &self,
        project: &ProjectId,
        name: &TopicName,
        id: &str,
        confirmed: bool,
    ) -> Result<(), ApiError> {
        let (sub, changed) = confirmed_as(self.get(project, name, id).await?, confirmed);
        if changed {
            self.store
                .update_subscription(&sub, consumer_limits(self.config))
                .await?;
        }
        let applies = Subscriber::parse(&sub.subscriber)
            .is_ok_and(|s| s.confirmation_applies(self.config.require_confirmation));
        if !confirmed && applies {
            self.send_confirmation(sub, true);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::{auth::Role, domain::TopicMetadata};

    fn project() -> ProjectId {
        ProjectId::parse("p1").unwrap()
    }

    fn identity(roles: Vec<Role>, user: Option<&str>) -> Identity {
        Identity {
            user_id: user.map(str::to_owned),
            project: project(),
            roles,
            delegable_token: None,
            keystone: None,
        }
    }

    fn topic(meta: Value) -> Topic {
        Topic {
            name: TopicName::parse("t").unwrap(),
            metadata: TopicMetadata::parse(meta).unwrap(),
            revision: 0,
        }
    }

    fn sub(id: &str, subscriber: &str, confirmed: bool) -> Subscription {
        let now = Utc::now();
        Subscription {
            id: id.into(),
            project: project(),
            topic: TopicName::parse("t").unwrap(),
            subscriber: subscriber.into(),
            options: Default::default(),
            ttl: 3600,
            created_at: now,
            expires_at: now + Duration::seconds(3600),
            confirmed,
            unsubscribed: false,
            source_user: None,
            delegated_token: None,
            disabled: false,
            trust_id: None,
        }
    }

    fn message(e: ApiError) -> String {
        match e {
            ApiError::BadRequest(m) | ApiError::Forbidden(m) => m,
            e => panic!("unexpected {e:?}"),
        }
    }

    #[test]
    fn documents_keep_null_fields_and_refuse_non_objects() {
        let doc =
            SubscriptionDoc::for_create(json!({"subscriber": "mailto:a@b.c", "ttl": null, "x": 1}))
                .unwrap();
        assert_eq!(doc.ttl, Some(Value::Null));
        assert!(doc.options.is_none());
        for bad in [json!([1]), json!("s"), json!(null)] {
            assert_eq!(
                message(SubscriptionDoc::for_create(bad).unwrap_err()),
                "The subscription must be a JSON object."
            );
        }
        assert_eq!(
            message(SubscriptionDoc::for_patch(json!({})).unwrap_err()),
            "The patch must be a JSON object with subscriber, ttl or options."
        );
        assert_eq!(
            message(SubscriptionDoc::for_patch(json!({"ttl": 60, "zz": 1, "aa": 2})).unwrap_err()),
            "Unknown field aa: only subscriber, ttl and options can be changed."
        );
    }

    #[test]
    fn fields_are_checked_in_order_with_their_messages() {
        let config = Config::default();
        let parse = |v: Value| {
            Changes::parse(&config, &project(), SubscriptionDoc::for_create(v).unwrap())
                .map_err(message)
        };
        assert_eq!(
            parse(json!({"subscriber": 1, "ttl": "x"})).unwrap_err(),
            "subscriber must be a string."
        );
        let min = config.min_subscription_ttl;
        assert_eq!(
            parse(json!({"ttl": null, "options": 1})).unwrap_err(),
            format!("ttl must be an integer of at least {min} seconds.")
        );
        assert_eq!(
            parse(json!({"options": {"ordered": 1}})).unwrap_err(),
            "options.ordered must be a boolean."
        );
        assert_eq!(
            parse(json!({"options": {"from": 1}})).unwrap_err(),
            "options.from must be a string."
        );
        assert_eq!(
            parse(json!({"options": {"enabled": "no"}})).unwrap_err(),
            "options.enabled must be a boolean."
        );
        for bad in [json!(0), json!(-1), json!("5"), json!(null)] {
            assert!(parse(json!({"options": {"max_rate": bad}}))
                .unwrap_err()
                .starts_with("options.max_rate must be a number"));
        }
        let mut ok = parse(json!({"options": {"max_rate": 0.5, "enabled": false}}))
            .unwrap()
            .options
            .unwrap();
        assert_eq!(take_enabled(&mut ok), Some(false));
        assert_eq!(ok.len(), 1);
        let ok = parse(json!({"subscriber": "https://example.com/h", "ttl": min, "options": {"ordered": true}})).unwrap();
        assert_eq!(ok.subscriber.unwrap().raw, "https://example.com/h");
        assert_eq!(ok.ttl, Some(min));
    }

    #[test]
    fn nats_subjects_stay_in_the_project_when_scoped() {
        let config = Config {
            nats_subscriber_scope: NatsSubscriberScope::Project,
            ..Config::default()
        };
        assert!(parse_subscriber(&config, &project(), &json!("nats:p1.events")).is_ok());
        assert!(message(
            parse_subscriber(&config, &project(), &json!("nats:other.events")).unwrap_err()
        )
        .contains("nats_subscriber_scope is project"));
    }

    #[test]
    fn the_topic_acl_and_protocols_decide_who_subscribes() {
        let webhook = Subscriber::parse("https://example.com/h").unwrap();
        let member = identity(vec![Role::Member], Some("u1"));
        check_subscribe(&topic(json!({})), &member, &webhook).unwrap();
        assert_eq!(
            message(
                check_subscribe(
                    &topic(json!({"_allowed_subscribe_users": ["u2"]})),
                    &member,
                    &webhook
                )
                .unwrap_err()
            ),
            "You are not allowed to subscribe to this topic."
        );
        let admin = identity(vec![Role::Admin], None);
        check_subscribe(
            &topic(json!({"_allowed_subscribe_users": ["u2"]})),
            &admin,
            &webhook,
        )
        .unwrap();
        assert_eq!(
            message(
                check_subscribe(
                    &topic(json!({"_allowed_subscribe_protocols": ["email"]})),
                    &member,
                    &webhook
                )
                .unwrap_err()
            ),
            "The protocol webhook is not allowed by this topic."
        );
    }

    #[test]
    fn delegation_depends_on_the_auth_mode() {
        let mut who = identity(vec![Role::Member], Some("u1"));
        assert_eq!(
            delegation(AuthMode::Noauth, &who).unwrap(),
            Delegation::Token("u1:p1".into())
        );
        assert!(delegation(AuthMode::Tokens, &who).is_err());
        assert_eq!(
            delegation(AuthMode::Keystone, &who).unwrap(),
            Delegation::Trust
        );
        who.delegable_token = Some("tok".into());
        assert_eq!(
            delegation(AuthMode::Tokens, &who).unwrap(),
            Delegation::Token("tok".into())
        );
    }

    #[test]
    fn confirmation_rules() {
        let webhook = Subscriber::parse("https://example.com/h").unwrap();
        let nats = Subscriber::parse("nats:p1.x").unwrap();
        assert!(webhook.confirmation_applies(true));
        assert!(!webhook.confirmation_applies(false));
        assert!(!nats.confirmation_applies(true));
        assert!(webhook.awaits_confirmation(true, false));
        assert!(!webhook.awaits_confirmation(true, true));
        assert!(!nats.awaits_confirmation(true, false));

        let (s, changed) = confirmed_as(sub("a", "x", false), true);
        assert!(changed && s.confirmed && !s.unsubscribed);
        let (s, changed) = confirmed_as(s, true);
        assert!(!changed && s.confirmed);
        let (s, changed) = confirmed_as(s, false);
        assert!(changed && !s.confirmed && s.unsubscribed);
        assert!(!confirmed_as(s, false).1);
    }

    #[test]
    fn subscribers_are_unique_per_topic() {
        let existing = [
            sub("a", "mailto:x@y.z", true),
            sub("b", "mailto:w@y.z", false),
        ];
        assert!(subscriber_taken(&existing, "mailto:x@y.z", "b"));
        assert!(!subscriber_taken(&existing, "mailto:x@y.z", "a"));
        assert!(!subscriber_taken(&existing, "mailto:new@y.z", "a"));
    }
}
