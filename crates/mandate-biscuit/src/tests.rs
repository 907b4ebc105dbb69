#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::*;
use mandate_types::ScopeSet;

const NOW: i64 = 1_800_000_000;

fn root() -> RootKey {
    // A fixed Ed25519 PKCS#8 key: the seed is 32 bytes of 7.
    use ed25519_dalek::pkcs8::EncodePrivateKey;
    let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let der = key.to_pkcs8_der().unwrap();
    RootKey::from_ed25519_pkcs8("kid-1", der.as_bytes()).unwrap()
}

fn minted(root: &RootKey, jkt: Option<&str>) -> String {
    let scopes = ScopeSet::parse("files:read files:write").unwrap();
    let actors = [
        ActorEntry {
            sub: "research".into(),
            client_id: Some("research".into()),
        },
        ActorEntry {
            sub: "orchestrator".into(),
            client_id: Some("orchestrator".into()),
        },
    ];
    mint(
        root,
        &Grant {
            issuer: "https://mandate.test",
            subject: "alice",
            client_id: "research",
            audience: "https://files.example/mcp",
            scopes: &scopes,
            token_id: "jti-1",
            expires_at: NOW + 600,
            actors: &actors,
            jkt,
        },
    )
    .unwrap()
}

fn keys(root: &RootKey) -> RootKeys {
    RootKeys::new([&root.published()])
}

fn request<'a>(tool: Option<&'a str>, needed: &'a ScopeSet, time: i64) -> RequestFacts<'a> {
    RequestFacts {
        time,
        resource: "https://files.example/mcp",
        operation: Some("tools/call"),
        tool,
        level: Some("read"),
        http_method: "POST",
        path: "/mcp",
        required_scopes: needed,
    }
}

#[test]
fn authority_block_reads_back_as_claims() {
    let root = root();
    let verified = keys(&root).verify(&minted(&root, Some("thumb"))).unwrap();
    let c = &verified.claims;
    assert_eq!(c.subject, "alice");
    assert_eq!(c.client_id, "research");
    assert_eq!(c.audience, "https://files.example/mcp");
    assert_eq!(c.scopes.to_string(), "files:read files:write");
    assert_eq!(c.token_id, "jti-1");
    assert_eq!(c.expires_at, NOW + 600);
    assert_eq!(c.jkt.as_deref(), Some("thumb"));
    assert_eq!(c.actors.len(), 2);
    assert_eq!(c.actors[0].sub, "research");
    assert_eq!(c.actors[1].client_id.as_deref(), Some("orchestrator"));
}

