//! Test harness: a fresh database per test, on SQLite and on PostgreSQL.
//!
//! Every test gets its own database ([`TestDb`]), so tests never depend on
//! execution order and run in parallel. [`for_each_backend!`] mounts one async
//! test body once per backend (STYLE.md, practice 14).
//!
//! PostgreSQL is found through `MANDATE_TEST_POSTGRES_URL` (default
//! [`DEFAULT_POSTGRES_URL`]); each test creates `mandate_test_<random hex>` on
//! that server and drops it afterwards. When the server cannot be reached the
//! PostgreSQL half of each suite is skipped with one line on stderr, unless
//! `MANDATE_REQUIRE_POSTGRES=1` (as in CI), where it fails instead.
//!
//! A harness fails loudly: a database that cannot be set up is a broken test
//! environment, not an input to handle, hence the panics and `expect`s.
#![allow(clippy::panic, clippy::expect_used)]

use std::io::Write as _;
use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use mandate_store::SqlStore;
use sqlx::Connection as _;

/// Base URL used when `MANDATE_TEST_POSTGRES_URL` is not set.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Environment variable naming the PostgreSQL server (any existing database on
/// it; fresh databases are created next to it).
pub const POSTGRES_URL_ENV: &str = "MANDATE_TEST_POSTGRES_URL";

/// Environment variable that turns an unreachable PostgreSQL into a failure.
pub const REQUIRE_POSTGRES_ENV: &str = "MANDATE_REQUIRE_POSTGRES";

/// How long to wait for the PostgreSQL server before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A database that lives as long as the value: a temporary SQLite file, or a
/// PostgreSQL database created for this test and dropped with it.
#[derive(Debug)]
pub enum TestDb {
    /// A SQLite file `mandate.db` in a temporary directory.
    Sqlite {
        /// The directory, removed on drop.
        dir: tempfile::TempDir,
        /// `sqlite://<abs path>?mode=rwc`.
        url: String,
    },
    /// A fresh PostgreSQL database, dropped (best effort) on drop.
    Postgres {
        /// URL of the database it was created from (and is dropped from).
        admin_url: String,
        /// Its name, `mandate_test_<random hex>`.
        name: String,
        /// Its URL.
        url: String,
    },
}

impl TestDb {
    /// A new, empty SQLite database in a temporary directory.
    pub fn sqlite() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("mandate-test-")
            .tempdir()
            .expect("create a temporary directory for the SQLite test database");
        let url = sqlite_url(&dir.path().join("mandate.db"));
        TestDb::Sqlite { dir, url }
    }

    /// A new, empty PostgreSQL database, or `None` (after one line on stderr)
    /// when the server is unreachable and `MANDATE_REQUIRE_POSTGRES` is not set.
    ///
    /// # Panics
    /// If the server is unreachable and `MANDATE_REQUIRE_POSTGRES=1`, or if it
    /// is reachable but refuses to create the database.
    pub async fn postgres() -> Option<TestDb> {
        static UNREACHABLE: OnceLock<()> = OnceLock::new();

        let admin_url = std::env::var(POSTGRES_URL_ENV)
            .ok()
            .filter(|u| !u.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_POSTGRES_URL.to_owned());
        let required = postgres_required();
        // Once one test found the server down, the others skip at once instead of
        // each waiting for its own timeout (and each printing the same line).
        if !required && UNREACHABLE.get().is_some() {
            return None;
        }
        let mut conn = match connect_pg(&admin_url).await {
            Ok(conn) => conn,
            Err(e) if required => panic!(
                "PostgreSQL not reachable at {admin_url}: {e}; it is required because \
                 {REQUIRE_POSTGRES_ENV} is set (set {POSTGRES_URL_ENV} to point at a server)"
            ),
            Err(e) => {
                if UNREACHABLE.set(()).is_ok() {
                    // Straight to stderr: the test harness captures `eprintln!` of
                    // passing tests, and this line has to be seen.
                    let _ = writeln!(
                        std::io::stderr(),
                        "SKIP: PostgreSQL not reachable at {admin_url}: {e}; \
                         set {POSTGRES_URL_ENV} (PostgreSQL tests are skipped)"
                    );
                }
                return None;
            }
        };
        let name = format!("mandate_test_{:016x}", rand::random::<u64>());
        sqlx::raw_sql(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name} at {admin_url}: {e}"));
        let _ = conn.close().await;
        let url = database_url(&admin_url, &name);
        Some(TestDb::Postgres {
            admin_url,
            name,
            url,
        })
    }

    /// The database URL, as `SqlStore::connect` takes it.
    pub fn url(&self) -> &str {
        match self {
            TestDb::Sqlite { url, .. } | TestDb::Postgres { url, .. } => url,
        }
    }

    /// `"sqlite"` or `"postgres"`, for messages.
    pub fn backend_name(&self) -> &'static str {
        match self {
            TestDb::Sqlite { .. } => "sqlite",
            TestDb::Postgres { .. } => "postgres",
        }
    }

    /// A store on this database (migrations applied).
    ///
    /// # Panics
    /// If it cannot connect or migrate.
    pub async fn store(&self) -> SqlStore {
        SqlStore::connect(self.url())
            .await
            .unwrap_or_else(|e| panic!("SqlStore::connect({}): {e}", self.url()))
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // SQLite: `TempDir` removes the directory itself.
        if let TestDb::Postgres {
            admin_url, name, ..
        } = self
        {
            drop_pg_database(admin_url.clone(), name.clone());
        }
    }
}

