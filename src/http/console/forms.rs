//! The client form as text, and how it becomes what the admin service takes: values of the
//! wrong type are reported beside their field like the service's own validation messages.

use serde::Deserialize;

use super::pages::some_text;
use super::views::ClientFields;
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
}

impl ClientForm {
    pub fn fields(&self) -> ClientFields {
        ClientFields {
            name: self.name.clone(),
            scopes: self.scopes.clone(),
            rate_limit: self.rate_limit.clone(),
            expires_at: self.expires_at.clone(),
            metadata: self.metadata.clone(),
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
    pub errors: Vec<FieldError>,
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
    let rate_limit = match form.rate_limit.trim() {
        "" => None,
        text => text.parse::<i64>().map_or_else(
            |_| {
                errors.push(FieldError::new("/rate_limit", "must be a whole number"));
                None
            },
            Some,
        ),
    };
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
    Parsed {
        scopes,
        rate_limit,
        expires_at,
        metadata,
        errors,
    }
}

/// Validation problems of the form and of the service together, without repeating a field.
pub fn merge_errors(mut parsed: Vec<FieldError>, service: Error) -> Result<Vec<FieldError>, Error> {
    match service {
        Error::Invalid(more) => {
            for e in more {
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
