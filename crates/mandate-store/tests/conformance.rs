//! The `Store` conformance suite, mounted once per backend (SQLite and
//! PostgreSQL) with [`mandate_testkit::for_each_backend!`]. Every test gets a
//! fresh database, so none depends on another or on the order they run in.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet, HashSet};

use mandate_audit::{
    verify_chain, Anchor, ChainVerifier, Event, NewEvent, Outcome, GENESIS_HASH, MAX_REASON_LEN,
};
use mandate_core::model::{
    Client, ClientAuthMethod, ClientKeys, ClientOrigin, GrantType, KeyPurpose, Resource,
    StoredSecret, StoredSigningKey,
};
use mandate_core::Store;
use mandate_jose::{JwkSet, PublicJwk, SigningAlg};
use mandate_store::{Backend, SqlStore};
use mandate_testkit::{for_each_backend, TestDb};
use mandate_types::{ClientId, ClientSecret, ResourceUri, Scope, ScopeSet, SecretHash};
use sqlx::Connection as _;

// ---------------------------------------------------------------- fixtures

fn client_id(s: &str) -> ClientId {
    ClientId::parse(s).unwrap()
}

fn resource_uri(s: &str) -> ResourceUri {
    ResourceUri::parse(s).unwrap()
}

/// A client with every field set, so a lossy round trip shows.
fn full_client(id: &str) -> Client {
    Client {
        client_id: client_id(id),
        name: format!("Agent {id} — «ünïcödé» 'quoted' \"double\""),
        grant_types: BTreeSet::from([GrantType::ClientCredentials, GrantType::TokenExchange]),
        scopes: ScopeSet::parse("read write tools:call").unwrap(),
        resources: Some(BTreeSet::from([
            resource_uri("https://api.example.com/mcp"),
            resource_uri("urn:example:thing"),
        ])),
        auth_method: ClientAuthMethod::ClientSecretBasic,
        secrets: vec![
            StoredSecret {
                hash: ClientSecret::new("current".into()).hash(),
                expires_at: None,
            },
            StoredSecret {
                hash: ClientSecret::new("rotated-out".into()).hash(),
                expires_at: Some(1_700_000_000),
            },
        ],
        keys: Some(ClientKeys::Jwks(JwkSet {
            keys: vec![PublicJwk {
                kty: "OKP".into(),
                kid: Some("k1".into()),
                alg: Some("EdDSA".into()),
                use_: Some("sig".into()),
                crv: Some("Ed25519".into()),
                x: Some("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo".into()),
                y: None,
                n: None,
                e: None,
            }],
        })),
        redirect_uris: vec!["https://app.example.com/cb".into()],
        may_act_for: vec!["orchestrator".into()],
        require_dpop: false,
        origin: ClientOrigin::Registration,
        registration_token: Some(SecretHash::from_hex(&"ab".repeat(32)).unwrap()),
        created_at: 1_700_000_123,
        activated_at: Some(1_700_000_200),
    }
}

/// A client with every optional field empty.
fn bare_client(id: &str) -> Client {
    Client {
        client_id: client_id(id),
        name: String::new(),
        grant_types: BTreeSet::new(),
        scopes: ScopeSet::default(),
        resources: None,
        auth_method: ClientAuthMethod::None,
        secrets: Vec::new(),
        keys: None,
        redirect_uris: Vec::new(),
        may_act_for: Vec::new(),
        require_dpop: false,
        origin: ClientOrigin::Admin,
        registration_token: None,
        created_at: 0,
        activated_at: None,
    }
}

fn resource(id: &str) -> Resource {
    Resource {
        id: resource_uri(id),
        name: format!("Resource {id}"),
        scopes: BTreeMap::from([
            (Scope::parse("read").unwrap(), "Read things".to_owned()),
            (Scope::parse("write").unwrap(), "Write ‘things’".to_owned()),
        ]),
        access_token_ttl: Some(300),
        from_config: true,
    }
}

fn signing_key(kid: &str, created_at: i64) -> StoredSigningKey {
    StoredSigningKey {
        kid: kid.to_owned(),
        alg: SigningAlg::EdDSA,
        // Every byte value, so a text round trip of the BLOB/BYTEA would show.
        sealed_private_key: (0..=255u8).chain([0, 0xff, 0]).collect(),
        created_at,
        activate_at: created_at + 3600,
        purpose: if kid.starts_with("biscuit") {
            KeyPurpose::Biscuit
        } else {
            KeyPurpose::Jws
        },
    }
}

/// Event number `n` of a test: every field set, so a lossy column shows.
fn event(n: i64, tag: &str) -> NewEvent {
    let mut e = NewEvent::new(
        1_700_000_000_000 + n,
        "token.issued",
        if n % 3 == 0 {
            Outcome::Failure
        } else {
            Outcome::Success
        },
    );
    e.client_id = Some(format!("client-{tag}"));
    e.subject = Some(format!("user-{n}"));
    e.audience = Some("https://api.example.com/mcp".into());
    e.scopes = Some("read write".into());
    e.jti = Some(format!("jti-{tag}-{n}"));
    e.reason = (n % 2 == 0).then(|| format!("reason {n} — ünïcödé"));
    e
}

fn events(range: std::ops::Range<i64>, tag: &str) -> Vec<NewEvent> {
    range.map(|n| event(n, tag)).collect()
}

async fn all_events(store: &SqlStore) -> Vec<Event> {
    store.audit_after(0, 1_000_000).await.unwrap()
}

