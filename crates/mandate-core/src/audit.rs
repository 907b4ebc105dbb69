//! The audit writer: events are batched into one store transaction, and each
//! caller waits until its event is durable before it answers its client. Under
//! load a batch forms while the previous one commits, so durability costs one
//! commit per batch rather than one per token.

use std::sync::Arc;

use mandate_audit::NewEvent;
use tokio::sync::{mpsc, oneshot};

use crate::store::Store;
use crate::Error;

/// Most events committed in one transaction.
pub const MAX_AUDIT_BATCH: usize = 1024;
/// Events waiting for the writer before callers wait for room.
const QUEUE_DEPTH: usize = 8192;

type Pending = (NewEvent, oneshot::Sender<bool>);

/// Handle to the audit writer. Cloning shares the writer.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Pending>,
}

impl AuditLog {
    /// Starts the writer task. It stops when every handle is dropped, after
    /// writing what was queued.
    pub fn start(store: Arc<dyn Store>) -> (Self, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let task = tokio::spawn(write_batches(store, rx));
        (Self { tx }, task)
    }

    /// Appends `event` and waits until it is durable.
    pub async fn record(&self, event: NewEvent) -> Result<(), Error> {
        let (done, written) = oneshot::channel();
        self.tx
            .send((event, done))
            .await
            .map_err(|_| Error::AuditUnavailable)?;
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
        let (done, _ignored) = oneshot::channel();
        if self.tx.send((event, done)).await.is_err() {
            tracing::error!("audit writer stopped; a gateway decision was not recorded");
        }
    }
}

async fn write_batches(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_AUDIT_BATCH);
    while rx.recv_many(&mut batch, MAX_AUDIT_BATCH).await > 0 {
        let events = batch.iter().map(|(e, _)| e.clone()).collect();
        let ok = match store.append_audit(events).await {
            Ok(_) => true,
            Err(e) => {
                tracing::error!(error = %e, events = batch.len(), "audit batch failed; refusing the requests it covers");
                false
            }
        };
        for (_, done) in batch.drain(..) {
            let _ = done.send(ok);
        }
    }
}
