//! Minting: the authority block Mandate signs at token exchange.
//!
//! Every fact is built as a typed term, never by formatting Datalog source,
//! so no value from a request can change the block's meaning.

use std::collections::HashMap;

use biscuit_auth::builder::{date, fact, string, Term};
use biscuit_auth::Biscuit;
use mandate_types::{ScopeSet, UnixTime};

use crate::root::RootKey;
use crate::BiscuitError;

/// One actor of a delegation chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActorEntry {
    /// The actor's subject.
    pub sub: String,
    /// The actor's client, when known.
    pub client_id: Option<String>,
}

/// What the authority block states.
#[derive(Debug, Clone)]
pub struct Grant<'a> {
    /// `issuer`.
    pub issuer: &'a str,
    /// `subject`.
    pub subject: &'a str,
    /// `client`.
    pub client_id: &'a str,
    /// `audience`.
    pub audience: &'a str,
    /// One `scope` fact each.
    pub scopes: &'a ScopeSet,
    /// `token_id`.
    pub token_id: &'a str,
    /// `expires` and the expiry check.
    pub expires_at: UnixTime,
    /// `actor` facts, current actor first.
    pub actors: &'a [ActorEntry],
    /// `dpop_jkt`, for a DPoP-bound Biscuit.
    pub jkt: Option<&'a str>,
}

pub(crate) fn date_term(t: UnixTime) -> Term {
    date(&(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t.max(0).unsigned_abs())))
}

/// Mints a Biscuit for `grant`, signed by `root`; returns its base64url form.
pub fn mint(root: &RootKey, grant: &Grant<'_>) -> Result<String, BiscuitError> {
    let mut builder = Biscuit::builder()
        .root_key_id(root.root_key_id())
        .fact(fact("issuer", &[string(grant.issuer)]))?
        .fact(fact("subject", &[string(grant.subject)]))?
        .fact(fact("client", &[string(grant.client_id)]))?
        .fact(fact("audience", &[string(grant.audience)]))?
        .fact(fact("token_id", &[string(grant.token_id)]))?
        .fact(fact("expires", &[date_term(grant.expires_at)]))?;
    for scope in grant.scopes.iter() {
        builder = builder.fact(fact("scope", &[string(scope.as_str())]))?;
    }
    for (n, actor) in grant.actors.iter().enumerate() {
        let position = i64::try_from(n).unwrap_or(i64::MAX);
        builder = builder.fact(fact(
            "actor",
            &[
                Term::Integer(position),
                string(&actor.sub),
                string(actor.client_id.as_deref().unwrap_or("")),
            ],
        ))?;
    }
    if let Some(jkt) = grant.jkt {
        builder = builder.fact(fact("dpop_jkt", &[string(jkt)]))?;
    }
    let builder = builder.code_with_params(
        "check if time($t), $t < {expiry};",
        HashMap::from([("expiry".to_owned(), date_term(grant.expires_at))]),
        HashMap::new(),
    )?;
    Ok(builder.build(root.pair())?.to_base64()?)
}