/// A raw connection to the same database, bypassing the store.
async fn raw_connection(db: &TestDb) -> sqlx::AnyConnection {
    sqlx::any::install_default_drivers();
    sqlx::AnyConnection::connect(db.url()).await.unwrap()
}

fn sorted_clients(mut v: Vec<Client>) -> Vec<Client> {
    v.sort_by(|a, b| a.client_id.cmp(&b.client_id));
    v
}

// ---------------------------------------------------------------- clients, resources

async fn clients_round_trip(db: &TestDb) {
    let store = db.store().await;
    let expected_backend = match db {
        TestDb::Sqlite { .. } => Backend::Sqlite,
        TestDb::Postgres { .. } => Backend::Postgres,
    };
    assert_eq!(store.backend(), expected_backend);
    store.ping().await.unwrap();

    assert!(store.list_clients().await.unwrap().is_empty());
    assert_eq!(store.get_client(&client_id("agent-a")).await.unwrap(), None);
    assert!(!store.delete_client(&client_id("agent-a")).await.unwrap());

    let a = full_client("agent-a");
    let b = bare_client("agent-b");
    let c = full_client("Agent-C");
    for client in [&b, &a, &c] {
        store.put_client(client).await.unwrap();
    }
    assert_eq!(
        store.get_client(&a.client_id).await.unwrap().as_ref(),
        Some(&a)
    );
    assert_eq!(
        store.get_client(&b.client_id).await.unwrap().as_ref(),
        Some(&b)
    );
    assert_eq!(
        store.get_client(&c.client_id).await.unwrap().as_ref(),
        Some(&c)
    );
    // Identifiers are compared exactly: no case folding.
    assert_eq!(store.get_client(&client_id("agent-c")).await.unwrap(), None);
    assert_eq!(
        sorted_clients(store.list_clients().await.unwrap()),
        sorted_clients(vec![a.clone(), b.clone(), c.clone()])
    );

    // Update by put: replaced whole, not duplicated.
    let mut a2 = bare_client("agent-a");
    a2.name = "renamed".into();
    a2.origin = ClientOrigin::Config;
    store.put_client(&a2).await.unwrap();
    assert_eq!(
        store.get_client(&a.client_id).await.unwrap(),
        Some(a2.clone())
    );
    assert_eq!(
        sorted_clients(store.list_clients().await.unwrap()),
        sorted_clients(vec![a2.clone(), b.clone(), c.clone()])
    );

    assert!(store.delete_client(&b.client_id).await.unwrap());
    assert!(!store.delete_client(&b.client_id).await.unwrap());
    assert_eq!(store.get_client(&b.client_id).await.unwrap(), None);
    assert_eq!(
        sorted_clients(store.list_clients().await.unwrap()),
        sorted_clients(vec![a2, c])
    );
}
for_each_backend!(clients_round_trip, clients_round_trip);

async fn resources_round_trip(db: &TestDb) {
    let store = db.store().await;
    let id = resource_uri("https://api.example.com/mcp");
    assert!(store.list_resources().await.unwrap().is_empty());
    assert_eq!(store.get_resource(&id).await.unwrap(), None);
    assert!(!store.delete_resource(&id).await.unwrap());

    let r1 = resource("https://api.example.com/mcp");
    let mut r2 = resource("urn:example:thing");
    r2.access_token_ttl = None;
    r2.from_config = false;
    r2.scopes.clear();
    store.put_resource(&r2).await.unwrap();
    store.put_resource(&r1).await.unwrap();
    assert_eq!(
        store.get_resource(&r1.id).await.unwrap().as_ref(),
        Some(&r1)
    );
    assert_eq!(
        store.get_resource(&r2.id).await.unwrap().as_ref(),
        Some(&r2)
    );
    let mut listed = store.list_resources().await.unwrap();
    listed.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(listed, vec![r1.clone(), r2.clone()]);

    let mut r1b = r1.clone();
    r1b.name = "updated".into();
    r1b.access_token_ttl = Some(60);
    store.put_resource(&r1b).await.unwrap();
    assert_eq!(store.get_resource(&id).await.unwrap(), Some(r1b.clone()));
    assert_eq!(store.list_resources().await.unwrap().len(), 2);

    assert!(store.delete_resource(&id).await.unwrap());
    assert!(!store.delete_resource(&id).await.unwrap());
    assert_eq!(store.get_resource(&id).await.unwrap(), None);
    assert_eq!(store.list_resources().await.unwrap(), vec![r2]);
}
for_each_backend!(resources_round_trip, resources_round_trip);

// ---------------------------------------------------------------- signing keys

async fn signing_keys_oldest_first(db: &TestDb) {
    let store = db.store().await;
    assert!(store.list_signing_keys().await.unwrap().is_empty());

    let mut k_es = signing_key("kid3", 3_000);
    k_es.alg = SigningAlg::ES256;
    let mut k_rs = signing_key("kid1", 1_000);
    k_rs.alg = SigningAlg::RS256;
    k_rs.sealed_private_key = Vec::new();
    let k_ed = signing_key("kid2", 2_000);
    // Same creation time as kid2: ties are broken by kid.
    let k_tie = signing_key("kid0", 2_000);
    for k in [&k_es, &k_ed, &k_rs, &k_tie] {
        store.insert_signing_key(k).await.unwrap();
    }
    assert_eq!(
        store.list_signing_keys().await.unwrap(),
        vec![k_rs.clone(), k_tie, k_ed, k_es]
    );

    // A kid is unique: inserting it again fails and changes nothing.
    let mut dup = k_rs.clone();
    dup.created_at = 9_999;
    assert!(store.insert_signing_key(&dup).await.is_err());
    assert_eq!(store.list_signing_keys().await.unwrap()[0], k_rs);
    assert_eq!(store.list_signing_keys().await.unwrap().len(), 4);
}
for_each_backend!(signing_keys_oldest_first, signing_keys_oldest_first);

