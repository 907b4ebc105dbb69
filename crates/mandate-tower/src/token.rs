//! Access token verification for resource servers: the checks RFC 9068 §4 and
//! RFC 6750 ask of a resource server, in a fixed order, with a cache so the
//! hot path does not re-verify the same signature.
//!
//! Keys come only from the configured issuers' own metadata ([`KeySource`]),
//! never from a URL inside the token; the issuer is looked up by the
//! unverified `iss` and nothing else from the token is trusted until the
//! signature holds.
//!
//! A token without dots is a Biscuit ([`mandate_biscuit`]): its signature
//! chain is checked against the trusted root keys ([`BiscuitRoots`]) and its
//! authority block becomes the same [`VerifiedAccessToken`]; the Biscuit
//! itself is kept so the policy can run its checks against each request.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use mandate_biscuit::{BiscuitError, RootKeys, VerifiedBiscuit};
use mandate_jose::{JoseError, JwkSet, UnverifiedJwt};
use mandate_types::{ScopeSet, UnixTime};
use serde::Deserialize;

/// Longest token accepted.
pub const MAX_TOKEN_LEN: usize = mandate_jose::MAX_JWT_LEN;
/// Most verified tokens kept in the cache.
const MAX_CACHED_TOKENS: usize = 50_000;

/// A token that passed every check for one audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedAccessToken {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `aud` (one or more).
    pub audience: Vec<String>,
    /// `client_id`.
    pub client_id: Option<String>,
    /// `scope`.
    pub scope: ScopeSet,
    /// `exp`.
    pub expires_at: UnixTime,
    /// `jti`.
    pub jti: Option<String>,
    /// The delegation chain from `act` (RFC 8693): current actor first.
    pub actors: Vec<String>,
    /// `cnf.jkt`: the DPoP key the token is bound to (RFC 9449 §6).
    pub jkt: Option<String>,
}

