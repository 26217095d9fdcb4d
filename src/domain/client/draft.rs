//! What an admin asks for when creating or changing a client, and its validation: every
//! field's problem reported at once, each at its JSON Pointer, with the messages the API,
//! the CLI and the console show.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use ipnet::IpNet;

use super::{Client, ClientId, MAX_RATE_LIMIT, StoredKey};
use crate::domain::api_key::NewKey;
use crate::domain::policy::{self, Credits, CreditsDraft};
use crate::domain::{Error, FieldError, scope};

pub const DEFAULT_RATE_LIMIT: i64 = 100;
const MAX_NAME_CHARS: usize = 255;
const MAX_METADATA_BYTES: usize = 4096;
/// Longest grace period for an old key after regeneration: one week.
pub const MAX_GRACE_SECONDS: u32 = 604_800;

/// What an admin asks for when creating a client, before validation.
#[derive(Debug, Default, Clone)]
pub struct ClientDraft {
    pub name: String,
    pub scopes: Option<Vec<String>>,
    pub rate_limit: Option<i64>,
    pub expires_at: Option<String>,
    pub metadata: Option<Value>,
    pub credits: Option<CreditsDraft>,
    pub allowed_networks: Option<Vec<String>>,
}

/// What an admin asks to change, before validation. `expires_at: Some(None)` and
/// `credits: Some(None)` clear them.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ClientChanges {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub rate_limit: Option<i64>,
    pub enabled: Option<bool>,
    pub expires_at: Option<Option<String>>,
    pub metadata: Option<Value>,
    pub credits: Option<Option<CreditsDraft>>,
    pub allowed_networks: Option<Vec<String>>,
}

/// A validated creation request.
#[derive(Debug, Clone)]
pub struct NewClient {
    pub name: String,
    pub scopes: Vec<String>,
    pub rate_limit: i64,
    pub expires_at: Option<DateTime<Utc>>,
    pub metadata: Map<String, Value>,
    pub credits: Option<Credits>,
    pub allowed_networks: Vec<IpNet>,
}

/// A validated change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct ClientUpdate {
    pub name: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub rate_limit: Option<i64>,
    pub enabled: Option<bool>,
    pub expires_at: Option<Option<DateTime<Utc>>>,
    pub metadata: Option<Map<String, Value>>,
    pub credits: Option<Option<Credits>>,
    pub allowed_networks: Option<Vec<IpNet>>,
}

/// Collects every field's problem so one response lists them all.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn check<T>(&mut self, pointer: &str, result: Result<T, String>) -> Option<T> {
        result
            .map_err(|detail| self.0.push(FieldError::new(pointer, detail)))
            .ok()
    }

    fn check_credits(&mut self, draft: CreditsDraft) -> Option<Credits> {
        policy::parse_credits(draft)
            .map_err(|problems| {
                for (pointer, detail) in problems {
                    self.0.push(FieldError::new(pointer, detail));
                }
            })
            .ok()
    }

    fn finish<T>(self, value: impl FnOnce() -> Option<T>) -> Result<T, Error> {
        if self.0.is_empty() {
            value().ok_or_else(|| Error::invalid("", "invalid input"))
        } else {
            Err(Error::Invalid(self.0))
        }
    }
}

impl NewClient {
    pub fn validate(draft: ClientDraft, now: DateTime<Utc>) -> Result<Self, Error> {
        let mut p = Problems::default();
        let name = p.check("/name", parse_name(&draft.name));
        let scopes = p.check(
            "/scopes",
            scope::parse_list(
                draft
                    .scopes
                    .unwrap_or_else(|| scope::DEFAULT.map(String::from).to_vec()),
            ),
        );
        let rate_limit = p.check(
            "/rate_limit",
            parse_rate_limit(draft.rate_limit.unwrap_or(DEFAULT_RATE_LIMIT)),
        );
        let expires_at = p.check("/expires_at", parse_optional_expiry(draft.expires_at, now));
        let metadata = p.check(
            "/metadata",
            parse_metadata(draft.metadata.unwrap_or(Value::Object(Map::new()))),
        );
        let credits = draft.credits.map(|c| p.check_credits(c));
        let allowed_networks = p.check(
            "/allowed_networks",
            policy::parse_networks(&draft.allowed_networks.unwrap_or_default()),
        );
        p.finish(|| {
            Some(NewClient {
                name: name?,
                scopes: scopes?,
                rate_limit: rate_limit?,
                expires_at: expires_at?,
                metadata: metadata?,
                credits: credits.map(|c| c.ok_or(())).transpose().ok()?,
                allowed_networks: allowed_networks?,
            })
        })
    }