// ---------------------------------------------------------------- single use, revocation

async fn use_once_is_once_per_namespace(db: &TestDb) {
    let store = db.store().await;
    assert!(store.use_once("jti", "v1", 2_000).await.unwrap());
    assert!(!store.use_once("jti", "v1", 2_000).await.unwrap());
    // A replay with another expiry is still a replay.
    assert!(!store.use_once("jti", "v1", 9_000).await.unwrap());
    // Other values and other namespaces are independent.
    assert!(store.use_once("jti", "v2", 2_000).await.unwrap());
    assert!(store.use_once("code", "v1", 2_000).await.unwrap());
    assert!(!store.use_once("code", "v1", 2_000).await.unwrap());
    assert!(store.use_once("", "v1", 2_000).await.unwrap());
    // Exact comparison.
    assert!(store.use_once("jti", "V1", 2_000).await.unwrap());
    assert!(store.use_once("jti", "v1 ", 2_000).await.unwrap());
}
for_each_backend!(
    use_once_is_once_per_namespace,
    use_once_is_once_per_namespace
);

/// Many tasks, on two stores (two replicas), race for the same values: each
/// value is won exactly once.
async fn use_once_race_has_one_winner(db: &TestDb) {
    let a = db.store().await;
    let b = db.store().await;
    let mut tasks = Vec::new();
    for t in 0..8 {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for v in 0..20 {
                if store
                    .use_once("race", &format!("v{v}"), 5_000)
                    .await
                    .unwrap()
                {
                    won.push(v);
                }
            }
            won
        }));
    }
    let mut winners = Vec::new();
    for t in tasks {
        winners.extend(t.await.unwrap());
    }
    winners.sort_unstable();
    assert_eq!(winners, (0..20).collect::<Vec<_>>());
}
for_each_backend!(use_once_race_has_one_winner, use_once_race_has_one_winner);

async fn revocation(db: &TestDb) {
    let store = db.store().await;
    assert!(!store.is_revoked("t1").await.unwrap());
    store.revoke_token("t1", 2_000).await.unwrap();
    assert!(store.is_revoked("t1").await.unwrap());
    assert!(!store.is_revoked("t2").await.unwrap());
    assert!(!store.is_revoked("T1").await.unwrap());
    // Revoking twice is fine.
    store.revoke_token("t1", 3_000).await.unwrap();
    assert!(store.is_revoked("t1").await.unwrap());
    // A revocation is not a single-use value, nor the other way round.
    assert!(store.use_once("jti", "t1", 2_000).await.unwrap());
    assert!(!store.is_revoked("never").await.unwrap());
    assert!(store.use_once("jti", "never", 2_000).await.unwrap());
    assert!(!store.is_revoked("never").await.unwrap());
}
for_each_backend!(revocation, revocation);

/// Revoking a token revokes what was exchanged from it, at any depth, and
/// nothing above or beside it; each keeps its own expiry for the purge.
async fn revocation_cascades_down_exchanges(db: &TestDb) {
    let store = db.store().await;
    // root -> child -> grandchild; root -> sibling; other is unrelated.
    for (jti, parent, exp) in [
        ("child", "root", 5_000),
        ("grandchild", "child", 4_000),
        ("sibling", "root", 6_000),
        ("other-child", "other", 6_000),
        // Recording twice is fine.
        ("child", "root", 5_000),
    ] {
        let parent_revoked = store.record_exchange(jti, parent, exp).await.unwrap();
        assert!(!parent_revoked, "{jti}");
    }

    store.revoke_token("child", 5_000).await.unwrap();
    for (jti, revoked) in [
        ("child", true),
        ("grandchild", true),
        ("root", false),
        ("sibling", false),
        ("other-child", false),
    ] {
        assert_eq!(store.is_revoked(jti).await.unwrap(), revoked, "{jti}");
    }
    store.revoke_token("root", 9_000).await.unwrap();
    for jti in ["root", "child", "grandchild", "sibling"] {
        assert!(store.is_revoked(jti).await.unwrap(), "{jti}");
    }
    assert!(!store.is_revoked("other-child").await.unwrap());
    // An exchange recorded after its parent's revocation hears of it.
    assert!(store.record_exchange("late", "root", 6_000).await.unwrap());
    // Each revocation lasts until its own token's expiry.
    let mut live = store.list_revoked(4_500).await.unwrap();
    live.sort();
    assert_eq!(live, ["child", "root", "sibling"]);
    // The lineage goes with the purge once the exchanged token expired.
    store.purge_expired(7_000).await.unwrap();
    store.revoke_token("other", 9_000).await.unwrap();
    assert!(!store.is_revoked("other-child").await.unwrap());
}
for_each_backend!(
    revocation_cascades_down_exchanges,
    revocation_cascades_down_exchanges
);

