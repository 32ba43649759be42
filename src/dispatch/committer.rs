//! Group commit: [`Committer`] collects recipient state transitions from every in-flight task and
//! writes them to the store in one batch with one flush, so durability costs one fsync per batch
//! instead of one per message.
//!
//! A transition that must be durable before its sender goes on (the `Sending` intent before the
//! POST leaves; the `Submitted` id before the recipient counts as submitted) carries an ack
//! channel, answered only after the flush that covers it. Transitions without an ack (poll
//! results, which can be redone) still ride in the next batch, and the next flush covers them.

use tokio::sync::{mpsc, oneshot};

use crate::store::{RecipientState, Store, StoreError};

/// Most transitions written in one batch.
pub const MAX_BATCH: usize = 4096;
/// Queue depth between tasks and the committer.
pub const CHANNEL_DEPTH: usize = 8192;

/// One change to the store.
#[derive(Debug)]
pub enum Change {
    /// A recipient's new state.
    State {
        /// Recipient line.
        line: u64,
        /// New state.
        state: RecipientState,
    },
}

struct Request {
    changes: Vec<Change>,
    ack: Option<oneshot::Sender<Result<(), String>>>,
    flush: bool,
}

/// Handle to send transitions to the committer task of one job.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Request>,
}

impl Committer {
    /// Starts the committer task for `job`. It ends when every handle is dropped, after writing
    /// and flushing what it was given.
    pub fn spawn(
        store: Store,
        job: crate::store::JobId,
    ) -> (Committer, tokio::task::JoinHandle<Result<(), StoreError>>) {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let task = tokio::spawn(run(store, job, rx));
        (Committer { tx }, task)
    }

    /// Writes `changes` and returns once they are flushed to disk.
    pub async fn durable(&self, changes: Vec<Change>) -> Result<(), CommitError> {
        self.acked(changes, true).await
    }

    /// Writes `changes` and returns once they are applied (readable), without waiting for the
    /// disk: for transitions that can be redone after a crash but must be visible before the
    /// caller reads the store again (an empty call is a barrier: everything queued before it is
    /// applied, as the cancel's scan needs).
    pub async fn applied(&self, changes: Vec<Change>) -> Result<(), CommitError> {
        self.acked(changes, false).await
    }

    async fn acked(&self, changes: Vec<Change>, flush: bool) -> Result<(), CommitError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Request {
                changes,
                ack: Some(ack),
                flush,
            })
            .await
            .map_err(|_| CommitError::Stopped)?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(CommitError::Store(reason)),
            Err(_) => Err(CommitError::Stopped),
        }
    }

    /// Queues `changes` for the next batch without waiting for the flush.
    pub async fn lazy(&self, changes: Vec<Change>) -> Result<(), CommitError> {
        self.tx
            .send(Request {
                changes,
                ack: None,
                flush: false,
            })
            .await
            .map_err(|_| CommitError::Stopped)
    }
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CommitError {
    /// The committer stopped (shutdown, or an earlier store error).
    #[error("the store committer has stopped")]
    Stopped,
    /// The store refused the batch.
    #[error("store commit failed: {0}")]
    Store(String),
}

async fn run(
    store: Store,
    job: crate::store::JobId,
    mut rx: mpsc::Receiver<Request>,
) -> Result<(), StoreError> {
    let mut pending: Vec<Request> = Vec::new();
    while let Some(first) = rx.recv().await {
        pending.push(first);
        let mut count = pending[0].changes.len();
        // Take whatever else is already waiting: everything that queued up while the previous
        // flush ran shares this one.
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.changes.len();
                    pending.push(req);
                }
                Err(_) => break,
            }
        }
        let needs_flush = pending.iter().any(|r| r.flush);
        let mut batch = store.batch();
        for req in &pending {
            for change in &req.changes {
                match change {
                    Change::State { line, state } => batch.set_state(&job, *line, state.clone()),
                }
            }
        }
        let started = tokio::time::Instant::now();
        let result = if needs_flush {
            store.commit(batch).await
        } else {
            store.commit_no_flush(batch)
        };
        tracing::debug!(
            changes = count,
            flushed = needs_flush,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "Group commit."
        );
        match result {
            Ok(()) => {
                for req in pending.drain(..) {
                    if let Some(ack) = req.ack {
                        let _ = ack.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                let reason = e.to_string();
                for req in pending.drain(..) {
                    if let Some(ack) = req.ack {
                        let _ = ack.send(Err(reason.clone()));
                    }
                }
                // A store that fails a write cannot be trusted with the next one: stop, so
                // every sender sees `Stopped` and no POST leaves without its durable intent.
                return Err(e);
            }
        }
    }
    store.flush().await
}
