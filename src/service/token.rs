//! Access tokens for clients: the OAuth 2.0 client-credentials exchange (authenticate the
//! client's key at the gate, narrow the scopes, take one request from its rate limit, sign;
//! each exchange counted at the gate as a use of endpoint `token`)
//! and introspection (RFC 7662) of tokens and keys. Accepting a token at the relay routes is
//! the gate's; signing and signature checks are the key ring's.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::auth::{Accepts, Credential, Gate, KeyCheck};
use super::keyring::KeyRing;
use super::meter::Endpoint;
use crate::domain::Error;
use crate::domain::access_token::{self, TokenSettings};
use crate::domain::rate_limit::Decision;

/// A token just issued.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
    /// The client's allowance after this exchange, for the RateLimit headers.
    pub decision: Decision,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"<redacted>")
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// The client credentials of an exchange (RFC 6749 §2.3.1): the API key as a secret, and the
/// client id when it was sent with it.
#[derive(Clone, Copy)]
pub struct ClientCredentials<'a> {
    pub credential: Credential<'a>,
    pub client_id: Option<&'a str>,
}

pub struct TokenService {
    gate: Arc<Gate>,
    keyring: Arc<KeyRing>,
    settings: TokenSettings,
}

impl TokenService {
    pub fn new(gate: Arc<Gate>, keyring: Arc<KeyRing>, settings: TokenSettings) -> Self {
        TokenService {
            gate,
            keyring,
            settings,
        }
    }

    pub fn settings(&self) -> &TokenSettings {
        &self.settings
    }

    /// The JSON Web Key Set of every key that may have signed a live token.
    pub fn jwks(&self) -> Value {
        self.keyring.jwks()
    }

    /// Issues a token for the client whose key `credentials` hold, presented from `peer`, with
    /// `requested_scope` (space-separated; all the client's scopes by default).
    pub async fn exchange(
        &self,
        credentials: ClientCredentials<'_>,
        requested_scope: Option<&str>,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<IssuedToken, Error> {
        let accepts = Accepts::ClientKey {
            client_id: credentials.client_id,
        };
        let caller = self
            .gate
            .authenticate(Some(credentials.credential), accepts, peer, now)
            .await?;
        let client = caller.client().ok_or(Error::Unauthenticated)?.clone();
        let Ok(scopes) = access_token::grant_scopes(&client, requested_scope) else {
            let forbidden = crate::domain::usage::Outcome::Forbidden;
            self.gate
                .count_refusal(&caller, Endpoint::Token, forbidden, now);
            return Err(Error::InvalidScope);
        };
        let admission = self
            .gate
            .admit(&caller, Endpoint::Token, None, peer, now)
            .await?;
        let decision = admission.decision;
        let jti = crate::domain::random_hex(16)?; // 128 random bits (RFC 7519 §4.1.7)
        let claims = access_token::claims_for(&client, &scopes, &self.settings, now, jti);
        let access_token = self.keyring.sign(&claims).map_err(Error::internal)?;
        Ok(IssuedToken {
            access_token,
            expires_in: claims.exp - claims.iat,
            scope: claims.scope,
            decision,
        })
    }

    /// RFC 7662: what `token` (an access token or an API key) is, if it is active; `None`
    /// when it is not. Nothing is counted against anyone.
    pub async fn introspect(
        &self,
        token: &str,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Option<Introspection>, Error> {
        if token.starts_with(crate::domain::api_key::PREFIX) {
            return Ok(match self.gate.check_key(token, peer, now).await? {
                KeyCheck::Valid(client) => Some(Introspection::ApiKey {
                    client_id: client.client_id.to_string(),
                    scope: client.scopes.join(" "),
                    exp: client.expires_at.map(|t| t.timestamp()),
                }),
                _ => None,
            });
        }
        Ok(self
            .gate
            .accept_token(token, now)
            .await?
            .map(|accepted| Introspection::AccessToken {
                scope: accepted.scopes.join(" "),
                claims: accepted.claims,
            }))
    }
}

/// An active token or key, as introspection describes it.
pub enum Introspection {
    AccessToken {
        claims: Arc<access_token::Claims>,
        /// The scopes it grants now.
        scope: String,
    },
    ApiKey {
        client_id: String,
        scope: String,
        /// The client's expiry, when it has one.
        exp: Option<i64>,
    },
}