/// A revocation racing exchanges from the same parent (and from its
/// children), on two stores (two replicas): every token exchanged from a
/// revoked one ends up revoked, whichever side saw the other first. As
/// `mandate_core::exchange` does, an exchange that hears its parent is
/// revoked revokes its own new token.
async fn revocation_racing_exchanges_misses_none(db: &TestDb) {
    const ROUNDS: usize = 60;
    const CHILDREN: usize = 4;
    let a = db.store().await;
    let b = db.store().await;
    let mut exchanged = Vec::new();
    for r in 0..ROUNDS {
        let parent = format!("p{r}");
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(CHILDREN + 1));
        let revoke = {
            let (a, parent, start) = (a.clone(), parent.clone(), start.clone());
            tokio::spawn(async move {
                start.wait().await;
                a.revoke_token(&parent, 9_000).await.unwrap();
            })
        };
        let mut exchanges = Vec::new();
        for k in 0..CHILDREN {
            let (b, parent, start) = (b.clone(), parent.clone(), start.clone());
            exchanges.push(tokio::spawn(async move {
                let child = format!("{parent}-c{k}");
                let grandchild = format!("{child}-g");
                start.wait().await;
                if b.record_exchange(&child, &parent, 9_000).await.unwrap() {
                    b.revoke_token(&child, 9_000).await.unwrap();
                    return vec![child];
                }
                if b.record_exchange(&grandchild, &child, 9_000).await.unwrap() {
                    b.revoke_token(&grandchild, 9_000).await.unwrap();
                }
                vec![child, grandchild]
            }));
        }
        revoke.await.unwrap();
        for e in exchanges {
            exchanged.extend(e.await.unwrap());
        }
    }
    let revoked: HashSet<String> = a.list_revoked(0).await.unwrap().into_iter().collect();
    let missed: Vec<&String> = exchanged.iter().filter(|t| !revoked.contains(*t)).collect();
    assert!(
        missed.is_empty(),
        "exchanged from a revoked token, yet not revoked: {missed:?}"
    );
}
for_each_backend!(
    revocation_racing_exchanges_misses_none,
    revocation_racing_exchanges_misses_none
);

async fn purge_expired_removes_only_expired(db: &TestDb) {
    let store = db.store().await;
    let now = 10_000;
    assert_eq!(store.purge_expired(now).await.unwrap(), 0);

    assert!(store.use_once("jti", "old", now - 1).await.unwrap());
    assert!(store.use_once("code", "old", now - 500).await.unwrap());
    assert!(store.use_once("jti", "fresh", now + 1).await.unwrap());
    // Expiring exactly now is not yet past expiry: kept (the safe side for replay
    // checks that accept `exp == now`).
    assert!(store.use_once("jti", "edge", now).await.unwrap());
    store.revoke_token("old", now - 1).await.unwrap();
    store.revoke_token("fresh", now + 60).await.unwrap();
    store.revoke_token("edge", now).await.unwrap();

    assert_eq!(store.purge_expired(now).await.unwrap(), 3);
    // Expired single-use values are forgotten; live ones still count as used.
    assert!(store.use_once("jti", "old", now + 100).await.unwrap());
    assert!(store.use_once("code", "old", now + 100).await.unwrap());
    assert!(!store.use_once("jti", "fresh", now + 100).await.unwrap());
    assert!(!store.use_once("jti", "edge", now + 100).await.unwrap());
    assert!(!store.is_revoked("old").await.unwrap());
    assert!(store.is_revoked("fresh").await.unwrap());
    assert!(store.is_revoked("edge").await.unwrap());

    // Nothing left to purge at the same time; later, the rest goes.
    assert_eq!(store.purge_expired(now).await.unwrap(), 0);
    assert_eq!(store.purge_expired(now + 1_000).await.unwrap(), 6);
    assert!(!store.is_revoked("fresh").await.unwrap());

    // Purging touches neither clients nor the audit trail.
    store.put_client(&bare_client("c")).await.unwrap();
    store.append_audit(events(0..2, "p")).await.unwrap();
    assert_eq!(store.purge_expired(i64::MAX).await.unwrap(), 0);
    assert_eq!(store.list_clients().await.unwrap().len(), 1);
    assert_eq!(all_events(&store).await.len(), 2);
}
for_each_backend!(
    purge_expired_removes_only_expired,
    purge_expired_removes_only_expired
);

// ---------------------------------------------------------------- users' access

