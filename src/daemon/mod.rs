//! The daemon (`corriere run`): [`Daemon`] runs many jobs at once under the one shared rate
//! budget (IO's limit is per API user, across all of its services), keeps the subscriber set
//! fresh with a daily feed sync, honours pause / resume / cancel and send windows, and drains
//! cleanly on shutdown. [`api`] is what it offers the admin API; [`Daemon`] implements it.
//!
//! # A job's life in the daemon
//! submit (inputs checked whole, nothing created on a bad one) → runner task: ingest →
//! (feed filter: wait for a fresh set) → `dispatch::run_job` until every recipient is settled.
//! A restart finds every unfinished job in the store and starts its runner again; a job's
//! pause / cancel is kept in its metadata. Fairness between jobs comes from the budget: each
//! call waits in the same FIFO queue for an in-flight slot and a limiter cell.
//!
//! # Files
//! This file is the registry (the jobs it knows, start, drain). `runs` starts and
//! watches a job's run (ingest, then [`crate::runner::run`]); `feed_schedule` syncs the feed
//! daily; `uploads` stages inputs and sweeps them; `dry_run` plans a job without sending;
//! `backend` is the API face ([`api::Backend`]: submit, views, pause, report, readiness);
//! `report_stream` streams a report in chunks; [`inputs`] checks path submits.

pub mod api;
mod backend;
mod dry_run;
mod feed_schedule;
pub mod inputs;
mod report_stream;
mod runs;
mod uploads;

pub use dry_run::{dry_run, DryRun};
use report_stream::{stream_blocking, ReportStream};
pub use uploads::TEMPLATE_MAX_BYTES;
use uploads::{read_template, StagedCleanup};

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::dispatch::JobContext;
use crate::job::{FileEncoding, JobInputs, Template};
use crate::model::job::{JobMeta, JobPhase};
use crate::model::Outcome;
use crate::runtime::Runtime;
use crate::store::{JobId, Store};

use inputs::UploadRefs;

use api::{BackendError, Input};

/// Samples kept for a job's send rate (one per [`RATE_SAMPLE_EVERY`]).
const RATE_SAMPLES: usize = 30;
/// How often a job's settled count is sampled for its rate and ETA.
const RATE_SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Invalid rows listed in a dry run's answer.
const DRY_RUN_INVALID_LISTED: usize = 100;
/// How often finished jobs' uploads are checked against `admin.upload_retention`.
const UPLOAD_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// Everything the daemon needs, built by the binary from configuration.
pub struct DaemonParts {
    /// Store, client, budget, feed (`Off`, or opened at start and synced on a schedule),
    /// engine settings and the preflight: what every job runs on.
    pub runtime: Arc<Runtime>,
    /// Daily feed sync time (UTC), if any.
    pub feed_sync_at: Option<chrono::NaiveTime>,
    /// Where uploaded inputs are kept (jobs read them again on resume).
    pub uploads_dir: PathBuf,
    /// Directories a path submit may read from, resolved (empty: path submits are refused).
    pub input_dirs: Vec<PathBuf>,
    /// A done job's uploads are removed this long after it was done.
    pub upload_retention: Duration,
}

/// A job the daemon knows.
struct JobEntry {
    id: JobId,
    /// The running job's context (counters, control), once loaded.
    ctx: Mutex<Option<Arc<JobContext>>>,
    /// Why the runner stopped, if it failed.
    error: Mutex<Option<String>>,
    /// The runner is active.
    running: AtomicBool,
    /// Recent (time, settled) samples for the rate and ETA.
    samples: Mutex<VecDeque<(Instant, u64)>>,
    /// Stops this job's runner (resume after a failure starts a new one).
    stop: Mutex<CancellationToken>,
    /// Counts kept when no runner holds live counters (read once from the store).
    final_counts: Mutex<Option<BTreeMap<Outcome, u64>>>,
    /// The operator's choices (`--allow-repeat`, `--encoding`), part of the job's identity.
    inputs: Mutex<JobInputs>,
}

impl JobEntry {
    fn new(id: JobId, parent: &CancellationToken) -> Arc<JobEntry> {
        Arc::new(JobEntry {
            id,
            ctx: Mutex::new(None),
            error: Mutex::new(None),
            running: AtomicBool::new(false),
            samples: Mutex::new(VecDeque::new()),
            stop: Mutex::new(parent.child_token()),
            final_counts: Mutex::new(None),
            inputs: Mutex::new(JobInputs::default()),
        })
    }

    fn inputs(&self) -> JobInputs {
        self.inputs.lock().expect("job inputs lock").clone()
    }

    fn ctx(&self) -> Option<Arc<JobContext>> {
        self.ctx.lock().expect("job ctx lock").clone()
    }
}

struct Inner {
    parts: DaemonParts,
    jobs: Mutex<HashMap<String, Arc<JobEntry>>>,
    accepting: AtomicBool,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    /// Who uses each upload (jobs, requests in progress).
    uploads: UploadRefs,
    /// Jobs whose uploads were let go (retention over) in this process.
    uploads_released: Mutex<HashSet<String>>,
}

/// The daemon. Cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

fn internal(e: impl std::fmt::Display) -> BackendError {
    BackendError::Internal(e.to_string())
}

