//! The one job runner: an ingested job, on a [`Runtime`], from its preflight to its end.
//! `corriere send`, `resend-unknown`, the daemon, the demo and the load test all run jobs
//! through [`run`]; what differs between them (progress bars, log lines, the daemon's live
//! counts) is a [`RunObserver`].
//!
//! The steps: the service preflight (a job IO is certain to refuse stops here, nothing sent) →
//! the subscriber set for `filter = "feed"` (synced first when not fresh) → the job's context
//! loaded from the store → [`dispatch::run_job`] (send, poll, record) → done: the job marked
//! done, when, and its polls per message kept for the dry run's estimates.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dispatch::{self, DispatchError, JobContext, RunSummary};
use crate::job::FilterMode;
use crate::model::Outcome;
use crate::runtime::{FeedObserver, FreshError, Runtime};
use crate::service::{preflight_job, PreflightReport, ServiceError};
use crate::store::{JobId, Store};

/// Polls per message a dry run assumes before any job has measured it (the fake and IO
/// process most messages before the first, well-timed poll: 1.02–1.23 measured).
pub const DEFAULT_POLLS_PER_MESSAGE: f64 = 1.05;
/// The store's record of the polls per message measured by finished jobs.
const POLLS_PER_MESSAGE_META: &str = "dispatch.polls_per_message";
/// Store metadata key prefix: when a job was done (ms since the epoch), for upload retention.
pub const DONE_AT_META: &str = "daemon.done_at.";
/// Store metadata key prefix: the IO calls a job's runs made in all (sends, polls, profile
/// checks), for its report's calls per message.
const CALLS_META: &str = "runner.calls.";
/// Jobs with fewer sends than this do not move the measured polls per message.
const POLLS_PER_MESSAGE_MIN_SENDS: u64 = 100;

/// Why a run stopped before its end.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The engine or the store failed.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The preflight could not run (IO unreachable, the job unreadable).
    #[error("service preflight: {0}")]
    Preflight(#[source] ServiceError),
    /// The preflight found problems that make the campaign fail: nothing was sent.
    #[error("the service preflight refuses this job (nothing was sent):\n{table}")]
    Refused {
        /// How many blocking findings.
        blocking: usize,
        /// The preflight's table of findings.
        table: String,
    },
    /// The job filters with the feed and its subscriber set is not available.
    #[error(transparent)]
    Subscribers(#[from] FreshError),
}

/// Hears a run's steps, for progress displays and the daemon's live view. Every method has a
/// default that does nothing.
pub trait RunObserver: FeedObserver {
    /// The preflight ran (its table, passed or not).
    fn preflight(&self, _report: &PreflightReport) {}
    /// The job's context is loaded and sending starts: live counts and controls are in `ctx`.
    /// An error stops the run before its first call.
    fn started(&self, _ctx: &Arc<JobContext>) -> Result<(), DispatchError> {
        Ok(())
    }
    /// Sending and polling stopped (the job's end, an interruption or an error).
    fn stopped(&self) {}
}

impl RunObserver for crate::runtime::Quiet {}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunEnd {
    /// What the scheduler did; None when the run stopped before sending (an interruption
    /// during the preflight or the feed sync).
    pub summary: Option<RunSummary>,
}

impl RunEnd {
    /// Stopped before every recipient had an outcome (shutdown, cancel).
    pub fn interrupted(&self) -> bool {
        self.summary
            .as_ref()
            .is_none_or(|s| s.interrupted || !s.completed)
    }
}

/// Runs an ingested job: preflight, subscribers, send and poll until every recipient has an
/// outcome or `stop` is cancelled; a complete job is marked done.
pub async fn run(
    rt: &Runtime,
    job: &JobId,
    observer: &dyn RunObserver,
    stop: &CancellationToken,
) -> Result<RunEnd, RunError> {
    let store = rt.store();
    if let Some(preflight) = rt.preflight() {
        let report = preflight_job(
            rt.client(),
            &preflight.settings,
            store,
            job,
            preflight.source_ip,
        )
        .await
        .map_err(RunError::Preflight)?;
        if let Some(report) = report {
            observer.preflight(&report);
            let blocking = report.blocking().count();
            if blocking > 0 {
                return Err(RunError::Refused {
                    blocking,
                    table: report.table(),
                });
            }
            info!(job = %job, "Service preflight passed.");
        }
    }
    if stop.is_cancelled() {
        return Ok(RunEnd { summary: None });
    }
    let options = dispatch::job_options(store, job)?;
    let subscribers = if matches!(options.filter, FilterMode::Feed) {
        match rt.fresh_subscribers(observer, stop).await {
            Ok(s) => Some(s),
            Err(FreshError::Interrupted) => return Ok(RunEnd { summary: None }),
            Err(e) => return Err(e.into()),
        }
    } else {
        None
    };
    if stop.is_cancelled() {
        return Ok(RunEnd { summary: None });
    }
    let ctx = {
        let (store, job) = (store.clone(), job.clone());
        let (client, budget, settings) = (
            Arc::new(rt.client().clone()) as Arc<dyn crate::io_api::MessagesApi>,
            rt.budget().clone(),
            rt.settings().clone(),
        );
        // Loading scans the job's recipients: off the async workers.
        tokio::task::spawn_blocking(move || {
            JobContext::load(store, job, client, budget, settings, subscribers)
        })
        .await
        .map_err(|e| DispatchError::Internal(e.to_string()))??
    };
    let ctx = Arc::new(ctx);
    observer.started(&ctx)?;
    let summary = dispatch::run_job(ctx, stop.clone()).await;
    observer.stopped();
    let summary = summary?;
    info!(
        job = %job,
        sends = summary.sends,
        polls = summary.polls,
        profile_checks = summary.profile_checks,
        retries = summary.send_retries,
        completed = summary.completed,
        "Run ended."
    );
    record_calls(
        store,
        job,
        summary.sends + summary.polls + summary.profile_checks,
    );
    if summary.completed {
        dispatch::mark_done(store, job)?;
        info!(job = %job, sends = summary.sends, polls = summary.polls, "Job done.");
        let now = rt.settings().clock.now_ms().to_string();
        if let Err(e) = store.meta_put(&format!("{DONE_AT_META}{job}"), now.as_bytes()) {
            warn!(job = %job, error = %e, "Could not record when the job was done; its uploads are kept longer.");
        }
        record_polls_per_message(store, summary.sends, summary.polls);
    }
    Ok(RunEnd {
        summary: Some(summary),
    })
}

fn meta_u64(store: &Store, key: &str) -> Option<u64> {
    store
        .meta_get(key)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse().ok())
}