async fn revoking_a_users_access(db: &TestDb) {
    use mandate_core::model::{Grant, RefreshRecord, RefreshUse, RevokedAccess};
    let store = db.store().await;
    let grant = |id: &str, user: &str| Grant {
        id: id.to_owned(),
        user_id: user.to_owned(),
        client_id: client_id("host"),
        resource: resource_uri(&format!("https://{id}.example")),
        scopes: ScopeSet::parse("read").unwrap(),
        created_at: 1,
    };
    let refresh = |family: &str, grant: &Grant| RefreshRecord {
        family: family.to_owned(),
        grant_id: grant.id.clone(),
        client_id: grant.client_id.clone(),
        user_id: grant.user_id.clone(),
        resource: grant.resource.clone(),
        scopes: grant.scopes.clone(),
        family_started_at: 1,
        jkt: None,
    };
    let (a1, a2, b1) = (
        grant("a1", "alice"),
        grant("a2", "alice"),
        grant("b1", "bob"),
    );
    for g in [&a1, &a2, &b1] {
        store.put_grant(g).await.unwrap();
    }
    let later = i64::MAX;
    store
        .insert_refresh("ha1", &refresh("fa1", &a1), later)
        .await
        .unwrap();
    store
        .insert_refresh("ha1-next", &refresh("fa1", &a1), later)
        .await
        .unwrap();
    store
        .insert_refresh("ha2", &refresh("fa2", &a2), later)
        .await
        .unwrap();
    store
        .insert_refresh("hb1", &refresh("fb1", &b1), later)
        .await
        .unwrap();
    assert!(matches!(
        store.use_refresh("ha1", 10).await.unwrap(),
        RefreshUse::Fresh(_)
    ));
    store
        .put_owned_ephemeral("session", "sa", "alice", "{}", later)
        .await
        .unwrap();
    store
        .put_owned_ephemeral("code", "ca", "alice", "{}", later)
        .await
        .unwrap();
    store
        .put_owned_ephemeral("session", "sb", "bob", "{}", later)
        .await
        .unwrap();
    store
        .put_ephemeral("pending", "p", "{}", later)
        .await
        .unwrap();

    assert_eq!(
        store.revoke_user_access("alice").await.unwrap(),
        RevokedAccess {
            documents: 2,
            refresh_families: 2
        }
    );
    for (namespace, key) in [("session", "sa"), ("code", "ca")] {
        assert_eq!(store.get_ephemeral(namespace, key, 10).await.unwrap(), None);
    }
    for key in ["ha1", "ha1-next", "ha2"] {
        assert_eq!(
            store.use_refresh(key, 10).await.unwrap(),
            RefreshUse::Unknown,
            "{key}: gone, used or not"
        );
    }
    // Bob's, and documents of nobody, are untouched; so are the grants.
    assert!(store
        .get_ephemeral("session", "sb", 10)
        .await
        .unwrap()
        .is_some());
    assert!(store
        .get_ephemeral("pending", "p", 10)
        .await
        .unwrap()
        .is_some());
    assert!(store.peek_refresh("hb1", 10).await.unwrap().is_some());
    assert_eq!(store.list_grants("alice").await.unwrap().len(), 2);
    // Overwriting an owned document with an unowned one drops the owner.
    store
        .put_owned_ephemeral("session", "sb2", "bob", "{}", later)
        .await
        .unwrap();
    store
        .put_ephemeral("session", "sb2", "{}", later)
        .await
        .unwrap();
    assert_eq!(
        store.revoke_user_access("bob").await.unwrap(),
        RevokedAccess {
            documents: 1,
            refresh_families: 1
        }
    );
    assert!(store
        .get_ephemeral("session", "sb2", 10)
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        store.revoke_user_access("alice").await.unwrap(),
        RevokedAccess::default(),
        "nothing left"
    );
}
for_each_backend!(revoking_a_users_access, revoking_a_users_access);

/// Retention while events are appended (the hot-path writer on SQLite, a
/// second replica's connection on PostgreSQL): neither fails, and what is
/// left verifies from the anchor with every appended event either removed
/// or there.
async fn audit_retention_runs_beside_appends(db: &TestDb) {
    let store = db.store().await;
    let other = db.store().await;
    let appender = tokio::spawn(async move {
        for i in 0..40 {
            let batch = events(i * 3..i * 3 + 3, "busy");
            if i % 2 == 0 {
                other.append_audit(batch).await.unwrap();
            } else {
                other.append_audit_unsynced(batch).await.unwrap();
            }
        }
    });
    let mut removed = 0;
    while !appender.is_finished() {
        removed += store.prune_audit(i64::MAX, 7).await.unwrap();
        tokio::task::yield_now().await;
    }
    appender.await.unwrap();
    removed += store.prune_audit(i64::MAX, 1_000).await.unwrap();
    let anchor = store.audit_anchor().await.unwrap();
    assert_eq!((anchor.seq, removed), (120, 120));
    assert!(all_events(&store).await.is_empty());
    let next = store.append_audit(events(0..1, "after")).await.unwrap();
    let mut verifier = ChainVerifier::from_anchor(&anchor);
    verifier.push(&next[0]).unwrap();
}
for_each_backend!(
    audit_retention_runs_beside_appends,
    audit_retention_runs_beside_appends
);

/// Statements that take a database at version 7 back to version 6: the
/// anchor table goes, and on SQLite the plain append-only trigger returns
/// (the one that reads the anchor would otherwise dangle).
fn undo_migration_7(db: &TestDb) -> Vec<&'static str> {
    let mut undo = Vec::new();
    if db.backend_name() == "sqlite" {
        undo.extend([
            "DROP TRIGGER audit_events_no_DELETE",
            "CREATE TRIGGER audit_events_no_DELETE BEFORE DELETE ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
        ]);
    }
    undo.push("DROP TABLE audit_anchor");
    undo
}

