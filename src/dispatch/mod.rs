//! The dispatch engine: from a CSV job to a final status per recipient. [`prepare_job`] creates
//! or resumes a job (its identity derives from its inputs) and ingests the CSV into the store;
//! [`run_job`] sends, polls and records until every recipient has an outcome;
//! [`report`] exports the outcomes.
//!
//! Submodules, along the path of one job: `prepare.rs` (create or resume a job, ingest its CSV),
//! `ledger.rs` (the campaign ledger's rules: another job's hold, the values CRC, the backfill),
//! `meta.rs` (the job's metadata: changes, flags, done), `context.rs` (what a running job needs:
//! [`JobContext`], [`DispatchSettings`]), `recovery.rs` (what a run finds at its start:
//! `sending` → `unknown`, the poll queue rebuilt; `resend-unknown`), `scheduler.rs` (the job loop: which call
//! gets the next permit of the budget), `task.rs` (one call's work and what it reports back),
//! `profile.rs` (one profile check), [`claim`] (the campaign ledger's step before each send:
//! claim the citizen, atomic), `send.rs` (one POST, its intent and outcome durable),
//! [`classify`] (what a POST result means: the no-duplicate rule), `poll.rs` (one poll of a
//! submitted message), [`poll_queue`] (what to poll next), [`poll_schedule`] (when to poll),
//! [`committer`] (group commit), [`control`] (pause, cancel, send windows), [`counters`] (live
//! counts), [`report`] / [`report_xlsx`] (CSV and workbook), `error.rs` ([`DispatchError`]).
//! This file only declares them and re-exports the engine's API. The scheduler's scenarios
//! (`scenarios.rs`) run in paused time against a table of IO answers behind
//! [`crate::io_api::MessagesApi`].

pub mod claim;
pub mod classify;
pub mod committer;
pub mod control;
pub mod counters;
pub mod poll_queue;
pub mod poll_schedule;
pub mod report;
pub mod report_xlsx;

mod context;
mod error;
mod ledger;
mod meta;
mod poll;
mod prepare;
mod profile;
mod recovery;
mod scheduler;
mod send;
mod task;

pub use crate::model::job::{DueDateWarnings, JobMeta, JobPhase, WARNING_LINES};

pub use context::{job_options, DispatchSettings, JobContext, DEFAULT_POLL_DEADLINE};
pub use counters::Counters;
pub use error::DispatchError;
pub use ledger::{backfill_campaign_ledger, delete_job, held_state, values_crc};
pub use meta::{mark_done, set_job_flags, update_meta};
pub use prepare::{prepare_job, prepare_job_with, PrepareOptions, Prepared, INGEST_BATCH};
pub use recovery::{requeue_unknown, Requeued};
pub use scheduler::{run_job, RunSummary};

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
