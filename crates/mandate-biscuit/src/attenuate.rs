//! Attenuation: the holder appends a block of checks, offline.
//!
//! No root key is needed: appending signs the new block with a fresh
//! ephemeral key that the previous block committed to. The common narrowings
//! have typed fields (built with parameters, never string formatting); any
//! other check can be given as Datalog.

use std::collections::{BTreeSet, HashMap};

use biscuit_auth::builder::{set, string, BlockBuilder, Term};
use biscuit_auth::UnverifiedBiscuit;
use mandate_types::{ScopeSet, UnixTime};

use crate::mint::date_term;
use crate::BiscuitError;

/// Most blocks a Biscuit may have (authority included); verifiers refuse more.
pub const MAX_BLOCKS: usize = 16;
/// Most checks in one appended block.
pub const MAX_CHECKS_PER_BLOCK: usize = 32;
/// Longest Datalog source accepted for one appended block.
const MAX_BLOCK_SOURCE: usize = 4096;

/// How to narrow a Biscuit. Every field only ever removes authority.
#[derive(Debug, Clone, Default)]
pub struct Attenuation {
    /// Only requests needing at most these scopes.
    pub scopes: Option<ScopeSet>,
    /// Only at this resource.
    pub resource: Option<String>,
    /// Tool calls only of these MCP tools (other requests are not limited).
    pub tools: Vec<String>,
    /// Only requests before this time.
    pub not_after: Option<UnixTime>,
    /// Further checks, as Datalog (`check if ...;`).
    pub datalog: Option<String>,
    /// Seal the token afterwards: no further block can be added.
    pub seal: bool,
}

impl Attenuation {
    fn block(&self) -> Result<BlockBuilder, BiscuitError> {
        let invalid = |e: biscuit_auth::error::Token| BiscuitError::Attenuation(e.to_string());
        let mut block = BlockBuilder::new();
        if let Some(scopes) = &self.scopes {
            let allowed: BTreeSet<Term> = scopes.iter().map(|s| string(s.as_str())).collect();
            block = block
                .code_with_params(
                    // `reject if`, not `check all`: a request that needs no
                    // scope (MCP `initialize`) has no `required_scope` fact,
                    // and `check all` over nothing fails.
                    "reject if required_scope($s), !{allowed}.contains($s);",
                    HashMap::from([("allowed".to_owned(), set(allowed))]),
                    HashMap::new(),
                )
                .map_err(invalid)?;
        }
        if let Some(resource) = &self.resource {
            block = block
                .code_with_params(
                    "check if resource({resource});",
                    HashMap::from([("resource".to_owned(), string(resource))]),
                    HashMap::new(),
                )
                .map_err(invalid)?;
        }
        if !self.tools.is_empty() {
            let tools: BTreeSet<Term> = self.tools.iter().map(|t| string(t)).collect();
            block = block
                .code_with_params(
                    // Only tool calls are limited: listing tools and
                    // opening a session stay possible.
                    "reject if tool($t), !{tools}.contains($t);",
                    HashMap::from([("tools".to_owned(), set(tools))]),
                    HashMap::new(),
                )
                .map_err(invalid)?;
        }
        if let Some(t) = self.not_after {
            block = block
                .code_with_params(
                    "check if time($t), $t <= {not_after};",
                    HashMap::from([("not_after".to_owned(), date_term(t))]),
                    HashMap::new(),
                )
                .map_err(invalid)?;
        }
        if let Some(source) = &self.datalog {
            if source.len() > MAX_BLOCK_SOURCE {
                return Err(BiscuitError::Attenuation(format!(
                    "Datalog longer than {MAX_BLOCK_SOURCE} bytes"
                )));
            }
            block = block.code(source).map_err(invalid)?;
        }
        if block.checks.is_empty() {
            return Err(BiscuitError::Attenuation(
                "the block holds no check: it would not narrow anything".into(),
            ));
        }
        if block.checks.len() + block.rules.len() + block.facts.len() > MAX_CHECKS_PER_BLOCK {
            return Err(BiscuitError::Attenuation(format!(
                "more than {MAX_CHECKS_PER_BLOCK} statements in one block"
            )));
        }
        Ok(block)
    }
}

/// Appends `attenuation` to `token` (base64url) without verifying it;
/// returns the narrower token.
pub fn attenuate(token: &str, attenuation: &Attenuation) -> Result<String, BiscuitError> {
    let biscuit = UnverifiedBiscuit::from_base64(token.trim())?;
    if biscuit.block_count() >= MAX_BLOCKS {
        return Err(BiscuitError::Attenuation(format!(
            "a biscuit may have at most {MAX_BLOCKS} blocks"
        )));
    }
    let mut narrowed = biscuit.append(attenuation.block()?)?;
    if attenuation.seal {
        narrowed = narrowed.seal()?;
    }
    Ok(narrowed.to_base64()?)
}

/// Each block's Datalog, authority first, without verifying signatures.
pub fn inspect(token: &str) -> Result<Vec<String>, BiscuitError> {
    let biscuit = UnverifiedBiscuit::from_base64(token.trim())?;
    (0..biscuit.block_count())
        .map(|i| biscuit.print_block_source(i).map_err(BiscuitError::from))
        .collect()
}
