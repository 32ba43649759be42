//! Group commit: [`Committer`] collects recipient state transitions from every in-flight task and
//! writes them to the store together, in the order they were queued ([`Store::apply_in_order`]),
//! with one sync ([`Store::flush`]: sled's flush and `fdatasync`), so durability costs one sync
//! per batch instead of one per message.
//!
//! A transition that must be durable before its sender goes on (the `Sending` intent before the
//! POST leaves; the `Submitted` id before the recipient counts as submitted) carries an ack
//! channel, answered only after the flush that covers it. Transitions without an ack (poll
//! results, which can be redone) still ride in the next batch, and the next flush covers them.
//!
//! Grouping: a batch that must be synced waits up to [`LINGER`] for more transitions unless
//! [`GROUP_TARGET`] acked requests are already waiting, and a batch nobody waits for (poll
//! results) waits up to [`LAZY_LINGER`]: with 256 sends in flight one sync carries the intents
//! of the next sends and the outcomes of the finished ones, instead of one or two transitions
//! (README, Performance: 1.87 → ≤ 0.1 syncs per recipient). A slow disk makes the batches
//! larger, not the syncs more: requests pile up while a sync runs and the next batch takes them
//! all without lingering.

use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::model::RecipientState;
use crate::store::{Store, StoreError};

/// Most transitions written in one batch.
pub const MAX_BATCH: usize = 4096;
/// Queue depth between tasks and the committer.
pub const CHANNEL_DEPTH: usize = 8192;
/// A batch to sync waits at most this long for more transitions.
pub const LINGER: Duration = Duration::from_millis(2);
/// A batch nobody waits for (redoable transitions only) waits at most this long.
pub const LAZY_LINGER: Duration = Duration::from_millis(20);
/// A batch to sync is written at once when this many waiting requests are in it.
pub const GROUP_TARGET: usize = 64;

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
        self.queue(changes, flush).await?.wait().await
    }

    /// Queues `changes` for a durable commit and returns at once: what was queued before this
    /// call is in the same batch or an earlier one (FIFO), what is queued after it in the same
    /// or a later one. [`Pending::wait`] returns once they are flushed. The send path queues its
    /// outcome, releases its in-flight slot, then waits: the next send's intent can ride in the
    /// same sync as this outcome, and never in an earlier one.
    pub async fn queue_durable(&self, changes: Vec<Change>) -> Result<Pending, CommitError> {
        self.queue(changes, true).await
    }

    async fn queue(&self, changes: Vec<Change>, flush: bool) -> Result<Pending, CommitError> {
        let (ack, rx) = oneshot::channel();
        self.tx
            .send(Request {
                changes,
                ack: Some(ack),
                flush,
            })
            .await
            .map_err(|_| CommitError::Stopped)?;
        Ok(Pending { rx })
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

/// Changes queued by [`Committer::queue_durable`], not known durable yet.
#[must_use = "the changes are durable only once `wait` returns Ok"]
pub struct Pending {
    rx: oneshot::Receiver<Result<(), String>>,
}

impl Pending {
    /// Returns once the changes are durable (or the commit failed).
    pub async fn wait(self) -> Result<(), CommitError> {
        match self.rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(reason)) => Err(CommitError::Store(reason)),
            Err(_) => Err(CommitError::Stopped),
        }
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
        let opened = tokio::time::Instant::now();
        pending.push(first);
        let mut count = pending[0].changes.len();
        let mut waiting = usize::from(pending[0].ack.is_some());
        // Take whatever else is already waiting: everything that queued up while the previous
        // flush ran shares this one.
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(req) => {
                    count += req.changes.len();
                    waiting += usize::from(req.ack.is_some());
                    pending.push(req);
                }
                Err(_) => break,
            }
        }
        // Then linger for more, unless the batch is big enough already (see the module doc).
        while count < MAX_BATCH && waiting < GROUP_TARGET {
            let linger = if waiting > 0 { LINGER } else { LAZY_LINGER };
            match tokio::time::timeout_at(opened + linger, rx.recv()).await {
                Ok(Some(req)) => {
                    count += req.changes.len();
                    waiting += usize::from(req.ack.is_some());
                    pending.push(req);
                }
                Ok(None) | Err(_) => break,
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
        // Each transition stands alone: written in order without sled's atomic batch (which
        // costs two extra writes to disk), and one flush covers them all.
        let result = match store.apply_in_order(batch) {
            Ok(()) if needs_flush => store.flush().await,
            other => other,
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
