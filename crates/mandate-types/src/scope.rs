//! Scopes per RFC 6749 §3.3: space-delimited, case-sensitive tokens of
//! `%x21 / %x23-5B / %x5D-7E`. A [`ScopeSet`] is ordered so that the scope we
//! print in tokens and audit events is stable.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Most scopes one request may name.
pub const MAX_SCOPES: usize = 64;
/// Longest single scope token.
pub const MAX_SCOPE_LEN: usize = 128;

/// Why a scope string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    /// A scope token holds a character RFC 6749 forbids, or is empty.
    #[error("scope token has a forbidden character or is empty")]
    Syntax,
    /// Too many scope tokens or one too long.
    #[error("too many scopes (at most {MAX_SCOPES}) or one longer than {MAX_SCOPE_LEN} bytes")]
    TooLarge,
}

/// One scope token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Scope(String);

impl Scope {
    /// Parses one scope token.
    pub fn parse(raw: &str) -> Result<Self, ScopeError> {
        if raw.is_empty() {
            return Err(ScopeError::Syntax);
        }
        if raw.len() > MAX_SCOPE_LEN {
            return Err(ScopeError::TooLarge);
        }
        let ok = raw
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ScopeError::Syntax)
        }
    }

    /// The token.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Scope {
    type Error = ScopeError;
    fn try_from(s: String) -> Result<Self, ScopeError> {
        Self::parse(&s)
    }
}

impl From<Scope> for String {
    fn from(s: Scope) -> String {
        s.0
    }
}

/// A set of scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScopeSet(BTreeSet<Scope>);

impl ScopeSet {
    /// Parses a space-delimited scope string. Repeated spaces are tolerated,
    /// an empty string is the empty set.
    pub fn parse(raw: &str) -> Result<Self, ScopeError> {
        let mut set = BTreeSet::new();
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            set.insert(Scope::parse(token)?);
            if set.len() > MAX_SCOPES {
                return Err(ScopeError::TooLarge);
            }
        }
        Ok(Self(set))
    }

    /// Builds a set from scopes.
    pub fn from_scopes(scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self(scopes.into_iter().collect())
    }

    /// Whether every scope of `self` is in `other`.
    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    /// The scopes in both sets.
    pub fn intersection(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.intersection(&other.0).cloned().collect())
    }

    /// The scopes of `self` missing from `other`.
    pub fn difference(&self, other: &ScopeSet) -> ScopeSet {
        Self(self.0.difference(&other.0).cloned().collect())
    }

    /// Whether the set holds `scope`.
    pub fn contains(&self, scope: &Scope) -> bool {
        self.0.contains(scope)
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The scopes in order.
    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.0.iter()
    }
}

impl std::fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s.as_str())?;
            first = false;
        }
        Ok(())
    }
}

impl TryFrom<String> for ScopeSet {
    type Error = ScopeError;
    fn try_from(s: String) -> Result<Self, ScopeError> {
        Self::parse(&s)
    }
}

impl From<ScopeSet> for String {
    fn from(s: ScopeSet) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_sorted() {
        let s = ScopeSet::parse("b  a c").unwrap();
        assert_eq!(s.to_string(), "a b c");
        assert!(ScopeSet::parse("").unwrap().is_empty());
    }

    #[test]
    fn refuses_forbidden_characters() {
        assert_eq!(ScopeSet::parse("a\"b"), Err(ScopeError::Syntax));
        assert_eq!(ScopeSet::parse("a\\b"), Err(ScopeError::Syntax));
        assert_eq!(ScopeSet::parse("é"), Err(ScopeError::Syntax));
    }

    #[test]
    fn limits_count() {
        let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
        assert_eq!(ScopeSet::parse(&many.join(" ")), Err(ScopeError::TooLarge));
    }

    #[test]
    fn subset_and_difference() {
        let a = ScopeSet::parse("read write").unwrap();
        let b = ScopeSet::parse("read").unwrap();
        assert!(b.is_subset(&a));
        assert_eq!(a.difference(&b).to_string(), "write");
    }
}