/// Adds a run's IO calls to the job's total (every run of it: resumes, resend-unknown).
fn record_calls(store: &Store, job: &JobId, calls: u64) {
    let key = format!("{CALLS_META}{job}");
    let total = meta_u64(store, &key).unwrap_or(0) + calls;
    if let Err(e) = store.meta_put(&key, total.to_string().as_bytes()) {
        warn!(job = %job, error = %e, "Could not record the job's IO calls.");
    }
}

/// What the runs of a job add to its report's facts: the service, when it was done, and its IO
/// calls per message IO created (every run counted).
pub fn report_facts(store: &Store, job: &JobId, service_id: Option<&str>) -> Vec<(String, String)> {
    let mut facts = Vec::new();
    if let Some(id) = service_id {
        facts.push(("service".to_owned(), id.to_owned()));
    }
    if let Some(done) = meta_u64(store, &format!("{DONE_AT_META}{job}"))
        .and_then(|ms| chrono::DateTime::from_timestamp_millis(ms as i64))
    {
        facts.push(("finished".to_owned(), done.to_rfc3339()));
    }
    let created: u64 = store
        .count_states(job)
        .map(|c| {
            [
                Outcome::Submitted,
                Outcome::Processed,
                Outcome::Rejected,
                Outcome::FailedStatus,
                Outcome::PollExpired,
            ]
            .iter()
            .filter_map(|k| c.get(k))
            .sum()
        })
        .unwrap_or(0);
    if let (Some(calls), true) = (meta_u64(store, &format!("{CALLS_META}{job}")), created > 0) {
        facts.push((
            "IO calls per message".to_owned(),
            format!("{:.2}", calls as f64 / created as f64),
        ));
    }
    facts
}

/// The polls per message measured by finished jobs (a moving average), or
/// [`DEFAULT_POLLS_PER_MESSAGE`] before any.
pub fn polls_per_message(store: &Store) -> f64 {
    store
        .meta_get(POLLS_PER_MESSAGE_META)
        .ok()
        .flatten()
        .and_then(|v| String::from_utf8(v).ok())
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v >= 0.0)
        .unwrap_or(DEFAULT_POLLS_PER_MESSAGE)
}

fn record_polls_per_message(store: &Store, sends: u64, polls: u64) {
    if sends < POLLS_PER_MESSAGE_MIN_SENDS {
        return;
    }
    let measured = polls as f64 / sends as f64;
    let old = polls_per_message(store);
    // A moving average: recent jobs count most.
    let value = if old == DEFAULT_POLLS_PER_MESSAGE {
        measured
    } else {
        0.7 * measured + 0.3 * old
    };
    if let Err(e) = store.meta_put(POLLS_PER_MESSAGE_META, value.to_string().as_bytes()) {
        warn!(error = %e, "Could not record the measured polls per message.");
    }
}
