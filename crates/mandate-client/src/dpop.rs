//! DPoP on the client side (RFC 9449): the key, the proofs, and the server
//! nonces to put in them.
//!
//! Why a key of its own: a DPoP-bound token (`cnf.jkt`) is worthless to
//! whoever steals it from a log or a compromised upstream, because every use
//! needs a fresh proof signed by the key that never leaves this process.
//! Ed25519 is the default (small, fast, deterministic signatures); ES256 is
//! there for servers that do not take EdDSA. The signing itself is
//! `mandate-jose`'s [`SigningKey`], the same code that signs Mandate's tokens.
//!
//! Nonces (§8, §9): a server may insist that proofs carry a value it chose
//! recently. It says so with `use_dpop_nonce` and a `DPoP-Nonce` header; the
//! [`NonceCache`] remembers the last one per origin, so only the first request
//! to a server (and the first after its nonce rotates) pays a retry.

use std::collections::HashMap;
use std::sync::Mutex;

use mandate_jose::{PrivateKeyDer, SigningAlg, SigningKey};
use mandate_types::{random_token, UnixTime};
use serde_json::{json, Value};
use url::Url;

use crate::Error;

/// Most origins whose nonce is remembered; past it the cache starts over.
pub const MAX_NONCE_ORIGINS: usize = 256;
/// Longest nonce kept (a server that sends more is ignored).
pub const MAX_NONCE_LEN: usize = 512;

/// A DPoP key pair. The private half never leaves it: proofs carry only the
/// public JWK.
pub struct DpopKey {
    key: SigningKey,
    jwk: Value,
    jkt: String,
}

impl DpopKey {
    /// A fresh Ed25519 key (the default).
    pub fn generate() -> Result<Self, Error> {
        Self::generate_with(SigningAlg::EdDSA)
    }

    /// A fresh key for `alg`; EdDSA or ES256 (RS256 works but is slow to
    /// generate and makes large proofs).
    pub fn generate_with(alg: SigningAlg) -> Result<Self, Error> {
        let der = PrivateKeyDer::generate(alg)?;
        Self::from_signing_key(SigningKey::from_private(alg, &der)?)
    }

    /// Wraps a loaded key (for a key kept across restarts, so that tokens
    /// bound to it stay usable).
    pub fn from_signing_key(key: SigningKey) -> Result<Self, Error> {
        let public = key.public_jwk();
        let jkt = public.thumbprint()?;
        // The members RFC 7638 hashes, and nothing else: no kid, alg or use,
        // so the header is exactly the key.
        let mut jwk = serde_json::Map::new();
        jwk.insert("kty".into(), json!(public.kty));
        for (name, value) in [
            ("crv", &public.crv),
            ("x", &public.x),
            ("y", &public.y),
            ("n", &public.n),
            ("e", &public.e),
        ] {
            if let Some(v) = value {
                jwk.insert(name.into(), json!(v));
            }
        }
        let jwk = serde_json::Value::Object(jwk);
        Ok(Self { key, jwk, jkt })
    }

    /// The RFC 7638 thumbprint: what a bound token's `cnf.jkt` holds.
    pub fn thumbprint(&self) -> &str {
        &self.jkt
    }

    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.key.alg()
    }

    /// A proof for one request (§4.2): `htm` and `htu` name it, `ath` ties it
    /// to `access_token` (resource requests), `nonce` is the server's.
    pub fn proof(
        &self,
        method: &str,
        url: &Url,
        now: UnixTime,
        nonce: Option<&str>,
        access_token: Option<&str>,
    ) -> Result<String, Error> {
        let header = json!({"typ": "dpop+jwt", "alg": self.key.alg().as_str(), "jwk": self.jwk});
        let mut claims = serde_json::Map::new();
        claims.insert("jti".into(), json!(random_token(16)));
        claims.insert("htm".into(), json!(method));
        claims.insert("htu".into(), json!(htu(url)));
        claims.insert("iat".into(), json!(now));
        if let Some(n) = nonce {
            claims.insert("nonce".into(), json!(n));
        }
        if let Some(t) = access_token {
            claims.insert(
                "ath".into(),
                json!(mandate_jose::dpop::access_token_hash(t)),
            );
        }
        let claims = serde_json::Value::Object(claims);
        Ok(self.key.sign_with_header(&header, &claims)?)
    }
}

impl std::fmt::Debug for DpopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DpopKey")
            .field("alg", &self.key.alg())
            .field("jkt", &self.jkt)
            .finish_non_exhaustive()
    }
}

