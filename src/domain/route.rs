//! Relay routes: which incoming path prefix goes to which upstream, guarded by which scope.
//! A prefix matches whole path segments (`/v1/chat` matches `/v1/chat` and `/v1/chat/x`, never
//! `/v1/chatty`); the longest match wins.
//!
//! Routes are matched on the canonical form of the request path, and only that form is
//! forwarded: an upstream that decodes or resolves paths itself (nginx, static servers, most
//! frameworks) must see the path the scope was checked against, never `/v1/chat/../history`.

use std::borrow::Cow;
use std::time::Duration;

use super::scope::Scope;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// Starts with `/`, no trailing `/` (except the root route `/`).
    pub prefix: String,
    /// `http://host:port` with an optional base path, no trailing `/`.
    pub upstream: String,
    pub scope: Scope,
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
            if canonical_path(&r.prefix).ok().as_deref() != Some(r.prefix.as_str()) {
                return Err(format!(
                    "route prefix {:?} must be a canonical path (no dot segments, escapes \
                     only where needed, in upper case)",
                    r.prefix
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
        ["chat", "history"]
            .into_iter()
            .map(|name| {
                Ok(Route {
                    prefix: format!("/v1/{name}"),
                    upstream: upstream.clone(),
                    scope: Scope::parse(name)?,
                    timeout: None,
                })
            })
            .collect()
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

/// Why a request path has no safe canonical form; the text is the problem's detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnsafePath(pub &'static str);

/// The canonical form of a request path as sent (still percent-encoded): percent-encoded
/// unreserved characters decoded (`%61` → `a`, RFC 3986 §6.2.2.2), every other escape in
/// upper case. Refused, because upstreams disagree on what they mean: dot segments (also as
/// `..;x`, which Tomcat reads as `..`), empty segments (a trailing `/` excepted), `\`, and
/// encoded `/`, `\`, `.`, `%` or control characters (NUL included).
pub fn canonical_path(raw: &str) -> Result<Cow<'_, str>, UnsafePath> {
    let Some(rest) = raw.strip_prefix('/') else {
        return Err(UnsafePath("the path must start with /"));
    };
    // The common path has nothing to decode or refuse: no allocation.
    if !raw.contains(['%', '\\']) && !raw.contains("//") && !raw.contains("/.") {
        return Ok(Cow::Borrowed(raw));
    }
    let segments = rest.split('/');
    let count = rest.split('/').count();
    let mut canonical = String::new();
    let mut changed = false;
    for (i, segment) in segments.enumerate() {
        if segment.is_empty() && i + 1 < count {
            return Err(UnsafePath("the path has an empty segment"));
        }
        let name = segment.split(';').next().unwrap_or(segment);
        if name == "." || name == ".." {
            return Err(UnsafePath("the path has a dot segment"));
        }
        canonical.push('/');
        changed |= push_canonical_segment(&mut canonical, segment)?;
    }
    if changed {
        Ok(Cow::Owned(canonical))
    } else {
        Ok(Cow::Borrowed(raw))
    }
}

/// Appends the canonical form of one segment; returns whether it differs from `segment`.
fn push_canonical_segment(out: &mut String, segment: &str) -> Result<bool, UnsafePath> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut changed = false;
    let mut rest = segment;
    while let Some(at) = rest.find(['%', '\\']) {
        out.push_str(&rest[..at]);
        if rest[at..].starts_with('\\') {
            return Err(UnsafePath("the path contains a backslash"));
        }
        let escape = rest.get(at..at + 3).unwrap_or("");
        let decoded = escape
            .get(1..)
            .filter(|h| h.len() == 2 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
            .ok_or(UnsafePath("the path has a malformed percent-encoding"))?;
        match decoded {
            b'.' | b'/' | b'\\' | b'%' => {
                return Err(UnsafePath(
                    "the path encodes a character that separates or escapes segments",
                ));
            }
            d if d.is_ascii_control() => {
                return Err(UnsafePath("the path encodes a control character"));
            }
            d if d.is_ascii_alphanumeric() || d == b'-' || d == b'_' || d == b'~' => {
                out.push(char::from(d));
                changed = true;
            }
            d => {
                let upper = [b'%', HEX[usize::from(d >> 4)], HEX[usize::from(d & 0xf)]];
                changed |= upper != escape.as_bytes();
                out.extend(upper.map(char::from));
            }
        }
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Ok(changed)
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
            scope: scope.parse().unwrap(),
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
        let scope = |path: &str| table.find(path).unwrap().scope.to_string();
        assert_eq!(scope("/v1/chat"), "chat");
        assert_eq!(scope("/v1/chat/x"), "chat");
        assert_eq!(scope("/v1/chat/admin"), "ops");
        assert_eq!(scope("/v1/chat/admin/y"), "ops");
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
    fn canonical_paths_decode_unreserved_escapes_and_refuse_the_ambiguous() {
        let ok = |raw: &str| canonical_path(raw).unwrap().into_owned();
        assert_eq!(ok("/v1/chat/x"), "/v1/chat/x");
        assert_eq!(ok("/"), "/");
        assert_eq!(ok("/v1/chat/"), "/v1/chat/");
        assert_eq!(ok("/v1/chat/%61dmin"), "/v1/chat/admin");
        assert_eq!(ok("/v1/%7Euser/%2d"), "/v1/~user/-");
        assert_eq!(ok("/v1/a%20b%c3%a9"), "/v1/a%20b%C3%A9");
        assert_eq!(ok("/v1/.well-known/x..y/...z"), "/v1/.well-known/x..y/...z");
        assert!(matches!(canonical_path("/v1/chat"), Ok(Cow::Borrowed(_))));
        for raw in [
            "/v1/chat/../history",
            "/v1/chat/./admin",
            "/v1/chat/..",
            "/v1/chat/..;jsessionid=1/history",
            "/v1/chat/%2e%2e/history",
            "/v1/chat/%2E/admin",
            "/v1/chat/..%2fhistory",
            "/v1/chat/%2F",
            "/v1/chat//admin",
            "//v1/chat",
            "/v1/chat/..\\history",
            "/v1/chat/%5chistory",
            "/v1/chat/%00",
            "/v1/chat/%0a",
            "/v1/chat/%7f",
            "/v1/chat/%25",
            "/v1/chat/%zz",
            "/v1/chat/%4",
            "/v1/chat/%+1",
            "v1/chat",
            "*",
        ] {
            assert!(canonical_path(raw).is_err(), "{raw} was accepted");
        }
    }

    #[test]
    fn route_prefixes_must_be_canonical() {
        for prefix in ["/v1/%63hat", "/v1/../x", "/v1/./x"] {
            assert!(
                RouteTable::new(vec![route(prefix, "chat")]).is_err(),
                "{prefix}"
            );
        }
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
        assert_eq!(table.find("/v1/history").unwrap().scope.as_str(), "history");
    }
}
