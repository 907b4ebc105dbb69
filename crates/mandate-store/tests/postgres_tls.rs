//! TLS to PostgreSQL, against the real server: `sslmode` in `database_url`
//! decides, as with libpq. Debian's PostgreSQL offers TLS out of the box with
//! a self-signed "snakeoil" certificate, which these tests use as the trust
//! anchor; on a server without TLS they skip, saying so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use mandate_core::Store as _;
use mandate_store::SqlStore;
use mandate_testkit::TestDb;

/// The certificate Debian's PostgreSQL serves by default.
const SNAKEOIL: &str = "/etc/ssl/certs/ssl-cert-snakeoil.pem";

/// `url` with `params` added to its query.
fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// Whether this store's connections are encrypted (PostgreSQL's own view).
async fn encrypted(store: &SqlStore) -> bool {
    store
        .encrypted()
        .await
        .unwrap()
        .expect("a PostgreSQL store")
}

/// The test database, if PostgreSQL is there and offers TLS.
async fn tls_database() -> Option<TestDb> {
    let db = TestDb::postgres().await?;
    let probe = SqlStore::connect(&with_params(db.url(), "sslmode=prefer"))
        .await
        .unwrap();
    if !encrypted(&probe).await {
        eprintln!("skipped: this PostgreSQL server does not offer TLS (ssl = off)");
        return None;
    }
    Some(db)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_encrypts_every_connection() {
    let Some(db) = tls_database().await else {
        return;
    };
    let store = SqlStore::connect(&with_params(db.url(), "sslmode=require"))
        .await
        .unwrap();
    assert!(encrypted(&store).await);
    // The store works over it: migrations ran, writes and reads go through.
    store.revoke_token("over-tls", 9_000).await.unwrap();
    assert!(store.is_revoked("over-tls").await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_disable_stays_in_the_clear() {
    let Some(db) = tls_database().await else {
        return;
    };
    let store = SqlStore::connect(&with_params(db.url(), "sslmode=disable"))
        .await
        .unwrap();
    assert!(!encrypted(&store).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_full_checks_the_servers_certificate_and_name() {
    let Some(db) = tls_database().await else {
        return;
    };
    if !std::path::Path::new(SNAKEOIL).exists() {
        eprintln!("skipped: {SNAKEOIL} not found (not Debian's default certificate)");
        return;
    }
    let Some(at_ip) = db
        .url()
        .contains("@127.0.0.1:")
        .then(|| db.url().to_owned())
    else {
        eprintln!("skipped: the test database is not on 127.0.0.1");
        return;
    };
    let trusted = format!("sslmode=verify-full&sslrootcert={SNAKEOIL}");
    // The snakeoil certificate names `localhost` or this machine's hostname.
    let hostname = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let mut verified = None;
    for host in ["localhost", hostname.trim()] {
        let url = at_ip.replace("@127.0.0.1:", &format!("@{host}:"));
        if let Ok(store) = SqlStore::connect(&with_params(&url, &trusted)).await {
            verified = Some(store);
            break;
        }
    }
    let store = verified.expect("verify-full accepts the server's certificate under its own name");
    assert!(encrypted(&store).await);
    // The right certificate under another name (the address) is refused.
    let err = SqlStore::connect(&with_params(&at_ip, &trusted))
        .await
        .expect_err("a certificate for another name is refused");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    // Without the server's certificate as a root, only the public roots are
    // trusted, and a self-signed certificate is refused.
    let err = SqlStore::connect(&with_params(&at_ip, "sslmode=verify-full"))
        .await
        .expect_err("a self-signed certificate without sslrootcert is refused");
    assert!(err.to_string().contains("certificate"), "{err}");
}
