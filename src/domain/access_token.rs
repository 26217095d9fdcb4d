//! Access tokens (RFC 9068): which scopes a token may carry, its claims, and when a presented
//! token is still good. Signing and signature checks live in `keyring`; this is the rules.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::client::{Client, ClientStatus};

/// Leeway applied to `exp`, `nbf` and `iat`, for clocks a little apart.
pub const LEEWAY_SECONDS: i64 = 1;
pub const MIN_TTL_SECONDS: u32 = 60;
pub const MAX_TTL_SECONDS: u32 = 86_400;

/// Where tokens come from, whom they are for, and how long they live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub ttl_seconds: u32,
}

/// The JWT claims of an access token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub sub: String,
    pub client_id: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    pub jti: String,
    /// Space-separated scopes granted when issued.
    pub scope: String,
    /// The client's token generation when issued. Disabling the client or regenerating its key
    /// without grace moves the generation on, which ends every token issued before.
    #[serde(rename = "gen")]
    pub generation: i64,
}

/// Why a token is not (or no longer) accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("malformed token")]
    Malformed,
    #[error("unsupported algorithm or type")]
    WrongAlgorithm,
    #[error("unknown signing key")]
    UnknownKey,
    #[error("bad signature")]
    BadSignature,
    #[error("wrong issuer")]
    WrongIssuer,
    #[error("wrong audience")]
    WrongAudience,
    #[error("expired")]
    Expired,
    #[error("not valid yet")]
    NotYetValid,
    #[error("lives longer than tokens issued here may")]
    LifetimeTooLong,
    #[error("the client is gone, disabled or expired, or its key was replaced")]
    ClientRevoked,
}

