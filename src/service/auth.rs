//! The one credential gate. `authenticate` turns what a request presents into a `Caller`:
//! the failed-authentication guard of its address first, then the admin token, an API key
//! (parse and checksum, the client cache, one indexed lookup, or the bounded bcrypt path of a
//! key adopted from the original service) or an access token (signature, claims, the client
//! still standing behind it), then the accounting: a failure is charged to the address, a
//! success noted for `last_used_at`. `authorize` and `admit` decide what a caller may do, in
//! the contract's order: its scope, the client's networks, one request from its rate limit,
//! then one of its credits (`credits`), if it has any. Every endpoint that takes a
//! credential goes through here; verification and introspection check keys here too. And
//! every use at verify, token and the relay routes is counted here, by its outcome (`meter`).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use super::credits::{CreditLeases, Spend};
use super::keyring::KeyRing;
use super::last_used::LastUse;
use super::legacy_key::{LegacyKeys, LegacyMatch};
use super::meter::{Endpoint, Meter};
use crate::cache::{CacheKey, ClientCache};
use crate::domain::Error;
use crate::domain::access_token::{self, Claims, TokenSettings};
use crate::domain::api_key::{self, KeyHash};
use crate::domain::audit::Actor;
use crate::domain::client::{Client, ClientId, ClientStatus};
use crate::domain::rate_limit::Decision;
use crate::domain::scope::{self, Scope};
use crate::domain::usage::Outcome;
use crate::limiter::{FailedAuthLimiter, RateLimiter};
use crate::metrics::Metrics;
use crate::storage::Store;

/// What a request presents as its credential, as it presented it.
#[derive(Clone, Copy)]
pub enum Credential<'a> {
    /// `X-API-Key`, or a client secret (HTTP Basic or form): an API key, whatever it looks like.
    ApiKey(&'a str),
    /// `Authorization: Bearer`: an API key, the admin token or an access token, told apart by
    /// format and by what the endpoint accepts.
    Bearer(&'a str),
    /// An `Authorization` header of no form we take (another scheme, an empty or unreadable
    /// value): a credential that names no one.
    Malformed,
}

/// Which credentials count where they are presented (see the contract's "Presenting
/// credentials").
#[derive(Clone, Copy)]
pub enum Accepts<'a> {
    /// The admin API, verification and introspection: the admin token or an API key.
    AdminTokenOrKey,
    /// A relay route (by its prefix): an API key or an access token.
    KeyOrToken { route: &'a str },
    /// The token endpoint: an API key, of the client named when one is (`client_id`).
    ClientKey { client_id: Option<&'a str> },
}

impl<'a> Accepts<'a> {
    /// Where a use is counted; admin endpoints count none.
    fn endpoint(self) -> Option<Endpoint<'a>> {
        match self {
            Accepts::AdminTokenOrKey => None,
            Accepts::KeyOrToken { route } => Some(Endpoint::Route(route)),
            Accepts::ClientKey { .. } => Some(Endpoint::Token),
        }
    }
}

/// Who is calling, once authenticated.
#[derive(Debug, Clone)]
pub enum Caller {
    AdminToken,
    Client {
        client: Arc<Client>,
        /// What the credential grants now: the client's scopes, or a token's scopes
        /// intersected with them.
        scopes: Vec<String>,
    },
}

impl Caller {
    pub fn actor(&self) -> Actor {
        match self {
            Caller::AdminToken => Actor::AdminToken,
            Caller::Client { client, .. } => Actor::Client(client.client_id.clone()),
        }
    }

    pub fn client(&self) -> Option<&Arc<Client>> {
        match self {
            Caller::AdminToken => None,
            Caller::Client { client, .. } => Some(client),
        }
    }

    fn client_ref(&self) -> Option<&Client> {
        self.client().map(|c| &**c)
    }

    fn holds(&self, scope: &str) -> bool {
        match self {
            Caller::AdminToken => true,
            Caller::Client { scopes, .. } => scopes.iter().any(|s| s == scope),
        }
    }
}

/// The result of checking an API key, in the order verification reports problems.
#[derive(Debug, Clone)]
pub enum KeyCheck {
    Valid(Arc<Client>),
    NotFound,
    Disabled(Arc<Client>),
    Expired(Arc<Client>),
}

impl KeyCheck {
    pub fn code(&self) -> &'static str {
        match self {
            KeyCheck::Valid(_) => "VALID",
            KeyCheck::NotFound => "NOT_FOUND",
            KeyCheck::Disabled(_) => "DISABLED",
            KeyCheck::Expired(_) => "EXPIRED",
        }
    }

    /// How a use of this key is counted when it is refused, and whose it is. (A valid key is
    /// never refused for itself; were it refused, it would count as naming no one.)
    fn refusal(self) -> Refusal {
        match self {
            KeyCheck::Valid(_) => Refusal::of(None, Outcome::Invalid),
            KeyCheck::NotFound => Refusal::of(None, Outcome::Invalid),
            KeyCheck::Disabled(client) => Refusal::of(Some(client), Outcome::Disabled),
            KeyCheck::Expired(client) => Refusal::of(Some(client), Outcome::Expired),
        }
    }
}