/// `htu` (§4.2): the request URL without query and fragment.
pub fn htu(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// `scheme://host[:port]`, the key nonces are kept under.
pub fn origin(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// The last `DPoP-Nonce` each origin sent.
#[derive(Debug, Default)]
pub struct NonceCache(Mutex<HashMap<String, String>>);

impl NonceCache {
    /// The nonce to use for a request to `url`, if one is known.
    pub fn get(&self, url: &Url) -> Option<String> {
        self.0.lock().ok()?.get(&origin(url)).cloned()
    }

    /// Remembers `nonce` for `url`'s origin. Returns whether it changed (a
    /// retry with an unchanged nonce would fail the same way).
    pub fn set(&self, url: &Url, nonce: &str) -> bool {
        if nonce.is_empty() || nonce.len() > MAX_NONCE_LEN || !nonce.is_ascii() {
            return false;
        }
        let Ok(mut map) = self.0.lock() else {
            return false;
        };
        let key = origin(url);
        if map.get(&key).map(String::as_str) == Some(nonce) {
            return false;
        }
        if map.len() >= MAX_NONCE_ORIGINS && !map.contains_key(&key) {
            map.clear();
        }
        map.insert(key, nonce.to_owned());
        true
    }

    /// Remembers the `DPoP-Nonce` a response to `url` offered, and returns
    /// it.
    pub fn update_from(&self, url: &Url, headers: &http::HeaderMap) -> Option<String> {
        let offered = headers.get("dpop-nonce")?.to_str().ok()?;
        self.set(url, offered);
        Some(offered.to_owned())
    }
}

/// Whether a resource server's `WWW-Authenticate` asks for a nonce (§9):
/// a `DPoP` challenge with `error="use_dpop_nonce"`.
pub fn asks_for_nonce(headers: &http::HeaderMap) -> bool {
    headers
        .get_all(http::header::WWW_AUTHENTICATE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            // Challenges in one value are comma-separated, as are their
            // parameters; a challenge starts with a scheme followed by a space.
            let mut in_dpop = false;
            for part in v.split(',') {
                let part = part.trim();
                let (scheme, rest) = match part.split_once(' ') {
                    Some((s, r)) if !s.contains('=') => (Some(s), r.trim()),
                    _ => (None, part),
                };
                if let Some(s) = scheme {
                    in_dpop = s.eq_ignore_ascii_case("dpop");
                }
                if in_dpop {
                    let param = rest.replace(' ', "");
                    if param.eq_ignore_ascii_case("error=\"use_dpop_nonce\"")
                        || param.eq_ignore_ascii_case("error=use_dpop_nonce")
                    {
                        return true;
                    }
                }
            }
            false
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use mandate_jose::dpop::{verify_proof, DpopContext};

    fn ctx<'a>(
        method: &'a str,
        url: &'a str,
        token: Option<&'a str>,
        nonces: Option<&'a [String]>,
    ) -> DpopContext<'a> {
        DpopContext {
            method,
            url,
            now: 1000,
            max_age: 300,
            leeway: 30,
            access_token: token,
            nonces,
        }
    }

    #[test]
    fn proofs_verify_with_mandates_own_checker() {
        for alg in [SigningAlg::EdDSA, SigningAlg::ES256] {
            let key = DpopKey::generate_with(alg).unwrap();
            let url = Url::parse("https://rs.example/a/b?q=1#frag").unwrap();
            let nonce = vec!["n-1".to_owned()];
            let proof = key
                .proof("POST", &url, 1000, Some("n-1"), Some("the-token"))
                .unwrap();
            let v = verify_proof(
                &proof,
                &ctx(
                    "POST",
                    "https://rs.example/a/b",
                    Some("the-token"),
                    Some(&nonce),
                ),
            )
            .unwrap();
            assert_eq!(v.jkt, key.thumbprint());
            // The header carries the public key only.
            let header: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(proof.split('.').next().unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(header["typ"], "dpop+jwt");
            assert!(header["jwk"].get("d").is_none());
            assert!(header["jwk"].get("kid").is_none());
            // htu has no query or fragment.
            let claims: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(proof.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(claims["htu"], "https://rs.example/a/b");
            // Each proof is new.
            let again = key.proof("POST", &url, 1000, None, None).unwrap();
            let claims2: Value = serde_json::from_slice(
                &URL_SAFE_NO_PAD
                    .decode(again.split('.').nth(1).unwrap())
                    .unwrap(),
            )
            .unwrap();
            assert_ne!(claims["jti"], claims2["jti"]);
            assert!(claims2.get("ath").is_none() && claims2.get("nonce").is_none());
        }
    }

    #[test]
    fn nonces_are_per_origin_and_bounded() {
        let cache = NonceCache::default();
        let a = Url::parse("https://a.example/token").unwrap();
        let a2 = Url::parse("https://a.example/other?x").unwrap();
        let b = Url::parse("https://b.example:8443/").unwrap();
        assert!(cache.set(&a, "n1"));
        assert!(!cache.set(&a2, "n1"), "same origin, same nonce: no change");
        assert_eq!(cache.get(&a2).as_deref(), Some("n1"));
        assert_eq!(cache.get(&b), None);
        assert!(!cache.set(&b, ""));
        assert!(!cache.set(&b, &"x".repeat(MAX_NONCE_LEN + 1)));
        for i in 0..MAX_NONCE_ORIGINS + 5 {
            let u = Url::parse(&format!("https://h{i}.example/")).unwrap();
            cache.set(&u, "n");
        }
        assert!(cache.0.lock().unwrap().len() <= MAX_NONCE_ORIGINS);
    }

    #[test]
    fn nonce_challenges_are_recognized() {
        let h = |v: &str| {
            let mut m = http::HeaderMap::new();
            m.append(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_str(v).unwrap(),
            );
            m
        };
        assert!(asks_for_nonce(&h(
            r#"DPoP error="use_dpop_nonce", error_description="Resource server requires nonce in DPoP proof""#
        )));
        assert!(asks_for_nonce(&h(
            r#"Bearer realm="x", DPoP algs="ES256", error="use_dpop_nonce""#
        )));
        assert!(!asks_for_nonce(&h(r#"Bearer error="use_dpop_nonce""#)));
        assert!(!asks_for_nonce(&h(r#"DPoP error="invalid_token""#)));
        assert!(!asks_for_nonce(&http::HeaderMap::new()));
    }
}
