//! DPoP proofs (RFC 9449 §4.3), checked without I/O: the caller supplies the
//! request's method and URL, the time, the expected nonce and access token,
//! and afterwards records the proof's `jti` in its replay cache.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{PublicJwk, UnverifiedJwt};

/// Longest DPoP header looked at.
pub const MAX_PROOF_LEN: usize = 4 * 1024;

/// Why a proof was refused; each is `invalid_dpop_proof` (or `use_dpop_nonce`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DpopError {
    /// Not a JWS, too long, or claims missing.
    #[error("malformed DPoP proof")]
    Malformed,
    /// `typ` is not `dpop+jwt`.
    #[error("DPoP proof typ must be dpop+jwt")]
    WrongType,
    /// `alg` not allowed, or not the key's.
    #[error("DPoP proof algorithm not allowed")]
    Algorithm,
    /// No public `jwk`, or one with private members.
    #[error("DPoP proof needs a public jwk header")]
    Key,
    /// Signature does not verify with the embedded key.
    #[error("DPoP proof signature does not verify")]
    Signature,
    /// `htm` differs from the request method.
    #[error("DPoP proof htm does not match the request")]
    Method,
    /// `htu` differs from the request URL.
    #[error("DPoP proof htu does not match the request")]
    Url,
    /// `iat` outside the accepted window.
    #[error("DPoP proof is too old or from the future")]
    Stale,
    /// `ath` missing or not the hash of the presented token.
    #[error("DPoP proof ath does not match the access token")]
    AccessTokenHash,
    /// The server's nonce is required and missing or wrong.
    #[error("a fresh DPoP nonce is required")]
    Nonce,
}

/// What the request a proof is checked against looks like.
#[derive(Debug, Clone, Copy)]
pub struct DpopContext<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// The request URL as the server is reached (query and fragment ignored).
    pub url: &'a str,
    /// Current time.
    pub now: i64,
    /// Oldest acceptable `iat` is `now - max_age`.
    pub max_age: i64,
    /// Newest acceptable `iat` is `now + leeway`.
    pub leeway: i64,
    /// The access token presented with the proof (resource requests).
    pub access_token: Option<&'a str>,
    /// Nonces currently accepted; `None` when nonces are not required.
    pub nonces: Option<&'a [String]>,
}

/// A proof that passed every stateless check. Its `jti` must still be
/// recorded as used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedDpop {
    /// RFC 7638 thumbprint of the proof key: the `cnf.jkt` it binds to.
    pub jkt: String,
    /// The proof's id, for the replay cache.
    pub jti: String,
    /// When it was made.
    pub iat: i64,
}

#[derive(Deserialize)]
struct Claims {
    jti: Option<String>,
    htm: Option<String>,
    htu: Option<String>,
    iat: Option<i64>,
    ath: Option<String>,
    nonce: Option<String>,
}

const PRIVATE_MEMBERS: [&str; 7] = ["d", "p", "q", "dp", "dq", "qi", "k"];

/// `scheme://host:port/path`, normalized, for `htu` comparison (§4.3 point 9).
fn target(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    Some(format!(
        "{}://{}{}{}",
        u.scheme(),
        u.host_str()?.to_ascii_lowercase(),
        u.port().map(|p| format!(":{p}")).unwrap_or_default(),
        u.path()
    ))
}

/// The `ath` of an access token: base64url(SHA-256(token)).
pub fn access_token_hash(token: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(token.as_bytes()))
}

/// The `jti` a proof claims, read without checking anything else, so that a
/// caller can start recording it while [`verify_proof`] runs. Trust it only
/// once `verify_proof` has returned the same `jti`.
pub fn claimed_jti(proof: &str) -> Option<String> {
    #[derive(Deserialize)]
    struct Jti {
        jti: Option<String>,
    }
    if proof.len() > MAX_PROOF_LEN {
        return None;
    }
    let payload = proof.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    serde_json::from_slice::<Jti>(&bytes).ok()?.jti
}