#[test]
fn scopes_and_expiry_are_enforced() {
    let root = root();
    let verified = keys(&root).verify(&minted(&root, None)).unwrap();
    let read = ScopeSet::parse("files:read").unwrap();
    assert_eq!(
        verified.authorize(&request(Some("search"), &read, NOW)),
        Ok(())
    );
    let admin = ScopeSet::parse("files:admin").unwrap();
    assert_eq!(
        verified.authorize(&request(Some("search"), &admin, NOW)),
        Err(Refusal::Scope)
    );
    match verified.authorize(&request(Some("search"), &read, NOW + 601)) {
        Err(Refusal::Check { block: 0, check }) => assert!(check.contains("time")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn scope_narrowing_allows_requests_needing_no_scope() {
    let root = root();
    let narrowed = attenuate(
        &minted(&root, None),
        &Attenuation {
            scopes: Some(ScopeSet::parse("files:read").unwrap()),
            ..Default::default()
        },
    )
    .unwrap();
    let verified = keys(&root).verify(&narrowed).unwrap();
    let none = ScopeSet::default();
    assert_eq!(verified.authorize(&request(None, &none, NOW)), Ok(()));
}

#[test]
fn attenuation_only_narrows_and_names_the_failing_check() {
    let root = root();
    let token = minted(&root, None);
    let narrowed = attenuate(
        &token,
        &Attenuation {
            tools: vec!["search".into()],
            scopes: Some(ScopeSet::parse("files:read").unwrap()),
            not_after: Some(NOW + 60),
            ..Default::default()
        },
    )
    .unwrap();
    let verified = keys(&root).verify(&narrowed).unwrap();
    // The authority block is unchanged by the appended block.
    assert_eq!(verified.claims.scopes.to_string(), "files:read files:write");
    let read = ScopeSet::parse("files:read").unwrap();
    let write = ScopeSet::parse("files:write").unwrap();
    assert_eq!(
        verified.authorize(&request(Some("search"), &read, NOW)),
        Ok(())
    );
    for (tool, needed, time, fragment) in [
        (Some("delete"), &read, NOW, "tool"),
        (Some("search"), &write, NOW, "required_scope"),
        (Some("search"), &write, NOW, "reject if"),
        (Some("search"), &read, NOW + 61, "time"),
    ] {
        match verified.authorize(&request(tool, needed, time)) {
            Err(Refusal::Check { block: 1, check }) => {
                assert!(check.contains(fragment), "{check}")
            }
            other => panic!("{tool:?} {needed} {time}: {other:?}"),
        }
    }
}

#[test]
fn facts_in_appended_blocks_grant_nothing() {
    let root = root();
    let token = minted(&root, None);
    let widened = attenuate(
        &token,
        &Attenuation {
            datalog: Some(
                r#"scope("files:admin"); audience("https://evil.example"); check if time($t);"#
                    .into(),
            ),
            ..Default::default()
        },
    )
    .unwrap();
    let verified = keys(&root).verify(&widened).unwrap();
    assert_eq!(verified.claims.audience, "https://files.example/mcp");
    assert!(!verified.claims.scopes.to_string().contains("admin"));
    let admin = ScopeSet::parse("files:admin").unwrap();
    assert_eq!(
        verified.authorize(&request(None, &admin, NOW)),
        Err(Refusal::Scope)
    );
}

#[test]
fn tampering_sealing_and_unknown_keys() {
    let root = root();
    let token = minted(&root, None);
    let narrowed = attenuate(
        &token,
        &Attenuation {
            tools: vec!["search".into()],
            ..Default::default()
        },
    )
    .unwrap();
    // Dropping the appended block: the signature chain no longer holds.
    let mut raw = biscuit_auth::UnverifiedBiscuit::from_base64(&narrowed).unwrap();
    assert_eq!(raw.block_count(), 2);
    raw = biscuit_auth::UnverifiedBiscuit::from_base64(&token).unwrap();
    assert_eq!(raw.block_count(), 1);
    let mut bytes = biscuit_auth::UnverifiedBiscuit::from_base64(&narrowed)
        .unwrap()
        .to_vec()
        .unwrap();
    let last = bytes.len() - 10;
    bytes[last] ^= 1;
    let tampered = biscuit_auth::UnverifiedBiscuit::from(&bytes[..])
        .and_then(|b| b.to_base64())
        .unwrap_or_else(|_| "AAAA".into());
    assert!(keys(&root).verify(&tampered).is_err());
    // Sealed: verifies, but nothing more can be appended.
    let sealed = attenuate(
        &token,
        &Attenuation {
            tools: vec!["search".into()],
            seal: true,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(keys(&root).verify(&sealed).is_ok());
    let again = attenuate(
        &sealed,
        &Attenuation {
            tools: vec!["other".into()],
            ..Default::default()
        },
    );
    assert!(matches!(again, Err(BiscuitError::Sealed)), "{again:?}");
    // Another root key.
    let other = {
        use ed25519_dalek::pkcs8::EncodePrivateKey;
        let der = ed25519_dalek::SigningKey::from_bytes(&[9; 32])
            .to_pkcs8_der()
            .unwrap();
        RootKey::from_ed25519_pkcs8("kid-2", der.as_bytes()).unwrap()
    };
    assert!(keys(&other).verify(&token).is_err());
}

#[test]
fn attenuation_refuses_blocks_that_narrow_nothing_or_do_not_parse() {
    let root = root();
    let token = minted(&root, None);
    for bad in [
        Attenuation::default(),
        Attenuation {
            datalog: Some("check if".into()),
            ..Default::default()
        },
    ] {
        assert!(matches!(
            attenuate(&token, &bad),
            Err(BiscuitError::Attenuation(_))
        ));
    }
    assert!(attenuate("not a biscuit", &Attenuation::default()).is_err());
}

#[test]
fn inspect_prints_every_block() {
    let root = root();
    let narrowed = attenuate(
        &minted(&root, None),
        &Attenuation {
            resource: Some("https://files.example/mcp".into()),
            ..Default::default()
        },
    )
    .unwrap();
    let blocks = inspect(&narrowed).unwrap();
    assert_eq!(blocks.len(), 2);
    assert!(blocks[0].contains("subject(\"alice\")"));
    assert!(blocks[1].contains("check if resource(\"https://files.example/mcp\")"));
}
