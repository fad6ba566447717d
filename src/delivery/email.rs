//! `mailto:` delivery through the configured SMTP relay (lettre, pooled connections).

use std::time::Duration;

use lettre::{
    message::header::ContentType, transport::smtp::authentication::Credentials, AsyncSmtpTransport,
    AsyncTransport, Message, Tokio1Executor,
};

use super::outcome::DeliveryError;

/// Subject used when neither the URI nor the options name one.
pub const DEFAULT_SUBJECT: &str = "Herald notification";

/// The SMTP relay client, built once from `smtp_url`.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    default_from: String,
}

/// One email to send.
pub struct Email<'a> {
    pub to: &'a str,
    pub from: Option<&'a str>,
    pub subject: &'a str,
    pub body: String,
}

impl Mailer {
    /// # Errors
    /// When `smtp_url` is not a URL lettre understands (`smtp://host:port`, ...).
    pub fn new(smtp_url: &str, default_from: &str, timeout: Duration) -> anyhow::Result<Self> {
        let url = reqwest::Url::parse(smtp_url)?;
        anyhow::ensure!(
            url.scheme() == "smtp",
            "smtp_url: only smtp://[user:password@]host[:port] (a local relay) is supported"
        );
        let host = url
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("smtp_url has no host"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(url.port().unwrap_or(25))
            .timeout(Some(timeout));
        if !url.username().is_empty() {
            builder = builder.credentials(Credentials::new(
                url.username().to_owned(),
                url.password().unwrap_or_default().to_owned(),
            ));
        }
        let transport = builder.build();
        Ok(Self {
            transport,
            default_from: default_from.to_owned(),
        })
    }

    /// # Errors
    /// Permanent for bad addresses and 5xx replies, retryable for the rest.
    pub async fn send(&self, email: Email<'_>) -> Result<(), DeliveryError> {
        let bad = |what: &str, v: &str| {
            DeliveryError::Misconfigured(format!("invalid {what} address {v:?}"))
        };
        let from = email.from.unwrap_or(&self.default_from);
        let message = Message::builder()
            .from(from.parse().map_err(|_| bad("From", from))?)
            .to(email.to.parse().map_err(|_| bad("To", email.to))?)
            .subject(email.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(email.body)
            .map_err(|e| DeliveryError::Misconfigured(e.to_string()))?;
        self.transport
            .send(message)
            .await
            .map(|_| ())
            .map_err(|e| DeliveryError::Smtp {
                permanent: e.is_permanent(),
                message: e.to_string(),
            })
    }
}