/// Checks a DPoP proof against a request (RFC 9449 §4.3, steps 1–11 but the
/// replay check, which needs state).
pub fn verify_proof(proof: &str, ctx: &DpopContext<'_>) -> Result<VerifiedDpop, DpopError> {
    if proof.len() > MAX_PROOF_LEN {
        return Err(DpopError::Malformed);
    }
    let header_b64 = proof.split('.').next().ok_or(DpopError::Malformed)?;
    let header: Value = URL_SAFE_NO_PAD
        .decode(header_b64)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(DpopError::Malformed)?;
    if header.get("typ").and_then(Value::as_str) != Some("dpop+jwt") {
        return Err(DpopError::WrongType);
    }
    let jwk_value = header
        .get("jwk")
        .filter(|j| j.is_object())
        .ok_or(DpopError::Key)?;
    if PRIVATE_MEMBERS.iter().any(|m| jwk_value.get(m).is_some()) {
        return Err(DpopError::Key);
    }
    let mut jwk: PublicJwk =
        serde_json::from_value(jwk_value.clone()).map_err(|_| DpopError::Key)?;
    jwk.kid = None;
    let key_alg = jwk.key_alg().map_err(|_| DpopError::Key)?;
    let jwt = UnverifiedJwt::parse(proof).map_err(|e| match e {
        crate::JoseError::AlgorithmNotAllowed => DpopError::Algorithm,
        _ => DpopError::Malformed,
    })?;
    if jwt.alg() != key_alg {
        return Err(DpopError::Algorithm);
    }
    let claims: Claims = jwt
        .verify::<Claims>(std::slice::from_ref(&jwk))
        .map_err(|e| match e {
            crate::JoseError::Malformed(_) => DpopError::Malformed,
            _ => DpopError::Signature,
        })?
        .claims;
    let jti = claims
        .jti
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or(DpopError::Malformed)?;
    if claims.htm.as_deref() != Some(ctx.method) {
        return Err(DpopError::Method);
    }
    let htu = claims.htu.as_deref().and_then(target);
    if htu.is_none() || htu != target(ctx.url) {
        return Err(DpopError::Url);
    }
    let iat = claims.iat.ok_or(DpopError::Malformed)?;
    if iat < ctx.now - ctx.max_age || iat > ctx.now + ctx.leeway {
        return Err(DpopError::Stale);
    }
    if let Some(token) = ctx.access_token {
        if claims.ath.as_deref() != Some(access_token_hash(token).as_str()) {
            return Err(DpopError::AccessTokenHash);
        }
    }
    if let Some(accepted) = ctx.nonces {
        if !claims.nonce.is_some_and(|n| accepted.contains(&n)) {
            return Err(DpopError::Nonce);
        }
    }
    let jkt = jwk.thumbprint().map_err(|_| DpopError::Key)?;
    Ok(VerifiedDpop { jkt, jti, iat })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PrivateKeyDer, SigningAlg, SigningKey};
    use serde_json::json;

    fn key() -> SigningKey {
        SigningKey::from_private(
            SigningAlg::ES256,
            &PrivateKeyDer::generate(SigningAlg::ES256).unwrap(),
        )
        .unwrap()
    }

    /// Builds a proof the way a client does: typ dpop+jwt, the public jwk in the header.
    fn proof(k: &SigningKey, typ: &str, claims: Value) -> String {
        let mut jwk = serde_json::to_value(k.public_jwk()).unwrap();
        jwk.as_object_mut().unwrap().remove("kid");
        let header = json!({"typ": typ, "alg": "ES256", "jwk": jwk});
        k.sign_with_header(&header, &claims).unwrap()
    }

    fn ctx<'a>(nonces: Option<&'a [String]>, token: Option<&'a str>) -> DpopContext<'a> {
        DpopContext {
            method: "POST",
            url: "https://as.example/token",
            now: 1000,
            max_age: 300,
            leeway: 30,
            access_token: token,
            nonces,
        }
    }

    #[test]
    fn claimed_jti_reads_the_payload_only() {
        let k = key();
        let p = proof(&k, "dpop+jwt", json!({"jti": "j-1", "htm": "POST"}));
        assert_eq!(claimed_jti(&p).as_deref(), Some("j-1"));
        let mut forged = p.clone();
        forged.push('x');
        assert_eq!(
            claimed_jti(&forged).as_deref(),
            Some("j-1"),
            "no signature check"
        );
        assert_eq!(claimed_jti("a.b.c"), None);
        assert_eq!(claimed_jti(&"a".repeat(MAX_PROOF_LEN + 1)), None);
    }

    #[test]
    fn a_good_proof_and_each_failure() {
        let k = key();
        let good = json!({"jti": "j1", "htm": "POST", "htu": "https://AS.example:443/token?x=1", "iat": 1000});
        let v = verify_proof(&proof(&k, "dpop+jwt", good.clone()), &ctx(None, None)).unwrap();
        assert_eq!(v.jkt, k.public_jwk().thumbprint().unwrap());
        let with = |f: &dyn Fn(&mut Value)| {
            let mut c = good.clone();
            f(&mut c);
            verify_proof(&proof(&k, "dpop+jwt", c), &ctx(None, None))
        };
        assert_eq!(with(&|c| c["htm"] = json!("GET")), Err(DpopError::Method));
        assert_eq!(
            with(&|c| c["htu"] = json!("https://as.example/other")),
            Err(DpopError::Url)
        );
        assert_eq!(with(&|c| c["iat"] = json!(500)), Err(DpopError::Stale));
        assert_eq!(with(&|c| c["iat"] = json!(1100)), Err(DpopError::Stale));
        assert_eq!(
            with(&|c| {
                c.as_object_mut().unwrap().remove("jti");
            }),
            Err(DpopError::Malformed)
        );
        assert_eq!(
            verify_proof(&proof(&k, "JWT", good.clone()), &ctx(None, None)),
            Err(DpopError::WrongType)
        );
        // ath and nonce.
        let t = "the-access-token";
        let mut c = good.clone();
        c["ath"] = json!(access_token_hash(t));
        assert!(verify_proof(&proof(&k, "dpop+jwt", c.clone()), &ctx(None, Some(t))).is_ok());
        assert_eq!(
            verify_proof(&proof(&k, "dpop+jwt", c.clone()), &ctx(None, Some("other"))),
            Err(DpopError::AccessTokenHash)
        );
        let nonces = vec!["n1".to_owned()];
        assert_eq!(
            verify_proof(
                &proof(&k, "dpop+jwt", c.clone()),
                &ctx(Some(&nonces), Some(t))
            ),
            Err(DpopError::Nonce)
        );
        c["nonce"] = json!("n1");
        assert!(verify_proof(&proof(&k, "dpop+jwt", c), &ctx(Some(&nonces), Some(t))).is_ok());
        // A tampered signature.
        let p = proof(&k, "dpop+jwt", good);
        let forged = format!("{}x", &p[..p.len() - 1]);
        assert!(verify_proof(&forged, &ctx(None, None)).is_err());
    }
}
