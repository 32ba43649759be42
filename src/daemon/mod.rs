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

pub mod api;
pub mod inputs;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::dispatch::control::Gate;
use crate::dispatch::report::{write_report, FiscalCodes};
use crate::dispatch::{
    self, prepare_job_with, run_job, DispatchError, DispatchSettings, DueDateWarnings, JobContext,
    JobMeta, JobPhase, PrepareOptions,
};
use crate::feed::{Feed, Freshness, SyncOptions};
use crate::io_api::IoClient;
use crate::job::{FileEncoding, FilterMode, Ingest, JobInputs, PollPolicy, RowOutcome, Template};
use crate::rate::RateBudget;
use crate::store::{JobId, Store};

use inputs::{UploadRefs, UploadUse};

use api::{
    Backend, BackendError, CallEstimate, Codes, DryRunReport, Input, InvalidRow, JobSpec, JobState,
    JobView, Readiness, Submitted,
};

/// Polls per message a dry run assumes before any job has measured it (the fake and IO
/// process most messages before the first, well-timed poll: 1.02–1.23 measured).
pub const DEFAULT_POLLS_PER_MESSAGE: f64 = 1.05;
/// The store's record of the polls per message measured by finished jobs.
const POLLS_PER_MESSAGE_META: &str = "dispatch.polls_per_message";
/// Samples kept for a job's send rate (one per [`RATE_SAMPLE_EVERY`]).
const RATE_SAMPLES: usize = 30;
/// How often a job's settled count is sampled for its rate and ETA.
const RATE_SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Invalid rows listed in a dry run's answer.
const DRY_RUN_INVALID_LISTED: usize = 100;
/// How often finished jobs' uploads are checked against `admin.upload_retention`.
const UPLOAD_SWEEP_EVERY: Duration = Duration::from_secs(3600);
/// Store metadata key prefix: when a job was done (ms since the epoch), for upload retention.
const DONE_AT_META: &str = "daemon.done_at.";

