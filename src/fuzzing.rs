//! Every parser of attacker input, as one function of arbitrary bytes each: the fuzz targets
//! in `fuzz/` (cargo fuzz, libFuzzer) call these, and the `proptest` properties below run the
//! same checks inside `cargo test`, so CI exercises them on every change. Each function
//! panics exactly when a property is broken: no input may panic a parser, and what a parser
//! accepts or answers must be sound (see each function). Built with `--features fuzzing`.

use std::net::IpAddr;
use std::sync::OnceLock;

use chrono::{Duration, Utc};

use crate::domain::access_token::{self, Claims, TokenSettings};
use crate::domain::address::{TrustedProxies, parse_network};
use crate::domain::api_key;
use crate::domain::route::{Route, RouteTable, canonical_path};
use crate::domain::signing_key::SigningKey;
use crate::http::fuzzing::{self as edge, Body};
use crate::service::keyring::KeyRing;

/// An API key: parsing never panics, and a key that parses has the format and checksum of
/// the contract (so it round-trips), or is a legacy key's shape.
pub fn api_key(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let legacy = api_key::is_legacy_format(text);
    if let Some(presented) = api_key::parse(text) {
        assert!(!legacy, "a key of both formats: {text:?}");
        assert_eq!(text.len(), 51);
        assert!(text.starts_with(api_key::PREFIX));
        assert_eq!(
            presented.key_id.key_prefix(),
            text[..13],
            "the key id is the key's first characters"
        );
    }
}

/// A ring of one signing key, a token it signed, and the settings to check claims with.
struct TokenFixture {
    ring: KeyRing,
    token: String,
    settings: TokenSettings,
}

fn token_fixture() -> &'static TokenFixture {
    static FIXTURE: OnceLock<TokenFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let now = Utc::now();
        let ring = KeyRing::new(Duration::seconds(900));
        let key = SigningKey::generate(now).unwrap_or_else(|e| panic!("no key: {e}"));
        ring.load(&[key], now);
        let settings = TokenSettings {
            issuer: "https://relay.test".into(),
            audience: "egregore-relay".into(),
            ttl_seconds: 900,
        };
        let claims = Claims {
            iss: settings.issuer.clone(),
            sub: "client_0123456789abcdef".into(),
            client_id: "client_0123456789abcdef".into(),
            aud: settings.audience.clone(),
            iat: now.timestamp(),
            exp: now.timestamp() + 900,
            nbf: None,
            jti: "0".repeat(32),
            scope: "chat".into(),
            generation: 0,
        };
        let token = ring
            .sign(&claims)
            .unwrap_or_else(|e| panic!("no token: {e:?}"));
        TokenFixture {
            ring,
            token,
            settings,
        }
    })
}

/// An access token: checking one never panics, and no token but the one the ring signed (or
/// one differing only in how its base64 pads the signature's last bits, which decodes to the
/// same signature) is accepted.
pub fn access_token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let fixture = token_fixture();
    for candidate in [text.to_string(), mutated(&fixture.token, data)] {
        if let Ok(claims) = fixture.ring.verify(&candidate) {
            let _ = access_token::check_claims(&claims, &fixture.settings, Utc::now());
            let same_signed_part = candidate.rsplit_once('.').map(|(head, _)| head)
                == fixture.token.rsplit_once('.').map(|(head, _)| head);
            assert!(
                same_signed_part,
                "a token nobody signed was accepted: {candidate:?}"
            );
        }
    }
}

