//! What the daemon offers its admin API: [`Backend`] (submit, list, inspect, pause, resume,
//! cancel, report, readiness) and the types that cross it. The admin HTTP layer (`admin`)
//! speaks only this; the daemon (`daemon::Daemon`) implements it.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a job input comes from.
#[derive(Debug, Clone)]
pub enum Input {
    /// A file the daemon can read.
    Path(PathBuf),
    /// An upload already streamed to a file in [`Backend::staging_dir`]; the backend takes it
    /// over (moves or removes it).
    Staged {
        /// File name as uploaded.
        name: String,
        /// The staged file.
        path: PathBuf,
    },
    /// Uploaded bytes (multipart), with the name the client gave.
    Bytes {
        /// File name as uploaded (for messages and the job's metadata).
        name: String,
        /// Contents.
        bytes: bytes::Bytes,
    },
}

/// A job to submit.
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// Template (TOML).
    pub template: Input,
    /// Recipients (CSV).
    pub recipients: Input,
    /// The operator's choices.
    pub options: SubmitOptions,
}

/// The operator's choices for a submit (`POST /jobs?allow_repeat=true&encoding=…`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SubmitOptions {
    /// Send even to citizens who already have a message of this campaign (recorded in the job).
    pub allow_repeat: bool,
    /// How the CSV is decoded, over the template's `encoding` (e.g. `windows-1252`).
    pub encoding: Option<String>,
    /// The sheet of a workbook to read, over the template's `sheet`.
    pub sheet: Option<String>,
}

/// A job's life, as the admin API shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Reading the CSV into the store.
    Ingesting,
    /// Sending and polling.
    Running,
    /// Sending is outside its send window (polls go on).
    Waiting,
    /// Paused by an operator (polls go on).
    Paused,
    /// Cancelled: nothing more is sent; what was sent is still polled.
    Cancelled,
    /// Every recipient has an outcome.
    Done,
    /// Stopped by an error (see `error`); resumable after the cause is fixed.
    Failed,
}

/// A job as `GET /jobs/{id}` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobView {
    /// Job id.
    pub id: String,
    /// State.
    pub state: JobState,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Template file name.
    pub template: String,
    /// Recipients file name.
    pub recipients: String,
    /// CSV rows (data lines).
    pub rows: u64,
    /// Recipients per outcome name (`queued`, `processed`, `rejected`, `invalid`, …).
    pub counts: BTreeMap<String, u64>,
    /// Recipients with a final outcome.
    pub settled: u64,
    /// Recently achieved sends per second for this job.
    pub sends_per_second: f64,
    /// Estimated seconds until every recipient is settled (send windows included), when known.
    pub eta_seconds: Option<f64>,
    /// Whether its send window is open now.
    pub send_window_open: bool,
    /// The error that stopped it, if any.
    pub error: Option<String>,
}

/// The IO calls a job will cost, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CallEstimate {
    /// POST /messages.
    pub sends: u64,
    /// GET /messages (polls).
    pub polls: u64,
    /// POST /profiles (filter = "profile").
    pub profile_checks: u64,
    /// GET /subscriptions-feed (days to sync before the job can use the set).
    pub feed_days: u64,
    /// Total.
    pub total: u64,
}

/// What a dry run found: nothing was sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DryRunReport {
    /// The job id the same inputs would get.
    pub id: String,
    /// CSV rows.
    pub rows: u64,
    /// Recipients per predicted outcome (`send`, `not_subscribed`, `invalid`, `duplicate`,
    /// `duplicate_conflict`, `already_sent` (the campaign ledger);
    /// `profile_check` when the profile filter needs IO to decide, `feed_check` when the
    /// subscriber set must be synced first).
    pub counts: BTreeMap<String, u64>,
    /// The first invalid rows (line, field, reason), at most 100; conflicting duplicates
    /// (`duplicate_conflict`) first.
    pub invalid: Vec<InvalidRow>,
    /// Rows to send whose due date is in the past (IO accepts them): count and first lines.
    #[serde(default)]
    pub due_date_in_past: crate::dispatch::DueDateWarnings,
    /// IO calls the job will cost.
    pub calls: CallEstimate,
    /// Seconds the job will take at the configured budget and send windows.
    pub estimated_seconds: f64,
    /// The sheet read, when the recipients file is a workbook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sheet: Option<String>,
    /// Merged cell ranges in that sheet (.xlsx): each reads as its first cell, the rest of
    /// the range as empty.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub merged_cells: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// An invalid row, for a dry run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InvalidRow {
    /// CSV line.
    pub line: u64,
    /// Field.
    pub field: String,
    /// Reason.
    pub reason: String,
}

