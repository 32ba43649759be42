//! [`DispatchError`]: what stops the engine (preparing a job, running it, reporting it).

use crate::job;
use crate::store::StoreError;

/// Errors of the dispatch engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A group commit failed: no further request leaves without its durable intent.
    #[error("store commit failed: {0}")]
    Commit(String),
    /// The template or the CSV is unusable as a whole (per-row problems are outcomes instead).
    #[error(transparent)]
    Job(#[from] job::JobError),
    /// IO refuses the API key (401) again and again: the job stops, nothing is lost.
    #[error("IO refuses the API key (401 Unauthorized) repeatedly; check io.api_key")]
    Unauthorized,
    /// IO's answers show a wrong configuration (a redirect: check `io.base_url`); the job
    /// stops with nothing lost: the recipient in hand is queued again.
    #[error("{0}")]
    IoMisconfigured(String),
    /// No job with this id in the store.
    #[error("no job {0} in the store")]
    UnknownJob(String),
    /// The job's filter needs something this run does not have.
    #[error("{0}")]
    Unsupported(String),
    /// Stored data does not decode.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// A task or thread failed unexpectedly.
    #[error("internal error: {0}")]
    Internal(String),
    /// The job has no row that can be sent: every one is invalid (or the file has none).
    #[error("{0}")]
    NothingToSend(String),
}