impl Daemon {
    /// Starts the daemon: resumes every unfinished job in the store and the feed schedule.
    /// Everything stops when `shutdown` is cancelled; then call [`Daemon::drain`].
    pub async fn start(
        parts: DaemonParts,
        shutdown: CancellationToken,
    ) -> Result<Daemon, BackendError> {
        inputs::create_private_dir(&parts.uploads_dir).map_err(|e| {
            internal(format!(
                "cannot create the uploads directory {}: {e}",
                parts.uploads_dir.display()
            ))
        })?;
        // Uploads a crash interrupted are of no use: nobody got a job id for them.
        let staging = parts.uploads_dir.join("staging");
        if staging.exists() {
            let _ = std::fs::remove_dir_all(&staging);
        }
        let daemon = Daemon {
            inner: Arc::new(Inner {
                parts,
                jobs: Mutex::new(HashMap::new()),
                accepting: AtomicBool::new(true),
                shutdown,
                tracker: TaskTracker::new(),
                uploads: UploadRefs::default(),
                uploads_released: Mutex::new(HashSet::new()),
            }),
        };
        let store = daemon.store();
        for job in store.list_jobs().map_err(internal)? {
            let Some(meta) = JobMeta::load(store, &job).map_err(internal)? else {
                continue;
            };
            let entry = JobEntry::new(job.clone(), &daemon.inner.shutdown);
            *entry.inputs.lock().expect("job inputs lock") = inputs_of(&meta);
            daemon
                .inner
                .jobs
                .lock()
                .expect("jobs lock")
                .insert(job.to_string(), entry.clone());
            for p in [&meta.template_path, &meta.recipients_path] {
                if daemon.is_upload(p) && p.exists() {
                    daemon.inner.uploads.add(p);
                }
            }
            if meta.phase != JobPhase::Done {
                info!(job = %job, phase = ?meta.phase, "Resuming a job.");
                daemon.spawn_runner(
                    entry,
                    meta.template_path.clone(),
                    meta.recipients_path.clone(),
                );
            }
        }
        {
            let d = daemon.clone();
            daemon
                .inner
                .tracker
                .spawn(async move { d.upload_sweeps().await });
        }
        if daemon.runtime().has_feed() {
            let d = daemon.clone();
            daemon
                .inner
                .tracker
                .spawn(async move { d.feed_schedule().await });
        }
        Ok(daemon)
    }

    /// Stops taking jobs and waits, up to `grace`, for the runners to finish what is in
    /// flight; then flushes the store. Returns false when the grace period ran out.
    pub async fn drain(&self, grace: Duration) -> bool {
        self.inner.accepting.store(false, Ordering::SeqCst);
        self.inner.shutdown.cancel();
        self.inner.tracker.close();
        let drained = tokio::time::timeout(grace, self.inner.tracker.wait())
            .await
            .is_ok();
        let in_flight = self.requests_in_flight();
        if !drained && in_flight > 0 {
            error!(
                grace_s = grace.as_secs(),
                requests_in_flight = in_flight,
                "Shutdown grace period ran out with requests in flight; their recipients will be Unknown after restart."
            );
        } else if !drained {
            warn!(
                grace_s = grace.as_secs(),
                "Shutdown grace period ran out with tasks still running but no request to IO in flight."
            );
        }
        if let Err(e) = self.store().flush().await {
            error!(error = %e, "Final store flush failed.");
        }
        drained
    }

    /// Requests to IO in flight now (after [`Daemon::drain`]: those its grace period cut).
    pub fn requests_in_flight(&self) -> usize {
        self.runtime().budget().in_flight()
    }

    fn runtime(&self) -> &Runtime {
        &self.inner.parts.runtime
    }

    fn store(&self) -> &Store {
        self.runtime().store()
    }

    fn entry(&self, id: &str) -> Result<Arc<JobEntry>, BackendError> {
        self.inner
            .jobs
            .lock()
            .expect("jobs lock")
            .get(id)
            .cloned()
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))
    }
}

/// The extension a recipients upload is kept under: a workbook's (`.xlsx`, `.xlsm`, `.ods`:
/// the reader is chosen by it), else `csv`.
fn recipients_ext(input: &Input) -> &'static str {
    let name = match input {
        Input::Path(p) => p.as_path(),
        Input::Staged { name, .. } | Input::Bytes { name, .. } => Path::new(name.as_str()),
    };
    let ext = name
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("xlsx") => "xlsx",
        Some("xlsm") => "xlsm",
        Some("ods") => "ods",
        _ => "csv",
    }
}

/// The operator's choices recorded in a job's metadata.
fn inputs_of(meta: &JobMeta) -> JobInputs {
    JobInputs {
        encoding: meta
            .encoding
            .as_deref()
            .and_then(|e| FileEncoding::from_label(e).ok()),
        allow_repeat: meta.allow_repeat,
        // The sheet read at submit (its content is the job's identity).
        sheet: meta.sheet.clone(),
    }
}

/// The operator's choices of a submit, checked.
pub fn job_inputs(options: &api::SubmitOptions) -> Result<JobInputs, BackendError> {
    let encoding = match &options.encoding {
        Some(label) => Some(
            FileEncoding::from_label(label)
                .map_err(|e| BackendError::BadRequest(format!("encoding: {e}")))?,
        ),
        None => None,
    };
    Ok(JobInputs {
        encoding,
        allow_repeat: options.allow_repeat,
        sheet: options.sheet.clone(),
    })
}

fn template_window(text: &str, path: &Path) -> Option<crate::model::SendWindow> {
    let t = Template::from_toml_str(text, path).ok()?;
    crate::model::SendWindow::parse(
        t.send_window()?,
        crate::model::send_window::DEFAULT_TIMEZONE,
    )
    .ok()
}