/// Sessions and codes written before documents had owners get one from the
/// document's `user_id` when the store is upgraded.
async fn upgrading_gives_existing_sessions_an_owner(db: &TestDb) {
    let store = db.store().await;
    store.close().await;
    let mut conn = raw_connection(db).await;
    for sql in undo_migration_7(db) {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    for sql in [
        "DELETE FROM mandate_migrations WHERE version >= 4",
        "DROP TABLE token_lineage",
        "DROP INDEX ephemeral_owner",
        "ALTER TABLE ephemeral DROP COLUMN owner",
        "INSERT INTO ephemeral (namespace, key, doc, expires_at) VALUES \
         ('session', 's', '{\"user_id\":\"alice-1_x\",\"csrf\":\"c\"}', 9999999999), \
         ('code', 'c', '{\"request\":{\"state\":\"\\\"user_id\\\":\\\"bob\\\"\"},\"user_id\":\"alice-1_x\"}', 9999999999), \
         ('pending', 'p', '{\"user_id\":\"alice-1_x\"}', 9999999999)",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();
    let store = db.store().await;
    assert_eq!(
        store
            .revoke_user_access("alice-1_x")
            .await
            .unwrap()
            .documents,
        2,
        "the session and the code, not the pending request"
    );
    assert!(store
        .get_ephemeral("pending", "p", 10)
        .await
        .unwrap()
        .is_some());
}
for_each_backend!(
    upgrading_gives_existing_sessions_an_owner,
    upgrading_gives_existing_sessions_an_owner
);

// ---------------------------------------------------------------- audit trail

async fn audit_chains_across_batches(db: &TestDb) {
    let store = db.store().await;
    assert!(all_events(&store).await.is_empty());
    assert!(store.append_audit(Vec::new()).await.unwrap().is_empty());

    let mut returned = Vec::new();
    let mut next = 1;
    for (i, size) in [1_i64, 3, 1, 5, 2].into_iter().enumerate() {
        let batch = events(next..next + size, &format!("b{i}"));
        // Synced and unsynced appends (gateway decisions) form one chain.
        let chained = if i % 2 == 0 {
            store.append_audit(batch.clone()).await
        } else {
            store.append_audit_unsynced(batch.clone()).await
        }
        .unwrap();
        assert_eq!(chained.len(), batch.len());
        for (c, e) in chained.iter().zip(&batch) {
            assert_eq!(&c.event, e, "content is stored as given");
        }
        let seqs: Vec<i64> = chained.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (next..next + size).collect::<Vec<_>>());
        next += size;
        returned.extend(chained);
        // An empty batch in between changes nothing.
        assert!(store.append_audit(Vec::new()).await.unwrap().is_empty());
    }

    assert_eq!(returned[0].prev_hash, GENESIS_HASH);
    for pair in returned.windows(2) {
        assert_eq!(pair[1].prev_hash, pair[0].hash, "seq {}", pair[1].seq);
    }
    let stored = all_events(&store).await;
    assert_eq!(stored, returned, "what was returned is what was stored");
    assert_eq!(verify_chain(&stored), Ok(12));

    // A long reason is cut the same way in what is returned and what is stored.
    let mut long = event(100, "long");
    long.reason = Some("é".repeat(MAX_REASON_LEN));
    let chained = store.append_audit(vec![long]).await.unwrap();
    assert!(chained[0].event.reason.as_ref().unwrap().len() <= MAX_REASON_LEN);
    let stored = all_events(&store).await;
    assert_eq!(stored.last(), chained.last());
    assert_eq!(verify_chain(&stored), Ok(13));
}
for_each_backend!(audit_chains_across_batches, audit_chains_across_batches);

async fn audit_after_pages(db: &TestDb) {
    let store = db.store().await;
    let appended = store.append_audit(events(0..25, "page")).await.unwrap();

    let mut paged = Vec::new();
    let mut after = 0;
    let mut pages = Vec::new();
    loop {
        let page = store.audit_after(after, 10).await.unwrap();
        if page.is_empty() {
            break;
        }
        pages.push(page.len());
        after = page.last().unwrap().seq;
        paged.extend(page);
    }
    assert_eq!(pages, vec![10, 10, 5]);
    assert_eq!(paged, appended);
    assert_eq!(verify_chain(&paged), Ok(25));

    let tail = store.audit_after(20, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![21, 22, 23, 24, 25]
    );
    assert!(store.audit_after(25, 10).await.unwrap().is_empty());
    assert!(store.audit_after(1_000, 10).await.unwrap().is_empty());
    assert_eq!(
        store.audit_after(-5, 2).await.unwrap(),
        appended[..2].to_vec()
    );
    assert!(store.audit_after(0, 0).await.unwrap().is_empty());
    assert_eq!(
        store.audit_after(7, 1).await.unwrap(),
        vec![appended[7].clone()]
    );
}
for_each_backend!(audit_after_pages, audit_after_pages);

/// 8 tasks on two stores (two replicas) append 20 batches each at once: one
/// unbroken chain, no seq twice, nothing lost.
async fn audit_concurrent_appends_form_one_chain(db: &TestDb) {
    const TASKS: i64 = 8;
    const BATCHES: i64 = 20;
    let a = db.store().await;
    let b = db.store().await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = if t % 2 == 0 { a.clone() } else { b.clone() };
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            for i in 0..BATCHES {
                let size = 1 + (t + i) % 3;
                let batch = events(i * 10..i * 10 + size, &format!("t{t}"));
                let chained = if (t + i) % 2 == 0 {
                    store.append_audit(batch).await
                } else {
                    store.append_audit_unsynced(batch).await
                }
                .unwrap_or_else(|e| panic!("task {t} batch {i}: {e}"));
                // A batch is contiguous.
                for pair in chained.windows(2) {
                    assert_eq!(pair[1].seq, pair[0].seq + 1);
                    assert_eq!(pair[1].prev_hash, pair[0].hash);
                }
                mine.extend(chained);
            }
            mine
        }));
    }
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap());
    }
    let expected: i64 = (0..TASKS)
        .flat_map(|t| (0..BATCHES).map(move |i| 1 + (t + i) % 3))
        .sum();
    assert_eq!(returned.len() as i64, expected);

    let stored = all_events(&a).await;
    assert_eq!(stored.len() as i64, expected);
    let seqs: HashSet<i64> = stored.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len() as i64, expected, "no seq twice");
    assert_eq!(verify_chain(&stored), Ok(expected));
    returned.sort_by_key(|e| e.seq);
    assert_eq!(returned, stored, "every append returned what was stored");

    // The head is where the chain ends: the next append continues it.
    let more = b.append_audit(events(0..1, "after")).await.unwrap();
    assert_eq!(more[0].seq, expected + 1);
    assert_eq!(more[0].prev_hash, stored.last().unwrap().hash);
    assert_eq!(verify_chain(&all_events(&a).await), Ok(expected + 1));
}
for_each_backend!(
    audit_concurrent_appends_form_one_chain,
    audit_concurrent_appends_form_one_chain
);