/// Whether `MANDATE_REQUIRE_POSTGRES` asks for PostgreSQL to be there.
fn postgres_required() -> bool {
    std::env::var(REQUIRE_POSTGRES_ENV)
        .map(|v| matches!(v.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

fn sqlite_url(path: &Path) -> String {
    format!("sqlite://{}?mode=rwc", path.display())
}

/// `admin_url` with its database (the URL path) replaced by `name`.
fn database_url(admin_url: &str, name: &str) -> String {
    let mut url = url::Url::parse(admin_url)
        .unwrap_or_else(|e| panic!("{POSTGRES_URL_ENV}={admin_url} is not a URL: {e}"));
    url.set_path(&format!("/{name}"));
    url.into()
}

async fn connect_pg(url: &str) -> Result<sqlx::PgConnection, String> {
    match tokio::time::timeout(CONNECT_TIMEOUT, sqlx::PgConnection::connect(url)).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
    }
}

/// Drops database `name`, terminating its sessions. `Drop` cannot await, and
/// may run inside a runtime (which cannot be blocked on from within), so this
/// runs on its own thread with its own runtime and waits for it. Best effort:
/// a failure is reported on stderr, never as a panic (that could abort a test
/// that is already unwinding).
fn drop_pg_database(admin_url: String, name: String) {
    let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
    let worker = std::thread::Builder::new()
        .name(format!("drop-{name}"))
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => return Err(format!("tokio runtime: {e}")),
            };
            runtime.block_on(async {
                let mut conn = connect_pg(&admin_url).await?;
                let dropped =
                    tokio::time::timeout(CONNECT_TIMEOUT, sqlx::raw_sql(&sql).execute(&mut conn))
                        .await;
                let _ = conn.close().await;
                match dropped {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {CONNECT_TIMEOUT:?}")),
                }
            })
        });
    let outcome = match worker {
        Ok(handle) => handle
            .join()
            .unwrap_or_else(|_| Err("the drop thread panicked".to_owned())),
        Err(e) => Err(format!("spawn: {e}")),
    };
    if let Err(e) = outcome {
        let _ = writeln!(
            std::io::stderr(),
            "warning: could not drop test database {name}: {e}"
        );
    }
}

/// Mounts an async test body once per backend.
///
/// `for_each_backend!(name, body)` defines `mod name` with two tests,
/// `sqlite` and `postgres`, each calling `body(&db).await` with a fresh
/// [`TestDb`]. `body` is an `async fn(&TestDb)` resolved from the calling
/// module. The PostgreSQL test passes without running `body` when the server is
/// unreachable (see [`TestDb::postgres`]). The calling crate needs `tokio`
/// (with `macros` and `rt-multi-thread`) as a dependency.
///
/// ```ignore
/// async fn clients_round_trip(db: &TestDb) { let store = db.store().await; /* ... */ }
/// mandate_testkit::for_each_backend!(clients_round_trip, clients_round_trip);
/// ```
#[macro_export]
macro_rules! for_each_backend {
    ($name:ident, $body:path) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let db = $crate::TestDb::sqlite();
                $body(&db).await;
            }

            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(db) = $crate::TestDb::postgres().await {
                    $body(&db).await;
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_url_replaces_only_the_database() {
        assert_eq!(
            database_url("postgres://postgres@127.0.0.1:5432/test", "mandate_test_ab"),
            "postgres://postgres@127.0.0.1:5432/mandate_test_ab"
        );
        assert_eq!(
            database_url("postgres://u:p@db/x?sslmode=disable", "mandate_test_ab"),
            "postgres://u:p@db/mandate_test_ab?sslmode=disable"
        );
    }

    #[test]
    fn sqlite_url_is_absolute_and_creates() {
        let db = TestDb::sqlite();
        let TestDb::Sqlite { dir, url } = &db else {
            unreachable!()
        };
        assert!(dir.path().is_absolute());
        assert!(url.starts_with("sqlite:///"), "{url}");
        assert!(url.ends_with("/mandate.db?mode=rwc"), "{url}");
    }

    #[tokio::test]
    async fn postgres_database_is_created_and_dropped() {
        let Some(db) = TestDb::postgres().await else {
            return;
        };
        let TestDb::Postgres {
            admin_url, name, ..
        } = &db
        else {
            unreachable!()
        };
        let (admin_url, name) = (admin_url.clone(), name.clone());
        let store = db.store().await;
        store.ping().await.expect("ping the fresh database");
        store.close().await;
        drop(db);
        let mut conn = sqlx::PgConnection::connect(&admin_url)
            .await
            .expect("connect");
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_database WHERE datname = $1")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .expect("query pg_database");
        assert_eq!(left, 0, "{name} should have been dropped");
    }
}