/// A credential refused at authentication: whose it was, when it names a client still there,
/// and how the use is counted.
struct Refusal {
    client: Option<Arc<Client>>,
    outcome: Outcome,
}

impl Refusal {
    fn of(client: Option<Arc<Client>>, outcome: Outcome) -> Self {
        Refusal { client, outcome }
    }
}

/// What an access token is worth now.
enum TokenCheck {
    Accepted(AcceptedToken),
    Refused(Refusal),
}

/// An access token that is good now, with the scopes it grants now.
#[derive(Debug, Clone)]
pub struct AcceptedToken {
    pub claims: Arc<Claims>,
    pub client: Arc<Client>,
    pub scopes: Vec<String>,
}

/// One request let through at `endpoint`: counted `allowed` when dropped, or
/// `upstream_error` if the relay says the upstream failed it.
pub struct Admission<'a> {
    pub decision: Decision,
    meter: &'a Meter,
    client: &'a Client,
    endpoint: Endpoint<'a>,
    at: DateTime<Utc>,
    outcome: Outcome,
}

impl Admission<'_> {
    /// The upstream did not answer (502/504).
    pub fn upstream_failed(&mut self) {
        self.outcome = Outcome::UpstreamError;
    }
}

impl Drop for Admission<'_> {
    fn drop(&mut self) {
        self.meter
            .count(Some(self.client), self.endpoint, self.outcome, self.at);
    }
}

/// What `verify` says of a key.
pub enum Verification {
    /// Valid, and one request was taken from its owner's allowance, and `cost` credits.
    Valid {
        client: Arc<Client>,
        decision: Decision,
        credits_left: Option<i64>,
    },
    /// Not valid now: `NOT_FOUND`, `DISABLED`, `EXPIRED`, `FORBIDDEN`, `RATE_LIMITED` or
    /// `USAGE_EXCEEDED`.
    Invalid(&'static str),
}

/// What a verification asks besides the key: where it was presented from (checked against
/// the owner's networks) and how many credits it costs.
#[derive(Debug, Clone, Copy)]
pub struct VerifyRequest {
    pub ip: Option<IpAddr>,
    pub cost: i64,
}

/// What the gate needs: the stores it reads, the counters it keeps, and its settings.
pub struct GateParts {
    pub store: Arc<dyn Store>,
    pub cache: ClientCache,
    pub last_used: LastUse,
    pub meter: Arc<Meter>,
    pub metrics: Arc<Metrics>,
    pub admin_token: Option<SecretString>,
    pub legacy: LegacyKeys,
    pub failed_auth: Arc<FailedAuthLimiter>,
    pub limiter: Arc<dyn RateLimiter>,
    pub credits: Arc<CreditLeases>,
    pub keyring: Arc<KeyRing>,
    pub tokens: TokenSettings,
}

pub struct Gate {
    store: Arc<dyn Store>,
    cache: ClientCache,
    last_used: LastUse,
    meter: Arc<Meter>,
    metrics: Arc<Metrics>,
    /// SHA-256 of `RELAY_ADMIN_TOKEN`, so comparing it takes the same time whatever its length.
    admin_token: Option<KeyHash>,
    legacy: LegacyKeys,
    failed_auth: Arc<FailedAuthLimiter>,
    limiter: Arc<dyn RateLimiter>,
    credits: Arc<CreditLeases>,
    keyring: Arc<KeyRing>,
    tokens: TokenSettings,
}

fn status_check(client: Arc<Client>, now: DateTime<Utc>) -> KeyCheck {
    match client.status(now) {
        ClientStatus::Disabled => KeyCheck::Disabled(client),
        ClientStatus::Expired => KeyCheck::Expired(client),
        ClientStatus::Active => KeyCheck::Valid(client),
    }
}

impl Gate {
    pub fn new(parts: GateParts) -> Self {
        Gate {
            admin_token: parts
                .admin_token
                .as_ref()
                .map(|t| KeyHash::of(t.expose_secret())),
            store: parts.store,
            cache: parts.cache,
            last_used: parts.last_used,
            meter: parts.meter,
            metrics: parts.metrics,
            legacy: parts.legacy,
            failed_auth: parts.failed_auth,
            limiter: parts.limiter,
            credits: parts.credits,
            keyring: parts.keyring,
            tokens: parts.tokens,
        }
    }