async fn audit_events_are_append_only(db: &TestDb) {
    let store = db.store().await;
    let appended = store.append_audit(events(0..3, "ro")).await.unwrap();
    let mut conn = raw_connection(db).await;

    for sql in [
        "UPDATE audit_events SET kind = 'tampered' WHERE seq = 2",
        "UPDATE audit_events SET reason = NULL",
        "DELETE FROM audit_events WHERE seq = 3",
        "DELETE FROM audit_events",
    ] {
        let err = sqlx::query(sql)
            .execute(&mut conn)
            .await
            .expect_err(&format!("{} accepted {sql:?}", db.backend_name()));
        assert!(
            err.to_string().contains("append-only"),
            "{sql:?} failed for another reason: {err}"
        );
    }
    // Inserting is what the table is for; the trail is still intact.
    let stored = all_events(&store).await;
    assert_eq!(stored, appended);
    assert_eq!(verify_chain(&stored), Ok(3));
    conn.close().await.unwrap();
}
for_each_backend!(audit_events_are_append_only, audit_events_are_append_only);

/// Retention removes an unbroken run from the front of the chain, moves the
/// anchor to the last event removed, and the rest verifies from there; the
/// append-only guard still holds for every event behind the anchor.
async fn audit_retention_removes_the_front_behind_an_anchor(db: &TestDb) {
    const T0: i64 = 1_700_000_000_000;
    let store = db.store().await;
    assert_eq!(store.audit_anchor().await.unwrap(), Anchor::genesis());
    assert_eq!(store.prune_audit(T0 + 1_000, 100).await.unwrap(), 0);
    // Events stamped T0 + n, except seq 6, stamped late (another replica's
    // clock): it ends the run that a cut-off at T0 + 8 removes.
    let mut batch = events(0..10, "old");
    batch[5].time_ms = T0 + 100;
    let appended = store.append_audit(batch).await.unwrap();
    let cutoff = T0 + 8;
    assert_eq!(
        store.prune_audit(T0, 100).await.unwrap(),
        0,
        "none is older"
    );
    assert_eq!(
        store.prune_audit(cutoff, 2).await.unwrap(),
        2,
        "at most the limit"
    );
    let anchor = |seq: usize| Anchor {
        seq: i64::try_from(seq).unwrap(),
        hash: appended[seq - 1].hash.clone(),
    };
    assert_eq!(store.audit_anchor().await.unwrap(), anchor(2));
    assert_eq!(store.prune_audit(cutoff, 100).await.unwrap(), 3);
    assert_eq!(store.audit_anchor().await.unwrap(), anchor(5));
    assert_eq!(store.prune_audit(cutoff, 100).await.unwrap(), 0);

    let rest = all_events(&store).await;
    assert_eq!(rest, appended[5..].to_vec());
    assert!(verify_chain(&rest).is_err(), "no longer from genesis");
    let mut verifier = ChainVerifier::from_anchor(&anchor(5));
    for e in &rest {
        verifier.push(e).unwrap();
    }
    assert_eq!(verifier.checked(), 10);
    // The chain goes on.
    let more = store.append_audit(events(10..11, "new")).await.unwrap();
    assert_eq!((more[0].seq, &more[0].prev_hash), (11, &appended[9].hash));

    let mut conn = raw_connection(db).await;
    for (sql, refusal) in [
        ("DELETE FROM audit_events WHERE seq = 6", "append-only"),
        ("DELETE FROM audit_events", "append-only"),
        (
            "UPDATE audit_events SET reason = NULL WHERE seq = 7",
            "append-only",
        ),
        ("UPDATE audit_anchor SET seq = 1", "only moves forward"),
    ] {
        let err = sqlx::query(sql)
            .execute(&mut conn)
            .await
            .expect_err(&format!("{} accepted {sql:?}", db.backend_name()));
        assert!(err.to_string().contains(refusal), "{sql:?}: {err}");
    }
    conn.close().await.unwrap();
    assert_eq!(all_events(&store).await.len(), 6);
}
for_each_backend!(
    audit_retention_removes_the_front_behind_an_anchor,
    audit_retention_removes_the_front_behind_an_anchor
);