/// The signed token with bytes of `data` written over it, at positions `data` chooses.
fn mutated(token: &str, data: &[u8]) -> String {
    let mut bytes = token.as_bytes().to_vec();
    for pair in data.chunks(2) {
        if let [at, value] = pair {
            let at = usize::from(*at) * bytes.len() / 256;
            bytes[at] = *value;
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A token request (`POST /v1/token`): the first byte chooses the media type, the next ones
/// up to a NUL the `Authorization` header, the rest is the body. Reading it never panics; a
/// refusal is a 4xx that repeats no value it was sent (a secret pasted anywhere stays out).
pub fn token_request(data: &[u8]) {
    let Some((&kind, rest)) = data.split_first() else {
        return;
    };
    let content_type = match kind % 3 {
        0 => "application/x-www-form-urlencoded",
        1 => "application/json",
        _ => "text/plain",
    };
    let (authorization, body) = match rest.iter().position(|b| *b == 0) {
        Some(at) => (Some(&rest[..at]), &rest[at + 1..]),
        None => (None, rest),
    };
    if let Err(refusal) = edge::token_request(content_type, authorization, body) {
        assert!((400..500).contains(&refusal.status), "{}", refusal.status);
        assert_echoes_nothing(&refusal.text, body);
    }
}

/// A request path: canonicalising never panics, and a canonical path is one no server can
/// resolve elsewhere (absolute, no dot or empty segments, no backslash, no encoded slash,
/// backslash, dot or percent), canonical again as it is; matching it never panics.
pub fn route_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(path) = canonical_path(text) else {
        return;
    };
    assert!(path.starts_with('/'), "{path:?}");
    for segment in path.split('/').skip(1) {
        assert!(segment != "." && segment != "..", "{path:?}");
    }
    assert!(!path.contains("//") && !path.contains('\\'), "{path:?}");
    let upper = path.to_ascii_uppercase();
    for escape in ["%2F", "%5C", "%2E", "%25"] {
        assert!(!upper.contains(escape), "{path:?}");
    }
    assert_eq!(
        canonical_path(&path).ok().as_deref(),
        Some(&*path),
        "canonical twice"
    );
    let _ = routes().find(&path);
}

fn routes() -> &'static RouteTable {
    static ROUTES: OnceLock<RouteTable> = OnceLock::new();
    ROUTES.get_or_init(|| {
        let route = |prefix: &str, scope: &str| Route {
            prefix: prefix.into(),
            upstream: "http://127.0.0.1:9".into(),
            scope: scope.parse().unwrap_or_else(|e| panic!("{e}")),
            timeout: None,
        };
        RouteTable::new(vec![
            route("/v1/chat", "chat"),
            route("/v1/history", "history"),
            route("/v1/chat/admin", "admin"),
        ])
        .unwrap_or_else(|e| panic!("{e}"))
    })
}

/// An admin or verification JSON body (the first byte chooses which): reading and validating
/// it never panics, and a refusal is a 400 that repeats no value it was sent.
pub fn admin_json(data: &[u8]) {
    let Some((&kind, body)) = data.split_first() else {
        return;
    };
    let kind = match kind % 4 {
        0 => Body::Create,
        1 => Body::Update,
        2 => Body::Regenerate,
        _ => Body::Verify,
    };
    if let Err(refusal) = edge::admin_body(kind, body) {
        assert_eq!(refusal.status, 400, "{kind:?}: {}", refusal.text);
        assert_echoes_nothing(&refusal.text, body);
    }
}

/// `X-Forwarded-For` from a trusted proxy: finding the caller never panics, and the caller is
/// the proxy or an address the header names.
pub fn forwarded_for(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let proxies = TrustedProxies::new(vec![
        parse_network("127.0.0.0/8").unwrap_or_else(|e| panic!("{e}")),
        parse_network("2001:db8::/32").unwrap_or_else(|e| panic!("{e}")),
    ]);
    let peer: IpAddr = [127, 0, 0, 1].into();
    let caller = proxies.caller(peer, text.split('\n'));
    if caller != peer {
        // A hop is an address, or an address and a port (`192.0.2.1:443`, `[2001:db8::1]:80`).
        let named = text
            .split(['\n', ','])
            .filter_map(|hop| {
                let hop = hop.trim();
                hop.trim_matches(['[', ']'])
                    .parse::<IpAddr>()
                    .ok()
                    .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|s| s.ip()))
            })
            .any(|ip| ip.to_canonical() == caller);
        assert!(named, "{caller} is not in {text:?}");
    }
}