    /// Authenticates what a request presents from `peer`. An address that has failed too
    /// often is still served with a valid credential (many callers may share it behind NAT or
    /// a proxy), but its failures are answered `RateLimited`, and it gets no bcrypt work.
    /// A refused credential is counted where it was presented (not at the admin endpoints); a
    /// missing one is no use of a credential and is not.
    pub async fn authenticate(
        &self,
        credential: Option<Credential<'_>>,
        accepts: Accepts<'_>,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Caller, Error> {
        let identified = match credential {
            Some(credential) => Some(self.identify(credential, accepts, peer, now).await?),
            None => None,
        };
        match identified {
            Some(Ok(caller)) => {
                // At the admin endpoints a use counts once the scope is granted (`authorize`).
                if !matches!(accepts, Accepts::AdminTokenOrKey) {
                    self.record_use(&caller, now);
                }
                Ok(caller)
            }
            refused => {
                if let (Some(Err(refusal)), Some(endpoint)) = (&refused, accepts.endpoint()) {
                    self.meter
                        .count(refusal.client.as_deref(), endpoint, refusal.outcome, now);
                }
                // Looked up only on failure: a good credential passes whatever its address
                // did, and so never waits on the shared table of failures.
                let blocked = self.failed_auth.blocked_for(peer, now);
                self.failed_auth.record_failure(peer, now);
                Err(match blocked {
                    Some(retry_after_seconds) => Error::RateLimited {
                        retry_after_seconds,
                    },
                    None => Error::Unauthenticated,
                })
            }
        }
    }

    /// The caller a credential names, or why it may not call here.
    async fn identify(
        &self,
        credential: Credential<'_>,
        accepts: Accepts<'_>,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Result<Caller, Refusal>, Error> {
        let (value, is_bearer) = match credential {
            Credential::ApiKey(value) => (value, false),
            Credential::Bearer(value) => (value, true),
            Credential::Malformed => return Ok(Err(Refusal::of(None, Outcome::Invalid))),
        };
        match accepts {
            Accepts::AdminTokenOrKey => {
                if self.is_admin_token(value) {
                    return Ok(Ok(Caller::AdminToken));
                }
                self.key_caller(value, peer, now).await
            }
            Accepts::KeyOrToken { .. } if is_bearer && !value.starts_with(api_key::PREFIX) => {
                Ok(match self.check_token(value, now).await? {
                    TokenCheck::Accepted(t) => Ok(Caller::Client {
                        client: t.client,
                        scopes: t.scopes,
                    }),
                    TokenCheck::Refused(refusal) => Err(refusal),
                })
            }
            Accepts::KeyOrToken { .. } => self.key_caller(value, peer, now).await,
            Accepts::ClientKey { client_id } => {
                // A key presented with another client's id is a wrong secret for that client,
                // whatever the state of the key's own client.
                let check = self.check_key(value, peer, now).await?;
                let owner = match &check {
                    KeyCheck::Valid(c) | KeyCheck::Disabled(c) | KeyCheck::Expired(c) => {
                        Some(c.client_id.as_str())
                    }
                    KeyCheck::NotFound => None,
                };
                if client_id.is_some_and(|id| owner != Some(id)) {
                    return Ok(Err(Refusal::of(None, Outcome::Invalid)));
                }
                Ok(Self::caller_of(check))
            }
        }
    }