    /// The client this request creates, holding `key` as its only key.
    pub fn into_client(self, client_id: ClientId, key: &NewKey, now: DateTime<Utc>) -> Client {
        Client {
            row_id: 0,
            client_id,
            name: self.name,
            scopes: self.scopes,
            rate_limit: self.rate_limit,
            enabled: true,
            expires_at: self.expires_at,
            metadata: self.metadata,
            created_at: now,
            updated_at: now,
            last_used_at: None,
            key: Some(StoredKey {
                key_id: key.key_id,
                hash: key.hash,
            }),
            previous_key: None,
            token_generation: 0,
            credits_period: self.credits.and_then(|c| c.period(now)),
            credits: self.credits,
            credits_generation: 0,
            allowed_networks: self.allowed_networks,
        }
    }
}

impl ClientUpdate {
    pub fn validate(changes: ClientChanges, now: DateTime<Utc>) -> Result<Self, Error> {
        let empty = changes.name.is_none()
            && changes.scopes.is_none()
            && changes.rate_limit.is_none()
            && changes.enabled.is_none()
            && changes.expires_at.is_none()
            && changes.metadata.is_none()
            && changes.credits.is_none()
            && changes.allowed_networks.is_none();
        if empty {
            return Err(Error::invalid("", "give at least one field to change"));
        }
        let mut p = Problems::default();
        let name = changes.name.map(|n| p.check("/name", parse_name(&n)));
        let scopes = changes
            .scopes
            .map(|s| p.check("/scopes", scope::parse_list(s)));
        let rate_limit = changes
            .rate_limit
            .map(|r| p.check("/rate_limit", parse_rate_limit(r)));
        let expires_at = changes
            .expires_at
            .map(|e| p.check("/expires_at", parse_optional_expiry(e, now)));
        let metadata = changes
            .metadata
            .map(|m| p.check("/metadata", parse_metadata(m)));
        let credits = changes
            .credits
            .map(|c| c.map(|c| p.check_credits(c).ok_or(())).transpose());
        let allowed_networks = changes
            .allowed_networks
            .map(|n| p.check("/allowed_networks", policy::parse_networks(&n)));
        p.finish(|| {
            Some(ClientUpdate {
                name: name.map(|v| v.ok_or(())).transpose().ok()?,
                scopes: scopes.map(|v| v.ok_or(())).transpose().ok()?,
                rate_limit: rate_limit.map(|v| v.ok_or(())).transpose().ok()?,
                enabled: changes.enabled,
                expires_at: expires_at.map(|v| v.ok_or(())).transpose().ok()?,
                metadata: metadata.map(|v| v.ok_or(())).transpose().ok()?,
                credits: credits.transpose().ok()?,
                allowed_networks: allowed_networks.map(|v| v.ok_or(())).transpose().ok()?,
            })
        })
    }

    pub fn enabled(enabled: bool) -> Self {
        ClientUpdate {
            enabled: Some(enabled),
            ..Default::default()
        }
    }

