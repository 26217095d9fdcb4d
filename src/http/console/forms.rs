//! The client form as text, and how it becomes what the admin service takes: values of the
//! wrong type are reported beside their field like the service's own validation messages.

use serde::Deserialize;

use super::pages::some_text;
use super::views::ClientFields;
use crate::domain::policy::{CreditsDraft, RefillDraft};
use crate::domain::{Error, FieldError};

#[derive(Deserialize)]
pub struct ClientForm {
    #[serde(default)]
    pub csrf: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub scopes: String,
    #[serde(default)]
    pub rate_limit: String,
    #[serde(default)]
    pub expires_at: String,
    #[serde(default)]
    pub metadata: String,
    #[serde(default)]
    pub credits: String,
    #[serde(default)]
    pub refill_amount: String,
    #[serde(default)]
    pub refill_interval: String,
    #[serde(default)]
    pub allowed_networks: String,
    #[serde(default)]
    pub credits_shown: String,
}

impl ClientForm {
    pub fn fields(&self) -> ClientFields {
        ClientFields {
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            rate_limit: self.rate_limit.clone(),
            expires_at: self.expires_at.clone(),
            metadata: self.metadata.clone(),
            credits: self.credits.clone(),
            refill_amount: self.refill_amount.clone(),
            refill_interval: self.refill_interval.clone(),
            allowed_networks: self.allowed_networks.clone(),
            credits_shown: self.credits_shown.clone(),
        }
    }
}

/// The form's fields as the API would receive them; text that is not even of the right type
/// is reported like the API's own validation, beside its field.
pub struct Parsed {
    pub scopes: Vec<String>,
    pub rate_limit: Option<i64>,
    pub expires_at: Option<String>,
    pub metadata: Option<serde_json::Value>,
    /// `None`: unlimited.
    pub credits: Option<CreditsDraft>,
    pub allowed_networks: Vec<String>,
    pub errors: Vec<FieldError>,
}

/// A whole number in a field, or `None` for an empty one; anything else is reported.
fn whole_number(text: &str, pointer: &str, errors: &mut Vec<FieldError>) -> Option<i64> {
    let text = text.trim().replace([' ', '_'], "");
    if text.is_empty() {
        return None;
    }
    text.parse::<i64>()
        .map_err(|_| errors.push(FieldError::new(pointer, "must be a whole number")))
        .ok()
}

/// Credits as the form gives them: a balance, and a refill when an amount is given.
fn credits(form: &ClientForm, errors: &mut Vec<FieldError>) -> Option<CreditsDraft> {
    let remaining = whole_number(&form.credits, "/credits", errors);
    let amount = whole_number(&form.refill_amount, "/refill_amount", errors);
    let refill = amount.map(|amount| RefillDraft {
        amount,
        interval: form.refill_interval.trim().to_string(),
    });
    if refill.is_some() && remaining.is_none() && form.credits.trim().is_empty() {
        errors.push(FieldError::new(
            "/credits",
            "give the credits to start with when they are refilled",
        ));
    }
    remaining.map(|remaining| CreditsDraft { remaining, refill })
}

pub fn parse_form(form: &ClientForm) -> Parsed {
    let mut errors = Vec::new();
    let scopes = form
        .scopes
        .split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    let rate_limit = whole_number(&form.rate_limit, "/rate_limit", &mut errors);
    // A `datetime-local` value has no offset: the form says it is UTC.
    let expires_at = some_text(&form.expires_at).map(|t| {
        let bare = t.len() == 16 && t.as_bytes().get(10) == Some(&b'T');
        if bare { format!("{t}:00Z") } else { t }
    });
    let metadata = match form.metadata.trim() {
        "" => None,
        text => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(value) => Some(value),
            Err(_) => {
                errors.push(FieldError::new(
                    "/metadata",
                    "must be a JSON object, such as {\"team\": \"web\"}",
                ));
                None
            }
        },
    };
    let credits = credits(form, &mut errors);
    let allowed_networks = form
        .allowed_networks
        .split([',', ' ', '\n', '\r', '\t'])
        .filter(|s| !s.is_empty())
        .map(String::from)
        .collect();
    Parsed {
        scopes,
        rate_limit,
        expires_at,
        metadata,
        credits,
        allowed_networks,
        errors,
    }
}

/// The form field a service message is about: the credits' refill has fields of its own.
fn form_pointer(pointer: &str) -> String {
    match pointer {
        "/credits/refill/amount" => "/refill_amount".into(),
        "/credits/refill/interval" => "/refill_interval".into(),
        other => other.to_string(),
    }
}

/// Validation problems of the form and of the service together, without repeating a field.
pub fn merge_errors(mut parsed: Vec<FieldError>, service: Error) -> Result<Vec<FieldError>, Error> {
    match service {
        Error::Invalid(more) => {
            for mut e in more {
                e.pointer = form_pointer(&e.pointer);
                let field = e
                    .pointer
                    .trim_start_matches('/')
                    .split('/')
                    .next()
                    .unwrap_or("")
                    .to_string();
                if !parsed
                    .iter()
                    .any(|p| p.pointer.trim_start_matches('/').starts_with(&field))
                {
                    parsed.push(e);
                }
            }
            Ok(parsed)
        }
        other => Err(other),
    }
}