/// The scopes a new token gets: all the client's by default, else the requested subset
/// (space-separated, RFC 6749 §3.3). `Err` names a scope the client does not hold.
pub fn grant_scopes(client: &Client, requested: Option<&str>) -> Result<Vec<String>, String> {
    let requested: Vec<&str> = requested
        .map(|r| r.split(' ').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    if requested.is_empty() {
        return Ok(client.scopes.clone());
    }
    let mut granted = Vec::with_capacity(requested.len());
    for scope in requested {
        if !client.has_scope(scope) {
            return Err(scope.to_string());
        }
        if !granted.iter().any(|g| g == scope) {
            granted.push(scope.to_string());
        }
    }
    granted.sort();
    Ok(granted)
}

/// The claims of a token for `client` with `scopes`, issued `now`. It never outlives the
/// client's own expiry.
pub fn claims_for(
    client: &Client,
    scopes: &[String],
    settings: &TokenSettings,
    now: DateTime<Utc>,
    jti: String,
) -> Claims {
    let iat = now.timestamp();
    let mut exp = iat + i64::from(settings.ttl_seconds);
    if let Some(client_expiry) = client.expires_at {
        exp = exp.min(client_expiry.timestamp());
    }
    Claims {
        iss: settings.issuer.clone(),
        sub: client.client_id.to_string(),
        client_id: client.client_id.to_string(),
        aud: settings.audience.clone(),
        iat,
        exp,
        nbf: None,
        jti,
        scope: scopes.join(" "),
        generation: client.token_generation,
    }
}

/// Checks issuer, audience and times (with `LEEWAY_SECONDS`). A token meant to live longer
/// than the configured lifetime was not issued here, whatever its signature says.
pub fn check_claims(
    claims: &Claims,
    settings: &TokenSettings,
    now: DateTime<Utc>,
) -> Result<(), Rejection> {
    let now = now.timestamp();
    if claims.iss != settings.issuer {
        return Err(Rejection::WrongIssuer);
    }
    if claims.aud != settings.audience {
        return Err(Rejection::WrongAudience);
    }
    if claims.exp <= now - LEEWAY_SECONDS {
        return Err(Rejection::Expired);
    }
    let not_before = claims.nbf.unwrap_or(claims.iat).max(claims.iat);
    if not_before > now + LEEWAY_SECONDS {
        return Err(Rejection::NotYetValid);
    }
    if claims.exp.saturating_sub(claims.iat) > i64::from(settings.ttl_seconds) + LEEWAY_SECONDS {
        return Err(Rejection::LifetimeTooLong);
    }
    Ok(())
}

/// Whether the token's client still stands behind it; returns the token's effective scopes
/// (its own, intersected with the client's current ones).
pub fn effective_scopes(
    claims: &Claims,
    client: &Client,
    now: DateTime<Utc>,
) -> Result<Vec<String>, Rejection> {
    if client.status(now) != ClientStatus::Active || client.token_generation != claims.generation {
        return Err(Rejection::ClientRevoked);
    }
    Ok(claims
        .scope
        .split(' ')
        .filter(|s| !s.is_empty() && client.has_scope(s))
        .map(String::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::api_key;
    use crate::domain::client::{ClientDraft, ClientId, NewClient};
    use chrono::Duration;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn settings() -> TokenSettings {
        TokenSettings {
            issuer: "https://relay.example".into(),
            audience: "egregore-relay".into(),
            ttl_seconds: 900,
        }
    }

    fn client(scopes: &[&str]) -> Client {
        let draft = ClientDraft {
            name: "t".into(),
            scopes: Some(scopes.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        };
        let key = api_key::generate().unwrap();
        NewClient::validate(draft, now()).unwrap().into_client(
            ClientId::generate().unwrap(),
            &key,
            now(),
        )
    }

    #[test]
    fn scopes_default_to_all_and_narrow_to_a_subset() {
        let c = client(&["chat", "history"]);
        assert_eq!(grant_scopes(&c, None).unwrap(), ["chat", "history"]);
        assert_eq!(grant_scopes(&c, Some("")).unwrap(), ["chat", "history"]);
        assert_eq!(
            grant_scopes(&c, Some("history chat history")).unwrap(),
            ["chat", "history"]
        );
        assert_eq!(grant_scopes(&c, Some("chat")).unwrap(), ["chat"]);
        assert_eq!(grant_scopes(&c, Some("chat admin")).unwrap_err(), "admin");
    }

    #[test]
    fn claims_carry_the_settings_and_never_outlive_the_client() {
        let mut c = client(&["chat"]);
        let claims = claims_for(&c, &["chat".into()], &settings(), now(), "j".into());
        assert_eq!(claims.exp - claims.iat, 900);
        assert_eq!(claims.sub, c.client_id.as_str());
        assert_eq!(claims.scope, "chat");
        c.expires_at = Some(now() + Duration::seconds(60));
        let claims = claims_for(&c, &[], &settings(), now(), "j".into());
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn time_checks_allow_one_second_of_leeway() {
        let c = client(&["chat"]);
        let claims = claims_for(&c, &[], &settings(), now(), "j".into());
        let at = |s: i64| now() + Duration::seconds(s);
        assert_eq!(check_claims(&claims, &settings(), at(900)), Ok(()));
        assert_eq!(
            check_claims(&claims, &settings(), at(901)),
            Err(Rejection::Expired)
        );
        assert_eq!(check_claims(&claims, &settings(), at(-1)), Ok(()));
        assert_eq!(
            check_claims(&claims, &settings(), at(-2)),
            Err(Rejection::NotYetValid)
        );
        let future = Claims {
            nbf: Some(now().timestamp() + 100),
            ..claims.clone()
        };
        assert_eq!(
            check_claims(&future, &settings(), now()),
            Err(Rejection::NotYetValid)
        );
    }

    #[test]
    fn a_lifetime_beyond_the_ttl_is_refused() {
        let c = client(&["chat"]);
        let claims = claims_for(&c, &[], &settings(), now(), "j".into());
        let longer = |extra: i64| Claims {
            exp: claims.exp + extra,
            ..claims.clone()
        };
        assert_eq!(check_claims(&longer(1), &settings(), now()), Ok(()));
        assert_eq!(
            check_claims(&longer(2), &settings(), now()),
            Err(Rejection::LifetimeTooLong)
        );
        assert_eq!(
            check_claims(&longer(i64::MAX - claims.exp), &settings(), now()),
            Err(Rejection::LifetimeTooLong)
        );
    }

    #[test]
    fn issuer_and_audience_must_match() {
        let c = client(&["chat"]);
        let claims = claims_for(&c, &[], &settings(), now(), "j".into());
        let other = TokenSettings {
            issuer: "https://elsewhere".into(),
            ..settings()
        };
        assert_eq!(
            check_claims(&claims, &other, now()),
            Err(Rejection::WrongIssuer)
        );
        let other = TokenSettings {
            audience: "other".into(),
            ..settings()
        };
        assert_eq!(
            check_claims(&claims, &other, now()),
            Err(Rejection::WrongAudience)
        );
    }

    #[test]
    fn a_moved_generation_or_an_inactive_client_revokes_the_token() {
        let mut c = client(&["chat", "history"]);
        let claims = claims_for(
            &c,
            &["chat".into(), "history".into()],
            &settings(),
            now(),
            "j".into(),
        );
        assert_eq!(
            effective_scopes(&claims, &c, now()).unwrap(),
            ["chat", "history"]
        );
        c.scopes = vec!["chat".into()];
        assert_eq!(effective_scopes(&claims, &c, now()).unwrap(), ["chat"]);
        c.token_generation += 1;
        assert_eq!(
            effective_scopes(&claims, &c, now()),
            Err(Rejection::ClientRevoked)
        );
        c.token_generation -= 1;
        c.enabled = false;
        assert_eq!(
            effective_scopes(&claims, &c, now()),
            Err(Rejection::ClientRevoked)
        );
    }
}