    /// Applies the change; returns the new client and the audit `changes` object
    /// (`{"field": {"from", "to"}}` for each field that really changed).
    pub fn apply(&self, old: &Client, now: DateTime<Utc>) -> (Client, Value) {
        let mut new = old.clone();
        let mut diff = Map::new();
        fn record<T: PartialEq + serde::Serialize + Clone>(
            diff: &mut Map<String, Value>,
            field: &str,
            slot: &mut T,
            to: &Option<T>,
        ) {
            if let Some(to) = to {
                if slot != to {
                    diff.insert(field.into(), json!({"from": slot, "to": to}));
                    *slot = to.clone();
                }
            }
        }
        record(&mut diff, "name", &mut new.name, &self.name);
        record(&mut diff, "scopes", &mut new.scopes, &self.scopes);
        record(
            &mut diff,
            "rate_limit",
            &mut new.rate_limit,
            &self.rate_limit,
        );
        record(&mut diff, "enabled", &mut new.enabled, &self.enabled);
        record(
            &mut diff,
            "expires_at",
            &mut new.expires_at,
            &self.expires_at,
        );
        record(&mut diff, "metadata", &mut new.metadata, &self.metadata);
        if let Some(credits) = &self.credits {
            // Setting the balance voids what nodes hold leased under the old one, even when
            // it is set to the number the database happens to hold.
            if old.credits != *credits {
                diff.insert(
                    "credits".into(),
                    json!({"from": old.credits, "to": credits}),
                );
            }
            new.credits = *credits;
            new.credits_period = credits.and_then(|c| c.period(now));
            new.credits_generation += 1;
        }
        if let Some(networks) = &self.allowed_networks {
            if old.allowed_networks != *networks {
                new.allowed_networks = networks.clone();
                diff.insert(
                    "allowed_networks".into(),
                    json!({"from": old.network_texts(), "to": new.network_texts()}),
                );
            }
        }
        if !diff.is_empty() {
            new.updated_at = now;
        }
        // A disable ends every access token issued so far; re-enabling does not revive them.
        if old.enabled && !new.enabled {
            new.token_generation += 1;
        }
        (new, Value::Object(diff))
    }
}

pub fn parse_grace_seconds(seconds: i64) -> Result<u32, Error> {
    u32::try_from(seconds)
        .ok()
        .filter(|s| *s <= MAX_GRACE_SECONDS)
        .ok_or_else(|| {
            Error::invalid(
                "/grace_period_seconds",
                format!("must be 0..={MAX_GRACE_SECONDS}"),
            )
        })
}

fn parse_name(raw: &str) -> Result<String, String> {
    let name = raw.trim();
    let chars = name.chars().count();
    if chars == 0 || chars > MAX_NAME_CHARS {
        return Err(format!(
            "must be 1..={MAX_NAME_CHARS} characters after trimming"
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if name.chars().any(reorders_or_breaks_text) {
        return Err("must not contain bidirectional controls or line separators".into());
    }
    Ok(name.to_string())
}

/// Characters that change how the text around them is shown (bidirectional embeddings,
/// overrides and isolates, which can make a list show `nimda` for `admin`, CVE-2021-42574),
/// or break it into lines: refused in names, and escaped when stored text is printed.
pub fn reorders_or_breaks_text(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
            | '\u{2028}' | '\u{2029}'
    )
}

fn parse_rate_limit(n: i64) -> Result<i64, String> {
    if (1..=MAX_RATE_LIMIT).contains(&n) {
        Ok(n)
    } else {
        Err(format!("must be 1..={MAX_RATE_LIMIT} requests per minute"))
    }
}

fn parse_optional_expiry(
    raw: Option<String>,
    now: DateTime<Utc>,
) -> Result<Option<DateTime<Utc>>, String> {
    raw.map(|text| parse_expiry(&text, now)).transpose()
}

/// RFC 3339 with an explicit offset, in the future; kept to the microsecond like the stores.
pub fn parse_expiry(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|_| "must be an RFC 3339 timestamp with a UTC offset".to_string())?;
    let at = crate::domain::truncate_to_micros(at.with_timezone(&Utc));
    if at <= now {
        return Err("must be in the future".into());
    }
    Ok(at)
}

fn parse_metadata(value: Value) -> Result<Map<String, Value>, String> {
    let Value::Object(map) = value else {
        return Err("must be a JSON object".into());
    };
    if map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)) {
        // PostgreSQL's jsonb cannot hold it; refused on SQLite too, so both agree.
        return Err("must not contain the NUL character (U+0000) in a key or a string".into());
    }
    let size = serde_json::to_vec(&map)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_METADATA_BYTES {
        return Err(format!(
            "must be at most {MAX_METADATA_BYTES} bytes as compact JSON"
        ));
    }
    Ok(map)
}

/// Whether any key or string anywhere in `value` contains U+0000.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(holds_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_limit_counts_compact_json() {
        let fits = json!({"k": "x".repeat(4096 - 8)});
        assert_eq!(serde_json::to_vec(&fits).unwrap().len(), 4096);
        assert!(parse_metadata(fits).is_ok());
        assert!(parse_metadata(json!({"k": "x".repeat(4096 - 7)})).is_err());
    }
}