/// Why a token was refused. Each maps to `invalid_token` (401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, too long, or claims not as expected.
    #[error("malformed token")]
    Malformed,
    /// `alg` outside the allowlist (`none`, HMAC, ...).
    #[error("token algorithm not allowed")]
    AlgorithmNotAllowed,
    /// `iss` is not a trusted issuer.
    #[error("untrusted issuer")]
    UntrustedIssuer,
    /// No key of the issuer matches the `kid`.
    #[error("unknown signing key")]
    UnknownKey,
    /// The signature does not verify.
    #[error("bad signature")]
    BadSignature,
    /// `typ` is not `at+jwt` where the issuer requires it.
    #[error("not an access token (typ)")]
    WrongType,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` (or `iat`) is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// `aud` does not name this resource.
    #[error("token is for another audience")]
    WrongAudience,
    /// The token was revoked.
    #[error("token revoked")]
    Revoked,
    /// The issuer's keys could not be fetched.
    #[error("issuer keys unavailable")]
    KeysUnavailable,
}

impl TokenError {
    /// A short stable name, for metrics and the audit trail.
    pub const fn reason(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::UntrustedIssuer => "untrusted_issuer",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::WrongType => "wrong_typ",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::WrongAudience => "wrong_audience",
            Self::Revoked => "revoked",
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Where an issuer's public keys come from.
#[async_trait]
pub trait KeySource: Send + Sync + 'static {
    /// The issuer's current keys. With `refresh`, the source should fetch
    /// again (an unknown `kid`), subject to its own rate limit.
    async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<JwkSet>, String>;
}

/// The Biscuit root keys of the trusted issuers.
pub trait BiscuitRoots: Send + Sync + 'static {
    /// The keys now (cheap: called for every Biscuit not in the cache).
    fn roots(&self) -> Arc<RootKeys>;
}

/// A fixed set of root keys (none: Biscuits are refused).
#[derive(Debug, Default)]
pub struct StaticRoots(pub Arc<RootKeys>);

impl BiscuitRoots for StaticRoots {
    fn roots(&self) -> Arc<RootKeys> {
        Arc::clone(&self.0)
    }
}

/// A verified token, and for a Biscuit the token itself, whose blocks'
/// checks the policy runs against each request.
#[derive(Debug, Clone)]
pub struct Verified {
    /// What the token states.
    pub token: Arc<VerifiedAccessToken>,
    /// The Biscuit, when the token was one.
    pub biscuit: Option<Arc<VerifiedBiscuit>>,
}

/// Whether a token id has been revoked. Checked on every use, cached or not.
pub trait RevocationList: Send + Sync + 'static {
    /// `true` if `jti` is revoked.
    fn is_revoked(&self, jti: &str) -> bool;
}

/// No revocation information: only expiry ends a token.
#[derive(Debug, Default)]
pub struct NoRevocation;

impl RevocationList for NoRevocation {
    fn is_revoked(&self, _: &str) -> bool {
        false
    }
}

/// A trusted issuer.
#[derive(Debug, Clone)]
pub struct TrustedIssuer {
    /// Its identifier, compared exactly with `iss`.
    pub issuer: String,
    /// Whether its access tokens must carry `typ: at+jwt` (RFC 9068). True
    /// for Mandate; other issuers may predate RFC 9068.
    pub require_at_jwt: bool,
}

#[derive(Deserialize)]
struct Claims {
    iss: String,
    sub: Option<String>,
    #[serde(default)]
    aud: Audience,
    exp: Option<i64>,
    nbf: Option<i64>,
    iat: Option<i64>,
    client_id: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    jti: Option<String>,
    #[serde(default)]
    act: Option<Act>,
    #[serde(default)]
    cnf: Option<Cnf>,
}

#[derive(Deserialize)]
struct Cnf {
    jkt: Option<String>,
}

/// Bounded on parse: deeper chains are refused as malformed.
#[derive(Deserialize)]
struct Act {
    sub: String,
    #[serde(default)]
    act: Option<Box<Act>>,
}

/// Most actors read from a chain.
const MAX_ACTORS: usize = 32;

#[derive(Deserialize, Default)]
#[serde(untagged)]
enum Audience {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
struct IssOnly {
    iss: Option<String>,
}

/// Verifies access tokens from a fixed set of trusted issuers.
pub struct TokenVerifier {
    issuers: HashMap<String, TrustedIssuer>,
    keys: Arc<dyn KeySource>,
    biscuit_roots: Arc<dyn BiscuitRoots>,
    revocations: Arc<dyn RevocationList>,
    leeway: i64,
    /// Keyed by the whole token. Hashed with foldhash, seeded per process:
    /// SipHash over a token of a few hundred bytes was a visible share of
    /// a gateway request, and only verified tokens are inserted, so no
    /// caller can choose the keys.
    cache: RwLock<HashMap<String, Verified, foldhash::fast::RandomState>>,
}

impl TokenVerifier {
    /// A verifier trusting `issuers`, with `leeway` seconds of clock skew.
    pub fn new(
        issuers: impl IntoIterator<Item = TrustedIssuer>,
        keys: Arc<dyn KeySource>,
        revocations: Arc<dyn RevocationList>,
        leeway: i64,
    ) -> Self {
        Self {
            issuers: issuers.into_iter().map(|i| (i.issuer.clone(), i)).collect(),
            keys,
            biscuit_roots: Arc::new(StaticRoots::default()),
            revocations,
            leeway,
            cache: RwLock::new(HashMap::default()),
        }
    }

    /// Also accepts Biscuits signed by `roots`.
    pub fn with_biscuit_roots(mut self, roots: Arc<dyn BiscuitRoots>) -> Self {
        self.biscuit_roots = roots;
        self
    }

    /// Verifies `token` for `audience` at time `now`.
    pub async fn verify(
        &self,
        token: &str,
        audience: &str,
        now: UnixTime,
    ) -> Result<Arc<VerifiedAccessToken>, TokenError> {
        self.verify_any(token, audience, now).await.map(|v| v.token)
    }

    /// Verifies a JWT or a Biscuit for `audience` at time `now`.
    pub async fn verify_any(
        &self,
        token: &str,
        audience: &str,
        now: UnixTime,
    ) -> Result<Verified, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let cached = self.cache.read().ok().and_then(|c| c.get(token).cloned());
        let verified = match cached {
            Some(v) => v,
            None => {
                let v = if token.contains('.') {
                    Verified {
                        token: Arc::new(self.verify_signature_and_claims(token, now).await?),
                        biscuit: None,
                    }
                } else {
                    self.verify_biscuit(token)?
                };
                if let Ok(mut c) = self.cache.write() {
                    if c.len() >= MAX_CACHED_TOKENS {
                        c.retain(|_, t| t.token.expires_at + self.leeway > now);
                        if c.len() >= MAX_CACHED_TOKENS {
                            c.clear();
                        }
                    }
                    c.insert(token.to_owned(), v.clone());
                }
                v
            }
        };
        self.still_valid(&verified.token, audience, now)?;
        Ok(verified)
    }

    /// Checked on every use: time moves, revocations arrive, and one token
    /// may be presented at routes with different audiences.
    fn still_valid(
        &self,
        verified: &VerifiedAccessToken,
        audience: &str,
        now: UnixTime,
    ) -> Result<(), TokenError> {
        if verified.expires_at + self.leeway <= now {
            return Err(TokenError::Expired);
        }
        if !verified.audience.iter().any(|a| a == audience) {
            return Err(TokenError::WrongAudience);
        }
        if verified
            .jti
            .as_deref()
            .is_some_and(|j| self.revocations.is_revoked(j))
        {
            return Err(TokenError::Revoked);
        }
        Ok(())
    }

    fn verify_biscuit(&self, token: &str) -> Result<Verified, TokenError> {
        let roots = self.biscuit_roots.roots();
        if roots.is_empty() {
            return Err(TokenError::Malformed);
        }
        let biscuit = roots.verify(token).map_err(|e| match e {
            BiscuitError::UnknownRootKey => TokenError::UnknownKey,
            BiscuitError::Format(_) => TokenError::BadSignature,
            _ => TokenError::Malformed,
        })?;
        let c = &biscuit.claims;
        if !self.issuers.contains_key(&c.issuer) {
            return Err(TokenError::UntrustedIssuer);
        }
        let token = VerifiedAccessToken {
            issuer: c.issuer.clone(),
            subject: c.subject.clone(),
            audience: vec![c.audience.clone()],
            client_id: Some(c.client_id.clone()),
            scope: c.scopes.clone(),
            expires_at: c.expires_at,
            jti: Some(c.token_id.clone()),
            actors: c.actors.iter().map(|a| a.sub.clone()).collect(),
            jkt: c.jkt.clone(),
        };
        Ok(Verified {
            token: Arc::new(token),
            biscuit: Some(Arc::new(biscuit)),
        })
    }

    async fn verify_signature_and_claims(
        &self,
        token: &str,
        now: UnixTime,
    ) -> Result<VerifiedAccessToken, TokenError> {
        let jwt = UnverifiedJwt::parse(token).map_err(|e| match e {
            JoseError::AlgorithmNotAllowed => TokenError::AlgorithmNotAllowed,
            _ => TokenError::Malformed,
        })?;
        let iss = jwt
            .insecure_peek_claims::<IssOnly>()
            .map_err(|_| TokenError::Malformed)?
            .iss
            .ok_or(TokenError::Malformed)?;
        let issuer = self.issuers.get(&iss).ok_or(TokenError::UntrustedIssuer)?;
        if issuer.require_at_jwt
            && !jwt.typ().is_some_and(|t| {
                t.eq_ignore_ascii_case("at+jwt") || t.eq_ignore_ascii_case("application/at+jwt")
            })
        {
            return Err(TokenError::WrongType);
        }
        let keys = self
            .keys
            .keys(&iss, false)
            .await
            .map_err(|_| TokenError::KeysUnavailable)?;
        let kid_known = match jwt.kid() {
            Some(kid) => keys.keys.iter().any(|k| k.kid.as_deref() == Some(kid)),
            None => true,
        };
        let keys = if kid_known {
            keys
        } else {
            self.keys
                .keys(&iss, true)
                .await
                .map_err(|_| TokenError::KeysUnavailable)?
        };
        let claims: Claims = jwt
            .verify::<Claims>(&keys.keys)
            .map_err(|e| match e {
                JoseError::UnknownKey => TokenError::UnknownKey,
                JoseError::BadSignature => TokenError::BadSignature,
                _ => TokenError::Malformed,
            })?
            .claims;
        if claims.iss != issuer.issuer {
            return Err(TokenError::UntrustedIssuer);
        }
        let exp = claims.exp.ok_or(TokenError::Malformed)?;
        if exp + self.leeway <= now {
            return Err(TokenError::Expired);
        }
        if claims.nbf.is_some_and(|t| t > now + self.leeway)
            || claims.iat.is_some_and(|t| t > now + self.leeway)
        {
            return Err(TokenError::NotYetValid);
        }
        let audience = match claims.aud {
            Audience::None => return Err(TokenError::WrongAudience),
            Audience::One(a) => vec![a],
            Audience::Many(v) => v,
        };
        let scope = ScopeSet::parse(claims.scope.as_deref().unwrap_or(""))
            .map_err(|_| TokenError::Malformed)?;
        let mut actors = Vec::new();
        let mut next = claims.act.as_ref();
        while let Some(a) = next {
            if actors.len() == MAX_ACTORS {
                return Err(TokenError::Malformed);
            }
            actors.push(a.sub.clone());
            next = a.act.as_deref();
        }
        Ok(VerifiedAccessToken {
            jkt: claims.cnf.and_then(|c| c.jkt),
            actors,
            issuer: claims.iss,
            subject: claims.sub.ok_or(TokenError::Malformed)?,
            audience,
            client_id: claims.client_id,
            scope,
            expires_at: exp,
            jti: claims.jti,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The verifier on its own: what the cache may and may not skip, when
    //! keys are fetched, and the order of the checks that need no key.
    use std::collections::HashSet;
    use std::sync::Mutex;

    use mandate_jose::{PrivateKeyDer, SigningAlg, SigningKey};
    use serde_json::{json, Value};

    use super::*;

    const ISSUER: &str = "https://as.example.com";
    const AUDIENCE: &str = "https://api.example.com";
    const NOW: UnixTime = 1_800_000_000;

    /// Keys by issuer; after a refresh, the `rotated` set. Counts fetches.
    #[derive(Default)]
    struct CountingKeys {
        current: Mutex<HashMap<String, Arc<JwkSet>>>,
        rotated: Mutex<HashMap<String, Arc<JwkSet>>>,
        fetches: Mutex<Vec<bool>>,
    }

    #[async_trait]
    impl KeySource for CountingKeys {
        async fn keys(&self, issuer: &str, refresh: bool) -> Result<Arc<JwkSet>, String> {
            self.fetches.lock().unwrap().push(refresh);
            if refresh {
                if let Some(new) = self.rotated.lock().unwrap().get(issuer).cloned() {
                    self.current
                        .lock()
                        .unwrap()
                        .insert(issuer.to_owned(), Arc::clone(&new));
                }
            }
            self.current
                .lock()
                .unwrap()
                .get(issuer)
                .cloned()
                .ok_or_else(|| "unknown issuer".to_owned())
        }
    }

    #[derive(Default)]
    struct Revoked(Mutex<HashSet<String>>);

    impl RevocationList for Revoked {
        fn is_revoked(&self, jti: &str) -> bool {
            self.0.lock().unwrap().contains(jti)
        }
    }

    /// A fresh Ed25519 signing key (also for `policy`'s tests).
    pub(crate) fn new_key() -> SigningKey {
        let der = PrivateKeyDer::generate(SigningAlg::EdDSA).unwrap();
        SigningKey::from_private(SigningAlg::EdDSA, &der).unwrap()
    }

    /// The key set publishing `key`.
    pub(crate) fn set(key: &SigningKey) -> Arc<JwkSet> {
        Arc::new(JwkSet {
            keys: vec![key.public_jwk().clone()],
        })
    }

    struct Fixture {
        key: SigningKey,
        keys: Arc<CountingKeys>,
        revoked: Arc<Revoked>,
        verifier: TokenVerifier,
    }

    fn fixture(require_at_jwt: bool) -> Fixture {
        let key = new_key();
        let keys = Arc::new(CountingKeys::default());
        keys.current
            .lock()
            .unwrap()
            .insert(ISSUER.to_owned(), set(&key));
        let revoked = Arc::new(Revoked::default());
        let verifier = TokenVerifier::new(
            [TrustedIssuer {
                issuer: ISSUER.to_owned(),
                require_at_jwt,
            }],
            Arc::clone(&keys) as Arc<dyn KeySource>,
            Arc::clone(&revoked) as Arc<dyn RevocationList>,
            30,
        );
        Fixture {
            key,
            keys,
            revoked,
            verifier,
        }
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER, "sub": "alice", "aud": [AUDIENCE, "https://other.example.com"],
            "client_id": "agent", "scope": "read write", "jti": "t1",
            "iat": NOW, "exp": NOW + 300,
        })
    }

    impl Fixture {
        fn token(&self, claims: &Value) -> String {
            self.key.sign("at+jwt", claims).unwrap()
        }

        fn fetches(&self) -> Vec<bool> {
            self.keys.fetches.lock().unwrap().clone()
        }
    }

    #[tokio::test]
    async fn a_cached_token_is_still_checked_on_every_use() {
        let f = fixture(true);
        let token = f.token(&claims());
        let v = f.verifier.verify(&token, AUDIENCE, NOW).await.unwrap();
        assert_eq!(
            (v.subject.as_str(), v.client_id.as_deref()),
            ("alice", Some("agent"))
        );
        assert_eq!(v.scope.to_string(), "read write");
        // The same token again: no second key fetch, the signature is not
        // checked again, but audience, expiry and revocation are.
        f.verifier.verify(&token, AUDIENCE, NOW + 10).await.unwrap();
        f.verifier
            .verify(&token, "https://other.example.com", NOW)
            .await
            .unwrap();
        assert_eq!(
            f.verifier
                .verify(&token, "https://third.example.com", NOW)
                .await,
            Err(TokenError::WrongAudience)
        );
        assert_eq!(
            f.verifier.verify(&token, AUDIENCE, NOW + 330).await,
            Err(TokenError::Expired),
            "expiry (with 30 s of leeway) is checked on the cached path"
        );
        f.revoked.0.lock().unwrap().insert("t1".into());
        assert_eq!(
            f.verifier.verify(&token, AUDIENCE, NOW).await,
            Err(TokenError::Revoked)
        );
        assert_eq!(f.fetches(), [false], "keys fetched once, for the first use");
    }

    #[tokio::test]
    async fn an_unknown_kid_refreshes_the_keys_once() {
        let f = fixture(true);
        let next = new_key();
        f.keys
            .rotated
            .lock()
            .unwrap()
            .insert(ISSUER.to_owned(), set(&next));
        let token = next.sign("at+jwt", &claims()).unwrap();
        f.verifier.verify(&token, AUDIENCE, NOW).await.unwrap();
        assert_eq!(f.fetches(), [false, true]);
        // A kid that is still unknown after the refresh is refused.
        let stranger = new_key();
        let token = stranger.sign("at+jwt", &claims()).unwrap();
        assert_eq!(
            f.verifier.verify(&token, AUDIENCE, NOW).await,
            Err(TokenError::UnknownKey)
        );
    }

    #[tokio::test]
    async fn what_needs_no_key_is_refused_before_any_fetch() {
        let f = fixture(true);
        let mut other = claims();
        other["iss"] = json!("https://evil.example.com");
        assert_eq!(
            f.verifier.verify(&f.token(&other), AUDIENCE, NOW).await,
            Err(TokenError::UntrustedIssuer)
        );
        let plain_jwt = f.key.sign("JWT", &claims()).unwrap();
        assert_eq!(
            f.verifier.verify(&plain_jwt, AUDIENCE, NOW).await,
            Err(TokenError::WrongType)
        );
        let too_long = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(
            f.verifier.verify(&too_long, AUDIENCE, NOW).await,
            Err(TokenError::Malformed)
        );
        assert_eq!(
            f.verifier.verify("not.a.jwt", AUDIENCE, NOW).await,
            Err(TokenError::Malformed)
        );
        assert!(f.fetches().is_empty());
    }

    #[tokio::test]
    async fn typ_is_required_only_where_the_issuer_says() {
        let f = fixture(false);
        let plain_jwt = f.key.sign("JWT", &claims()).unwrap();
        f.verifier.verify(&plain_jwt, AUDIENCE, NOW).await.unwrap();
    }

    #[tokio::test]
    async fn times_and_delegation_chains_are_bounded() {
        let f = fixture(true);
        let mut future = claims();
        future["nbf"] = json!(NOW + 31);
        assert_eq!(
            f.verifier.verify(&f.token(&future), AUDIENCE, NOW).await,
            Err(TokenError::NotYetValid)
        );
        future["nbf"] = json!(NOW + 30);
        f.verifier
            .verify(&f.token(&future), AUDIENCE, NOW)
            .await
            .unwrap();

        // The current actor first, then who it acts for.
        let mut chained = claims();
        chained["act"] = json!({"sub": "summarizer", "act": {"sub": "orchestrator"}});
        let v = f
            .verifier
            .verify(&f.token(&chained), AUDIENCE, NOW)
            .await
            .unwrap();
        assert_eq!(v.actors, ["summarizer", "orchestrator"]);

        let mut act = json!({"sub": "a0"});
        for i in 1..=MAX_ACTORS {
            act = json!({"sub": format!("a{i}"), "act": act});
        }
        let mut deep = claims();
        deep["act"] = act;
        assert_eq!(
            f.verifier.verify(&f.token(&deep), AUDIENCE, NOW).await,
            Err(TokenError::Malformed),
            "more than {MAX_ACTORS} actors"
        );
    }
}
