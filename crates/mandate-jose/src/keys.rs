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
/// every token (a measured 14% of token issuance when it did).
enum Signer {
    Ed25519(Box<ed25519_dalek::SigningKey>),
    P256(Box<p256::ecdsa::SigningKey>),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

impl Signer {
    /// The JWS signature (RFC 7518 §3: raw r||s for ECDSA) over `input`.
    fn sign(&self, input: &[u8]) -> Vec<u8> {
        use ed25519_dalek::Signer as _;
        match self {
            Self::Ed25519(k) => k.sign(input).to_bytes().to_vec(),
            Self::P256(k) => {
                let sig: p256::ecdsa::Signature = k.sign(input);
                sig.to_bytes().to_vec()
            }
            Self::Rsa(k) => {
                use rsa::signature::{SignatureEncoding as _, Signer as _};
                k.sign(input).to_vec()
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
                Signer::Ed25519(Box::new(k))
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
                Signer::P256(Box::new(p256::ecdsa::SigningKey::from(&k)))
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
                Signer::Rsa(Box::new(rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(k)))
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
        let payload = serde_json::to_vec(claims).map_err(|_| JoseError::Sign)?;
        let mut out = URL_SAFE_NO_PAD.encode(header.to_string());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(payload));
        let signature = self.signer.sign(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(signature));
        Ok(out)
    }

    /// Signs raw JWS signing input; returns it and the base64url signature.
    /// For building JWS with custom headers (DPoP proofs in tests and SDKs).
    pub fn sign_detached_raw(&self, input: &[u8]) -> (Vec<u8>, String) {
        let sig = self.signer.sign(input);
        let b64 = URL_SAFE_NO_PAD.encode(&sig);
        (sig, b64)
    }

    /// A JWS with a detached payload (RFC 7515 Appendix F), as A2A signed
    /// Agent Cards use: returns the protected header and the signature, both
    /// base64url. The header carries `alg`, `kid` and `typ`.
    pub fn sign_detached(&self, typ: &str, payload: &[u8]) -> Result<(String, String), JoseError> {
        let header = serde_json::json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": typ});
        let protected = URL_SAFE_NO_PAD.encode(header.to_string());
        let input = format!("{protected}.{}", URL_SAFE_NO_PAD.encode(payload));
        Ok((
            protected,
            URL_SAFE_NO_PAD.encode(self.signer.sign(input.as_bytes())),
        ))
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
