//! Schema migrations, applied at start in order, each in its own transaction.
//! The schema is the only place the two databases differ (`BLOB`/`BYTEA`, the
//! append-only trigger language). On PostgreSQL an advisory lock keeps two
//! replicas starting together from racing; on SQLite, `BEGIN IMMEDIATE` around
//! each version check does.

use mandate_audit::GENESIS_HASH;
use sqlx::{AnyPool, Row as _};

use crate::{db, Backend};
use mandate_core::StoreError;

/// Arbitrary key for `pg_advisory_lock`.
const PG_LOCK_KEY: i64 = 0x006d_616e_6461_7465;

/// SQLite's guard against accidental edits of the audit trail.
fn sqlite_append_only_triggers() -> impl Iterator<Item = String> {
    ["UPDATE", "DELETE"].into_iter().map(|op| {
        format!(
            "CREATE TRIGGER audit_events_no_{op} BEFORE {op} ON audit_events \
             BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END"
        )
    })
}

fn migration_1(backend: Backend) -> Vec<String> {
    let blob = match backend {
        Backend::Sqlite => "BLOB",
        Backend::Postgres => "BYTEA",
    };
    let mut steps = vec![
        "CREATE TABLE clients (client_id TEXT PRIMARY KEY, doc TEXT NOT NULL)".to_owned(),
        "CREATE TABLE resources (id TEXT PRIMARY KEY, doc TEXT NOT NULL)".to_owned(),
        format!(
            "CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, alg TEXT NOT NULL, \
             sealed_private_key {blob} NOT NULL, created_at BIGINT NOT NULL, \
             activate_at BIGINT NOT NULL)"
        ),
        "CREATE TABLE used_values (namespace TEXT NOT NULL, value TEXT NOT NULL, \
         expires_at BIGINT NOT NULL, PRIMARY KEY (namespace, value))"
            .to_owned(),
        "CREATE TABLE revoked_tokens (jti TEXT PRIMARY KEY, expires_at BIGINT NOT NULL)".to_owned(),
        "CREATE TABLE audit_events (seq BIGINT PRIMARY KEY, time_ms BIGINT NOT NULL, \
         kind TEXT NOT NULL, client_id TEXT, subject TEXT, audience TEXT, scopes TEXT, \
         jti TEXT, outcome TEXT NOT NULL, reason TEXT, prev_hash TEXT NOT NULL, \
         hash TEXT NOT NULL)"
            .to_owned(),
        "CREATE INDEX audit_events_jti ON audit_events (jti)".to_owned(),
        "CREATE TABLE audit_head (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, \
         hash TEXT NOT NULL)"
            .to_owned(),
        format!("INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')"),
    ];
    // The chain already reveals tampering; the trigger stops accidents.
    match backend {
        Backend::Sqlite => steps.extend(sqlite_append_only_triggers()),
        Backend::Postgres => {
            steps.push(
                "CREATE FUNCTION mandate_audit_append_only() RETURNS trigger AS $$ \
                 BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$ \
                 LANGUAGE plpgsql"
                    .to_owned(),
            );
            steps.push(
                "CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE \
                 ON audit_events FOR EACH ROW EXECUTE FUNCTION mandate_audit_append_only()"
                    .to_owned(),
            );
        }
    }
    steps
}

