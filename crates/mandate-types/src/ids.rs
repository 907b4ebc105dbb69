//! Identifiers that are compared exactly and kept as the client sent them.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};

/// Longest identifier (client id, resource URI) we accept anywhere.
pub const MAX_IDENTIFIER_LEN: usize = 512;

/// An OAuth client identifier. Non-empty, at most 512 bytes, printable ASCII
/// without spaces (RFC 6749 Appendix A.1 allows more; we refuse what would be
/// awkward in logs and headers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    /// Parses a client identifier.
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_IDENTIFIER_LEN {
            return Err(format!("client_id must be 1 to {MAX_IDENTIFIER_LEN} bytes"));
        }
        if !raw.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("client_id must be printable ASCII without spaces".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// A fresh random client identifier. It never starts with `-`, so it
    /// can follow a command-line flag (`mandate token --client-id <id>`);
    /// one plain base64url token in 64 does.
    pub fn generate() -> Self {
        loop {
            let id = random_token(16);
            if !id.starts_with('-') {
                return Self(id);
            }
        }
    }

    /// The identifier as sent.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ClientId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<ClientId> for String {
    fn from(c: ClientId) -> String {
        c.0
    }
}

impl std::fmt::Display for ClientId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An RFC 8707 resource indicator: an absolute URI without a fragment, used as
/// the access token's audience. Compared exactly, as the client wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceUri(String);

impl ResourceUri {
    /// Parses a resource indicator (RFC 8707 §2: absolute URI, no fragment).
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw.is_empty() || raw.len() > MAX_IDENTIFIER_LEN {
            return Err(format!("resource must be 1 to {MAX_IDENTIFIER_LEN} bytes"));
        }
        let Some((scheme, rest)) = raw.split_once(':') else {
            return Err("resource must be an absolute URI".into());
        };
        let scheme_ok = scheme
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphabetic())
            && scheme
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
        if !scheme_ok || rest.is_empty() {
            return Err("resource must be an absolute URI".into());
        }
        if raw.contains('#') {
            return Err("resource must not contain a fragment".into());
        }
        if !raw.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
            return Err("resource must be printable ASCII without spaces".into());
        }
        Ok(Self(raw.to_owned()))
    }

    /// The URI as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ResourceUri {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Self::parse(&s)
    }
}

impl From<ResourceUri> for String {
    fn from(r: ResourceUri) -> String {
        r.0
    }
}

impl std::fmt::Display for ResourceUri {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// `bytes` random bytes, base64url without padding.
///
/// From `rand`'s thread-local CSPRNG (ChaCha12, seeded from the OS and
/// reseeded as it goes), not a `getrandom` system call per value: every
/// issued token draws its `jti` here.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_uri_rules() {
        assert!(ResourceUri::parse("https://api.example.com/mcp").is_ok());
        assert!(ResourceUri::parse("urn:example:thing").is_ok());
        assert!(ResourceUri::parse("/relative").is_err());
        assert!(ResourceUri::parse("https://a.example#frag").is_err());
        assert!(ResourceUri::parse("").is_err());
        assert!(ResourceUri::parse("https://a b").is_err());
    }

    #[test]
    fn client_id_rules() {
        assert!(ClientId::parse("agent-1").is_ok());
        assert!(ClientId::parse("has space").is_err());
        assert!(ClientId::parse(&"a".repeat(513)).is_err());
        assert_eq!(ClientId::generate().as_str().len(), 22);
        // A broken generator passes this with odds of (63/64)^2000, 2e-14.
        assert!((0..2000).all(|_| !ClientId::generate().as_str().starts_with('-')));
    }
}