/// The answer to a submit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Submitted {
    /// A job was created (or these exact inputs were submitted before: the same job).
    Job {
        /// Its id.
        id: String,
        /// It existed already.
        existing: bool,
    },
    /// A dry run.
    DryRun(DryRunReport),
}

/// Readiness (`GET /readyz`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Readiness {
    /// The store is open.
    pub store: bool,
    /// The subscriber set is loaded (false while never synced).
    pub subscriber_set: bool,
    /// Why not ready, when not.
    pub detail: Option<String>,
}

impl Readiness {
    /// Ready to take jobs.
    pub fn ready(&self) -> bool {
        self.store && self.subscriber_set
    }
}

/// Errors the admin API turns into problem+json answers.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// No such job (404).
    #[error("no job {0}")]
    NotFound(String),
    /// The request is unusable (400): the detail says what and where (file, line, field).
    #[error("{0}")]
    BadRequest(String),
    /// Not allowed by the daemon's configuration (403), e.g. a path submit outside
    /// `admin.input_dirs`.
    #[error("{0}")]
    Forbidden(String),
    /// The job's state does not allow it (409), e.g. resuming a cancelled job.
    #[error("{0}")]
    Conflict(String),
    /// The daemon is shutting down or not ready (503).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

/// The report's fiscal codes: masked (default) or clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Codes {
    /// `RSSMRA*******62S`.
    #[default]
    Masked,
    /// The clear codes (the operator asked).
    Clear,
}

/// What the daemon offers the admin API.
pub trait Backend: Send + Sync + 'static {
    /// Creates (or finds) the job for these inputs, or dry-runs them. Inputs are checked
    /// whole before anything is created: a bad template or CSV header is a
    /// [`BackendError::BadRequest`] and nothing is left half-created.
    fn submit(
        &self,
        spec: JobSpec,
        dry_run: bool,
    ) -> impl Future<Output = Result<Submitted, BackendError>> + Send;
    /// Every job, newest first.
    fn list(&self) -> impl Future<Output = Result<Vec<JobView>, BackendError>> + Send;
    /// One job.
    fn get(&self, id: &str) -> impl Future<Output = Result<JobView, BackendError>> + Send;
    /// Stops sending (polls go on) until resumed.
    fn pause(&self, id: &str) -> impl Future<Output = Result<JobView, BackendError>> + Send;
    /// Resumes a paused (or failed) job.
    fn resume(&self, id: &str) -> impl Future<Output = Result<JobView, BackendError>> + Send;
    /// Stops sending for good; what was sent keeps being polled; queued recipients end as
    /// `cancelled`.
    fn cancel(&self, id: &str) -> impl Future<Output = Result<JobView, BackendError>> + Send;
    /// The per-recipient report as an `.xlsx` workbook (`?format=xlsx`), streamed in chunks.
    /// A backend without workbooks answers 404.
    fn report_xlsx(
        &self,
        id: &str,
        codes: Codes,
    ) -> impl Future<
        Output = Result<
            futures::stream::BoxStream<'static, Result<bytes::Bytes, BackendError>>,
            BackendError,
        >,
    > + Send {
        let _ = (id, codes);
        async {
            Err(BackendError::NotFound(
                "this server has no .xlsx reports".to_owned(),
            ))
        }
    }
    /// The per-recipient report as CSV bytes, streamed in chunks.
    fn report(
        &self,
        id: &str,
        codes: Codes,
    ) -> impl Future<
        Output = Result<
            futures::stream::BoxStream<'static, Result<bytes::Bytes, BackendError>>,
            BackendError,
        >,
    > + Send;
    /// Readiness.
    fn readiness(&self) -> impl Future<Output = Readiness> + Send;
    /// A directory where the admin API may stream uploads ([`Input::Staged`]) instead of
    /// holding them in memory; None: uploads come as [`Input::Bytes`].
    fn staging_dir(&self) -> Option<PathBuf> {
        None
    }
}