/// Users, consent grants, refresh tokens, and short-lived documents
/// (pending authorization requests, codes, sessions).
fn migration_2() -> Vec<String> {
    [
        "CREATE TABLE users (id TEXT PRIMARY KEY, username TEXT NOT NULL UNIQUE, doc TEXT NOT NULL)",
        "CREATE TABLE ephemeral (namespace TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL, \
         expires_at BIGINT NOT NULL, PRIMARY KEY (namespace, key))",
        "CREATE TABLE grants (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, client_id TEXT NOT NULL, \
         resource TEXT NOT NULL, doc TEXT NOT NULL)",
        "CREATE UNIQUE INDEX grants_by_user_client_resource ON grants (user_id, client_id, resource)",
        "CREATE TABLE refresh_tokens (hash TEXT PRIMARY KEY, family TEXT NOT NULL, grant_id TEXT NOT NULL, \
         used BIGINT NOT NULL, expires_at BIGINT NOT NULL, doc TEXT NOT NULL)",
        "CREATE INDEX refresh_tokens_family ON refresh_tokens (family)",
        "CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id)",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Keys by purpose: JWS signing keys and Biscuit root keys share one table
/// and one life cycle.
fn migration_3() -> Vec<String> {
    vec!["ALTER TABLE signing_keys ADD COLUMN purpose TEXT NOT NULL DEFAULT 'jws'".to_owned()]
}

/// Owners of short-lived documents, so that disabling a user can end their
/// sessions and codes. Rows written before this migration get their owner
/// from the document's `user_id` (our own compact JSON).
fn migration_4(backend: Backend) -> Vec<String> {
    let owner = match backend {
        Backend::Sqlite => "CASE WHEN json_valid(doc) THEN json_extract(doc, '$.user_id') END",
        Backend::Postgres => "substring(doc from '\"user_id\":\"([^\"\\\\]*)\"')",
    };
    vec![
        "ALTER TABLE ephemeral ADD COLUMN owner TEXT".to_owned(),
        "CREATE INDEX ephemeral_owner ON ephemeral (owner)".to_owned(),
        format!("UPDATE ephemeral SET owner = {owner} WHERE namespace IN ('session', 'code')"),
    ]
}

/// No index on audit events' `jti`: nothing reads by it, and on SQLite an
/// index on random ids dirtied a page per event in every commit (measured:
/// dropping it raised durable issuance from 21,000 to 29,000 tokens/s).
///
/// On SQLite, two tables get one B-tree instead of two: audit events are
/// keyed by `seq` as the rowid (`INTEGER PRIMARY KEY`; `BIGINT PRIMARY KEY`
/// had made a rowid table plus an index on `seq`), and single-use values
/// move to a `WITHOUT ROWID` table keyed by the value, so recording a DPoP
/// proof id writes one random page, not two. Dropping the old audit table
/// fires no trigger; the triggers are made again on the new one.
fn migration_5(backend: Backend) -> Vec<String> {
    let mut steps = vec!["DROP INDEX IF EXISTS audit_events_jti".to_owned()];
    if backend == Backend::Sqlite {
        steps.extend(
            [
                "CREATE TABLE used_values_keyed (namespace TEXT NOT NULL, value TEXT NOT NULL, \
                 expires_at BIGINT NOT NULL, PRIMARY KEY (namespace, value)) WITHOUT ROWID",
                "INSERT INTO used_values_keyed (namespace, value, expires_at) \
                 SELECT namespace, value, expires_at FROM used_values",
                "DROP TABLE used_values",
                "ALTER TABLE used_values_keyed RENAME TO used_values",
                "CREATE TABLE audit_events_keyed (seq INTEGER PRIMARY KEY, time_ms BIGINT NOT NULL, \
                 kind TEXT NOT NULL, client_id TEXT, subject TEXT, audience TEXT, scopes TEXT, \
                 jti TEXT, outcome TEXT NOT NULL, reason TEXT, prev_hash TEXT NOT NULL, \
                 hash TEXT NOT NULL)",
                "INSERT INTO audit_events_keyed SELECT seq, time_ms, kind, client_id, subject, \
                 audience, scopes, jti, outcome, reason, prev_hash, hash FROM audit_events",
                "DROP TABLE audit_events",
                "ALTER TABLE audit_events_keyed RENAME TO audit_events",
            ]
            .map(str::to_owned),
        );
        steps.extend(sqlite_append_only_triggers());
    }
    steps
}

/// Which token was exchanged from which, so that revoking a token revokes
/// what was exchanged from it. Rows go when the exchanged token expires.
/// Keyed by parent first: the cascade reads children by parent, and one
/// B-tree (`WITHOUT ROWID` on SQLite) is one page dirtied per exchange, where
/// a table keyed by the random child id plus an index on the parent was two.
fn migration_6(backend: Backend) -> Vec<String> {
    let without_rowid = match backend {
        Backend::Sqlite => " WITHOUT ROWID",
        Backend::Postgres => "",
    };
    vec![format!(
        "CREATE TABLE token_lineage (parent_jti TEXT NOT NULL, jti TEXT NOT NULL, \
         expires_at BIGINT NOT NULL, PRIMARY KEY (parent_jti, jti)){without_rowid}"
    )]
}

/// Retention: where the stored chain starts (the last event removed from
/// its front), and the append-only guard relaxed for exactly those events:
/// a row may be deleted only once the anchor has moved past it, so removing
/// history always leaves a recorded anchor the rest of the chain links to.
fn migration_7(backend: Backend) -> Vec<String> {
    let mut steps = vec![
        "CREATE TABLE audit_anchor (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL, \
         hash TEXT NOT NULL)"
            .to_owned(),
        format!("INSERT INTO audit_anchor (id, seq, hash) VALUES (1, 0, '{GENESIS_HASH}')"),
    ];
    match backend {
        Backend::Sqlite => steps.extend(
            [
                "DROP TRIGGER audit_events_no_DELETE",
                "CREATE TRIGGER audit_events_no_DELETE BEFORE DELETE ON audit_events \
                 WHEN OLD.seq > (SELECT seq FROM audit_anchor WHERE id = 1) \
                 BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
                "CREATE TRIGGER audit_anchor_forward BEFORE UPDATE ON audit_anchor \
                 WHEN NEW.seq < OLD.seq \
                 BEGIN SELECT RAISE(ABORT, 'the audit anchor only moves forward'); END",
            ]
            .map(str::to_owned),
        ),
        Backend::Postgres => steps.extend(
            [
                "CREATE OR REPLACE FUNCTION mandate_audit_append_only() RETURNS trigger AS $$ \
                 BEGIN \
                 IF TG_OP = 'DELETE' AND OLD.seq <= (SELECT seq FROM audit_anchor WHERE id = 1) \
                 THEN RETURN OLD; END IF; \
                 RAISE EXCEPTION 'the audit trail is append-only'; END $$ LANGUAGE plpgsql",
                "CREATE OR REPLACE FUNCTION mandate_audit_anchor_forward() RETURNS trigger AS $$ \
                 BEGIN IF NEW.seq < OLD.seq THEN \
                 RAISE EXCEPTION 'the audit anchor only moves forward'; END IF; \
                 RETURN NEW; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER audit_anchor_forward BEFORE UPDATE ON audit_anchor \
                 FOR EACH ROW EXECUTE FUNCTION mandate_audit_anchor_forward()",
            ]
            .map(str::to_owned),
        ),
    }
    steps
}

pub(crate) async fn apply(pool: &AnyPool, backend: Backend) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await.map_err(db)?;
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_lock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *conn)
            .await
            .map_err(db)?;
    }
    let result = apply_locked(&mut conn, backend).await;
    if backend == Backend::Postgres {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(PG_LOCK_KEY)
            .execute(&mut *conn)
            .await;
    }
    result
}

