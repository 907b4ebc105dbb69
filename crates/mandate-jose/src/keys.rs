//! Key generation and loading. Private keys are PKCS#8 DER in memory and sealed
//! at rest; the public half is derived, never stored separately, so the two
//! cannot disagree.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _};
use rand::rngs::OsRng;
use rsa::traits::PublicKeyParts as _;

use crate::{JoseError, PublicJwk, SigningAlg};

/// RSA modulus size for keys we generate.
const RSA_BITS: usize = 2048;

/// A private key as PKCS#8 DER. Never printed; wiped on drop.
pub struct PrivateKeyDer(Vec<u8>);

impl PrivateKeyDer {
    /// Generates a fresh key for `alg`.
    pub fn generate(alg: SigningAlg) -> Result<Self, JoseError> {
        let der = match alg {
            SigningAlg::EdDSA => ed25519_dalek::SigningKey::generate(&mut OsRng)
                .to_pkcs8_der()
                .map_err(|_| JoseError::Key("Ed25519 encoding"))?
                .as_bytes()
                .to_vec(),
            SigningAlg::ES256 => p256::SecretKey::random(&mut OsRng)
                .to_pkcs8_der()
                .map_err(|_| JoseError::Key("P-256 encoding"))?
                .as_bytes()
                .to_vec(),
            SigningAlg::RS256 => rsa::RsaPrivateKey::new(&mut OsRng, RSA_BITS)
                .map_err(|_| JoseError::Key("RSA generation"))?
                .to_pkcs8_der()
                .map_err(|_| JoseError::Key("RSA encoding"))?
                .as_bytes()
                .to_vec(),
        };
        Ok(Self(der))
    }

    /// Wraps DER bytes (after unsealing).
    pub fn from_der(der: Vec<u8>) -> Self {
        Self(der)
    }

    /// The DER bytes, for sealing.
    pub fn der(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for PrivateKeyDer {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(|b| *b = 0);
    }
}

impl std::fmt::Debug for PrivateKeyDer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PrivateKeyDer([redacted])")
    }
}

/// A key ready to sign: the algorithm, its `kid` (the RFC 7638 thumbprint) and
/// the public JWK we publish.
pub struct SigningKey {
    alg: SigningAlg,
    kid: String,
    public: PublicJwk,
    signer: Signer,
}

/// The parsed private key, kept so that signing does not re-parse DER for
/// every token (a measured 14% of token issuance when it did). Signing runs on
/// aws-lc-rs: its Ed25519 (s2n-bignum assembly) takes half the time of
/// ed25519-dalek's, the largest single cost of a token, and its RSA is
/// constant-time. Keys are still generated and parsed with the RustCrypto
/// crates, so the stored form is unchanged.
enum Signer {
    Ed25519(Box<aws_lc_rs::signature::Ed25519KeyPair>),
    P256(Box<aws_lc_rs::signature::EcdsaKeyPair>),
    Rsa(Box<aws_lc_rs::signature::RsaKeyPair>),
}

impl Signer {
    /// The JWS signature (RFC 7518 §3: raw r||s for ECDSA) over `input`.
    fn sign(&self, input: &[u8]) -> Result<Vec<u8>, JoseError> {
        // aws-lc draws its own randomness; the argument exists for ring's API.
        let rng = aws_lc_rs::rand::SystemRandom::new();
        match self {
            Self::Ed25519(k) => Ok(k.sign(input).as_ref().to_vec()),
            Self::P256(k) => k
                .sign(&rng, input)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| JoseError::Sign),
            Self::Rsa(k) => {
                let mut sig = vec![0; k.public_modulus_len()];
                k.sign(
                    &aws_lc_rs::signature::RSA_PKCS1_SHA256,
                    &rng,
                    input,
                    &mut sig,
                )
                .map_err(|_| JoseError::Sign)?;
                Ok(sig)
            }
        }
    }
}

