//! Verification and authorization: what the gateway and the guard layer run
//! on every request that carries a Biscuit.
//!
//! [`RootKeys::verify`] checks the signature chain against the published
//! root keys and reads the authority block into [`BiscuitClaims`] (only the
//! authority block: facts in appended blocks are never trusted).
//! [`VerifiedBiscuit::authorize`] then adds the request's facts and runs every
//! block's checks under run limits, naming the check that failed.

use std::collections::HashMap;
use std::time::Duration;

use biscuit_auth::builder::{fact, string};
use biscuit_auth::error::{FailedCheck, Logic, Token};
use biscuit_auth::{AuthorizerBuilder, AuthorizerLimits, Biscuit, PublicKey};
use mandate_types::{Scope, ScopeSet, UnixTime};

use crate::attenuate::MAX_BLOCKS;
use crate::mint::{date_term, ActorEntry};
use crate::root::PublishedRootKey;
use crate::BiscuitError;

/// Longest Biscuit accepted, base64url.
pub const MAX_BISCUIT_LEN: usize = 8 * 1024;

/// Run limits for one authorization: small, since Mandate's vocabulary never
/// needs recursion, and a hostile block must not cost the gateway much. The
/// facts and iterations limits bound the work; the wall-clock limit is only
/// a backstop, generous because a busy machine stretches wall time (at 10 ms
/// the benchmark saw valid Biscuits refused under CPU contention).
fn limits() -> AuthorizerLimits {
    AuthorizerLimits {
        max_facts: 1_000,
        max_iterations: 100,
        max_time: Duration::from_millis(100),
    }
}

/// The root public keys a verifier trusts, by `root_key_id`.
#[derive(Debug, Clone, Default)]
pub struct RootKeys(HashMap<u32, PublicKey>);

impl RootKeys {
    /// Trusts the given published keys (unreadable ones are skipped).
    pub fn new<'a>(published: impl IntoIterator<Item = &'a PublishedRootKey>) -> Self {
        Self(
            published
                .into_iter()
                .filter_map(|k| Some((k.root_key_id, k.public_key().ok()?)))
                .collect(),
        )
    }

    /// Whether no key is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Verifies the signatures of `token` and reads its authority block.
    pub fn verify(&self, token: &str) -> Result<VerifiedBiscuit, BiscuitError> {
        if token.len() > MAX_BISCUIT_LEN {
            return Err(BiscuitError::Format("too long".into()));
        }
        let biscuit = Biscuit::from_base64(token, |id: Option<u32>| {
            id.and_then(|id| self.0.get(&id).copied())
                .ok_or(biscuit_auth::error::Format::UnknownPublicKey)
        })?;
        if biscuit.block_count() > MAX_BLOCKS {
            return Err(BiscuitError::Format(format!(
                "more than {MAX_BLOCKS} blocks"
            )));
        }
        let claims = BiscuitClaims::read(&biscuit)?;
        Ok(VerifiedBiscuit { biscuit, claims })
    }
}

/// What the authority block states (see the crate docs for the vocabulary).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BiscuitClaims {
    /// `issuer`.
    pub issuer: String,
    /// `subject`.
    pub subject: String,
    /// `client`.
    pub client_id: String,
    /// `audience`.
    pub audience: String,
    /// `scope` facts.
    pub scopes: ScopeSet,
    /// `token_id`.
    pub token_id: String,
    /// `expires`.
    pub expires_at: UnixTime,
    /// `actor` facts, current actor first.
    pub actors: Vec<ActorEntry>,
    /// `dpop_jkt`.
    pub jkt: Option<String>,
}

impl BiscuitClaims {
    fn read(biscuit: &Biscuit) -> Result<Self, BiscuitError> {
        // An authorizer with no facts of its own: queries see the authority
        // block only (Datalog scoping), never what later blocks claim.
        let mut authorizer = AuthorizerBuilder::new()
            .set_limits(limits())
            .build(biscuit)?;
        let mut one = |name: &'static str| -> Result<String, BiscuitError> {
            let rows: Vec<(String,)> = authorizer.query(format!("q($v) <- {name}($v)").as_str())?;
            match rows.as_slice() {
                [(v,)] => Ok(v.clone()),
                _ => Err(BiscuitError::MissingFact(name)),
            }
        };
        let issuer = one("issuer")?;
        let subject = one("subject")?;
        let client_id = one("client")?;
        let audience = one("audience")?;
        let token_id = one("token_id")?;
        let expires: Vec<(std::time::SystemTime,)> = authorizer.query("q($t) <- expires($t)")?;
        let expires_at = match expires.as_slice() {
            [(t,)] => t
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .and_then(|d| i64::try_from(d.as_secs()).ok())
                .ok_or(BiscuitError::MissingFact("expires"))?,
            _ => return Err(BiscuitError::MissingFact("expires")),
        };
        let scopes: Vec<(String,)> = authorizer.query("q($s) <- scope($s)")?;
        let scopes = scopes
            .into_iter()
            .map(|(s,)| Scope::parse(&s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| BiscuitError::Format(e.to_string()))?;
        let mut actors: Vec<(i64, String, String)> =
            authorizer.query("q($n, $s, $c) <- actor($n, $s, $c)")?;
        actors.sort_by_key(|(n, _, _)| *n);
        let jkt: Vec<(String,)> = authorizer.query("q($k) <- dpop_jkt($k)")?;
        Ok(Self {
            issuer,
            subject,
            client_id,
            audience,
            scopes: ScopeSet::from_scopes(scopes),
            token_id,
            expires_at,
            actors: actors
                .into_iter()
                .map(|(_, sub, client)| ActorEntry {
                    sub,
                    client_id: (!client.is_empty()).then_some(client),
                })
                .collect(),
            jkt: jkt.into_iter().next().map(|(k,)| k),
        })
    }
}

