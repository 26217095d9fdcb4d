//! Scopes: what a client may do. Names follow `^[a-z][a-z0-9_:.-]{0,63}$`.

use std::borrow::Cow;
use std::fmt;

/// A valid scope name, built by `parse` (or one of the constants) and trusted afterwards.
/// A client's own scopes stay plain text: adopted rows are kept as stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Scope(Cow<'static, str>);

impl Scope {
    /// Grants the admin API and every verification endpoint.
    pub const ADMIN: Scope = Scope(Cow::Borrowed(ADMIN));
    /// Grants `POST /v1/keys/verify` and `POST /v1/introspect`.
    pub const KEYS_VERIFY: Scope = Scope(Cow::Borrowed(KEYS_VERIFY));

    /// The error says why, without repeating the text (it may be anything a client sent).
    pub fn parse(text: &str) -> Result<Scope, String> {
        if is_valid(text) {
            Ok(Scope(Cow::Owned(text.to_string())))
        } else {
            Err("is not a valid scope name (^[a-z][a-z0-9_:.-]{0,63}$)".into())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Scope {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scope::parse(s)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub const ADMIN: &str = "admin";
pub const KEYS_VERIFY: &str = "keys:verify";
/// The scopes a client gets when none are given.
pub const DEFAULT: [&str; 2] = ["chat", "history"];
const MAX_SCOPES: usize = 32;

pub fn is_valid(scope: &str) -> bool {
    let bytes = scope.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_:.-".contains(&b))
}

/// Validates a requested scope list and returns it sorted; the error is the detail message.
pub fn parse_list(scopes: Vec<String>) -> Result<Vec<String>, String> {
    if scopes.len() > MAX_SCOPES {
        return Err(format!("at most {MAX_SCOPES} scopes"));
    }
    // Messages name items by position, never by value: a key pasted here must not come back.
    if let Some(bad) = scopes.iter().position(|s| !is_valid(s)) {
        return Err(format!(
            "item {bad} is not a valid scope (^[a-z][a-z0-9_:.-]{{0,63}}$)"
        ));
    }
    for (i, scope) in scopes.iter().enumerate() {
        if let Some(j) = scopes[i + 1..].iter().position(|s| s == scope) {
            return Err(format!("items {i} and {} are the same scope", i + 1 + j));
        }
    }
    let mut sorted = scopes;
    sorted.sort();
    Ok(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_names_follow_the_pattern() {
        for ok in ["a", "chat", "keys:verify", "a.b-c_d:9", &"a".repeat(64)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in ["", "A", "1a", "chat ", "é", "a/b", &"a".repeat(65)] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn lists_are_sorted_and_duplicates_refused() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(parse_list(v(&["b", "a"])).unwrap(), v(&["a", "b"]));
        assert_eq!(
            parse_list(v(&["a", "b", "a"])).unwrap_err(),
            "items 0 and 2 are the same scope"
        );
        assert!(
            !parse_list(v(&["ok", "Secret"]))
                .unwrap_err()
                .contains("Secret")
        );
        assert!(parse_list(vec!["s".into(); 33]).is_err());
        let many: Vec<String> = (0..32).map(|i| format!("s{i}")).collect();
        assert_eq!(parse_list(many).unwrap().len(), 32);
    }
}