impl SigningKey {
    /// Loads a private key, deriving its public JWK and `kid`.
    pub fn from_private(alg: SigningAlg, key: &PrivateKeyDer) -> Result<Self, JoseError> {
        let der = key.der();
        let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
        let mut public = PublicJwk {
            kty: String::new(),
            kid: None,
            alg: Some(alg.as_str().to_owned()),
            use_: Some("sig".to_owned()),
            crv: None,
            x: None,
            y: None,
            n: None,
            e: None,
        };
        let signer = match alg {
            SigningAlg::EdDSA => {
                let k = ed25519_dalek::SigningKey::from_pkcs8_der(der)
                    .map_err(|_| JoseError::Key("not an Ed25519 PKCS#8 key"))?;
                public.kty = "OKP".into();
                public.crv = Some("Ed25519".into());
                public.x = Some(b64(k.verifying_key().as_bytes()));
                aws_lc_rs::signature::Ed25519KeyPair::from_seed_and_public_key(
                    k.as_bytes(),
                    k.verifying_key().as_bytes(),
                )
                .map(|k| Signer::Ed25519(Box::new(k)))
                .map_err(|_| JoseError::Key("Ed25519 key rejected"))?
            }
            SigningAlg::ES256 => {
                let k = p256::SecretKey::from_pkcs8_der(der)
                    .map_err(|_| JoseError::Key("not a P-256 PKCS#8 key"))?;
                let point = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
                    &k.public_key(),
                    false,
                );
                let (Some(x), Some(y)) = (point.x(), point.y()) else {
                    return Err(JoseError::Key("P-256 point at infinity"));
                };
                public.kty = "EC".into();
                public.crv = Some("P-256".into());
                public.x = Some(b64(x));
                public.y = Some(b64(y));
                aws_lc_rs::signature::EcdsaKeyPair::from_private_key_and_public_key(
                    &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                    &k.to_bytes(),
                    point.as_bytes(),
                )
                .map(|k| Signer::P256(Box::new(k)))
                .map_err(|_| JoseError::Key("P-256 key rejected"))?
            }
            SigningAlg::RS256 => {
                let k = rsa::RsaPrivateKey::from_pkcs8_der(der)
                    .map_err(|_| JoseError::Key("not an RSA PKCS#8 key"))?;
                if k.size() * 8 < RSA_BITS {
                    return Err(JoseError::Key("RSA keys must be at least 2048 bits"));
                }
                public.kty = "RSA".into();
                public.n = Some(b64(&k.n().to_bytes_be()));
                public.e = Some(b64(&k.e().to_bytes_be()));
                aws_lc_rs::signature::RsaKeyPair::from_pkcs8(der)
                    .map(|k| Signer::Rsa(Box::new(k)))
                    .map_err(|_| JoseError::Key("RSA key rejected"))?
            }
        };
        let kid = public.thumbprint()?;
        public.kid = Some(kid.clone());
        Ok(Self {
            alg,
            kid,
            public,
            signer,
        })
    }

    /// The algorithm.
    pub fn alg(&self) -> SigningAlg {
        self.alg
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public JWK, with `kid`, `alg` and `use`.
    pub fn public_jwk(&self) -> &PublicJwk {
        &self.public
    }

    /// Signs `claims` as a compact JWS with header `typ` and our `kid`.
    pub fn sign<T: serde::Serialize>(&self, typ: &str, claims: &T) -> Result<String, JoseError> {
        let header = serde_json::json!({"typ": typ, "alg": self.alg.as_str(), "kid": self.kid});
        self.sign_with_header(&header, claims)
    }

    /// Signs `claims` as a compact JWS under a protected header the caller
    /// built (DPoP proofs carry their public JWK in it, not a `kid`).
    pub fn sign_with_header<T: serde::Serialize>(
        &self,
        header: &serde_json::Value,
        claims: &T,
    ) -> Result<String, JoseError> {
        let header = serde_json::to_vec(header).map_err(|_| JoseError::Sign)?;
        let payload = serde_json::to_vec(claims).map_err(|_| JoseError::Sign)?;
        let mut out = URL_SAFE_NO_PAD.encode(header);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self.signer.sign(out.as_bytes())?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(out)
    }

    /// A JWS with a detached payload (RFC 7515 Appendix F), as A2A signed
    /// Agent Cards use: returns the protected header and the signature, both
    /// base64url. The header carries `alg`, `kid` and `typ`.
    pub fn sign_detached(&self, typ: &str, payload: &[u8]) -> Result<(String, String), JoseError> {
        let header = serde_json::json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": typ});
        let protected = URL_SAFE_NO_PAD.encode(header.to_string());
        let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
        let signature = self.signer.sign(input.as_bytes())?;
        Ok((protected, URL_SAFE_NO_PAD.encode(signature)))
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("alg", &self.alg)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}