    /// Notes a successful use of a client's credential for `last_used_at` (batched).
    fn record_use(&self, caller: &Caller, now: DateTime<Utc>) {
        if let Some(client) = caller.client() {
            self.last_used.record(&client.client_id, now);
        }
    }

    fn is_admin_token(&self, credential: &str) -> bool {
        self.admin_token
            .as_ref()
            .is_some_and(|token| token.matches(&KeyHash::of(credential)))
    }

    async fn key_caller(
        &self,
        key: &str,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Result<Caller, Refusal>, Error> {
        Ok(Self::caller_of(self.check_key(key, peer, now).await?))
    }

    fn caller_of(check: KeyCheck) -> Result<Caller, Refusal> {
        match check {
            KeyCheck::Valid(client) => Ok(Caller::Client {
                scopes: client.scopes.clone(),
                client,
            }),
            refused => Err(refused.refusal()),
        }
    }

    /// Whether `caller`, calling from `peer`, may use an endpoint needing `scope`: the admin
    /// token and clients holding `admin` may use every one, a client only from its networks.
    /// Endpoints asking this take no rate limit and no credits.
    pub fn authorize(
        &self,
        caller: &Caller,
        scope: &Scope,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Actor, Error> {
        if !(caller.holds(scope::ADMIN) || caller.holds(scope.as_str())) {
            return Err(Error::Forbidden(scope.clone()));
        }
        if caller
            .client()
            .is_some_and(|c| !c.allows_address(Some(peer)))
        {
            return Err(Error::AddressRefused);
        }
        self.record_use(caller, now);
        Ok(caller.actor())
    }

    /// Signs an admin in (the console): the admin token or a key holding `admin`. Any other
    /// credential is `Unauthenticated` and counts as a failed authentication of `peer`.
    pub async fn sign_in_admin(
        &self,
        credential: &str,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Caller, Error> {
        let presented = Some(Credential::Bearer(credential));
        let caller = self
            .authenticate(presented, Accepts::AdminTokenOrKey, peer, now)
            .await?;
        if self.authorize(&caller, &Scope::ADMIN, peer, now).is_err() {
            self.failed_auth.record_failure(peer, now);
            return Err(Error::Unauthenticated);
        }
        Ok(caller)
    }

    /// A short fingerprint of `RELAY_ADMIN_TOKEN` (16 hex digits of its SHA-256), so what was
    /// signed in with one token can tell when another replaces it; `None` without one.
    pub fn admin_token_fingerprint(&self) -> Option<String> {
        self.admin_token
            .as_ref()
            .map(|t| t.to_hex()[..16].to_string())
    }

    /// The client as it stands now, through the cache (which every change reaches within a
    /// second); `None` once deleted.
    pub async fn current_client(&self, id: &ClientId) -> Result<Option<Arc<Client>>, Error> {
        let lookup = self
            .cache
            .get_or_load(CacheKey::Client(id.clone()), || self.store.client(id))
            .await?;
        Ok(lookup.client)
    }

    /// Lets `caller`, calling from `peer`, make one request at `endpoint` needing exactly
    /// `scope` (a relay route's; `None` at the token endpoint): checked against its client's
    /// networks, then taken from its rate limit and its credits. A refusal is counted here;
    /// the admission counts itself when dropped.
    pub async fn admit<'a>(
        &'a self,
        caller: &'a Caller,
        endpoint: Endpoint<'a>,
        scope: Option<&Scope>,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Admission<'a>, Error> {
        let Some(client) = caller.client_ref() else {
            return Err(Error::Unauthenticated);
        };
        let refuse = |outcome, error| {
            self.meter.count(Some(client), endpoint, outcome, now);
            Err(error)
        };
        if let Some(scope) = scope.filter(|s| !caller.holds(s.as_str())) {
            return refuse(Outcome::Forbidden, Error::Forbidden(scope.clone()));
        }
        if !client.allows_address(Some(peer)) {
            return refuse(Outcome::Forbidden, Error::AddressRefused);
        }
        let decision = self.take_request(client, now).await;
        if !decision.allowed {
            return refuse(Outcome::RateLimited, Error::OverLimit(decision));
        }
        if let Spend::Exceeded {
            retry_after_seconds,
        } = self.credits.spend(client, 1, now).await?
        {
            let exceeded = Error::UsageExceeded {
                retry_after_seconds,
            };
            return refuse(Outcome::UsageExceeded, exceeded);
        }
        Ok(Admission {
            decision,
            meter: &self.meter,
            client,
            endpoint,
            at: now,
            outcome: Outcome::Allowed,
        })
    }

    /// Counts a use refused after authentication for a reason of the endpoint's own (a token
    /// asked for scopes the client does not hold).
    pub fn count_refusal(
        &self,
        caller: &Caller,
        endpoint: Endpoint<'_>,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) {
        self.meter
            .count(caller.client_ref(), endpoint, outcome, now);
    }

    /// One request from `client`'s rate limit, if its bucket has room.
    async fn take_request(&self, client: &Client, now: DateTime<Utc>) -> Decision {
        self.limiter
            .acquire(&client.client_id, client.effective_rate_limit(), now)
            .await
    }

    /// `POST /v1/keys/verify`: is `key` valid, may its owner call from `request.ip`, and
    /// make a request now? A valid verification takes one request from the owner's allowance
    /// (never the caller's) and `request.cost` of its credits. `peer` is the caller's address.
    pub async fn verify(
        &self,
        key: &str,
        request: VerifyRequest,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Verification, Error> {
        let client = match self.check_key(key, peer, now).await? {
            KeyCheck::Valid(client) => client,
            other => {
                let code = other.code();
                self.metrics.observe_verification(code);
                let refusal = other.refusal();
                self.meter.count(
                    refusal.client.as_deref(),
                    Endpoint::Verify,
                    refusal.outcome,
                    now,
                );
                return Ok(Verification::Invalid(code));
            }
        };
        let refuse = |code: &'static str, outcome| {
            self.metrics.observe_verification(code);
            self.meter
                .count(Some(&client), Endpoint::Verify, outcome, now);
            Ok(Verification::Invalid(code))
        };
        if !client.allows_address(request.ip) {
            return refuse("FORBIDDEN", Outcome::Forbidden);
        }
        let decision = self.take_request(&client, now).await;
        if !decision.allowed {
            return refuse("RATE_LIMITED", Outcome::RateLimited);
        }
        let credits_left = match self.credits.spend(&client, request.cost, now).await? {
            Spend::Unlimited => None,
            Spend::Spent { remaining } => Some(remaining),
            Spend::Exceeded { .. } => return refuse("USAGE_EXCEEDED", Outcome::UsageExceeded),
        };
        self.metrics.observe_verification("VALID");
        self.meter
            .count(Some(&client), Endpoint::Verify, Outcome::Allowed, now);
        self.last_used.record(&client.client_id, now);
        Ok(Verification::Valid {
            client,
            decision,
            credits_left,
        })
    }

    /// Checks an API key presented from `peer`, without any accounting. A malformed key or
    /// a bad checksum is `NotFound` without any lookup.
    pub async fn check_key(
        &self,
        key: &str,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<KeyCheck, Error> {
        if api_key::is_legacy_format(key) {
            return self.check_legacy_key(key, peer, now).await;
        }
        let Some(presented) = api_key::parse(key) else {
            return Ok(KeyCheck::NotFound);
        };
        let key_id = presented.key_id;
        let lookup = self
            .cache
            .get_or_load(CacheKey::Key(key_id), || {
                self.store.client_by_key_id(&key_id)
            })
            .await?;
        self.metrics.observe_cache(lookup.hit);
        match lookup.client {
            Some(client) if client.accepts_key(&presented, now) => Ok(status_check(client, now)),
            _ => Ok(KeyCheck::NotFound),
        }
    }

    /// A key of the original service: by its SHA-256 once seen, else the bounded bcrypt path.
    async fn check_legacy_key(
        &self,
        key: &str,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<KeyCheck, Error> {
        let digest = KeyHash::of(key);
        let lookup = self
            .cache
            .get_or_load(CacheKey::LegacyDigest(digest.to_bytes()), || {
                self.find_legacy_key(key, digest, peer, now)
            })
            .await?;
        self.metrics.observe_cache(lookup.hit);
        Ok(lookup
            .client
            .map_or(KeyCheck::NotFound, |client| status_check(client, now)))
    }

    /// The adopted client of `key`: one indexed lookup once its digest is recorded; before,
    /// the bcrypt path, paid for in advance: refused to an address that has failed too often,
    /// and charged to it as a failure before it starts, so a caller that gives up waiting
    /// still pays. A caller still here has the charge taken back and is judged by the
    /// outcome, like any other.
    async fn find_legacy_key(
        &self,
        key: &str,
        digest: KeyHash,
        peer: IpAddr,
        now: DateTime<Utc>,
    ) -> Result<Option<Client>, Error> {
        if let Some(client) = self.store.client_by_legacy_digest(&digest).await? {
            return Ok(Some(client));
        }
        if let Some(wait) = self.failed_auth.blocked_for(peer, now) {
            return Err(Error::RateLimited {
                retry_after_seconds: wait,
            });
        }
        self.failed_auth.record_failure(peer, now);
        let found = self.legacy.find(key, digest).await;
        self.failed_auth.refund(peer);
        match found? {
            LegacyMatch::Found(client) => Ok(Some(*client)),
            LegacyMatch::NotFound => Ok(None),
            LegacyMatch::Busy {
                retry_after_seconds,
            } => Err(Error::Busy {
                retry_after_seconds,
            }),
        }
    }

    /// Accepts an access token, or `None`: its signature (remembered once checked), its
    /// claims, and its client still standing behind it, from the cache.
    pub async fn accept_token(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<AcceptedToken>, Error> {
        Ok(match self.check_token(token, now).await? {
            TokenCheck::Accepted(accepted) => Some(accepted),
            TokenCheck::Refused(_) => None,
        })
    }

    /// A token with a bad signature or claims names no client; one whose client is disabled
    /// or expired is that client's refused use; a revoked one (its client deleted or its key
    /// regenerated) names no client that stands behind it.
    async fn check_token(&self, token: &str, now: DateTime<Utc>) -> Result<TokenCheck, Error> {
        let invalid = || TokenCheck::Refused(Refusal::of(None, Outcome::Invalid));
        let Ok(claims) = self.keyring.verify(token) else {
            return Ok(invalid());
        };
        if access_token::check_claims(&claims, &self.tokens, now).is_err() {
            return Ok(invalid());
        }
        let Some(client) = self
            .current_client(&ClientId::new(&claims.client_id))
            .await?
        else {
            return Ok(invalid());
        };
        let outcome = match client.status(now) {
            ClientStatus::Disabled => Outcome::Disabled,
            ClientStatus::Expired => Outcome::Expired,
            ClientStatus::Active => match access_token::effective_scopes(&claims, &client, now) {
                Ok(scopes) => {
                    return Ok(TokenCheck::Accepted(AcceptedToken {
                        claims,
                        client,
                        scopes,
                    }));
                }
                Err(_) => return Ok(invalid()),
            },
        };
        Ok(TokenCheck::Refused(Refusal::of(Some(client), outcome)))
    }
}
