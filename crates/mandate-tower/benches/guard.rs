//! What each protection costs the guard per request: [`Guard::decide`] on one
//! and the same A2A `message/send` call, with
//!
//! * `bearer_jwt_cached`: a plain bearer JWT whose signature was verified on
//!   the first request (the verifier caches verified tokens until they
//!   expire). The baseline: expiry, audience, revocation, JSON-RPC parsing,
//!   the route's scope.
//! * `dpop_jwt_fresh_proof`: a DPoP-bound JWT (cached like the bearer one)
//!   with a new proof on every request, as RFC 9449 requires: the proof's
//!   header and claims parsed, its Ed25519 signature verified, `htm`, `htu`,
//!   `iat` and `ath` checked, the key's thumbprint compared with `cnf.jkt`,
//!   and its `jti` recorded in a [`MemoryReplay`]. Proofs are signed outside
//!   the timed part.
//! * `biscuit_attenuated_cached`: a Biscuit minted by
//!   [`mandate_biscuit::mint`] and narrowed by two appended blocks; its
//!   signature chain was verified on the first request (cached like a JWT),
//!   and every block's checks run against the request's facts on each one.
//! * `biscuit_attenuated_uncached` and `bearer_jwt_uncached`: the first
//!   request of a token, with a fresh verifier (empty cache) each time; the
//!   verifier is built outside the timed part.
//!
//! Subtract `bearer_jwt_cached` from the others to get what each protection
//! adds. `docs/BENCHMARKS.md` has the figures and the end-to-end run
//! (`bench/delegation.sh`).
//!
//!     CARGO_TARGET_DIR=$HOME/.cache/mandate-target cargo bench -p mandate-tower --bench guard

// A benchmark's set-up failing is a broken benchmark: stop loudly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{header, HeaderMap, HeaderValue, Method, Uri};
use mandate_biscuit::{attenuate, mint, ActorEntry, Attenuation, Grant, RootKey, RootKeys};
use mandate_jose::{JwkSet, PrivateKeyDer, SigningAlg, SigningKey};
use mandate_tower::keys::StaticKeys;
use mandate_tower::{
    Guard, MemoryReplay, NoRevocation, ProtectedResource, Protocol, RequestView, StaticRoots,
    TokenVerifier, TrustedIssuer,
};
use mandate_types::{random_token, ScopeSet};
use serde_json::json;

const ISSUER: &str = "https://mandate.bench";
const RESOURCE: &str = "https://agent.example.com";
const SCOPE: &str = "agent:execute";
const ORIGIN: &str = "https://gw.example";
const PATH: &str = "/agents/bench";
/// The same A2A v0.3 call `../shared/peers/rpc-bearer.lua` sends.
const BODY: &[u8] = br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"role":"user","parts":[{"kind":"text","text":"hi"}],"messageId":"m1"}}}"#;
/// A fixed time, so every run does the same work.
const NOW: i64 = 1_800_000_000;

struct Fixture {
    issuer_key: SigningKey,
    biscuit_root: RootKey,
    dpop_key: SigningKey,
    dpop_jwk: serde_json::Value,
    resource: ProtectedResource,
    method: Method,
    uri: Uri,
    bearer: HeaderMap,
    biscuit: HeaderMap,
    dpop_token: String,
}

impl Fixture {
    fn new() -> Self {
        let ed25519 = || {
            SigningKey::from_private(
                SigningAlg::EdDSA,
                &PrivateKeyDer::generate(SigningAlg::EdDSA).unwrap(),
            )
            .unwrap()
        };
        let issuer_key = ed25519();
        let dpop_key = ed25519();
        let biscuit_root = RootKey::from_ed25519_pkcs8(
            "root-1",
            PrivateKeyDer::generate(SigningAlg::EdDSA).unwrap().der(),
        )
        .unwrap();
        // The public JWK exactly as mandate-client's DpopKey puts it in a proof.
        let public = proof_jwk(&dpop_key);
        let jkt = dpop_key.public_jwk().thumbprint().unwrap();

        let claims = |cnf: Option<&str>| {
            let mut c = json!({
                "iss": ISSUER, "sub": "bench-agent", "aud": RESOURCE, "client_id": "bench-agent",
                "scope": SCOPE, "iat": NOW, "exp": NOW + 7200, "jti": random_token(16),
            });
            if let Some(jkt) = cnf {
                c["cnf"] = json!({"jkt": jkt});
            }
            c
        };
        let bearer_token = issuer_key.sign("at+jwt", &claims(None)).unwrap();
        let dpop_token = issuer_key.sign("at+jwt", &claims(Some(&jkt))).unwrap();

        // A Biscuit as token exchange mints it (one actor in the chain), then
        // narrowed twice by its holder, as `mandate token attenuate` does.
        let scopes = ScopeSet::parse(SCOPE).unwrap();
        let minted = mint(
            &biscuit_root,
            &Grant {
                issuer: ISSUER,
                subject: "bench-agent",
                client_id: "bench-delegate",
                audience: RESOURCE,
                scopes: &scopes,
                token_id: &random_token(16),
                expires_at: NOW + 3600,
                actors: &[ActorEntry {
                    sub: "bench-delegate".into(),
                    client_id: Some("bench-delegate".into()),
                }],
                jkt: None,
            },
        )
        .unwrap();
        let narrowed = attenuate(
            &minted,
            &Attenuation {
                scopes: Some(scopes.clone()),
                resource: Some(RESOURCE.into()),
                ..Default::default()
            },
        )
        .unwrap();
        let narrowed = attenuate(
            &narrowed,
            &Attenuation {
                not_after: Some(NOW + 1800),
                datalog: Some(r#"check if operation("SendMessage");"#.into()),
                ..Default::default()
            },
        )
        .unwrap();

        let headers = |authorization: String| {
            let mut h = HeaderMap::new();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_str(&authorization).unwrap(),
            );
            h
        };
        Self {
            resource: ProtectedResource {
                resource: RESOURCE.into(),
                resource_metadata: format!("{ORIGIN}/.well-known/oauth-protected-resource{PATH}"),
                public_origin: ORIGIN.into(),
                protocol: Protocol::A2a,
                scopes,
                operations: Default::default(),
                public: false,
                mcp: None,
            },
            method: Method::POST,
            uri: Uri::from_static(PATH),
            bearer: headers(format!("Bearer {bearer_token}")),
            biscuit: headers(format!("Bearer {narrowed}")),
            dpop_jwk: public,
            dpop_key,
            dpop_token,
            issuer_key,
            biscuit_root,
        }
    }

