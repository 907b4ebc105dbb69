//! The audit writer: events are batched into one store transaction, and each
//! caller waits until its event is durable before it answers its client. Under
//! load a batch forms while the previous one commits, so durability costs one
//! commit per batch rather than one per token.
//!
//! Decisions queued without waiting ([`AuditLog::enqueue`], the gateway's)
//! linger up to [`LINGER`] for company when no caller waits on the batch:
//! at low load that turns a commit per request into a commit per few
//! milliseconds, off every request's path. While it lingers the writer
//! sleeps rather than waking for each event; a caller who waits
//! ([`AuditLog::record`]) cuts the lingering short.

use std::sync::Arc;
use std::time::Duration;

use mandate_audit::NewEvent;
use tokio::sync::{mpsc, oneshot, Notify};

use crate::store::Store;
use crate::Error;

/// Most events committed in one transaction.
pub const MAX_AUDIT_BATCH: usize = 1024;
/// Events waiting for the writer before callers wait for room.
const QUEUE_DEPTH: usize = 8192;
/// Longest a batch of events nobody waits for is held open for more.
pub const LINGER: Duration = Duration::from_millis(10);

/// An event and, when its caller waits for it, where to say it is durable.
type Pending = (NewEvent, Option<oneshot::Sender<bool>>);

/// Handle to the audit writer. Cloning shares the writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
    /// Rung by callers who wait, so a lingering batch is written at once.
    urgent: Arc<Notify>,
}

impl AuditLog {
    /// Starts the writer task. It stops when every handle is dropped, after
    /// writing what was queued.
    pub fn start(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let urgent = Arc::new(Notify::new());
        let task = tokio::spawn(write_batches(store, rx, Arc::clone(&urgent)));
        (Self { tx, urgent }, task)
    }

    /// Appends `event` and waits until it is durable.
    pub async fn record(&self, event: NewEvent) -> Result<(), Error> {
        let (done, written) = oneshot::channel();
        self.tx
            .send((event, Some(done)))
            .await
            .map_err(|_| Error::AuditUnavailable)?;
        self.urgent.notify_one();
        match written.await {
            Ok(true) => Ok(()),
            _ => Err(Error::AuditUnavailable),
        }
    }
}

impl AuditLog {
    /// Queues `event` without waiting for it to be durable: for decisions on
    /// a hot path (the gateway), where the answer does not depend on the
    /// record. The queue is bounded: when the writer falls behind, callers
    /// wait here for room, so memory cannot grow without limit.
    pub async fn enqueue(&self, event: NewEvent) {
        if self.tx.send((event, None)).await.is_err() {
            tracing::error!("audit writer stopped; a gateway decision was not recorded");
        }
    }
}

async fn write_batches(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Pending>,
    urgent: Arc<Notify>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_AUDIT_BATCH);
    while rx.recv_many(&mut batch, MAX_AUDIT_BATCH).await > 0 {
        if batch.len() < MAX_AUDIT_BATCH && batch.iter().all(|(_, done)| done.is_none()) {
            tokio::select! {
                () = tokio::time::sleep(LINGER) => {}
                () = urgent.notified() => {}
            }
            while batch.len() < MAX_AUDIT_BATCH {
                let Ok(pending) = rx.try_recv() else { break };
                batch.push(pending);
            }
        }
        let (events, waiting): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let count = events.len();
        // Nobody waits for a batch of decisions alone: it need not be synced
        // before the next batch (see `Store::append_audit_unsynced`).
        let appended = if waiting.iter().all(Option::is_none) {
            store.append_audit_unsynced(events).await
        } else {
            store.append_audit(events).await
        };
        let ok = match appended {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, events = count, "audit batch failed; refusing the requests it covers");
                false
            }
        };
        for done in waiting.into_iter().flatten() {
            let _ = done.send(ok);
        }
    }
}