/// Migration 5 rebuilds SQLite's audit and single-use tables: what they held
/// survives, the chain goes on, and the trail stays append-only.
async fn upgrading_keeps_the_trail_and_used_values(db: &TestDb) {
    let store = db.store().await;
    let before = store.append_audit(events(0..4, "old")).await.unwrap();
    assert!(store.use_once("jti", "spent", i64::MAX).await.unwrap());
    store.close().await;
    let mut conn = raw_connection(db).await;
    // Back to version 4: what migrations 5 to 7 made goes (5 rebuilds the
    // tables it changes, so only 6's table must be dropped by hand).
    for sql in undo_migration_7(db) {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    for sql in [
        "DELETE FROM mandate_migrations WHERE version >= 5",
        "DROP TABLE token_lineage",
    ] {
        sqlx::query(sql).execute(&mut conn).await.unwrap();
    }
    conn.close().await.unwrap();

    let store = db.store().await;
    assert_eq!(all_events(&store).await, before);
    assert!(!store.use_once("jti", "spent", i64::MAX).await.unwrap());
    let after = store.append_audit(events(4..6, "new")).await.unwrap();
    assert_eq!(after[0].seq, 5);
    assert_eq!(verify_chain(&all_events(&store).await), Ok(6));
    let mut conn = raw_connection(db).await;
    let err = sqlx::query("DELETE FROM audit_events WHERE seq = 1")
        .execute(&mut conn)
        .await
        .expect_err("the rebuilt trail accepted a DELETE");
    assert!(err.to_string().contains("append-only"), "{err}");
    conn.close().await.unwrap();
}
for_each_backend!(
    upgrading_keeps_the_trail_and_used_values,
    upgrading_keeps_the_trail_and_used_values
);

/// Through the audit writer: events queued without waiting (gateway
/// decisions, which may linger for a batch) are durable, in order, once an
/// event queued after them and waited for is.
async fn queued_events_are_written_before_a_waited_one(db: &TestDb) {
    let store = std::sync::Arc::new(db.store().await);
    let (log, writer) = mandate_core::audit::AuditLog::start(store.clone());
    for e in events(0..5, "queued") {
        log.enqueue(e).await;
    }
    log.record(events(5..6, "waited").remove(0)).await.unwrap();
    let stored = all_events(&store).await;
    let clients: Vec<&str> = stored
        .iter()
        .filter_map(|e| e.event.client_id.as_deref())
        .collect();
    assert_eq!(
        clients,
        [["client-queued"; 5].as_slice(), &["client-waited"]].concat()
    );
    assert_eq!(verify_chain(&stored), Ok(6));
    drop(log);
    writer.await.unwrap();
}
for_each_backend!(
    queued_events_are_written_before_a_waited_one,
    queued_events_are_written_before_a_waited_one
);

/// A closed store (on SQLite: its writer thread stopped too) says it is not
/// ready and refuses writes, rather than accepting them into nowhere.
async fn a_closed_store_is_not_ready(db: &TestDb) {
    let store = db.store().await;
    store.ping().await.unwrap();
    store.close().await;
    assert!(store.ping().await.is_err());
    assert!(store.append_audit(events(0..1, "late")).await.is_err());
    assert!(store.use_once("jti", "late", i64::MAX).await.is_err());
}
for_each_backend!(a_closed_store_is_not_ready, a_closed_store_is_not_ready);

// ---------------------------------------------------------------- migrations

async fn migrations(db: &TestDb) -> Vec<i64> {
    let mut conn = raw_connection(db).await;
    let rows: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM mandate_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    conn.close().await.unwrap();
    rows
}

async fn reopening_keeps_data_and_migrates_once(db: &TestDb) {
    let first = db.store().await;
    let applied = migrations(db).await;
    assert!(!applied.is_empty());
    assert_eq!(applied, (1..=applied.len() as i64).collect::<Vec<_>>());

    let client = full_client("kept");
    first.put_client(&client).await.unwrap();
    first
        .put_resource(&resource("urn:example:kept"))
        .await
        .unwrap();
    first
        .insert_signing_key(&signing_key("kid", 1))
        .await
        .unwrap();
    assert!(first.use_once("jti", "kept", i64::MAX).await.unwrap());
    first.revoke_token("kept", i64::MAX).await.unwrap();
    let before = first.append_audit(events(0..4, "first")).await.unwrap();
    first.close().await;

    let second = db.store().await;
    assert_eq!(migrations(db).await, applied, "no migration applied twice");
    assert_eq!(
        second.get_client(&client.client_id).await.unwrap(),
        Some(client)
    );
    assert_eq!(second.list_resources().await.unwrap().len(), 1);
    assert_eq!(
        second.list_signing_keys().await.unwrap(),
        vec![signing_key("kid", 1)]
    );
    assert!(!second.use_once("jti", "kept", i64::MAX).await.unwrap());
    assert!(second.is_revoked("kept").await.unwrap());
    assert_eq!(all_events(&second).await, before);
    let after = second.append_audit(events(4..6, "second")).await.unwrap();
    assert_eq!(after[0].seq, 5);
    assert_eq!(after[0].prev_hash, before.last().unwrap().hash);
    assert_eq!(verify_chain(&all_events(&second).await), Ok(6));

    // And a third time, while the second is still open.
    let third = db.store().await;
    assert_eq!(migrations(db).await, applied);
    assert_eq!(verify_chain(&all_events(&third).await), Ok(6));
}
for_each_backend!(
    reopening_keeps_data_and_migrates_once,
    reopening_keeps_data_and_migrates_once
);

/// Several processes starting on a fresh database at the same moment: all come
/// up, and each migration is applied once.
async fn concurrent_first_start_migrates_once(db: &TestDb) {
    let starts: Vec<_> = (0..8)
        .map(|_| {
            let url = db.url().to_owned();
            tokio::spawn(async move { SqlStore::connect(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for (i, start) in starts.into_iter().enumerate() {
        let store = start.await.unwrap();
        stores.push(store.unwrap_or_else(|e| panic!("start {i}: {e}")));
    }
    let applied = migrations(db).await;
    assert!(!applied.is_empty());
    assert_eq!(applied, (1..=applied.len() as i64).collect::<Vec<_>>());
    for (i, store) in stores.iter().enumerate() {
        store
            .append_audit(events(0..1, &format!("s{i}")))
            .await
            .unwrap();
    }
    assert_eq!(verify_chain(&all_events(&stores[0]).await), Ok(8));
}
for_each_backend!(
    concurrent_first_start_migrates_once,
    concurrent_first_start_migrates_once
);