/// The facts a request contributes.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    /// `time`.
    pub time: UnixTime,
    /// `resource`: the audience the resource server answers for.
    pub resource: &'a str,
    /// `operation`: the A2A operation or MCP method.
    pub operation: Option<&'a str>,
    /// `tool`: the MCP tool called.
    pub tool: Option<&'a str>,
    /// `level`: the tool's permission level.
    pub level: Option<&'a str>,
    /// `http_method`.
    pub http_method: &'a str,
    /// `path`.
    pub path: &'a str,
    /// `required_scope`, one each; each must also be a `scope` of the token.
    pub required_scopes: &'a ScopeSet,
}

/// Why a verified Biscuit does not allow a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A check of one of the token's blocks failed (block 0 is the authority).
    #[error("block {block} check failed: {check}")]
    Check {
        /// The block's index.
        block: u32,
        /// The check, as Datalog.
        check: String,
    },
    /// The authority block lacks a scope the request needs.
    #[error("missing scope")]
    Scope,
    /// Authorization exceeded its run limits.
    #[error("authorization exceeded its limits: {0}")]
    Limits(String),
    /// The authorizer could not be built or run.
    #[error("authorization failed: {0}")]
    Other(String),
}

/// A Biscuit whose signatures hold.
#[derive(Debug, Clone)]
pub struct VerifiedBiscuit {
    biscuit: Biscuit,
    /// Its authority block.
    pub claims: BiscuitClaims,
}

impl VerifiedBiscuit {
    /// Runs every block's checks with the request's facts.
    pub fn authorize(&self, request: &RequestFacts<'_>) -> Result<(), Refusal> {
        let built = || -> Result<_, Token> {
            let mut builder = AuthorizerBuilder::new()
                .set_limits(limits())
                .fact(fact("time", &[date_term(request.time)]))?
                .fact(fact("resource", &[string(request.resource)]))?
                .fact(fact("http_method", &[string(request.http_method)]))?
                .fact(fact("path", &[string(request.path)]))?;
            for (name, value) in [
                ("operation", request.operation),
                ("tool", request.tool),
                ("level", request.level),
            ] {
                if let Some(v) = value {
                    builder = builder.fact(fact(name, &[string(v)]))?;
                }
            }
            for scope in request.required_scopes.iter() {
                let s = string(scope.as_str());
                builder = builder
                    .fact(fact("required_scope", std::slice::from_ref(&s)))?
                    .code_with_params(
                        "check if scope({s});",
                        HashMap::from([("s".to_owned(), s)]),
                        HashMap::new(),
                    )?;
            }
            builder.policy("allow if true")?.build(&self.biscuit)
        };
        let mut authorizer = built().map_err(|e| Refusal::Other(e.to_string()))?;
        match authorizer.authorize() {
            Ok(_) => Ok(()),
            Err(Token::FailedLogic(
                Logic::Unauthorized { checks, .. } | Logic::NoMatchingPolicy { checks },
            )) => Err(first_refusal(checks)),
            Err(Token::RunLimit(e)) => Err(Refusal::Limits(e.to_string())),
            Err(e) => Err(Refusal::Other(e.to_string())),
        }
    }
}

/// A token's own failed check says more than a missing scope, so it wins.
fn first_refusal(checks: Vec<FailedCheck>) -> Refusal {
    let mut scope = false;
    for check in checks {
        match check {
            FailedCheck::Block(b) => {
                return Refusal::Check {
                    block: b.block_id,
                    check: b.rule,
                }
            }
            FailedCheck::Authorizer(_) => scope = true,
        }
    }
    if scope {
        Refusal::Scope
    } else {
        Refusal::Other("no check passed and none failed".into())
    }
}
