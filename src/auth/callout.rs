//! NATS auth callout: native NATS clients connect with a Keystone token as their password;
//! nats-server asks Herald (`$SYS.REQ.USER.AUTH`, from the callout account) and Herald
//! answers with a user it signs with the issuer nkey: publish only to
//! `herald.topics.{project}.>`, subscribe only to `{project}.>` and `_INBOX.>` (JetStream
//! acks, replies), replies allowed to requests it received, expiring with the token.
//! Validation shares the REST path's cache ([`Keystone`]).
//!
//! JWTs are nats-io's format (header `{"typ":"JWT","alg":"ed25519-nkey"}`, base64url
//! claims, an ed25519 signature by an nkey), encoded here with the `nkeys` crate and
//! serde: the Rust NATS JWT crates on crates.io are young single-maintainer projects,
//! and the three claim sets Herald needs are small.

use std::sync::Arc;

use async_nats::{Client, HeaderMap};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt;
use nkeys::{KeyPair, KeyPairType, XKey};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use super::{
    keystone::{TokenInfo, Validation},
    Keystone, Role,
};
use crate::config::{invalid, Config, ConfigError};

/// Where nats-server sends authorization requests.
pub const AUTH_SUBJECT: &str = "$SYS.REQ.USER.AUTH";
/// Every Herald process answers; each request goes to one of them.
const QUEUE: &str = "herald-callout";
/// The server's curve public key, on encrypted requests.
const SERVER_XKEY_HEADER: &str = "Nats-Server-Xkey";
const JWT_HEADER: &[u8] = br#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

/// Checks the `nats_callout_*` keys (called by `Config::validate` in keystone mode).
pub fn check_config(config: &Config) -> Result<(), ConfigError> {
    let Some(seed) = &config.nats_callout_issuer_seed else {
        return Ok(());
    };
    let issuer = KeyPair::from_seed(seed).map_err(|_| {
        invalid(
            "nats_callout_issuer_seed",
            "not an nkey seed (herald nkey-gen makes one)",
        )
    })?;
    if issuer.key_pair_type() != KeyPairType::Account {
        return Err(invalid(
            "nats_callout_issuer_seed",
            "must be an account seed (SA…)",
        ));
    }
    if let Some(x) = &config.nats_callout_xkey_seed {
        XKey::from_seed(x).map_err(|_| {
            invalid(
                "nats_callout_xkey_seed",
                "not a curve seed (SX…; herald nkey-gen makes one)",
            )
        })?;
    }
    if config.nats_callout_account.trim().is_empty() {
        return Err(invalid("nats_callout_account", "must not be empty"));
    }
    Ok(())
}

/// New issuer and xkey pairs, as `herald nkey-gen` prints them.
pub fn generate_keys() -> String {
    let issuer = KeyPair::new_account();
    let xkey = XKey::new();
    format!(
        "# Herald (secrets: keep them out of version control)\n\
         HERALD_NATS_CALLOUT_ISSUER_SEED={}\n\
         HERALD_NATS_CALLOUT_XKEY_SEED={}\n\
         # nats-server, authorization.auth_callout\n\
         issuer: {}\n\
         xkey: {}\n",
        issuer.seed().unwrap_or_default(),
        xkey.seed().unwrap_or_default(),
        issuer.public_key(),
        xkey.public_key(),
    )
}

/// Why a request got no user (the client's connection is refused), or no answer at all.
#[derive(Debug, thiserror::Error)]
pub enum CalloutError {
    #[error("malformed authorization request: {0}")]
    Malformed(String),
    #[error("the authorization request is encrypted but nats_callout_xkey_seed is not set")]
    NoXkey,
    #[error("cannot sign or seal the response: {0}")]
    Keys(#[from] nkeys::error::Error),
}

#[derive(Deserialize)]
struct RequestClaims {
    iss: String,
    nats: RequestNats,
}

#[derive(Deserialize)]
struct RequestNats {
    #[serde(rename = "type")]
    kind: String,
    server_id: ServerId,
    user_nkey: String,
    #[serde(default)]
    connect_opts: ConnectOpts,
}

#[derive(Deserialize)]
struct ServerId {
    id: String,
}

#[derive(Default, Deserialize)]
struct ConnectOpts {
    #[serde(default)]
    pass: Option<String>,
    #[serde(default)]
    auth_token: Option<String>,
}

/// The responder: the issuer key, the optional xkey, the account users are placed in,
/// and the Keystone client (with its cache).
pub struct Callout {
    issuer: KeyPair,
    issuer_public: String,
    xkey: Option<XKey>,
    account: String,
    keystone: Keystone,
}

impl Callout {
    /// `None` when `nats_callout_issuer_seed` is unset.
    ///
    /// # Errors
    /// A seed that does not parse (`Config::load` checks them first).
    pub fn from_config(config: &Config, keystone: Keystone) -> anyhow::Result<Option<Self>> {
        let Some(seed) = &config.nats_callout_issuer_seed else {
            return Ok(None);
        };
        let issuer = KeyPair::from_seed(seed)?;
        let xkey = config
            .nats_callout_xkey_seed
            .as_deref()
            .map(XKey::from_seed)
            .transpose()?;
        Ok(Some(Self {
            issuer_public: issuer.public_key(),
            issuer,
            xkey,
            account: config.nats_callout_account.clone(),
            keystone,
        }))
    }

