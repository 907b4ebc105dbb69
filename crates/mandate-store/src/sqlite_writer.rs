//! The SQLite hot-path writer: one thread that owns two connections and does
//! the writes on the request path: audit appends, single-use values and the
//! lineage of exchanged tokens.
//!
//! Why a thread of its own instead of the sqlx pool: SQLite has one write
//! lock per database. Through the pool, each statement of an audit batch is a
//! hand-off to a connection's worker thread and back (five per commit), and a
//! writer on another pooled connection that finds the lock taken sleeps in
//! SQLite's busy handler (1 ms and more) instead of queueing. Here the writes
//! queue in a channel, run back to back with cached statements, and share
//! commits: everything that arrived while the previous commit ran goes into
//! the next one.
//!
//! Two kinds of commit:
//! - audit events commit with `synchronous=FULL`: a token is answered only
//!   once its event is on disk. A batch of gateway decisions alone, which
//!   nobody waits for (the request was answered before its decision was
//!   queued), commits with `synchronous=NORMAL`: the next full commit or
//!   checkpoint syncs it, and a power loss before that loses those last
//!   decisions, never a link in the middle of the chain;
//! - single-use values (DPoP proof ids, assertion `jti`s) commit with
//!   `synchronous=NORMAL`: at once visible to every connection and every
//!   replica on the file, kept if the process crashes, and lost only if the
//!   machine loses power before the next full commit, which at most lets a
//!   proof from the last moments before the outage be replayed within its
//!   short lifetime. They commit first, so a proof check never waits for an
//!   audit batch's fsync it does not need. Token lineage (which token was
//!   exchanged from which) commits in the same transaction: a power loss
//!   right after could at most keep a revocation of the parent from
//!   reaching that one token, which still expires on its own.

use std::path::Path;
use std::sync::mpsc;

use mandate_audit::{Event, NewEvent};
use mandate_core::StoreError;
use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

/// Most jobs taken into one round of commits.
const MAX_JOBS_PER_ROUND: usize = 4096;

/// Where a caller waits for its answer.
type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

enum Job {
    Audit {
        events: Vec<NewEvent>,
        durability: Durability,
        reply: Reply<Vec<Event>>,
    },
    UseOnce {
        namespace: String,
        value: String,
        expires_at: i64,
        reply: Reply<bool>,
    },
    Lineage {
        jti: String,
        parent_jti: String,
        expires_at: i64,
        reply: Reply<bool>,
    },
    /// Answer at once: the thread is alive (for readiness).
    Ping(oneshot::Sender<()>),
    /// Finish what is queued before this, then close the connection.
    Stop,
}

/// Whether an audit append must be on disk when it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// Synced before it returns.
    Synced,
    /// Synced by a later commit or checkpoint.
    Deferred,
}

/// Handle to the writer thread; the thread ends when the last handle is
/// dropped, after finishing the jobs it holds.
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    jobs: mpsc::Sender<Job>,
    /// Joined by [`SqliteWriter::stop`], so the file is closed when it returns.
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn gone() -> StoreError {
    StoreError::Database("the SQLite writer has stopped".into())
}