/// A refusal's text holds no run of 12 or more characters of what was sent (beyond the names
/// of the service's own parameters and fields, which a message may name).
fn assert_echoes_nothing(text: &str, sent: &[u8]) {
    const OWN_WORDS: [&str; 3] = ["client_secret", "grace_period_seconds", "allowed_networks"];
    let sent = String::from_utf8_lossy(sent);
    let chars: Vec<char> = sent.chars().collect();
    for window in chars.windows(12) {
        let run: String = window.iter().collect();
        if run.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !OWN_WORDS.iter().any(|w| w.contains(&run))
            && text.contains(&run)
        {
            panic!("the refusal repeats {run:?}: {text}");
        }
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn api_keys(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            api_key(&data);
        }

        #[test]
        fn api_key_shaped_text(text in "eg_[0-9A-Za-z]{48}|eg_[0-9a-f]{40}") {
            api_key(text.as_bytes());
        }

        #[test]
        fn access_tokens(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            access_token(&data);
        }

        #[test]
        fn token_requests(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            token_request(&data);
        }

        #[test]
        fn token_forms(
            kind in 0u8..2,
            auth in "(Basic|Bearer|Digest) [A-Za-z0-9+/=%:_-]{0,40}",
            body in "(grant_type|scope|client_id|client_secret|eg_[a-z0-9]{12})=[A-Za-z0-9%+_]{0,30}(&[a-z_]{1,15}=[A-Za-z0-9%+_]{0,30}){0,4}",
        ) {
            let mut data = vec![kind];
            data.extend_from_slice(auth.as_bytes());
            data.push(0);
            data.extend_from_slice(body.as_bytes());
            token_request(&data);
        }

        #[test]
        fn paths(text in "(/|%2[eEfF]|%5[cC]|\\.|\\\\|;|[a-z]{1,6}|%[0-9A-Fa-f]{2}|%|%%){0,12}") {
            route_path(text.as_bytes());
        }

        #[test]
        fn any_paths(data in proptest::collection::vec(any::<u8>(), 0..60)) {
            route_path(&data);
        }

        #[test]
        fn admin_bodies(kind in any::<u8>(), json in json_text()) {
            let mut data = vec![kind];
            data.extend_from_slice(json.as_bytes());
            admin_json(&data);
        }

        #[test]
        fn any_admin_bodies(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            admin_json(&data);
        }

        #[test]
        fn forwarded_chains(
            hops in proptest::collection::vec(
                "(203\\.0\\.113\\.[0-9]{1,3}|127\\.0\\.0\\.[0-9]|2001:db8::[0-9a-f]{1,4}|::ffff:127\\.0\\.0\\.1|\\[::1\\]|unknown|[0-9a-z.:]{0,12})",
                0..6,
            )
        ) {
            forwarded_for(hops.join(", ").as_bytes());
        }

        #[test]
        fn any_forwarded(data in proptest::collection::vec(any::<u8>(), 0..80)) {
            forwarded_for(&data);
        }
    }

    /// JSON objects made of the fields the bodies have, and others, with values of every type.
    fn json_text() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("name".to_string()),
            Just("scopes".to_string()),
            Just("rate_limit".to_string()),
            Just("expires_at".to_string()),
            Just("metadata".to_string()),
            Just("credits".to_string()),
            Just("allowed_networks".to_string()),
            Just("enabled".to_string()),
            Just("grace_period_seconds".to_string()),
            Just("key".to_string()),
            Just("ip".to_string()),
            Just("cost".to_string()),
            "eg_[A-Za-z0-9]{16}",
        ];
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            "[ -~]{0,20}".prop_map(serde_json::Value::from),
            Just(serde_json::json!({"remaining": 5, "refill": {"amount": 1, "interval": "week"}})),
            Just(serde_json::json!(["10.0.0.1/8", "2001:db8::/32"])),
        ];
        let value = leaf.prop_recursive(2, 8, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::btree_map("[a-z_]{1,8}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        });
        proptest::collection::btree_map(key, value, 0..5)
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect()).to_string())
    }
}

/// Inputs the fuzz targets found, kept as regressions.
#[cfg(test)]
mod found {
    /// An unknown field whose name holds dots: the pointer to its parent kept part of the
    /// name (`/key;:/0eriod_second/0`), cut at the last dot of the name.
    #[test]
    fn an_unknown_name_with_dots_stays_out_of_the_pointer() {
        super::admin_json(b"\x0b{\"key;:.0eriod_second.0.1\",\"cos\x0ct:2}");
        super::admin_json(b"\x01{\"credits\": {\"eg_pastedsecretkey.tail.x\": 1}}");
    }

    /// A hop written with its port names its address (the property was too strict here,
    /// not the code).
    #[test]
    fn a_hop_with_a_port_names_its_address() {
        super::forwarded_for(b"2001:0db9::\n,\n3.0.1.91:1");
    }

    /// An unknown field whose name holds a backtick: the message was cut at the name's own
    /// backtick, and the rest of the name came back.
    #[test]
    fn an_unknown_name_with_a_backtick_stays_out_of_the_message() {
        let mut body = b"\x00{\"name\":\"`x\",\"eg_sbecret_f".to_vec();
        body.extend_from_slice(&[b'a'; 17]);
        body.push(b'`');
        body.extend_from_slice(&[b'a'; 80]);
        body.extend_from_slice(b"ield\":'1w");
        super::admin_json(&body);
        super::admin_json(b"\x01{\"eg_pasted`secret`, expected one of `x`\": 1}");
    }

    /// An integer sent where a list belongs came back in serde's message.
    #[test]
    fn an_integer_in_the_wrong_place_is_not_repeated() {
        super::admin_json(b"\x00{\"allowed_networks\": -3513928312616060652}");
    }
}
