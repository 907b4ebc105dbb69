//! [`SqlStore`]: the [`Store`] trait on SQLite (the embedded default) and
//! PostgreSQL (for several replicas), through sqlx's `Any` driver.
//!
//! Why one implementation for two databases: the statements are plain SQL that
//! both engines accept (`ON CONFLICT`, `RETURNING`, `$n` parameters numbered in
//! order of first use), so a single code path is tested against both instead
//! of two that drift apart. Only the schema differs ([`migrations`]).
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL`, so a commit is
//! on disk when it returns; every [`Store`] method is one transaction. On
//! SQLite the two writes of the hot path (audit appends, single-use values)
//! go through one writer thread instead, and single-use values and batches
//! of gateway decisions commit without an fsync of their own
//! (`sqlite_writer` says why and what that trades; on PostgreSQL those
//! batches commit with `synchronous_commit = off`).

mod migrations;
mod sqlite_writer;

use std::str::FromStr as _;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use mandate_audit::{Anchor, Event, NewEvent, Outcome};
use mandate_core::model::{
    Client, Grant, KeyPurpose, RefreshRecord, RefreshUse, Resource, RevokedAccess,
    StoredSigningKey, User,
};
use mandate_core::{Store, StoreError};
use mandate_types::{ClientId, ResourceUri, UnixTime};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor as _, Row as _};

use sqlite_writer::{Durability, SqliteWriter};

/// Events per INSERT statement (12 parameters each, well under both
/// databases' parameter limits).
const AUDIT_ROWS_PER_INSERT: usize = 256;
/// Most passes of a revocation over the token's descendants (see
/// `revoke_token`); each extra pass needs an exchange from the tree that
/// raced the pass before.
const MAX_REVOCATION_PASSES: usize = 32;

/// Which database a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The SQL store.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: AnyPool,
    backend: Backend,
    /// SQLite only: the hot-path writer.
    writer: Option<Arc<SqliteWriter>>,
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn corrupt(table: &'static str, detail: impl ToString) -> StoreError {
    StoreError::Corrupt {
        table,
        detail: detail.to_string(),
    }
}

impl SqlStore {
    /// Appends to the chain, synced as `durability` says.
    async fn append_audit_as(
        &self,
        events: Vec<NewEvent>,
        durability: Durability,
    ) -> Result<Vec<Event>, StoreError> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(writer) = &self.writer {
            return writer.append_audit(events, durability).await;
        }
        // PostgreSQL from here.
        let count = i64::try_from(events.len()).map_err(|e| corrupt("audit_head", e))?;
        let mut tx = self.pool.begin().await.map_err(db)?;
        if durability == Durability::Deferred {
            // This transaction's commit returns before its WAL is flushed
            // (PostgreSQL flushes it within a few hundred milliseconds).
            sqlx::query("SET LOCAL synchronous_commit = off")
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        // Writing first takes the head's row lock, so concurrent replicas
        // chain one after the other.
        let head =
            sqlx::query("UPDATE audit_head SET seq = seq + $1 WHERE id = 1 RETURNING seq, hash")
                .bind(count)
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?;
        let last_seq: i64 = head.try_get("seq").map_err(|e| corrupt("audit_head", e))?;
        let mut prev: String = head.try_get("hash").map_err(|e| corrupt("audit_head", e))?;
        let mut chained = Vec::with_capacity(events.len());
        for (i, e) in (0_i64..).zip(events) {
            let event = e.chain(last_seq - count + 1 + i, &prev);
            prev.clone_from(&event.hash);
            chained.push(event);
        }
        // Multi-row INSERTs: one statement per 256 events instead of one per
        // event (each statement is a round trip to the database).
        for chunk in chained.chunks(AUDIT_ROWS_PER_INSERT) {
            let mut sql = String::from(
                "INSERT INTO audit_events (seq, time_ms, kind, client_id, subject, audience, \
                 scopes, jti, outcome, reason, prev_hash, hash) VALUES ",
            );
            for row in 0..chunk.len() {
                let b = row * 12;
                if row > 0 {
                    sql.push_str(", ");
                }
                let params: Vec<String> = (1..=12).map(|c| format!("${}", b + c)).collect();
                sql.push('(');
                sql.push_str(&params.join(", "));
                sql.push(')');
            }
            let mut query = sqlx::query(&sql);
            for event in chunk {
                query = query
                    .bind(event.seq)
                    .bind(event.event.time_ms)
                    .bind(event.event.kind.clone())
                    .bind(event.event.client_id.clone())
                    .bind(event.event.subject.clone())
                    .bind(event.event.audience.clone())
                    .bind(event.event.scopes.clone())
                    .bind(event.event.jti.clone())
                    .bind(event.event.outcome.as_str().to_owned())
                    .bind(event.event.reason.clone())
                    .bind(event.prev_hash.clone())
                    .bind(event.hash.clone());
            }
            query.execute(&mut *tx).await.map_err(db)?;
        }
        sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
            .bind(prev)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(chained)
    }

    /// Connects to `url` (`sqlite://PATH?mode=rwc` or `postgres://...`) and
    /// applies pending migrations.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Database(
                "database_url must start with sqlite: or postgres:".into(),
            ));
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(10));
        if backend == Backend::Sqlite {
            options = options.after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute(
                        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                         PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;",
                    )
                    .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect(url).await.map_err(db)?;
        migrations::apply(&pool, backend).await?;
        let writer = match backend {
            Backend::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).map_err(db)?;
                Some(Arc::new(SqliteWriter::start(options.get_filename())?))
            }
            Backend::Postgres => None,
        };
        Ok(Self {
            pool,
            backend,
            writer,
        })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// On PostgreSQL, whether a pooled connection is encrypted, as the
    /// server sees it (`pg_stat_ssl`); `None` on SQLite, which has no
    /// connection to protect. `sslmode` in the URL decides, as with libpq.
    pub async fn encrypted(&self) -> Result<Option<bool>, StoreError> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        row.try_get::<bool, _>("ssl")
            .map(Some)
            .map_err(|e| corrupt("pg_stat_ssl", e))
    }

    /// Checks the database answers, and on SQLite that the writer thread
    /// still takes jobs (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db)?;
        match &self.writer {
            Some(writer) => writer.ping().await,
            None => Ok(()),
        }
    }

    /// Closes the pool, waiting for connections (and on SQLite the writer
    /// thread) to finish.
    pub async fn close(&self) {
        if let Some(writer) = &self.writer {
            writer.stop().await;
        }
        self.pool.close().await;
    }

    async fn put_doc<T: serde::Serialize>(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
        doc: &T,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(doc).map_err(|e| corrupt(table, e))?;
        let sql = format!(
            "INSERT INTO {table} ({key_column}, doc) VALUES ($1, $2) \
             ON CONFLICT ({key_column}) DO UPDATE SET doc = excluded.doc"
        );
        sqlx::query(&sql)
            .bind(key.to_owned())
            .bind(doc)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn get_doc<T: serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        let sql = format!("SELECT doc FROM {table} WHERE {key_column} = $1");
        let row = sqlx::query(&sql)
            .bind(key.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| decode_doc(table, &r)).transpose()
    }

    async fn list_docs<T: serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
        key_column: &'static str,
    ) -> Result<Vec<T>, StoreError> {
        let sql = format!("SELECT doc FROM {table} ORDER BY {key_column}");
        let rows = sqlx::query(&sql).fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| decode_doc(table, r)).collect()
    }

    async fn insert_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        owner: Option<&str>,
        doc: &str,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO ephemeral (namespace, key, doc, expires_at, owner) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (namespace, key) DO UPDATE SET doc = excluded.doc, \
             expires_at = excluded.expires_at, owner = excluded.owner",
        )
        .bind(namespace.to_owned())
        .bind(key.to_owned())
        .bind(doc.to_owned())
        .bind(expires_at)
        .bind(owner.map(str::to_owned))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn delete_row(
        &self,
        table: &'static str,
        key_column: &'static str,
        key: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!("DELETE FROM {table} WHERE {key_column} = $1");
        let done = sqlx::query(&sql)
            .bind(key.to_owned())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

fn decode_doc<T: serde::de::DeserializeOwned>(
    table: &'static str,
    row: &AnyRow,
) -> Result<T, StoreError> {
    let doc: String = row.try_get(0).map_err(|e| corrupt(table, e))?;
    serde_json::from_str(&doc).map_err(|e| corrupt(table, e))
}

fn decode_event(row: &AnyRow) -> Result<Event, StoreError> {
    let c = |e| corrupt("audit_events", e);
    let outcome: String = row.try_get("outcome").map_err(c)?;
    Ok(Event {
        seq: row.try_get("seq").map_err(c)?,
        event: NewEvent {
            time_ms: row.try_get("time_ms").map_err(c)?,
            kind: row.try_get("kind").map_err(c)?,
            client_id: row.try_get("client_id").map_err(c)?,
            subject: row.try_get("subject").map_err(c)?,
            audience: row.try_get("audience").map_err(c)?,
            scopes: row.try_get("scopes").map_err(c)?,
            jti: row.try_get("jti").map_err(c)?,
            outcome: Outcome::parse(&outcome)
                .ok_or_else(|| corrupt("audit_events", "unknown outcome"))?,
            reason: row.try_get("reason").map_err(c)?,
        },
        prev_hash: row.try_get("prev_hash").map_err(c)?,
        hash: row.try_get("hash").map_err(c)?,
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn put_client(&self, client: &Client) -> Result<(), StoreError> {
        self.put_doc("clients", "client_id", client.client_id.as_str(), client)
            .await
    }

    async fn get_client(&self, id: &ClientId) -> Result<Option<Client>, StoreError> {
        self.get_doc("clients", "client_id", id.as_str()).await
    }

    async fn list_clients(&self) -> Result<Vec<Client>, StoreError> {
        self.list_docs("clients", "client_id").await
    }

    async fn delete_client(&self, id: &ClientId) -> Result<bool, StoreError> {
        self.delete_row("clients", "client_id", id.as_str()).await
    }

    async fn put_resource(&self, resource: &Resource) -> Result<(), StoreError> {
        self.put_doc("resources", "id", resource.id.as_str(), resource)
            .await
    }

    async fn get_resource(&self, id: &ResourceUri) -> Result<Option<Resource>, StoreError> {
        self.get_doc("resources", "id", id.as_str()).await
    }

    async fn list_resources(&self) -> Result<Vec<Resource>, StoreError> {
        self.list_docs("resources", "id").await
    }

    async fn delete_resource(&self, id: &ResourceUri) -> Result<bool, StoreError> {
        self.delete_row("resources", "id", id.as_str()).await
    }

    async fn insert_signing_key(&self, key: &StoredSigningKey) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO signing_keys (kid, alg, sealed_private_key, created_at, activate_at, purpose) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(key.kid.clone())
        .bind(key.alg.as_str().to_owned())
        .bind(key.sealed_private_key.clone())
        .bind(key.created_at)
        .bind(key.activate_at)
        .bind(key.purpose.as_str().to_owned())
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>, StoreError> {
        let rows = sqlx::query(
            "SELECT kid, alg, sealed_private_key, created_at, activate_at, purpose \
             FROM signing_keys ORDER BY created_at, kid",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| {
                let c = |e| corrupt("signing_keys", e);
                let alg: String = r.try_get("alg").map_err(c)?;
                let purpose: String = r.try_get("purpose").map_err(c)?;
                Ok(StoredSigningKey {
                    kid: r.try_get("kid").map_err(c)?,
                    alg: alg
                        .parse()
                        .map_err(|e: String| corrupt("signing_keys", e))?,
                    sealed_private_key: r.try_get("sealed_private_key").map_err(c)?,
                    created_at: r.try_get("created_at").map_err(c)?,
                    activate_at: r.try_get("activate_at").map_err(c)?,
                    purpose: KeyPurpose::parse(&purpose)
                        .ok_or_else(|| corrupt("signing_keys", format!("purpose {purpose}")))?,
                })
            })
            .collect()
    }

    async fn use_once(
        &self,
        namespace: &str,
        value: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        if let Some(writer) = &self.writer {
            return writer.use_once(namespace, value, expires_at).await;
        }
        let done = sqlx::query(
            "INSERT INTO used_values (namespace, value, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (namespace, value) DO NOTHING",
        )
        .bind(namespace.to_owned())
        .bind(value.to_owned())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn revoke_token(&self, jti: &str, expires_at: UnixTime) -> Result<(), StoreError> {
        // Each pass: the token and its descendants in one statement. `UNION` (not
        // `UNION ALL`) stops at a row already seen; `WHERE true` is SQLite's
        // way of telling an upsert's `ON CONFLICT` from a join's `ON`.
        //
        // Run again until a pass revokes nothing new. An exchange records
        // its lineage, commits, and only then reads whether its parent is
        // revoked (`record_exchange`). Under PostgreSQL's read committed
        // isolation a pass can miss a lineage row committed after the pass
        // began while that exchange's read misses the pass's revocation; the
        // exchange's lineage is then committed before the next pass starts,
        // which revokes the new token. A pass that adds nothing saw every
        // exchange that could have missed this revocation.
        for _ in 0..MAX_REVOCATION_PASSES {
            let added = sqlx::query(
                "WITH RECURSIVE tree (jti, expires_at) AS ( \
                     SELECT $1, $2 \
                     UNION \
                     SELECT l.jti, l.expires_at FROM token_lineage l JOIN tree t ON l.parent_jti = t.jti \
                 ) \
                 INSERT INTO revoked_tokens (jti, expires_at) SELECT jti, expires_at FROM tree WHERE true \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti.to_owned())
            .bind(expires_at)
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected();
            if added == 0 {
                return Ok(());
            }
        }
        Err(StoreError::Database(format!(
            "revoking a token: its descendants were still growing after {MAX_REVOCATION_PASSES} passes"
        )))
    }

    async fn record_exchange(
        &self,
        jti: &str,
        parent_jti: &str,
        expires_at: UnixTime,
    ) -> Result<bool, StoreError> {
        if let Some(writer) = &self.writer {
            return writer.record_exchange(jti, parent_jti, expires_at).await;
        }
        // Committed before the read below, never in one transaction with it:
        // `revoke_token` relies on that order on PostgreSQL (see there). On
        // SQLite the writer's one transaction holds the database's write
        // lock, which serializes it with every revocation.
        sqlx::query(
            "INSERT INTO token_lineage (jti, parent_jti, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (parent_jti, jti) DO NOTHING",
        )
        .bind(jti.to_owned())
        .bind(parent_jti.to_owned())
        .bind(expires_at)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        self.is_revoked(parent_jti).await
    }

    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 FROM revoked_tokens WHERE jti = $1")
            .bind(jti.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.is_some())
    }

    async fn list_revoked(&self, now: UnixTime) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT jti FROM revoked_tokens WHERE expires_at >= $1")
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| {
                r.try_get::<String, _>(0)
                    .map_err(|e| corrupt("revoked_tokens", e))
            })
            .collect()
    }

    async fn append_audit(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.append_audit_as(events, Durability::Synced).await
    }

    async fn append_audit_unsynced(&self, events: Vec<NewEvent>) -> Result<Vec<Event>, StoreError> {
        self.append_audit_as(events, Durability::Deferred).await
    }

    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<Event>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, time_ms, kind, client_id, subject, audience, scopes, jti, outcome, \
             reason, prev_hash, hash FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(decode_event).collect()
    }

    async fn audit_anchor(&self) -> Result<Anchor, StoreError> {
        let row = sqlx::query("SELECT seq, hash FROM audit_anchor WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let c = |e| corrupt("audit_anchor", e);
        Ok(Anchor {
            seq: row.try_get("seq").map_err(c)?,
            hash: row.try_get("hash").map_err(c)?,
        })
    }

    async fn prune_audit(&self, before_ms: i64, limit: i64) -> Result<u64, StoreError> {
        // The front of the chain, in order: the run recorded before the
        // cut-off ends at the first event that is not.
        let front = sqlx::query(
            "SELECT seq, time_ms FROM audit_events \
             WHERE seq > (SELECT seq FROM audit_anchor WHERE id = 1) ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        let c = |e| corrupt("audit_events", e);
        let mut through = None;
        for row in &front {
            let time_ms: i64 = row.try_get("time_ms").map_err(c)?;
            if time_ms >= before_ms {
                break;
            }
            through = Some(row.try_get::<i64, _>("seq").map_err(c)?);
        }
        let Some(through) = through else {
            return Ok(0);
        };
        // Writes first, so that SQLite takes its write lock (waiting for the
        // hot-path writer) before reading: the anchor moves, then the rows
        // behind it may go. Another replica pruning at the same time has
        // moved it already: then nothing here changes.
        let mut tx = self.pool.begin().await.map_err(db)?;
        let moved = sqlx::query(
            "UPDATE audit_anchor SET seq = $1, \
             hash = (SELECT hash FROM audit_events WHERE seq = $1) \
             WHERE id = 1 AND seq < $1 AND EXISTS (SELECT 1 FROM audit_events WHERE seq = $1)",
        )
        .bind(through)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if moved == 0 {
            tx.rollback().await.map_err(db)?;
            return Ok(0);
        }
        let removed = sqlx::query("DELETE FROM audit_events WHERE seq <= $1")
            .bind(through)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        tx.commit().await.map_err(db)?;
        Ok(removed)
    }

    async fn put_user(&self, user: &User) -> Result<(), StoreError> {
        let doc = serde_json::to_string(user).map_err(|e| corrupt("users", e))?;
        sqlx::query(
            "INSERT INTO users (id, username, doc) VALUES ($1, $2, $3) \
             ON CONFLICT (id) DO UPDATE SET username = excluded.username, doc = excluded.doc",
        )
        .bind(user.id.clone())
        .bind(user.username.clone())
        .bind(doc)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> Result<Option<User>, StoreError> {
        self.get_doc("users", "id", id).await
    }

    async fn find_user(&self, username: &str) -> Result<Option<User>, StoreError> {
        self.get_doc("users", "username", username).await
    }

    async fn list_users(&self) -> Result<Vec<User>, StoreError> {
        self.list_docs("users", "username").await
    }

    async fn put_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        doc: &str,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.insert_ephemeral(namespace, key, None, doc, expires_at)
            .await
    }

    async fn put_owned_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        owner: &str,
        doc: &str,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        self.insert_ephemeral(namespace, key, Some(owner), doc, expires_at)
            .await
    }

    async fn get_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT doc FROM ephemeral WHERE namespace = $1 AND key = $2 AND expires_at > $3",
        )
        .bind(namespace.to_owned())
        .bind(key.to_owned())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| {
            r.try_get::<String, _>(0)
                .map_err(|e| corrupt("ephemeral", e))
        })
        .transpose()
    }

    async fn take_ephemeral(
        &self,
        namespace: &str,
        key: &str,
        now: UnixTime,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM ephemeral WHERE namespace = $1 AND key = $2 RETURNING doc, expires_at",
        )
        .bind(namespace.to_owned())
        .bind(key.to_owned())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let expires: i64 = row.try_get(1).map_err(|e| corrupt("ephemeral", e))?;
        if expires <= now {
            return Ok(None);
        }
        row.try_get::<String, _>(0)
            .map(Some)
            .map_err(|e| corrupt("ephemeral", e))
    }

    async fn put_grant(&self, grant: &Grant) -> Result<(), StoreError> {
        let doc = serde_json::to_string(grant).map_err(|e| corrupt("grants", e))?;
        sqlx::query(
            "INSERT INTO grants (id, user_id, client_id, resource, doc) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc",
        )
        .bind(grant.id.clone())
        .bind(grant.user_id.clone())
        .bind(grant.client_id.to_string())
        .bind(grant.resource.to_string())
        .bind(doc)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn find_grant(
        &self,
        user_id: &str,
        client_id: &ClientId,
        resource: &ResourceUri,
    ) -> Result<Option<Grant>, StoreError> {
        let row = sqlx::query(
            "SELECT doc FROM grants WHERE user_id = $1 AND client_id = $2 AND resource = $3",
        )
        .bind(user_id.to_owned())
        .bind(client_id.to_string())
        .bind(resource.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| decode_doc("grants", &r)).transpose()
    }

    async fn get_grant(&self, id: &str) -> Result<Option<Grant>, StoreError> {
        self.get_doc("grants", "id", id).await
    }

    async fn list_grants(&self, user_id: &str) -> Result<Vec<Grant>, StoreError> {
        let rows = sqlx::query("SELECT doc FROM grants WHERE user_id = $1 ORDER BY id")
            .bind(user_id.to_owned())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(|r| decode_doc("grants", r)).collect()
    }

    async fn delete_grant(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query("DELETE FROM grants WHERE id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM refresh_tokens WHERE grant_id = $1")
            .bind(id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn insert_refresh(
        &self,
        hash: &str,
        record: &RefreshRecord,
        expires_at: UnixTime,
    ) -> Result<(), StoreError> {
        let doc = serde_json::to_string(record).map_err(|e| corrupt("refresh_tokens", e))?;
        sqlx::query(
            "INSERT INTO refresh_tokens (hash, family, grant_id, used, expires_at, doc) VALUES ($1, $2, $3, 0, $4, $5)",
        )
        .bind(hash.to_owned())
        .bind(record.family.clone())
        .bind(record.grant_id.clone())
        .bind(expires_at)
        .bind(doc)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn peek_refresh(
        &self,
        hash: &str,
        now: UnixTime,
    ) -> Result<Option<RefreshRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT doc FROM refresh_tokens WHERE hash = $1 AND used = 0 AND expires_at > $2",
        )
        .bind(hash.to_owned())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.map(|r| decode_doc("refresh_tokens", &r)).transpose()
    }

    async fn use_refresh(&self, hash: &str, now: UnixTime) -> Result<RefreshUse, StoreError> {
        let spent = sqlx::query(
            "UPDATE refresh_tokens SET used = 1 WHERE hash = $1 AND used = 0 AND expires_at > $2 RETURNING doc",
        )
        .bind(hash.to_owned())
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if let Some(row) = spent {
            return Ok(RefreshUse::Fresh(decode_doc("refresh_tokens", &row)?));
        }
        let prior = sqlx::query("SELECT family, used FROM refresh_tokens WHERE hash = $1")
            .bind(hash.to_owned())
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        match prior {
            Some(row)
                if row
                    .try_get::<i64, _>(1)
                    .map_err(|e| corrupt("refresh_tokens", e))?
                    == 1 =>
            {
                Ok(RefreshUse::Reused {
                    family: row.try_get(0).map_err(|e| corrupt("refresh_tokens", e))?,
                })
            }
            _ => Ok(RefreshUse::Unknown),
        }
    }

    async fn revoke_refresh_family(&self, family: &str) -> Result<u64, StoreError> {
        Ok(sqlx::query("DELETE FROM refresh_tokens WHERE family = $1")
            .bind(family.to_owned())
            .execute(&self.pool)
            .await
            .map_err(db)?
            .rows_affected())
    }

    async fn revoke_user_access(&self, user_id: &str) -> Result<RevokedAccess, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let documents = sqlx::query("DELETE FROM ephemeral WHERE owner = $1")
            .bind(user_id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        let of_user =
            "FROM refresh_tokens WHERE grant_id IN (SELECT id FROM grants WHERE user_id = $1)";
        let families: i64 = sqlx::query(&format!("SELECT COUNT(DISTINCT family) AS n {of_user}"))
            .bind(user_id.to_owned())
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .try_get("n")
            .map_err(|e| corrupt("refresh_tokens", e))?;
        sqlx::query(&format!("DELETE {of_user}"))
            .bind(user_id.to_owned())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(RevokedAccess {
            documents,
            refresh_families: u64::try_from(families).unwrap_or(0),
        })
    }

    async fn purge_expired(&self, now: UnixTime) -> Result<u64, StoreError> {
        let mut purged = 0;
        for sql in [
            "DELETE FROM used_values WHERE expires_at < $1",
            "DELETE FROM revoked_tokens WHERE expires_at < $1",
            "DELETE FROM token_lineage WHERE expires_at < $1",
            "DELETE FROM ephemeral WHERE expires_at < $1",
            "DELETE FROM refresh_tokens WHERE expires_at < $1",
        ] {
            purged += sqlx::query(sql)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(db)?
                .rows_affected();
        }
        Ok(purged)
    }
}