    /// A guard with an empty token cache, trusting the fixture's issuer key
    /// and Biscuit root key.
    fn guard(&self) -> Guard {
        let keys = StaticKeys(
            [(
                ISSUER.to_owned(),
                Arc::new(JwkSet {
                    keys: vec![self.issuer_key.public_jwk().clone()],
                }),
            )]
            .into(),
        );
        let verifier = TokenVerifier::new(
            [TrustedIssuer {
                issuer: ISSUER.into(),
                require_at_jwt: true,
            }],
            Arc::new(keys),
            Arc::new(NoRevocation),
            30,
        )
        .with_biscuit_roots(Arc::new(StaticRoots(Arc::new(RootKeys::new([&self
            .biscuit_root
            .published()])))));
        Guard::new(verifier).with_replay(Arc::new(MemoryReplay::default()))
    }

    /// The headers of one DPoP request: the bound token and a new proof,
    /// built as mandate-client's `DpopKey::proof` builds it.
    fn dpop_headers(&self) -> HeaderMap {
        let header = json!({"typ": "dpop+jwt", "alg": "EdDSA", "jwk": self.dpop_jwk});
        let claims = json!({
            "jti": random_token(16),
            "htm": "POST",
            "htu": format!("{ORIGIN}{PATH}"),
            "iat": NOW,
            "ath": mandate_jose::dpop::access_token_hash(&self.dpop_token),
        });
        let proof = self.dpop_key.sign_with_header(&header, &claims).unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("DPoP {}", self.dpop_token)).unwrap(),
        );
        h.insert("dpop", HeaderValue::from_str(&proof).unwrap());
        h
    }

    fn view<'a>(&'a self, headers: &'a HeaderMap) -> RequestView<'a> {
        RequestView {
            method: &self.method,
            uri: &self.uri,
            path: "/",
            headers,
            body: Some(BODY),
        }
    }
}

/// The members RFC 7638 hashes and nothing else (no kid, alg or use).
fn proof_jwk(key: &SigningKey) -> serde_json::Value {
    let p = key.public_jwk();
    json!({"kty": p.kty, "crv": p.crv, "x": p.x})
}

fn decide(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let fx = Fixture::new();
    let guard = fx.guard();
    // Every variant must be allowed, or the bench measures a refusal.
    for (name, headers) in [
        ("bearer", fx.bearer.clone()),
        ("dpop", fx.dpop_headers()),
        ("biscuit", fx.biscuit.clone()),
    ] {
        if let Err(d) = rt.block_on(guard.decide(&fx.resource, fx.view(&headers), NOW)) {
            panic!("{name} request refused: {} {}", d.reason, d.description);
        }
    }
    let replayed = fx.dpop_headers();
    rt.block_on(guard.decide(&fx.resource, fx.view(&replayed), NOW))
        .unwrap();
    assert!(
        rt.block_on(guard.decide(&fx.resource, fx.view(&replayed), NOW))
            .is_err(),
        "a replayed proof must be refused"
    );

    let mut g = c.benchmark_group("guard_decide");
    g.bench_function("bearer_jwt_cached", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(guard.decide(&fx.resource, fx.view(&fx.bearer), NOW).await)
        })
    });
    g.bench_function("dpop_jwt_fresh_proof", |b| {
        b.to_async(&rt).iter_batched(
            || fx.dpop_headers(),
            |headers| {
                let (guard, fx) = (&guard, &fx);
                // The headers go back out, so their drop is not timed.
                async move {
                    let decision = guard.decide(&fx.resource, fx.view(&headers), NOW).await;
                    (black_box(decision), headers)
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("biscuit_attenuated_cached", |b| {
        b.to_async(&rt).iter(|| async {
            black_box(guard.decide(&fx.resource, fx.view(&fx.biscuit), NOW).await)
        })
    });
    // A token's first request: a fresh guard each time, built untimed.
    for (name, token) in [
        ("biscuit_attenuated_uncached", &fx.biscuit),
        ("bearer_jwt_uncached", &fx.bearer),
    ] {
        g.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || fx.guard(),
                |fresh| {
                    let fx = &fx;
                    // The guard goes back out, so its drop is not timed.
                    async move {
                        let decision = fresh.decide(&fx.resource, fx.view(token), NOW).await;
                        (black_box(decision), fresh)
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