/// Everything the daemon needs, built by the binary from configuration.
pub struct DaemonParts {
    /// The store.
    pub store: Store,
    /// The IO client (reporting to `budget`).
    pub client: IoClient,
    /// The one shared budget.
    pub budget: RateBudget,
    /// The subscriptions feed (None: the service has no feed access; `filter = "feed"` jobs
    /// are refused).
    pub feed: Option<Arc<Feed>>,
    /// Engine settings (poll deadline, default send window, clock).
    pub settings: DispatchSettings,
    /// Daily feed sync time (UTC), if any.
    pub feed_sync_at: Option<chrono::NaiveTime>,
    /// Where uploaded inputs are kept (jobs read them again on resume).
    pub uploads_dir: PathBuf,
    /// Directories a path submit may read from, resolved (empty: path submits are refused).
    pub input_dirs: Vec<PathBuf>,
    /// A done job's uploads are removed this long after it was done.
    pub upload_retention: Duration,
    /// Run the service preflight (with these settings) before a job's first send; a job it
    /// refuses stops `failed` with the table of problems. None: no preflight.
    pub preflight: Option<Arc<crate::config::Config>>,
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
    final_counts: Mutex<Option<BTreeMap<String, u64>>>,
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
    /// Serialises feed syncs (the scheduled one and the ones jobs ask for).
    feed_sync: tokio::sync::Mutex<()>,
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
                feed_sync: tokio::sync::Mutex::new(()),
                uploads: UploadRefs::default(),
                uploads_released: Mutex::new(HashSet::new()),
            }),
        };
        let store = &daemon.inner.parts.store;
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
        if daemon.inner.parts.feed.is_some() {
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
        if let Err(e) = self.inner.parts.store.flush().await {
            error!(error = %e, "Final store flush failed.");
        }
        drained
    }

    /// Requests to IO in flight now (after [`Daemon::drain`]: those its grace period cut).
    pub fn requests_in_flight(&self) -> usize {
        self.inner.parts.budget.in_flight()
    }

    fn store(&self) -> &Store {
        &self.inner.parts.store
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

    /// Starts (or restarts) a job's runner.
    fn spawn_runner(&self, entry: Arc<JobEntry>, template: PathBuf, recipients: PathBuf) {
        if entry.running.swap(true, Ordering::SeqCst) {
            return;
        }
        *entry.error.lock().expect("job error lock") = None;
        let stop = {
            let mut s = entry.stop.lock().expect("job stop lock");
            if s.is_cancelled() {
                *s = self.inner.shutdown.child_token();
            }
            s.clone()
        };
        let d = self.clone();
        self.inner.tracker.spawn(async move {
            let result = d.run_one(&entry, &template, &recipients, &stop).await;
            // The context is only for a running job: a cancel or resume after this starts a
            // new runner instead of telling a control nobody reads.
            if let Some(ctx) = entry.ctx.lock().expect("job ctx lock").take() {
                let counts = ctx
                    .counters
                    .snapshot()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect();
                *entry.final_counts.lock().expect("job counts lock") = Some(counts);
            }
            if let Err(e) = &result {
                error!(job = %entry.id, error = %e, "Job stopped by an error; resume it once the cause is fixed.");
                *entry.error.lock().expect("job error lock") = Some(e.to_string());
            }
            entry.running.store(false, Ordering::SeqCst);
        });
    }

    async fn run_one(
        &self,
        entry: &Arc<JobEntry>,
        template: &Path,
        recipients: &Path,
        stop: &CancellationToken,
    ) -> Result<(), DispatchError> {
        let store = self.store().clone();
        let ingested = matches!(
            JobMeta::load(&store, &entry.id)?,
            Some(m) if m.phase != JobPhase::Ingesting
        );
        if !ingested {
            // (Re)ingest, but only from the inputs this job was created from: edited files
            // would make another job, which nobody submitted. Regular files only: a FIFO
            // swapped in would hang the runner (content is checked by the job id below).
            for p in [template, recipients] {
                if !std::fs::metadata(p).is_ok_and(|m| m.is_file()) {
                    return Err(DispatchError::Unsupported(format!(
                        "job {}: its input {} is gone or not a regular file",
                        entry.id,
                        p.display()
                    )));
                }
            }
            let text = std::fs::read_to_string(template).map_err(|e| {
                DispatchError::Unsupported(format!(
                    "job {}: cannot read its template {}: {e}",
                    entry.id,
                    template.display()
                ))
            })?;
            let inputs = entry.inputs();
            let id = crate::job::job_id_with(&text, recipients, &inputs)?;
            if id != entry.id.as_str() {
                return Err(DispatchError::Unsupported(format!(
                    "the template or recipients file of job {} changed since it was submitted (they now make job {id}); restore them, or submit them as a new job",
                    entry.id
                )));
            }
            let d = self.clone();
            let is_running = move |job: &JobId| {
                d.inner
                    .jobs
                    .lock()
                    .expect("jobs lock")
                    .get(job.as_str())
                    .is_some_and(|e| e.running.load(Ordering::SeqCst))
            };
            let options = PrepareOptions {
                inputs,
                is_running: &is_running,
            };
            prepare_job_with(&store, template, recipients, &options, &|_| {}).await?;
        }
        if stop.is_cancelled() {
            return Ok(());
        }
        if let Some(config) = self.inner.parts.preflight.clone() {
            self.preflight(&entry.id, &config).await?;
        }
        let options = dispatch::job_options(&store, &entry.id)?;
        let subscribers = if matches!(options.filter, FilterMode::Feed) {
            Some(self.fresh_subscribers(stop).await?)
        } else {
            None
        };
        if stop.is_cancelled() {
            return Ok(());
        }
        let p = &self.inner.parts;
        let (client, budget, settings, job) = (
            p.client.clone(),
            p.budget.clone(),
            p.settings.clone(),
            entry.id.clone(),
        );
        let load_store = store.clone();
        // Loading scans the job's recipients: off the async workers.
        let ctx = tokio::task::spawn_blocking(move || {
            JobContext::load(load_store, job, client, budget, settings, subscribers)
        })
        .await
        .map_err(|e| DispatchError::Internal(e.to_string()))??;
        let ctx = Arc::new(ctx);
        *entry.ctx.lock().expect("job ctx lock") = Some(ctx.clone());
        *entry.final_counts.lock().expect("job counts lock") = None;
        // A pause, resume or cancel that came while the context loaded found no context to
        // tell: read the flags again now that it is visible.
        if let Some(m) = JobMeta::load(&store, &entry.id)? {
            if m.cancelled {
                ctx.control.cancel();
            } else if m.paused {
                ctx.control.pause();
            } else {
                ctx.control.resume();
            }
        }
        let sampler = {
            let entry = entry.clone();
            let counters = ctx.counters.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(RATE_SAMPLE_EVERY);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => return,
                        _ = tick.tick() => {}
                    }
                    let mut s = entry.samples.lock().expect("samples lock");
                    s.push_back((Instant::now(), counters.settled()));
                    if s.len() > RATE_SAMPLES {
                        s.pop_front();
                    }
                }
            })
        };
        let summary = run_job(ctx.clone(), stop.clone()).await;
        sampler.abort();
        let summary = summary?;
        if summary.completed {
            dispatch::mark_done(&store, &entry.id)?;
            if let Err(e) = store.meta_put(
                &format!("{DONE_AT_META}{}", entry.id),
                self.inner
                    .parts
                    .settings
                    .clock
                    .now_ms()
                    .to_string()
                    .as_bytes(),
            ) {
                warn!(job = %entry.id, error = %e, "Could not record when the job was done; its uploads are kept longer.");
            }
            self.record_polls_per_message(summary.sends, summary.polls);
            info!(job = %entry.id, sends = summary.sends, polls = summary.polls, "Job done.");
        }
        Ok(())
    }

    /// The service preflight, after ingest and before the first send: a job IO is certain to
    /// refuse stops here (state `failed`, the table as its error) with no message sent.
    async fn preflight(
        &self,
        job: &JobId,
        config: &crate::config::Config,
    ) -> Result<(), DispatchError> {
        use crate::service::{preflight_job, PreflightSettings};
        let report = preflight_job(
            &self.inner.parts.client,
            &PreflightSettings::from(config),
            self.store(),
            job,
            config.io.source_ip,
        )
        .await
        .map_err(|e| DispatchError::Unsupported(format!("service preflight: {e}")))?;
        let Some(report) = report else {
            return Ok(());
        };
        if report.is_blocked() {
            return Err(DispatchError::Unsupported(format!(
                "the service preflight refuses this job (nothing was sent):\n{}",
                report.table()
            )));
        }
        info!(job = %job, "Service preflight passed.");
        Ok(())
    }

    /// The subscriber set, synced first when it is not fresh.
    async fn fresh_subscribers(
        &self,
        stop: &CancellationToken,
    ) -> Result<crate::feed::SharedSubscribers, DispatchError> {
        let Some(feed) = &self.inner.parts.feed else {
            return Err(DispatchError::Unsupported(
                "filter = \"feed\" but the daemon runs without the subscriptions feed (daemon.feed_sync_at = \"off\"); use filter = \"profile\"".to_owned(),
            ));
        };
        if !matches!(feed.freshness(), Freshness::Fresh { .. }) {
            self.sync_feed(stop).await?;
        }
        match feed.freshness() {
            Freshness::Fresh { .. } => Ok(feed.subscribers()),
            other => Err(DispatchError::Unsupported(format!(
                "the subscriber set is not fresh enough for filter = \"feed\" ({other:?})"
            ))),
        }
    }

    async fn sync_feed(&self, stop: &CancellationToken) -> Result<(), DispatchError> {
        let Some(feed) = &self.inner.parts.feed else {
            return Ok(());
        };
        let _one = self.inner.feed_sync.lock().await;
        if matches!(feed.freshness(), Freshness::Fresh { through } if through >= feed.last_complete_day())
        {
            return Ok(());
        }
        let p = &self.inner.parts;
        let stats = feed
            .sync(&p.client, &p.budget, SyncOptions::default(), &|_| {}, stop)
            .await
            .map_err(|e| {
                DispatchError::Unsupported(format!("subscriptions feed sync failed: {e}"))
            })?;
        info!(
            days = stats.days_applied,
            subscribers = stats.subscribers,
            through = ?stats.through,
            seconds = stats.seconds,
            "Subscriptions feed synced."
        );
        Ok(())
    }

    /// Syncs at start when the set is stale, then every day at `feed_sync_at` (UTC).
    async fn feed_schedule(&self) {
        let shutdown = self.inner.shutdown.clone();
        let mut first = true;
        loop {
            if !first {
                let Some(at) = self.inner.parts.feed_sync_at else {
                    return;
                };
                let now = self.inner.parts.settings.clock.now();
                let mut next = now.date_naive().and_time(at).and_utc();
                if next <= now {
                    next += chrono::Duration::days(1);
                }
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            first = false;
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = self.sync_feed(&shutdown).await {
                warn!(error = %e, "Scheduled feed sync failed; the next one retries.");
            }
        }
    }

    fn record_polls_per_message(&self, sends: u64, polls: u64) {
        if sends < 100 {
            return;
        }
        let measured = polls as f64 / sends as f64;
        let store = self.store();
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

    /// Writes uploaded bytes under the uploads directory (content-addressed, so the same upload
    /// is the same file and the same job), or checks a path submit
    /// ([`inputs::open_path_submit`]). An upload's use is counted (see [`UploadRefs`]): the
    /// caller releases it.
    fn materialize(&self, input: Input, what: &str, ext: &str) -> Result<PathBuf, BackendError> {
        match input {
            Input::Path(p) => {
                // Only the checked descriptor is read: copied into the private uploads, the
                // job never opens the operator's path again (it could be swapped meanwhile).
                let (file, resolved) =
                    inputs::open_path_submit(&p, &self.inner.parts.input_dirs, what, ext)?;
                let name = resolved.display().to_string();
                let staging = self.inner.parts.uploads_dir.join("staging");
                let staged = staging.join(format!("{}.path.tmp", ulid::Ulid::new()));
                let limit = if ext == "toml" {
                    TEMPLATE_MAX_BYTES
                } else {
                    u64::MAX - 1
                };
                let copied = inputs::create_private_dir(&staging)
                    .and_then(|()| inputs::copy_to_private(file, &staged, limit));
                let result = match copied {
                    Err(e) => Err(internal(format!("copying {name:?}: {e}"))),
                    Ok(n) if n > limit => Err(BackendError::BadRequest(format!(
                        "{what}: {name} grew past {limit} bytes while being read"
                    ))),
                    Ok(_) => self.adopt_staged(&name, &staged, what, ext),
                };
                let _ = std::fs::remove_file(&staged);
                result
            }
            Input::Staged { name, path: staged } => {
                let result = self.adopt_staged(&name, &staged, what, ext);
                let _ = std::fs::remove_file(&staged);
                result
            }
            Input::Bytes { name, bytes } => {
                use sha2::Digest;
                if bytes.is_empty() {
                    return Err(BackendError::BadRequest(format!(
                        "{what}: the uploaded file {name:?} is empty"
                    )));
                }
                let digest = hex::encode(&sha2::Sha256::digest(&bytes)[..12]);
                let path = self.inner.parts.uploads_dir.join(format!("{digest}.{ext}"));
                self.inner.uploads.place_and_use(&path, || {
                    if path.exists() {
                        return Ok(());
                    }
                    let tmp = path.with_extension(format!("{ext}.{}.tmp", ulid::Ulid::new()));
                    inputs::create_private_file(&tmp)
                        .and_then(|mut f| std::io::Write::write_all(&mut f, &bytes))
                        .and_then(|()| std::fs::rename(&tmp, &path))
                        .map_err(|e| {
                            let _ = std::fs::remove_file(&tmp);
                            internal(format!("storing the upload {name:?}: {e}"))
                        })
                })?;
                Ok(path)
            }
        }
    }

    /// Moves a streamed upload to its content-addressed name (hashing it from disk).
    fn adopt_staged(
        &self,
        name: &str,
        staged: &Path,
        what: &str,
        ext: &str,
    ) -> Result<PathBuf, BackendError> {
        use sha2::Digest;
        use std::io::Read;
        let mut file = std::fs::File::open(staged)
            .map_err(|e| internal(format!("reading the upload {name:?}: {e}")))?;
        let mut hasher = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| internal(format!("reading the upload {name:?}: {e}")))?;
            if n == 0 {
                break;
            }
            total += n as u64;
            hasher.update(&buf[..n]);
        }
        if total == 0 {
            return Err(BackendError::BadRequest(format!(
                "{what}: the uploaded file {name:?} is empty"
            )));
        }
        let digest = hex::encode(&hasher.finalize()[..12]);
        let path = self.inner.parts.uploads_dir.join(format!("{digest}.{ext}"));
        self.inner.uploads.place_and_use(&path, || {
            if path.exists() {
                return Ok(());
            }
            std::fs::rename(staged, &path)
                .map_err(|e| internal(format!("storing the upload {name:?}: {e}")))
        })?;
        Ok(path)
    }

    /// A file the daemon keeps for an uploaded input (not an operator's path submit).
    fn is_upload(&self, p: &Path) -> bool {
        p.parent() == Some(self.inner.parts.uploads_dir.as_path())
    }

    /// At start and every [`UPLOAD_SWEEP_EVERY`]: lets go of the uploads of jobs done more than
    /// `upload_retention` ago (the files go when no other job uses them).
    async fn upload_sweeps(&self) {
        let shutdown = self.inner.shutdown.clone();
        loop {
            let d = self.clone();
            let swept = tokio::task::spawn_blocking(move || d.sweep_uploads()).await;
            if let Ok(Err(e)) = swept {
                warn!(error = %e, "Upload retention sweep failed; the next one retries.");
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(UPLOAD_SWEEP_EVERY) => {}
            }
        }
    }

    /// One retention sweep; returns how many files were removed.
    pub fn sweep_uploads(&self) -> Result<usize, BackendError> {
        let store = self.store();
        let now = self.inner.parts.settings.clock.now_ms();
        let retention = self.inner.parts.upload_retention.as_millis() as u64;
        let mut removed = 0;
        for job in store.list_jobs().map_err(internal)? {
            if self
                .inner
                .uploads_released
                .lock()
                .expect("released lock")
                .contains(job.as_str())
            {
                continue;
            }
            let Some(meta) = JobMeta::load(store, &job).map_err(internal)? else {
                continue;
            };
            if meta.phase != JobPhase::Done {
                continue;
            }
            let uploads: Vec<&PathBuf> = [&meta.template_path, &meta.recipients_path]
                .into_iter()
                .filter(|p| self.is_upload(p))
                .collect();
            if uploads.is_empty() {
                continue;
            }
            let key = format!("{DONE_AT_META}{job}");
            let done_at = match store
                .meta_get(&key)
                .map_err(internal)?
                .and_then(|v| String::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
            {
                Some(t) => t,
                // Done before this was recorded: the retention counts from now.
                None => {
                    store
                        .meta_put(&key, now.to_string().as_bytes())
                        .map_err(internal)?;
                    now
                }
            };
            if now.saturating_sub(done_at) < retention {
                continue;
            }
            self.inner
                .uploads_released
                .lock()
                .expect("released lock")
                .insert(job.to_string());
            for p in uploads {
                if self.inner.uploads.count(p) > 0 && self.inner.uploads.release(p) {
                    removed += 1;
                }
            }
            info!(job = %job, "Uploads of a done job removed (admin.upload_retention).");
        }
        Ok(removed)
    }

    /// The job view of one entry.
    fn view(&self, entry: &JobEntry) -> Result<JobView, BackendError> {
        let store = self.store();
        let meta = JobMeta::load(store, &entry.id)
            .map_err(internal)?
            .ok_or_else(|| BackendError::NotFound(entry.id.to_string()))?;
        let ctx = entry.ctx();
        let counts: BTreeMap<String, u64> = match &ctx {
            Some(c) => c
                .counters
                .snapshot()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v))
                .collect(),
            None => {
                let mut cache = entry.final_counts.lock().expect("job counts lock");
                match &*cache {
                    Some(c) => c.clone(),
                    None => {
                        let counts: BTreeMap<String, u64> = store
                            .count_states(&entry.id)
                            .map_err(internal)?
                            .into_iter()
                            .map(|(k, v)| (k.to_owned(), v))
                            .collect();
                        // Only a finished job's counts stay put.
                        if meta.phase == JobPhase::Done {
                            *cache = Some(counts.clone());
                        }
                        counts
                    }
                }
            }
        };
        let settled: u64 = counts
            .iter()
            .filter(|(k, _)| dispatch::counters::TERMINAL.contains(&k.as_str()))
            .map(|(_, v)| v)
            .sum();
        let total: u64 = counts.values().sum::<u64>().max(meta.rows);
        let error = entry.error.lock().expect("job error lock").clone();
        let gate = ctx.as_ref().map(|c| c.control.gate());
        let state = if meta.cancelled {
            JobState::Cancelled
        } else if error.is_some() {
            JobState::Failed
        } else {
            match meta.phase {
                JobPhase::Done => JobState::Done,
                JobPhase::Ingesting => JobState::Ingesting,
                JobPhase::Running => match gate {
                    _ if meta.paused => JobState::Paused,
                    Some(Gate::WindowClosed { .. }) => JobState::Waiting,
                    _ => JobState::Running,
                },
            }
        };
        let samples = if entry.running.load(Ordering::SeqCst) {
            entry.samples.lock().expect("samples lock").clone()
        } else {
            VecDeque::new()
        };
        let rate = match (samples.front(), samples.back()) {
            (Some(a), Some(b)) if b.0 > a.0 => {
                (b.1.saturating_sub(a.1)) as f64 / (b.0 - a.0).as_secs_f64()
            }
            _ => 0.0,
        };
        let remaining = total.saturating_sub(settled);
        let eta_seconds = if remaining == 0 {
            Some(0.0)
        } else if rate > 0.0 {
            let needed = Duration::from_secs_f64(remaining as f64 / rate);
            Some(
                match ctx.as_ref().and_then(|c| c.control.window().cloned()) {
                    Some(w) => {
                        let now = self.inner.parts.settings.clock.now();
                        (w.finish_after(now, needed) - now)
                            .to_std()
                            .unwrap_or_default()
                            .as_secs_f64()
                    }
                    None => needed.as_secs_f64(),
                },
            )
        } else {
            None
        };
        let file_name = |p: &Path| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        };
        Ok(JobView {
            id: entry.id.to_string(),
            state,
            created_at: meta.created_at.clone(),
            template: file_name(&meta.template_path),
            recipients: file_name(&meta.recipients_path),
            rows: meta.rows,
            counts,
            settled,
            sends_per_second: rate,
            eta_seconds,
            send_window_open: !matches!(gate, Some(Gate::WindowClosed { .. })),
            error,
        })
    }

    /// Validates inputs and predicts outcomes and calls without sending anything.
    async fn dry_run(
        &self,
        template_path: PathBuf,
        recipients_path: PathBuf,
        inputs: JobInputs,
    ) -> Result<DryRunReport, BackendError> {
        let p = &self.inner.parts;
        dry_run(DryRun {
            template_path,
            recipients_path,
            inputs,
            store: Some(p.store.clone()),
            feed: p.feed.clone(),
            rate: p.budget.current_rate(),
            default_window: p.settings.send_window.clone(),
            clock: p.settings.clock.clone(),
            polls_per_message: polls_per_message(self.store()),
        })
        .await
    }
}