impl SqliteWriter {
    /// Opens `path` (which the pool has already created and migrated) and
    /// starts the thread.
    pub(crate) fn start(path: &Path) -> Result<Self, StoreError> {
        let open = |synchronous: &str| {
            let conn = Connection::open(path).map_err(db)?;
            conn.execute_batch(&format!(
                "PRAGMA journal_mode=WAL; PRAGMA synchronous={synchronous}; \
                 PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;"
            ))
            .map_err(db)?;
            Ok::<_, StoreError>(conn)
        };
        let connections = Connections {
            full: open("FULL")?,
            normal: open("NORMAL")?,
        };
        let (jobs, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("mandate-sqlite-writer".into())
            .spawn(move || run(&connections, &rx))
            .map_err(|e| StoreError::Database(format!("starting the SQLite writer: {e}")))?;
        Ok(Self {
            jobs,
            thread: std::sync::Mutex::new(Some(thread)),
        })
    }

    /// Queues the job `make` builds around a reply channel, and waits for
    /// its answer.
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Job) -> Result<T, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(make(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Chains `events` after the trail's head and commits them durably.
    pub(crate) async fn append_audit(
        &self,
        events: Vec<NewEvent>,
        durability: Durability,
    ) -> Result<Vec<Event>, StoreError> {
        self.ask(|reply| Job::Audit {
            events,
            durability,
            reply,
        })
        .await
    }

    /// Records that `jti` was exchanged from `parent_jti`; whether the parent
    /// is revoked, read in the same transaction after the record.
    pub(crate) async fn record_exchange(
        &self,
        jti: &str,
        parent_jti: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.ask(|reply| Job::Lineage {
            jti: jti.to_owned(),
            parent_jti: parent_jti.to_owned(),
            expires_at,
            reply,
        })
        .await
    }

    /// Whether the thread still takes jobs (it answers after the jobs queued
    /// before this one).
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs.send(Job::Ping(reply)).map_err(|_| gone())?;
        answer.await.map_err(|_| gone())
    }

    /// Stops the thread once the jobs queued before this call are done, and
    /// waits for it; later jobs fail.
    pub(crate) async fn stop(&self) {
        let _ = self.jobs.send(Job::Stop);
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }

    /// Records `value` in `namespace`; `true` if it was not there yet.
    pub(crate) async fn use_once(
        &self,
        namespace: &str,
        value: &str,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        self.ask(|reply| Job::UseOnce {
            namespace: namespace.to_owned(),
            value: value.to_owned(),
            expires_at,
            reply,
        })
        .await
    }
}

/// The writer's connections to one file, used one after the other (so they
/// never wait for each other's lock).
struct Connections {
    /// `synchronous=FULL`: audit appends someone waits for.
    full: Connection,
    /// `synchronous=NORMAL`: single-use values, lineage, and audit appends
    /// nobody waits for.
    normal: Connection,
}

fn run(conn: &Connections, rx: &mpsc::Receiver<Job>) {
    let mut uses = Vec::new();
    let mut lineages = Vec::new();
    let mut audits = Vec::new();
    let mut audit_durability = Durability::Deferred;
    let mut stopping = false;
    while let Ok(first) = rx.recv() {
        let mut taken = 0;
        for job in std::iter::once(first).chain(std::iter::from_fn(|| rx.try_recv().ok())) {
            match job {
                Job::UseOnce {
                    namespace,
                    value,
                    expires_at,
                    reply,
                } => uses.push(((namespace, value, expires_at), reply)),
                Job::Lineage {
                    jti,
                    parent_jti,
                    expires_at,
                    reply,
                } => lineages.push(((jti, parent_jti, expires_at), reply)),
                Job::Audit {
                    events,
                    durability,
                    reply,
                } => {
                    if durability == Durability::Synced {
                        audit_durability = Durability::Synced;
                    }
                    audits.push((events, reply));
                }
                Job::Ping(reply) => {
                    let _ = reply.send(());
                }
                Job::Stop => stopping = true,
            }
            taken += 1;
            if stopping || taken == MAX_JOBS_PER_ROUND {
                break;
            }
        }
        if !uses.is_empty() || !lineages.is_empty() {
            let (use_values, use_replies): (Vec<_>, Vec<_>) = uses.drain(..).unzip();
            let (lineage_values, lineage_replies): (Vec<_>, Vec<_>) = lineages.drain(..).unzip();
            match commit_small_writes(&conn.normal, &use_values, &lineage_values) {
                Ok((firsts, revoked)) => {
                    answer(use_replies, Ok(firsts));
                    answer(lineage_replies, Ok(revoked));
                }
                Err(e) => {
                    answer(use_replies, Err(e.clone()));
                    answer(lineage_replies, Err(e));
                }
            }
        }
        if !audits.is_empty() {
            let (batches, replies): (Vec<_>, Vec<_>) = audits.drain(..).unzip();
            // One commit for the round: synced if any of its batches must be.
            let connection = match std::mem::replace(&mut audit_durability, Durability::Deferred) {
                Durability::Synced => &conn.full,
                Durability::Deferred => &conn.normal,
            };
            answer(replies, commit_audit(connection, batches));
        }
        if stopping {
            return;
        }
    }
}

/// Gives each caller of one commit its own answer, or all of them its error.
fn answer<T>(replies: Vec<Reply<T>>, outcome: Result<Vec<T>, StoreError>) {
    match outcome {
        Ok(answers) => {
            for (reply, a) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(a));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

/// One transaction for the writes that need no fsync of their own: every
/// single-use value (for each, whether it was new) and every exchanged
/// token's lineage (for each, whether its parent is revoked, read after the
/// record is written).
fn commit_small_writes(
    conn: &Connection,
    uses: &[(String, String, i64)],
    lineages: &[(String, String, i64)],
) -> Result<(Vec<bool>, Vec<bool>), StoreError> {
    let tx =
        rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
    let mut firsts = Vec::with_capacity(uses.len());
    let mut revoked = Vec::with_capacity(lineages.len());
    {
        let mut use_once = tx
            .prepare_cached(
                "INSERT INTO used_values (namespace, value, expires_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (namespace, value) DO NOTHING",
            )
            .map_err(db)?;
        for (namespace, value, expires_at) in uses {
            firsts.push(
                use_once
                    .execute(params![namespace, value, expires_at])
                    .map_err(db)?
                    == 1,
            );
        }
        if !lineages.is_empty() {
            let mut record = tx
                .prepare_cached(
                    "INSERT INTO token_lineage (jti, parent_jti, expires_at) VALUES (?1, ?2, ?3) \
                     ON CONFLICT (parent_jti, jti) DO NOTHING",
                )
                .map_err(db)?;
            let mut parent_revoked = tx
                .prepare_cached("SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE jti = ?1)")
                .map_err(db)?;
            for (jti, parent_jti, expires_at) in lineages {
                record
                    .execute(params![jti, parent_jti, expires_at])
                    .map_err(db)?;
                revoked.push(
                    parent_revoked
                        .query_row([parent_jti], |row| row.get::<_, bool>(0))
                        .map_err(db)?,
                );
            }
        }
    }
    tx.commit().map_err(db)?;
    Ok((firsts, revoked))
}

/// One transaction appending every batch, in order, to the
/// hash chain.
fn commit_audit(
    conn: &Connection,
    batches: Vec<Vec<NewEvent>>,
) -> Result<Vec<Vec<Event>>, StoreError> {
    let total: usize = batches.iter().map(Vec::len).sum();
    let count = i64::try_from(total).map_err(|e| StoreError::Database(e.to_string()))?;
    let tx =
        rusqlite::Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(db)?;
    let (last_seq, mut prev): (i64, String) = tx
        .prepare_cached("UPDATE audit_head SET seq = seq + ?1 WHERE id = 1 RETURNING seq, hash")
        .and_then(|mut head| head.query_row([count], |row| Ok((row.get(0)?, row.get(1)?))))
        .map_err(db)?;
    let mut seq = last_seq - count;
    let mut chained = Vec::with_capacity(batches.len());
    {
        let mut insert = tx
            .prepare_cached(
                "INSERT INTO audit_events (seq, time_ms, kind, client_id, subject, audience, \
                 scopes, jti, outcome, reason, prev_hash, hash) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .map_err(db)?;
        for batch in batches {
            let mut events = Vec::with_capacity(batch.len());
            for new in batch {
                seq += 1;
                let event = new.chain(seq, &prev);
                let e = &event.event;
                insert
                    .execute(params![
                        event.seq,
                        e.time_ms,
                        e.kind,
                        e.client_id,
                        e.subject,
                        e.audience,
                        e.scopes,
                        e.jti,
                        e.outcome.as_str(),
                        e.reason,
                        event.prev_hash,
                        event.hash,
                    ])
                    .map_err(db)?;
                prev.clone_from(&event.hash);
                events.push(event);
            }
            chained.push(events);
        }
    }
    tx.prepare_cached("UPDATE audit_head SET hash = ?1 WHERE id = 1")
        .and_then(|mut head| head.execute([&prev]))
        .map_err(db)?;
    tx.commit().map_err(db)?;
    Ok(chained)
}
