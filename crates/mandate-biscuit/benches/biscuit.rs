//! The four Biscuit operations alone, without the guard around them:
//!
//! * `mint`: the authority block token exchange signs (issuer, subject,
//!   client, audience, one scope, token id, expiry, one actor, the expiry
//!   check), with the root key.
//! * `attenuate_one_block`: a holder appending one block of two checks
//!   (scopes and resource), offline; a fresh ephemeral key is generated and
//!   signs it.
//! * `verify_3_blocks`: [`RootKeys::verify`] on the minted token narrowed by
//!   two blocks: decode, three signatures, and the authority block read into
//!   claims by six Datalog queries. The guard does this once per token.
//! * `authorize_3_blocks`: [`VerifiedBiscuit::authorize`] of an A2A
//!   `SendMessage` call against that token: the request's facts added, every
//!   block's checks run. The guard does this on every request.
//!
//!     CARGO_TARGET_DIR=$HOME/.cache/mandate-target cargo bench -p mandate-biscuit --bench biscuit

// A benchmark's set-up failing is a broken benchmark: stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use mandate_biscuit::{
    attenuate, mint, ActorEntry, Attenuation, Grant, RequestFacts, RootKey, RootKeys,
};
use mandate_types::ScopeSet;

const NOW: i64 = 1_800_000_000;
const RESOURCE: &str = "https://agent.example.com";

fn root() -> RootKey {
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    RootKey::from_ed25519_pkcs8("kid-1", key.to_pkcs8_der().unwrap().as_bytes()).unwrap()
}

fn bench(c: &mut Criterion) {
    let root = root();
    let keys = RootKeys::new([&root.published()]);
    let scopes = ScopeSet::parse("agent:execute").unwrap();
    let actors = [ActorEntry {
        sub: "bench-delegate".into(),
        client_id: Some("bench-delegate".into()),
    }];
    let grant = Grant {
        issuer: "https://mandate.bench",
        subject: "bench-agent",
        client_id: "bench-delegate",
        audience: RESOURCE,
        scopes: &scopes,
        token_id: "jti-0123456789abcdef",
        expires_at: NOW + 3600,
        actors: &actors,
        jkt: None,
    };
    let first = Attenuation {
        scopes: Some(scopes.clone()),
        resource: Some(RESOURCE.into()),
        ..Default::default()
    };
    let second = Attenuation {
        not_after: Some(NOW + 1800),
        datalog: Some(r#"check if operation("SendMessage");"#.into()),
        ..Default::default()
    };
    let minted = mint(&root, &grant).unwrap();
    let narrowed = attenuate(&attenuate(&minted, &first).unwrap(), &second).unwrap();
    let verified = keys.verify(&narrowed).unwrap();
    let facts = RequestFacts {
        time: NOW,
        resource: RESOURCE,
        operation: Some("SendMessage"),
        tool: None,
        level: None,
        http_method: "POST",
        path: "/",
        required_scopes: &scopes,
    };
    verified.authorize(&facts).unwrap();
    // And a request the second block refuses, so the checks really run.
    assert!(verified
        .authorize(&RequestFacts {
            operation: Some("CancelTask"),
            ..facts
        })
        .is_err());

    let mut g = c.benchmark_group("biscuit");
    g.bench_function("mint", |b| b.iter(|| mint(&root, black_box(&grant))));
    g.bench_function("attenuate_one_block", |b| {
        b.iter(|| attenuate(black_box(&minted), &first))
    });
    g.bench_function("verify_3_blocks", |b| {
        b.iter(|| keys.verify(black_box(&narrowed)))
    });
    g.bench_function("authorize_3_blocks", |b| {
        b.iter(|| verified.authorize(black_box(&facts)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