/// What a dry run needs.
pub struct DryRun {
    /// Template file.
    pub template_path: PathBuf,
    /// Recipients CSV.
    pub recipients_path: PathBuf,
    /// `--encoding`, `--allow-repeat`.
    pub inputs: JobInputs,
    /// The store, whose campaign ledger tells who already has the message (None: not read).
    pub store: Option<Store>,
    /// The feed (for `filter = "feed"`).
    pub feed: Option<Arc<Feed>>,
    /// The budget's rate now (calls/s).
    pub rate: f64,
    /// Send window of templates that name none.
    pub default_window: Option<crate::model::SendWindow>,
    /// Wall clock.
    pub clock: Clock,
    /// Polls per message to expect.
    pub polls_per_message: f64,
}

/// Validates and renders every row, applies the filter and predicts the outcomes, the IO calls
/// and the time a job will take, without sending anything (`POST /jobs?dry_run=true`,
/// `corriere send --dry-run`).
pub async fn dry_run(d: DryRun) -> Result<DryRunReport, BackendError> {
    let DryRun {
        template_path,
        recipients_path,
        inputs,
        store,
        feed,
        rate,
        default_window,
        clock,
        polls_per_message,
    } = d;
    let template_text = read_template(&template_path)?;
    let template = Template::from_toml_str(&template_text, &template_path)
        .map_err(|e| BackendError::BadRequest(e.to_string()))?;
    let options = template.options();
    let identified = crate::job::identify(&template_text, &recipients_path, &template, &inputs)
        .map_err(|e| BackendError::BadRequest(e.to_string()))?;
    let id = identified.id.clone();
    let campaign = crate::store::CampaignKey::of(template.campaign());
    let ledger = store.filter(|_| !inputs.allow_repeat);
    let ingest_inputs = inputs.clone();
    let subscribers = match options.filter {
        FilterMode::Feed => match &feed {
            Some(f) => Some(f.subscribers()),
            None => {
                return Err(BackendError::BadRequest(
                    "filter = \"feed\" but the daemon runs without the subscriptions feed"
                        .to_owned(),
                ))
            }
        },
        _ => None,
    };
    let feed_days = match (&options.filter, &feed) {
        (FilterMode::Feed, Some(f)) => match f.freshness() {
            Freshness::Fresh { through } | Freshness::Stale { through, .. } => {
                (f.last_complete_day() - through).num_days().max(0) as u64
            }
            Freshness::NeverSynced => {
                (f.last_complete_day() - crate::feed::feed_epoch()).num_days() as u64 + 1
            }
        },
        _ => 0,
    };
    let scan = tokio::task::spawn_blocking(move || -> Result<_, BackendError> {
        let ingest = Ingest::open_inputs(&recipients_path, &template, &ingest_inputs)
            .map_err(|e| BackendError::BadRequest(e.to_string()))?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut invalid = Vec::new();
        let mut conflicts = Vec::new();
        let mut due = DueDateWarnings::default();
        let mut seen: HashMap<[u8; 16], (u64, u32)> = HashMap::new();
        let mut rows = 0u64;
        for row in ingest {
            let row = row.map_err(|e| BackendError::BadRequest(e.to_string()))?;
            rows += 1;
            let outcome = match row.outcome {
                RowOutcome::Invalid { field, reason } => {
                    if invalid.len() < DRY_RUN_INVALID_LISTED {
                        invalid.push(InvalidRow {
                            line: row.line,
                            field,
                            reason,
                        });
                    }
                    "invalid"
                }
                RowOutcome::Valid {
                    fiscal_code,
                    values,
                    warnings,
                } => {
                    let key: [u8; 16] = fiscal_code
                        .expose()
                        .as_bytes()
                        .try_into()
                        .expect("a fiscal code is 16 ASCII bytes");
                    let crc = dispatch::values_crc(&values);
                    let held = match &ledger {
                        Some(store) => match store.ledger_holder(&campaign, &key).map_err(internal)? {
                            Some((holder, line)) => {
                                dispatch::held_state(store, &holder, line, &|_| true)
                                    .map_err(internal)?
                                    .is_some()
                            }
                            None => false,
                        },
                        None => false,
                    };
                    if let Some(&(first, first_crc)) = seen.get(&key) {
                        if first_crc == crc {
                            "duplicate"
                        } else {
                            if conflicts.len() < DRY_RUN_INVALID_LISTED {
                                conflicts.push(InvalidRow {
                                    line: row.line,
                                    field: template.fiscal_code_column().to_owned(),
                                    reason: format!("duplicate_conflict: same fiscal code as line {first} with different values; not sent"),
                                });
                            }
                            "duplicate_conflict"
                        }
                    } else if held {
                        seen.insert(key, (row.line, crc));
                        "already_sent"
                    } else {
                        seen.insert(key, (row.line, crc));
                        if warnings.contains(&crate::job::RowWarning::DueDateInPast) {
                            due.add(row.line);
                        }
                        match (&options.filter, &subscribers) {
                            // A set never synced knows nobody: the sync comes first.
                            (FilterMode::Feed, Some(set)) if !set.is_synced() => "feed_check",
                            (FilterMode::Feed, Some(set)) => {
                                if set.contains_digest(&fiscal_code.feed_hash_bytes()) {
                                    "send"
                                } else {
                                    "not_subscribed"
                                }
                            }
                            (FilterMode::Profile, _) => "profile_check",
                            _ => "send",
                        }
                    }
                }
            };
            *counts.entry(outcome.to_owned()).or_insert(0) += 1;
        }
        // Conflicting duplicates first: they need a decision, not just a fix.
        conflicts.extend(invalid);
        conflicts.truncate(DRY_RUN_INVALID_LISTED);
        let invalid = conflicts;
        Ok((rows, counts, invalid, due))
    })
    .await
    .map_err(internal)??;
    let (rows, counts, invalid, due_date_in_past) = scan;
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    let profile_checks = get("profile_check");
    // Recipients the filter cannot decide yet (a profile check, or a set not synced yet) may
    // all be sent: an upper bound.
    let sends = get("send") + profile_checks + get("feed_check");
    let poll_share = match options.poll {
        PollPolicy::All => 1.0,
        PollPolicy::None => 0.0,
        PollPolicy::Fraction(f) => f,
    };
    let polls = (sends as f64 * poll_share * polls_per_message).round() as u64;
    let total = sends + polls + profile_checks + feed_days;
    let calls = CallEstimate {
        sends,
        polls,
        profile_checks,
        feed_days,
        total,
    };
    let estimated_seconds = if !rate.is_finite() || rate <= 0.0 || total == 0 {
        0.0
    } else {
        let needed = Duration::from_secs_f64(total as f64 / rate);
        let window = template_window(&template_text, &template_path).or(default_window);
        match window {
            Some(w) => {
                let now = clock.now();
                (w.finish_after(now, needed) - now)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64()
            }
            None => needed.as_secs_f64(),
        }
    };
    Ok(DryRunReport {
        id,
        rows,
        counts,
        invalid,
        due_date_in_past,
        calls,
        estimated_seconds,
        sheet: identified.sheet,
        merged_cells: identified.merged_cells,
    })
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

/// Polls per message measured by finished jobs in this store (or the default).
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

fn template_window(text: &str, path: &Path) -> Option<crate::model::SendWindow> {
    let t = Template::from_toml_str(text, path).ok()?;
    crate::model::SendWindow::parse(
        t.send_window()?,
        crate::model::send_window::DEFAULT_TIMEZONE,
    )
    .ok()
}

impl Backend for Daemon {
    async fn submit(&self, spec: JobSpec, dry_run: bool) -> Result<Submitted, BackendError> {
        // Staged uploads are removed whatever happens (adopted ones were moved already).
        let _cleanup = StagedCleanup(
            [&spec.template, &spec.recipients]
                .into_iter()
                .filter_map(|i| match i {
                    Input::Staged { path, .. } => Some(path.clone()),
                    _ => None,
                })
                .collect(),
        );
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(BackendError::Unavailable(
                "the daemon is shutting down".to_owned(),
            ));
        }
        // Hashing and reading whole files: off the async workers.
        let d = self.clone();
        let (template_path, recipients_path, uses) = tokio::task::spawn_blocking(move || {
            // The uploads this request placed, released when it ends: a dry run or a refused
            // submit leaves nothing behind unless a job holds the same file.
            let mut uses = UploadUse::new(d.inner.uploads.clone(), Vec::new());
            let t = d.materialize(spec.template, "template", "toml")?;
            if d.is_upload(&t) {
                uses.push(t.clone());
            }
            let ext = recipients_ext(&spec.recipients);
            let r = d.materialize(spec.recipients, "recipients", ext)?;
            if d.is_upload(&r) {
                uses.push(r.clone());
            }
            Ok::<_, BackendError>((t, r, uses))
        })
        .await
        .map_err(internal)??;
        let inputs = job_inputs(&spec.options)?;
        if dry_run {
            return self
                .dry_run(template_path, recipients_path, inputs)
                .await
                .map(Submitted::DryRun);
        }
        let has_feed = self.inner.parts.feed.is_some();
        let (tp, rp) = (template_path.clone(), recipients_path.clone());
        let job_inputs = inputs.clone();
        let id = tokio::task::spawn_blocking(move || {
            // Check the inputs whole before creating anything: template, CSV header, columns,
            // encoding (the whole file decodes).
            let template_text = read_template(&tp)?;
            let template = Template::from_toml_str(&template_text, &tp)
                .map_err(|e| BackendError::BadRequest(e.to_string()))?;
            Ingest::open_inputs(&rp, &template, &job_inputs)
                .map_err(|e| BackendError::BadRequest(e.to_string()))?;
            if matches!(template.options().filter, FilterMode::Feed) && !has_feed {
                return Err(BackendError::BadRequest(
                    "filter = \"feed\" but the daemon runs without the subscriptions feed (daemon.feed_sync_at = \"off\"); use filter = \"profile\"".to_owned(),
                ));
            }
            crate::job::identify(&template_text, &rp, &template, &job_inputs)
                .map(|i| i.id)
                .map_err(|e| BackendError::BadRequest(e.to_string()))
        })
        .await
        .map_err(internal)??;
        let existing = {
            let mut jobs = self.inner.jobs.lock().expect("jobs lock");
            match jobs.get(&id) {
                Some(_) => true,
                None => {
                    let entry = JobEntry::new(JobId::new(&id), &self.inner.shutdown);
                    *entry.inputs.lock().expect("job inputs lock") = inputs.clone();
                    jobs.insert(id.clone(), entry);
                    false
                }
            }
        };
        if !existing {
            // The job holds its uploads until its retention ends.
            for p in [&template_path, &recipients_path] {
                if self.is_upload(p) {
                    self.inner.uploads.add(p);
                }
            }
            drop(uses);
            info!(job = %id, allow_repeat = inputs.allow_repeat, "Job submitted.");
            let entry = self.entry(&id)?;
            self.spawn_runner(entry, template_path, recipients_path);
        }
        Ok(Submitted::Job { id, existing })
    }

    async fn list(&self) -> Result<Vec<JobView>, BackendError> {
        let entries: Vec<Arc<JobEntry>> = self
            .inner
            .jobs
            .lock()
            .expect("jobs lock")
            .values()
            .cloned()
            .collect();
        let mut views = Vec::with_capacity(entries.len());
        for e in entries {
            match self.view(&e) {
                Ok(v) => views.push(v),
                // Submitted a moment ago: its metadata is written by the runner's ingest.
                Err(BackendError::NotFound(_)) => {}
                Err(other) => return Err(other),
            }
        }
        views.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        Ok(views)
    }

    async fn get(&self, id: &str) -> Result<JobView, BackendError> {
        let entry = self.entry(id)?;
        match self.view(&entry) {
            // Known but its ingest has not written the metadata yet.
            Err(BackendError::NotFound(_)) => Ok(JobView {
                id: id.to_owned(),
                state: JobState::Ingesting,
                created_at: String::new(),
                template: String::new(),
                recipients: String::new(),
                rows: 0,
                counts: BTreeMap::new(),
                settled: 0,
                sends_per_second: 0.0,
                eta_seconds: None,
                send_window_open: true,
                error: entry.error.lock().expect("job error lock").clone(),
            }),
            other => other,
        }
    }

    async fn pause(&self, id: &str) -> Result<JobView, BackendError> {
        let entry = self.entry(id)?;
        let meta = self.flags(&entry, Some(true), None).await?;
        if meta.cancelled {
            return Err(BackendError::Conflict(format!("job {id} is cancelled")));
        }
        if let Some(ctx) = entry.ctx() {
            ctx.control.pause();
        }
        info!(job = %id, "Job paused.");
        self.view(&entry)
    }

    async fn resume(&self, id: &str) -> Result<JobView, BackendError> {
        let entry = self.entry(id)?;
        let meta = JobMeta::load(self.store(), &entry.id)
            .map_err(internal)?
            .ok_or_else(|| BackendError::NotFound(id.to_owned()))?;
        if meta.cancelled {
            return Err(BackendError::Conflict(format!(
                "job {id} is cancelled and cannot be resumed"
            )));
        }
        let meta = self.flags(&entry, Some(false), None).await?;
        if let Some(ctx) = entry.ctx() {
            ctx.control.resume();
        }
        // A job stopped by an error starts again.
        if !entry.running.load(Ordering::SeqCst) && meta.phase != JobPhase::Done {
            if !self.inner.accepting.load(Ordering::SeqCst) {
                return Err(BackendError::Unavailable(
                    "the daemon is shutting down".to_owned(),
                ));
            }
            self.spawn_runner(entry.clone(), meta.template_path, meta.recipients_path);
        }
        info!(job = %id, "Job resumed.");
        self.view(&entry)
    }

    async fn cancel(&self, id: &str) -> Result<JobView, BackendError> {
        let entry = self.entry(id)?;
        let meta = self.flags(&entry, None, Some(true)).await?;
        if let Some(ctx) = entry.ctx() {
            ctx.control.cancel();
        }
        if !entry.running.load(Ordering::SeqCst) && meta.phase != JobPhase::Done {
            // Not running (it failed): run it so its queued recipients end `cancelled` and
            // what was sent is still polled.
            self.spawn_runner(entry.clone(), meta.template_path, meta.recipients_path);
        }
        info!(job = %id, "Job cancelled.");
        self.view(&entry)
    }

    async fn report(
        &self,
        id: &str,
        codes: Codes,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes, BackendError>>, BackendError>
    {
        let entry = self.entry(id)?;
        if JobMeta::load(self.store(), &entry.id)
            .map_err(internal)?
            .is_none()
        {
            return Err(BackendError::Conflict(format!(
                "job {id} has not been read into the store yet"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, BackendError>>(16);
        let store = self.store().clone();
        let job = entry.id.clone();
        let codes = match codes {
            Codes::Masked => FiscalCodes::Masked,
            Codes::Clear => FiscalCodes::Clear,
        };
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result = write_report(&store, &job, Some(&mut out), codes);
            let _ = std::io::Write::flush(&mut out);
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(internal(e)));
            }
        });
        Ok(tokio_stream_from(rx).boxed())
    }

    async fn report_xlsx(
        &self,
        id: &str,
        codes: Codes,
    ) -> Result<futures::stream::BoxStream<'static, Result<bytes::Bytes, BackendError>>, BackendError>
    {
        let entry = self.entry(id)?;
        if JobMeta::load(self.store(), &entry.id)
            .map_err(internal)?
            .is_none()
        {
            return Err(BackendError::Conflict(format!(
                "job {id} has not been read into the store yet"
            )));
        }
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<bytes::Bytes, BackendError>>(16);
        let store = self.store().clone();
        let job = entry.id.clone();
        let codes = match codes {
            Codes::Masked => FiscalCodes::Masked,
            Codes::Clear => FiscalCodes::Clear,
        };
        tokio::task::spawn_blocking(move || {
            let mut out = ChannelWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
            };
            let result =
                crate::dispatch::report_xlsx::write_report_xlsx(&store, &job, &mut out, codes, &[]);
            let _ = std::io::Write::flush(&mut out);
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(internal(e)));
            }
        });
        Ok(tokio_stream_from(rx).boxed())
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        Some(self.inner.parts.uploads_dir.join("staging"))
    }

    async fn readiness(&self) -> Readiness {
        let store = self.store().size_on_disk().is_ok();
        let (subscriber_set, detail) = match &self.inner.parts.feed {
            None => (true, None),
            Some(f) => match f.freshness() {
                Freshness::NeverSynced => (
                    false,
                    Some(
                        "the subscriber set has never been synced (a sync is running or failed)"
                            .to_owned(),
                    ),
                ),
                _ => (true, None),
            },
        };
        Readiness {
            store,
            subscriber_set,
            detail: if store {
                detail
            } else {
                Some("the store is not readable".to_owned())
            },
        }
    }
}

