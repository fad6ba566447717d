//! Subscription confirmations (`require_confirmation`): the `SubscriptionConfirmation`
//! (and `UnsubscribeConfirmation`) a webhook or email subscriber receives, with Zaqar's
//! pre-signed URL keys so it can call `PUT .../confirm` without credentials.

use bytes::Bytes;
use chrono::{Duration, Utc};
use serde_json::{json, Value};

use super::{email::Email, Outbound};
use crate::{
    config::Config,
    domain::{signed_url::SignedUrl, Subscriber},
    store::subscriptions::Subscription,
};

/// How long a confirmation link stays valid.
const LINK_VALIDITY_DAYS: i64 = 7;

pub fn confirm_path(sub: &Subscription) -> String {
    format!("/v2/topics/{}/subscriptions/{}/confirm", sub.topic, sub.id)
}

/// The confirmation document (Zaqar's keys plus `SubscribeURL`).
pub fn document(config: &Config, sub: &Subscription, unsubscribe: bool) -> Value {
    let path = confirm_path(sub);
    let secret = config.signed_url_secret.as_deref().unwrap_or_default();
    let signed = SignedUrl::sign(
        secret,
        vec![path.clone()],
        vec!["PUT".into()],
        sub.project.as_str(),
        Utc::now() + Duration::days(LINK_VALIDITY_DAYS),
    );
    let (kind, message) = if unsubscribe {
        (
            "UnsubscribeConfirmation",
            format!(
                "You have unsubscribed successfully from the topic: {}",
                sub.topic
            ),
        )
    } else {
        (
            "SubscriptionConfirmation",
            format!(
                "You have chosen to subscribe to the topic: {}. To confirm, PUT SubscribeBody to SubscribeURL with the URL-* and X-Project-ID headers.",
                sub.topic
            ),
        )
    };
    json!({
        "Message_Type": kind,
        "Message": message,
        "URL-Signature": signed.signature,
        "URL-Methods": signed.methods.join(","),
        "URL-Paths": signed.paths.join(","),
        "URL-Expires": signed.expires,
        "X-Project-ID": sub.project.as_str(),
        "SubscribeBody": {"confirmed": true},
        "UnsubscribeBody": {"confirmed": false},
        "SubscribeURL": format!("{}{path}", config.public_url.trim_end_matches('/')),
        "queue_name": sub.topic.as_str(),
        "topic_name": sub.topic.as_str(),
        "subscription_id": sub.id,
    })
}

/// Sends the confirmation (one attempt; a repeated POST of the subscription re-sends it).
pub async fn send(outbound: &Outbound, config: &Config, sub: &Subscription, unsubscribe: bool) {
    let Ok(subscriber) = Subscriber::parse(&sub.subscriber) else {
        return;
    };
    let doc = document(config, sub, unsubscribe);
    let result = match &subscriber {
        Subscriber::Webhook { url } => {
            outbound
                .webhook
                .post(url, Default::default(), Bytes::from(doc.to_string()))
                .await
        }
        Subscriber::Email { address, .. } => match &outbound.mailer {
            Some(mailer) => {
                let body = format!(
                    "{}\n\nConfirm: PUT {} with body {{\"confirmed\": true}} and headers\nURL-Signature: {}\nURL-Methods: {}\nURL-Paths: {}\nURL-Expires: {}\nX-Project-ID: {}\n",
                    doc["Message"].as_str().unwrap_or_default(),
                    doc["SubscribeURL"].as_str().unwrap_or_default(),
                    doc["URL-Signature"].as_str().unwrap_or_default(),
                    doc["URL-Methods"].as_str().unwrap_or_default(),
                    doc["URL-Paths"].as_str().unwrap_or_default(),
                    doc["URL-Expires"].as_str().unwrap_or_default(),
                    sub.project,
                );
                mailer
                    .send(Email {
                        to: address,
                        from: sub.options.from.as_deref(),
                        subject: "Confirm your Herald subscription",
                        body,
                    })
                    .await
            }
            None => return,
        },
        _ => return,
    };
    if let Err(e) = result {
        tracing::warn!(error = %e, subscription = %sub.id, "confirmation not delivered");
    }
}
