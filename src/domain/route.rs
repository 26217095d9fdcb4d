//! Relay routes: which incoming path prefix goes to which upstream, guarded by which scope.
//! A prefix matches whole path segments (`/v1/chat` matches `/v1/chat` and `/v1/chat/x`, never
//! `/v1/chatty`); the longest match wins.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Starts with `/`, no trailing `/` (except the root route `/`).
    pub prefix: String,
    /// `http://host:port` with an optional base path, no trailing `/`.
    pub upstream: String,
    pub scope: String,
    /// Time allowed for the upstream's response head; `None` uses the service default.
    pub timeout: Option<Duration>,
}

/// Routes sorted longest prefix first, so the first match is the longest.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
}

impl RouteTable {
    /// Validates the routes; the error is a sentence naming the bad one.
    pub fn new(routes: Vec<Route>) -> Result<Self, String> {
        let mut routes = routes;
        for r in &mut routes {
            if !r.prefix.starts_with('/')
                || r.prefix.contains(['?', '#'])
                || r.prefix.contains("//")
            {
                return Err(format!(
                    "route prefix {:?} must be a path starting with /",
                    r.prefix
                ));
            }
            if r.prefix.len() > 1 {
                r.prefix = r.prefix.trim_end_matches('/').to_string();
            }
            if !super::scope::is_valid(&r.scope) {
                return Err(format!(
                    "route {}: {:?} is not a valid scope",
                    r.prefix, r.scope
                ));
            }
            r.upstream =
                parse_upstream(&r.upstream).map_err(|e| format!("route {}: {e}", r.prefix))?;
        }
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        if let Some(w) = routes.windows(2).find(|w| w[0].prefix == w[1].prefix) {
            return Err(format!("route prefix {} is configured twice", w[0].prefix));
        }
        Ok(RouteTable { routes })
    }

    /// The two default routes in front of one upstream.
    pub fn defaults(upstream: &str) -> Result<Vec<Route>, String> {
        let upstream = parse_upstream(upstream).map_err(|e| format!("RELAY_UPSTREAM: {e}"))?;
        Ok(["chat", "history"]
            .into_iter()
            .map(|scope| Route {
                prefix: format!("/v1/{scope}"),
                upstream: upstream.clone(),
                scope: scope.to_string(),
                timeout: None,
            })
            .collect())
    }

    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| {
            r.prefix == "/"
                || path
                    .strip_prefix(r.prefix.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

/// Accepts `http://host[:port][/base]`; returns it without a trailing `/`.
fn parse_upstream(text: &str) -> Result<String, String> {
    let rest = text
        .strip_prefix("http://")
        .ok_or_else(|| format!("upstream {text:?} must start with http://"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') && !port.contains(']') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = !host.is_empty()
        && (host.starts_with('[') && host.ends_with(']')
            || host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'));
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    let path_ok = path
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#');
    if !(host_ok && port_ok && path_ok) {
        return Err(format!(
            "upstream {text:?} is not an http://host[:port][/path] URL"
        ));
    }
    Ok(text.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, scope: &str) -> Route {
        Route {
            prefix: prefix.into(),
            upstream: "http://127.0.0.1:9".into(),
            scope: scope.into(),
            timeout: None,
        }
    }

    #[test]
    fn prefixes_match_whole_segments_and_the_longest_wins() {
        let table = RouteTable::new(vec![
            route("/v1/chat", "chat"),
            route("/v1/chat/admin/", "ops"),
        ])
        .unwrap();
        assert_eq!(table.find("/v1/chat").unwrap().scope, "chat");
        assert_eq!(table.find("/v1/chat/x").unwrap().scope, "chat");
        assert_eq!(table.find("/v1/chat/admin").unwrap().scope, "ops");
        assert_eq!(table.find("/v1/chat/admin/y").unwrap().scope, "ops");
        assert!(table.find("/v1/chatty").is_none());
        assert!(table.find("/v1").is_none());
    }

    #[test]
    fn bad_routes_are_refused_with_a_reason() {
        assert!(
            RouteTable::new(vec![route("v1", "chat")])
                .unwrap_err()
                .contains("starting with /")
        );
        assert!(
            RouteTable::new(vec![route("/a", "Bad")])
                .unwrap_err()
                .contains("scope")
        );
        assert!(
            RouteTable::new(vec![route("/a", "x"), route("/a/", "y")])
                .unwrap_err()
                .contains("twice")
        );
        for upstream in [
            "https://example",
            "http://",
            "http://host:port",
            "http://a b",
            "http://h/?q",
        ] {
            let mut r = route("/a", "x");
            r.upstream = upstream.into();
            assert!(RouteTable::new(vec![r]).is_err(), "{upstream}");
        }
        let mut r = route("/a", "x");
        r.upstream = "http://[::1]:8080/base/".into();
        assert_eq!(
            RouteTable::new(vec![r]).unwrap().routes()[0].upstream,
            "http://[::1]:8080/base"
        );
    }

    #[test]
    fn defaults_guard_chat_and_history() {
        let table =
            RouteTable::new(RouteTable::defaults("http://127.0.0.1:9000/").unwrap()).unwrap();
        let chat = table.find("/v1/chat/completions").unwrap();
        assert_eq!(
            (chat.scope.as_str(), chat.upstream.as_str()),
            ("chat", "http://127.0.0.1:9000")
        );
        assert_eq!(table.find("/v1/history").unwrap().scope, "history");
    }
}