impl Daemon {
    async fn flags(
        &self,
        entry: &JobEntry,
        paused: Option<bool>,
        cancelled: Option<bool>,
    ) -> Result<JobMeta, BackendError> {
        match dispatch::set_job_flags(self.store(), &entry.id, paused, cancelled).await {
            Ok(m) => Ok(m),
            Err(DispatchError::UnknownJob(id)) => Err(BackendError::Conflict(format!(
                "job {id} is still being read into the store; try again in a moment"
            ))),
            Err(e) => Err(internal(e)),
        }
    }
}

/// Largest template file accepted.
pub const TEMPLATE_MAX_BYTES: u64 = 1 << 20;

/// Reads a template file, bounded by [`TEMPLATE_MAX_BYTES`].
fn read_template(path: &Path) -> Result<String, BackendError> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(TEMPLATE_MAX_BYTES + 1).read_to_string(&mut text))
        .map_err(|e| BackendError::BadRequest(format!("template {}: {e}", path.display())))?;
    if text.len() as u64 > TEMPLATE_MAX_BYTES {
        return Err(BackendError::BadRequest(format!(
            "template {}: larger than {TEMPLATE_MAX_BYTES} bytes",
            path.display()
        )));
    }
    Ok(text)
}

/// Removes staged upload files when dropped.
struct StagedCleanup(Vec<PathBuf>);

impl Drop for StagedCleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

const CHUNK: usize = 64 * 1024;

/// A `Write` that sends 64 KiB chunks down a channel (the report stream).
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<bytes::Bytes, BackendError>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = bytes::Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

fn tokio_stream_from<T: Send + 'static>(
    mut rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> + Send + 'static {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// The engine settings from configuration.
pub fn settings_from(config: &crate::config::Config, clock: Clock) -> DispatchSettings {
    DispatchSettings {
        poll_deadline: config.daemon.poll_deadline,
        send_window: config.daemon.send_window.clone(),
        clock,
    }
}