    /// The responder's own connection (`nats_callout_user`, in the callout account).
    ///
    /// # Errors
    /// NATS refuses or cannot be reached.
    pub async fn connect(config: &Config) -> anyhow::Result<Client> {
        let options = match (&config.nats_callout_user, &config.nats_callout_password) {
            (Some(u), Some(p)) => {
                async_nats::ConnectOptions::with_user_and_password(u.clone(), p.clone())
            }
            _ => async_nats::ConnectOptions::new(),
        };
        let urls: Vec<async_nats::ServerAddr> = config
            .nats_url
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<Result<_, _>>()?;
        Ok(options
            .name("herald-callout")
            .retry_on_initial_connect()
            .connect(urls)
            .await?)
    }

    /// Answers authorization requests until `shutdown`.
    pub async fn serve(self, client: Client, shutdown: CancellationToken) {
        let mut requests = match client.queue_subscribe(AUTH_SUBJECT, QUEUE.to_owned()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "NATS auth callout not started");
                return;
            }
        };
        tracing::info!(issuer = %self.issuer_public, account = %self.account, "NATS auth callout listening");
        let callout = Arc::new(self);
        loop {
            let request = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = requests.next() => r,
            };
            let Some(request) = request else { break };
            let Some(reply) = request.reply.clone() else {
                continue;
            };
            let (callout, client) = (callout.clone(), client.clone());
            tokio::spawn(async move {
                match callout
                    .answer(&request.payload, request.headers.as_ref())
                    .await
                {
                    Ok(response) => {
                        if let Err(e) = client.publish(reply, response).await {
                            tracing::warn!(error = %e, "authorization response not sent");
                        }
                    }
                    Err(e) => {
                        metrics::counter!("herald_nats_callout_total", "outcome" => "error")
                            .increment(1);
                        tracing::warn!(error = %e, "authorization request not answered");
                    }
                }
            });
        }
    }

    /// The (sealed, when an xkey is configured) authorization response to one request.
    pub async fn answer(
        &self,
        payload: &[u8],
        headers: Option<&HeaderMap>,
    ) -> Result<Bytes, CalloutError> {
        let server_xkey = headers
            .and_then(|h| h.get(SERVER_XKEY_HEADER))
            .map(|v| XKey::from_public_key(v.as_str()))
            .transpose()
            .map_err(|e| CalloutError::Malformed(format!("{SERVER_XKEY_HEADER}: {e}")))?;
        let opened;
        let jwt = match (&server_xkey, &self.xkey) {
            (Some(server), Some(own)) => {
                opened = own.open(payload, server)?;
                &opened[..]
            }
            (Some(_), None) => return Err(CalloutError::NoXkey),
            (None, _) => payload,
        };
        let request = decode_request(jwt)?;
        let nats = &request.nats;
        let token = nats
            .connect_opts
            .pass
            .as_deref()
            .or(nats.connect_opts.auth_token.as_deref())
            .unwrap_or_default();
        let verdict = self.authorize(token).await;
        let outcome = if verdict.is_ok() { "allowed" } else { "denied" };
        metrics::counter!("herald_nats_callout_total", "outcome" => outcome).increment(1);
        let mut body = match verdict {
            Ok(info) => json!({"jwt": self.user_jwt(&nats.user_nkey, &info)?}),
            Err(reason) => {
                tracing::info!(reason, "NATS connection refused");
                json!({"error": reason})
            }
        };
        body["type"] = json!("authorization_response");
        body["version"] = json!(2);
        let response = self.sign(&json!({
            "jti": uuid::Uuid::new_v4().simple().to_string(),
            "iat": Utc::now().timestamp(),
            "iss": self.issuer_public,
            "sub": nats.user_nkey,
            "aud": nats.server_id.id,
            "nats": body,
        }))?;
        Ok(match (&server_xkey, &self.xkey) {
            (Some(server), Some(own)) => own.seal(response.as_bytes(), server)?.into(),
            _ => response.into(),
        })
    }

    /// The token's identity, or why the connection is refused.
    async fn authorize(&self, token: &str) -> Result<Arc<TokenInfo>, &'static str> {
        if token.is_empty() {
            return Err("a Keystone token is required as the NATS password");
        }
        match self.keystone.validate(token).await {
            Ok(Validation::Valid(info)) if info.roles.is_empty() => {
                Err("the token carries no role Herald knows")
            }
            Ok(Validation::Valid(info)) if info.expires_at <= Utc::now() => {
                Err("the token has expired")
            }
            Ok(Validation::Valid(info)) => Ok(info),
            Ok(Validation::Invalid) => Err("the token is not valid"),
            Ok(Validation::NotProjectScoped) => Err("the token is not scoped to a project"),
            Err(e) => {
                tracing::warn!(error.cause_chain = ?e, error.message = %e, "token validation failed");
                Err("the identity service is not reachable right now")
            }
        }
    }

    /// The user nats-server admits: the project's subjects only, until the token expires.
    fn user_jwt(&self, user_nkey: &str, info: &TokenInfo) -> Result<String, CalloutError> {
        let project = info.project.as_str();
        let writer = info
            .roles
            .iter()
            .any(|r| matches!(r, Role::Member | Role::Admin));
        // A reader may listen but not publish.
        let publish: Vec<String> = if writer {
            vec![format!("herald.topics.{project}.>")]
        } else {
            Vec::new()
        };
        let mut permissions = json!({
            "sub": {"allow": [format!("{project}.>"), "_INBOX.>"]},
            // Replies to the requests it receives (Herald's `nats:` deliveries), one each.
            "resp": {"max": 1, "ttl": 0},
            "subs": -1, "data": -1, "payload": -1,
            "type": "user", "version": 2,
        });
        permissions["pub"] = if publish.is_empty() {
            json!({"deny": [">"]})
        } else {
            json!({"allow": publish})
        };
        self.sign(&json!({
            "jti": uuid::Uuid::new_v4().simple().to_string(),
            "iat": Utc::now().timestamp(),
            "exp": info.expires_at.timestamp(),
            "iss": self.issuer_public,
            "name": info.user_id,
            "sub": user_nkey,
            "aud": self.account,
            "nats": permissions,
        }))
    }

    fn sign(&self, claims: &Value) -> Result<String, CalloutError> {
        let header = URL_SAFE_NO_PAD.encode(JWT_HEADER);
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let signature = self.issuer.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

/// The claims of a JWT whose signature by its issuer (`iss`) checks out.
fn verified_claims(jwt: &[u8]) -> Result<(String, Value), CalloutError> {
    let malformed = |m: &str| CalloutError::Malformed(m.to_owned());
    let text = std::str::from_utf8(jwt).map_err(|_| malformed("not UTF-8"))?;
    let b64 = |s: &str| URL_SAFE_NO_PAD.decode(s.trim().trim_end_matches('='));
    let parts: Vec<&str> = text.trim().split('.').collect();
    let [header, claims, signature] = parts[..] else {
        return Err(malformed("not a JWT"));
    };
    let claims_json = b64(claims).map_err(|_| malformed("claims are not base64url"))?;
    let value: Value =
        serde_json::from_slice(&claims_json).map_err(|_| malformed("claims are not JSON"))?;
    let issuer = value["iss"]
        .as_str()
        .ok_or_else(|| malformed("no issuer"))?;
    let signature = b64(signature).map_err(|_| malformed("signature is not base64url"))?;
    KeyPair::from_public_key(issuer)
        .and_then(|k| k.verify(format!("{header}.{claims}").as_bytes(), &signature))
        .map_err(|_| malformed("bad signature"))?;
    Ok((issuer.to_owned(), value))
}

fn decode_request(jwt: &[u8]) -> Result<RequestClaims, CalloutError> {
    let (_, value) = verified_claims(jwt)?;
    let request: RequestClaims = serde_json::from_value(value)
        .map_err(|e| CalloutError::Malformed(format!("claims: {e}")))?;
    if request.nats.kind != "authorization_request" {
        return Err(CalloutError::Malformed(format!(
            "type {:?}, not authorization_request",
            request.nats.kind
        )));
    }
    if !request.iss.starts_with('N') {
        return Err(CalloutError::Malformed("not issued by a server".into()));
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ProjectId;

    fn callout(xkey: Option<XKey>) -> Callout {
        let config = Config {
            auth_mode: crate::config::AuthMode::Keystone,
            keystone_url: Some("http://127.0.0.1:9".into()),
            keystone_user: Some("herald".into()),
            keystone_password: Some("pw".into()),
            keystone_project: Some("service".into()),
            ..Config::default()
        };
        let issuer = KeyPair::new_account();
        Callout {
            issuer_public: issuer.public_key(),
            issuer,
            xkey,
            account: "HERALD".into(),
            keystone: Keystone::new(&config).unwrap(),
        }
    }

    fn info(roles: Vec<Role>) -> TokenInfo {
        TokenInfo {
            user_id: "u1".into(),
            project: ProjectId::parse("p1").unwrap(),
            roles,
            role_names: vec![],
            expires_at: Utc::now() + chrono::Duration::hours(1),
        }
    }

    /// A request as nats-server signs it.
    fn request(server: &KeyPair, user: &KeyPair, pass: &str) -> Vec<u8> {
        let claims = json!({
            "iss": server.public_key(), "sub": "", "aud": "nats-authorization-request",
            "iat": 1, "jti": "x",
            "nats": {"type": "authorization_request", "version": 2,
                "server_id": {"id": server.public_key(), "name": "n"},
                "user_nkey": user.public_key(),
                "connect_opts": {"pass": pass, "user": "keystone"}},
        });
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(JWT_HEADER),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let sig = server.sign(input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)).into_bytes()
    }

    #[test]
    fn a_member_may_publish_to_its_projects_topics_and_subscribe_to_its_namespace() {
        let c = callout(None);
        let user = KeyPair::new_user();
        let jwt = c
            .user_jwt(&user.public_key(), &info(vec![Role::Member]))
            .unwrap();
        let (issuer, claims) = verified_claims(jwt.as_bytes()).unwrap();
        assert_eq!(issuer, c.issuer_public);
        assert_eq!(claims["sub"], user.public_key());
        assert_eq!(claims["aud"], "HERALD");
        assert_eq!(
            claims["nats"]["pub"]["allow"],
            json!(["herald.topics.p1.>"])
        );
        assert_eq!(claims["nats"]["sub"]["allow"], json!(["p1.>", "_INBOX.>"]));
        assert_eq!(claims["nats"]["type"], "user");
        assert!(claims["exp"].as_i64().unwrap() > Utc::now().timestamp());
    }

    #[test]
    fn a_reader_may_not_publish() {
        let c = callout(None);
        let jwt = c.user_jwt("U", &info(vec![Role::Reader])).unwrap();
        let (_, claims) = verified_claims(jwt.as_bytes()).unwrap();
        assert_eq!(claims["nats"]["pub"], json!({"deny": [">"]}));
    }

    #[test]
    fn requests_are_verified_and_a_tampered_one_is_refused() {
        let (server, user) = (KeyPair::new_server(), KeyPair::new_user());
        let good = request(&server, &user, "tok");
        let decoded = decode_request(&good).unwrap();
        assert_eq!(decoded.nats.user_nkey, user.public_key());
        assert_eq!(decoded.nats.connect_opts.pass.as_deref(), Some("tok"));
        let mut bad = String::from_utf8(good).unwrap();
        bad.insert(bad.rfind('.').unwrap() - 2, 'A');
        assert!(decode_request(bad.as_bytes()).is_err());
        assert!(decode_request(b"a.b").is_err());
    }

    #[tokio::test]
    async fn an_empty_password_is_refused_in_a_signed_response_for_the_server() {
        let c = callout(None);
        let (server, user) = (KeyPair::new_server(), KeyPair::new_user());
        let response = c.answer(&request(&server, &user, ""), None).await.unwrap();
        let (issuer, claims) = verified_claims(&response).unwrap();
        assert_eq!(issuer, c.issuer_public);
        assert_eq!(claims["aud"], server.public_key());
        assert_eq!(claims["sub"], user.public_key());
        assert_eq!(claims["nats"]["type"], "authorization_response");
        assert!(claims["nats"]["error"]
            .as_str()
            .unwrap()
            .contains("required"));
        assert!(claims["nats"].get("jwt").is_none());
    }

    #[tokio::test]
    async fn with_an_xkey_requests_are_opened_and_responses_sealed_for_the_server() {
        let own = XKey::new();
        let own_public = XKey::from_public_key(&own.public_key()).unwrap();
        let c = callout(Some(own));
        let (server, user) = (KeyPair::new_server(), KeyPair::new_user());
        let server_x = XKey::new();
        let sealed = server_x
            .seal(&request(&server, &user, ""), &own_public)
            .unwrap();
        let mut headers = HeaderMap::new();
        headers.insert(SERVER_XKEY_HEADER, server_x.public_key().as_str());
        let response = c.answer(&sealed, Some(&headers)).await.unwrap();
        let opened = server_x.open(&response, &own_public).unwrap();
        let (_, claims) = verified_claims(&opened).unwrap();
        assert_eq!(claims["sub"], user.public_key());
        assert!(
            c.answer(&sealed, None).await.is_err(),
            "sealed bytes are no JWT"
        );
    }
}