async fn apply_locked(
    conn: &mut sqlx::pool::PoolConnection<sqlx::Any>,
    backend: Backend,
) -> Result<(), StoreError> {
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS mandate_migrations (version BIGINT PRIMARY KEY, \
         applied_at_ms BIGINT NOT NULL)",
    )
    .execute(&mut **conn)
    .await
    .map_err(db)?;
    let migrations: [(i64, Vec<String>); 7] = [
        (1, migration_1(backend)),
        (2, migration_2()),
        (3, migration_3()),
        (4, migration_4(backend)),
        (5, migration_5(backend)),
        (6, migration_6(backend)),
        (7, migration_7(backend)),
    ];
    for (version, steps) in migrations {
        // SQLite has no advisory lock: `BEGIN IMMEDIATE` takes the write lock
        // before the version is read (waiting out `busy_timeout`), so a second
        // process starting on the same file at the same moment sees the
        // migration applied instead of applying it again.
        let mut tx = match backend {
            Backend::Sqlite => sqlx::Connection::begin_with(&mut **conn, "BEGIN IMMEDIATE").await,
            Backend::Postgres => sqlx::Connection::begin(&mut **conn).await,
        }
        .map_err(db)?;
        let current: i64 =
            sqlx::query("SELECT COALESCE(MAX(version), 0) AS v FROM mandate_migrations")
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?
                .try_get("v")
                .map_err(db)?;
        if version <= current {
            tx.rollback().await.map_err(db)?;
            continue;
        }
        for step in steps {
            sqlx::query(&step).execute(&mut *tx).await.map_err(db)?;
        }
        sqlx::query("INSERT INTO mandate_migrations (version, applied_at_ms) VALUES ($1, $2)")
            .bind(version)
            .bind(0_i64)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}
