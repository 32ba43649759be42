//! The dispatch engine: from a CSV job to a final status per recipient. [`prepare_job`] creates
//! or resumes a job (its identity derives from its inputs) and ingests the CSV into the store;
//! [`run::run_job`] sends, polls and records until every recipient has an outcome;
//! [`report`] exports the outcomes.
//!
//! Submodules: [`classify`] (what a POST result means: the no-duplicate rule), [`claim`] (the
//! campaign ledger's step before each send), [`committer`]
//! (group commit), [`poll_queue`] (what to poll next), [`poll_schedule`] (when to poll), [`counters`] (live counts), [`run`] (the
//! scheduler loop), [`report`] (CSV and summary). The scheduler's scenarios (`scenarios.rs`) run
//! in paused time against a table of IO answers behind [`crate::io_api::MessagesApi`].

pub mod claim;
pub mod classify;
pub mod committer;
pub mod control;
pub mod counters;
pub mod poll_queue;
pub mod poll_schedule;
pub mod report;
pub mod report_xlsx;
pub mod run;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tracing::{info, warn};

use crate::clock::Clock;
use crate::feed::SharedSubscribers;
use crate::io_api::MessagesApi;
use crate::job::{self, BoundTemplate, Ingest, JobOptions, RowOutcome, Template};
use crate::rate::RateBudget;
use crate::store::{
    CampaignKey, JobId, Ledger, RecipientClaim, RecipientRecord, RecipientState, Store, StoreError,
};
use control::{JobControl, SendWindow};

pub use crate::model::job::{DueDateWarnings, JobMeta, JobPhase, WARNING_LINES};

pub use counters::Counters;
pub use run::{run_job, RunSummary};

/// Give up polling a message this long after its submit (it becomes `poll_expired`).
pub const DEFAULT_POLL_DEADLINE: Duration = Duration::from_secs(24 * 3600);
/// Rows written to the store per ingest batch (one flush each).
pub const INGEST_BATCH: usize = 4096;

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

/// Engine settings (from config).
#[derive(Debug, Clone)]
pub struct DispatchSettings {
    /// Stop polling a message this long after its submit.
    pub poll_deadline: Duration,
    /// Send window of jobs whose template names none (None: always).
    pub send_window: Option<SendWindow>,
    /// Where wall time comes from (send windows).
    pub clock: Clock,
}

impl Default for DispatchSettings {
    fn default() -> Self {
        DispatchSettings {
            poll_deadline: DEFAULT_POLL_DEADLINE,
            send_window: None,
            clock: Clock::System,
        }
    }
}

/// The engine writes a job's metadata ([`prepare_job`]) and reads it back here.
impl JobMeta {
    /// Reads a job's metadata.
    pub fn load(store: &Store, job: &JobId) -> Result<Option<JobMeta>, DispatchError> {
        match store.job_meta(job)? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| DispatchError::Corrupt(format!("job {job} metadata: {e}"))),
        }
    }
}

/// Everything a running job needs, shared by its tasks.
pub struct JobContext {
    /// Job id.
    pub job: JobId,
    /// The store.
    pub store: Store,
    /// The IO calls of the send and poll loop (the real client, or a scenario's table).
    pub client: Arc<dyn MessagesApi>,
    /// The shared call budget.
    pub budget: RateBudget,
    /// The bound template (renders messages at send time).
    pub template: BoundTemplate,
    /// Filter, poll policy, priorities.
    pub options: JobOptions,
    /// Engine settings.
    pub settings: DispatchSettings,
    /// Live counts.
    pub counters: Arc<Counters>,
    /// The subscriber set, for `filter = "feed"`.
    pub subscribers: Option<SharedSubscribers>,
    /// Pause, cancel and the send window.
    pub control: Arc<JobControl>,
    /// The campaign whose ledger this job claims each citizen in before sending
    /// ([`claim::before_send`]).
    pub campaign: CampaignKey,
    /// `--allow-repeat`: the job sends to citizens another job of the campaign holds too (it
    /// still claims the ones nobody has sent, so other jobs leave them).
    pub allow_repeat: bool,
}

impl JobContext {
    /// Builds the context of an ingested job from the store, seeding the counters.
    /// `subscribers` is required when the job's filter is `feed`.
    pub fn load(
        store: Store,
        job: JobId,
        client: Arc<dyn MessagesApi>,
        budget: RateBudget,
        settings: DispatchSettings,
        subscribers: Option<SharedSubscribers>,
    ) -> Result<JobContext, DispatchError> {
        let meta = JobMeta::load(&store, &job)?
            .ok_or_else(|| DispatchError::UnknownJob(job.to_string()))?;
        let template = Template::from_toml_str(&meta.template_text, &meta.template_path)?;
        let options = template.options();
        let template_campaign = template.campaign().to_owned();
        // The template's own window wins over the default (it was validated at parse).
        let window = match template.send_window() {
            Some(spec) => Some(
                SendWindow::parse(spec, control::DEFAULT_TIMEZONE)
                    .map_err(|e| DispatchError::Unsupported(e.to_string()))?,
            ),
            None => settings.send_window.clone(),
        };
        let control = Arc::new(JobControl::new(window, settings.clock.clone()));
        if meta.cancelled {
            control.cancel();
        } else if meta.paused {
            control.pause();
        }
        let template = template.bind(&meta.header)?;
        if matches!(options.filter, job::FilterMode::Feed)
            && !subscribers.as_ref().is_some_and(|s| s.is_synced())
        {
            return Err(DispatchError::Unsupported(
                "filter = \"feed\" needs a synced subscriber set: run `corriere feed sync` (or use filter = \"profile\")".to_owned(),
            ));
        }
        let counters = Arc::new(Counters::new(job.as_str()));
        for (outcome, n) in store.count_states(&job)? {
            counters.set(outcome, n);
        }
        // A job of a release before campaigns has none stored: its campaign is its subject
        // as written, the same rule (it claims each citizen before sending like any other).
        let campaign = CampaignKey::of(meta.campaign.as_deref().unwrap_or(&template_campaign));
        Ok(JobContext {
            campaign,
            allow_repeat: meta.allow_repeat,
            job,
            store,
            client,
            budget,
            template,
            options,
            settings,
            counters,
            subscribers,
            control,
        })
    }
}

/// The options (filter, poll policy) of a stored job.
pub fn job_options(store: &Store, job: &JobId) -> Result<JobOptions, DispatchError> {
    let meta =
        JobMeta::load(store, job)?.ok_or_else(|| DispatchError::UnknownJob(job.to_string()))?;
    Ok(Template::from_toml_str(&meta.template_text, &meta.template_path)?.options())
}

/// What [`prepare_job`] did.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The job id.
    pub job: JobId,
    /// The job already existed (this is a resume).
    pub resumed: bool,
    /// Rows read in this call (0 when the ingest was already complete).
    pub rows_ingested: u64,
}

/// The operator's choices for a job.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// `--encoding`, `--sheet`, `--allow-repeat` (part of the job's identity).
    pub inputs: job::JobInputs,
}

/// CRC of a row's values (length-prefixed), to tell a conflicting duplicate from a copy.
pub fn values_crc(values: &[String]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for v in values {
        h.update(&(v.len() as u32).to_be_bytes());
        h.update(v.as_bytes());
    }
    h.finalize()
}

/// The store's record that jobs of releases before the campaign ledger have been entered in it.
const LEDGER_BACKFILLED_META: &str = "dispatch.ledger_backfilled";

/// Enters the jobs of releases before the campaign ledger in it, once per store: each citizen
/// such a job sent, is sending, may have sent (`unknown`) or still has queued, under the job's
/// campaign (its subject as written). Without it, the first re-run after an upgrade would send
/// a campaign again to everyone. Returns how many entries were made.
pub async fn backfill_campaign_ledger(store: &Store) -> Result<u64, DispatchError> {
    if store.meta_get(LEDGER_BACKFILLED_META)?.is_some() {
        return Ok(0);
    }
    let mut entered = 0u64;
    for job in store.list_jobs()? {
        let Some(meta) = JobMeta::load(store, &job)? else {
            continue;
        };
        if meta.campaign.is_some() || meta.allow_repeat {
            continue;
        }
        let template = match Template::from_toml_str(&meta.template_text, &meta.template_path) {
            Ok(t) => t,
            Err(e) => {
                warn!(job = %job, error = %e, "A job of an earlier release has a template this release refuses; it is not entered in the campaign ledger.");
                continue;
            }
        };
        let campaign = CampaignKey::of(template.campaign());
        // A send of a running job may claim one of these citizens meanwhile: the batch is then
        // refused and the job scanned again (what was entered stays entered).
        let mut of_job = 0u64;
        let mut conflicts = 0u32;
        loop {
            match backfill_job(store, &job, &campaign).await {
                Ok(n) => {
                    of_job += n;
                    break;
                }
                Err(DispatchError::Store(StoreError::LedgerConflict))
                    if conflicts < MAX_LEDGER_CONFLICTS =>
                {
                    conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
        if of_job > 0 {
            info!(job = %job, entries = of_job, "A job of an earlier release entered in the campaign ledger.");
        }
        entered += of_job;
    }
    store.meta_put(LEDGER_BACKFILLED_META, b"1")?;
    store.flush().await?;
    Ok(entered)
}

/// Enters one job of an earlier release in the ledger; returns how many entries were made
/// (some may be made before a [`StoreError::LedgerConflict`]).
async fn backfill_job(
    store: &Store,
    job: &JobId,
    campaign: &CampaignKey,
) -> Result<u64, DispatchError> {
    let mut batch = store.batch();
    let mut in_batch = 0;
    let mut entered = 0u64;
    for rec in store.scan_recipients(job, 0) {
        let rec = rec?;
        let holds = matches!(rec.state, RecipientState::Queued) || rec.state.may_have_created();
        let Ok(fc) = <[u8; 16]>::try_from(rec.fiscal_code.as_bytes()) else {
            continue;
        };
        if holds
            && store.hold_if_absent(
                &mut batch,
                campaign,
                job,
                fc,
                rec.line,
                values_crc(&rec.values),
            )?
        {
            in_batch += 1;
            if in_batch == INGEST_BATCH {
                store
                    .commit(std::mem::replace(&mut batch, store.batch()))
                    .await?;
                entered += in_batch as u64;
                in_batch = 0;
            }
        }
    }
    store.commit(batch).await?;
    Ok(entered + in_batch as u64)
}

/// An ingest batch refused this many times in a row because the campaign ledger changed under
/// it (sends of other jobs claiming its citizens) stops the ingest with the error; a restart
/// resumes it.
const MAX_LEDGER_CONFLICTS: u32 = 64;

/// What the campaign ledger says about a citizen another job holds: `Some(already_sent)` when
/// that job has sent it, is sending it or may have ([`RecipientState::may_have_created`]), or
/// was deleted after sending it; None when it never sent it (queued, cancelled, refused,
/// filtered out): this job may take it over. A claim is not a message: a holder that only
/// queued the citizen does not make this row `already_sent`.
pub fn held_state(
    store: &Store,
    holder: &JobId,
    line: u64,
) -> Result<Option<RecipientState>, DispatchError> {
    let state = match store.recipient(holder, line)? {
        // Deleted: its entries that remain are the citizens it sent (delete releases the rest).
        None => None,
        Some(rec) if rec.state.may_have_created() => Some(rec.state),
        Some(_) => return Ok(None),
    };
    Ok(Some(already_sent(holder, line, state.as_ref())))
}

/// The `already_sent` state of a row whose citizen `holder` (line `line`, in `state`; None:
/// deleted) has sent.
pub(crate) fn already_sent(
    holder: &JobId,
    line: u64,
    state: Option<&RecipientState>,
) -> RecipientState {
    RecipientState::AlreadySent {
        job: holder.to_string(),
        line,
        id: state.and_then(|s| s.message_id()).map(str::to_owned),
    }
}

/// Deletes a job from the store: its records, metadata and progress, and its campaign ledger
/// claims on citizens it never sent (another job of the campaign may send them now). Its
/// entries for citizens it sent (or may have) stay: they still count, so no later job sends
/// them the campaign again. The job must not be running (refused while a send is in flight).
pub async fn delete_job(store: &Store, job: &JobId) -> Result<(), DispatchError> {
    let meta =
        JobMeta::load(store, job)?.ok_or_else(|| DispatchError::UnknownJob(job.to_string()))?;
    let campaign = match &meta.campaign {
        Some(name) => Some(CampaignKey::of(name)),
        None => match Template::from_toml_str(&meta.template_text, &meta.template_path) {
            Ok(t) => Some(CampaignKey::of(t.campaign())),
            Err(e) => {
                warn!(job = %job, error = %e, "The deleted job's template does not parse: its campaign ledger claims stay (they count as sent).");
                None
            }
        },
    };
    store.delete_job(job, campaign.as_ref()).await?;
    info!(job = %job, "Job deleted.");
    Ok(())
}

/// Creates the job for (`template_path`, `recipients_path`) or finds it if these exact inputs
/// were submitted before, then ingests whatever part of the CSV is not in the store yet.
/// `on_rows` is called after each batch with the total rows read (for a progress display).
pub async fn prepare_job(
    store: &Store,
    template_path: &Path,
    recipients_path: &Path,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<Prepared, DispatchError> {
    prepare_job_with(
        store,
        template_path,
        recipients_path,
        &PrepareOptions::default(),
        on_rows,
    )
    .await
}

/// [`prepare_job`] with the operator's options. Store-wide, ingests take turns: each reads the
/// campaign ledger the previous one wrote.
pub async fn prepare_job_with(
    store: &Store,
    template_path: &Path,
    recipients_path: &Path,
    options: &PrepareOptions,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<Prepared, DispatchError> {
    let template_text =
        std::fs::read_to_string(template_path).map_err(|source| job::JobError::Io {
            path: template_path.to_owned(),
            line: None,
            source,
        })?;
    let template = Template::from_toml_str(&template_text, template_path)?;
    let inputs = &options.inputs;
    // One read of the CSV before anything is created: its identity, its lines, and an
    // encoding that does not decode stops the job here.
    let identified = job::identify(&template_text, recipients_path, &template, inputs)?;
    let job = JobId::new(identified.id.as_str());
    let existing = JobMeta::load(store, &job)?;
    let resumed = existing.is_some();
    let mut ingest = Ingest::open_inputs(recipients_path, &template, inputs)?;
    let meta = match existing {
        Some(meta) if meta.phase != JobPhase::Ingesting => {
            return Ok(Prepared {
                job,
                resumed: true,
                rows_ingested: 0,
            })
        }
        Some(meta) => meta,
        None => {
            let meta = JobMeta {
                id: job.to_string(),
                created_at: Clock::System.now().to_rfc3339(),
                template_path: template_path.to_owned(),
                template_text,
                recipients_path: recipients_path.to_owned(),
                header: ingest.header().to_vec(),
                phase: JobPhase::Ingesting,
                rows: 0,
                paused: false,
                cancelled: false,
                campaign: Some(template.campaign().to_owned()),
                allow_repeat: inputs.allow_repeat,
                encoding: inputs.encoding.map(|e| e.name().to_owned()),
                delimiter: Some(char::from(ingest.delimiter())),
                lines: Some(identified.lines),
                sheet: identified.sheet.clone(),
                due_date_in_past: DueDateWarnings::default(),
            };
            store.put_job_meta(&job, &meta.encode())?;
            if inputs.allow_repeat {
                warn!(job = %job, campaign = template.campaign(), "--allow-repeat: citizens who already have a message of this campaign get it again.");
            }
            meta
        }
    };
    let campaign = CampaignKey::of(template.campaign());
    let ledger = if inputs.allow_repeat {
        Ledger::Record(&campaign)
    } else {
        Ledger::Enforce(&campaign)
    };
    // Ingests take turns: a citizen is claimed in the ledger by exactly one of them.
    let _turn = store.ingest_turn().await;
    backfill_campaign_ledger(store).await?;
    let (lines_done, _, rows_done) = store.ingest_progress_rows(&job)?;
    if lines_done > 0 {
        ingest.resume_after(lines_done)?;
        info!(job = %job, after_line = lines_done, "Resuming an interrupted ingest.");
    }
    let mut total_rows = rows_done.unwrap_or_else(|| lines_done.saturating_sub(1));
    let mut rows = 0u64;
    let mut last_line = lines_done;
    let mut conflicts = 0u32;
    loop {
        // Where this batch starts: a batch the ledger refuses is read again from here.
        let (start_line, start_total, start_rows) = (last_line, total_rows, rows);
        let mut batch = store.batch();
        let mut warnings = DueDateWarnings::default();
        let mut n = 0;
        for row in ingest.by_ref() {
            let row = row?;
            match row.outcome {
                RowOutcome::Valid {
                    fiscal_code: fc,
                    values,
                    warnings: row_warnings,
                } => {
                    let bytes: [u8; 16] = fc
                        .expose()
                        .as_bytes()
                        .try_into()
                        .expect("a fiscal code is 16 ASCII bytes");
                    let crc = values_crc(&values);
                    let claim =
                        store.claim_recipient(&mut batch, &job, ledger, bytes, row.line, crc)?;
                    let state = match claim {
                        RecipientClaim::New | RecipientClaim::SameLine => RecipientState::Queued,
                        RecipientClaim::Duplicate {
                            first_line,
                            same_values: true,
                        } => RecipientState::Duplicate { first_line },
                        RecipientClaim::Duplicate { first_line, .. } => {
                            RecipientState::DuplicateConflict { first_line }
                        }
                        RecipientClaim::Held {
                            job: holder,
                            line,
                            entry,
                        } => match held_state(store, &holder, line)? {
                            Some(state) => state,
                            None => {
                                store.take_over(
                                    &mut batch,
                                    &campaign,
                                    &job,
                                    bytes,
                                    row.line,
                                    crc,
                                    &entry,
                                    (holder, line),
                                );
                                RecipientState::Queued
                            }
                        },
                    };
                    if matches!(state, RecipientState::Queued)
                        && row_warnings.contains(&job::RowWarning::DueDateInPast)
                    {
                        warnings.add(row.line);
                    }
                    batch.put_recipient(
                        &job,
                        &RecipientRecord {
                            line: row.line,
                            fiscal_code: crate::store::FcBytes::valid(bytes),
                            values: if matches!(state, RecipientState::Queued) {
                                values
                            } else {
                                Vec::new()
                            },
                            state,
                        },
                    );
                }
                RowOutcome::Invalid { field, reason } => {
                    batch.put_recipient(
                        &job,
                        &RecipientRecord {
                            line: row.line,
                            fiscal_code: crate::store::FcBytes::raw(&row.raw_fiscal_code),
                            values: Vec::new(),
                            state: RecipientState::Invalid { field, reason },
                        },
                    );
                }
            }
            last_line = row.line;
            n += 1;
            if n == INGEST_BATCH {
                break;
            }
        }
        rows += n as u64;
        total_rows += n as u64;
        let complete = n < INGEST_BATCH;
        batch.set_ingest_progress(&job, last_line, complete, total_rows);
        match store.commit(batch).await {
            Ok(()) => {}
            // A send of another job claimed one of this batch's citizens after the batch read
            // the ledger: nothing was written; the batch is read again and decided afresh.
            Err(StoreError::LedgerConflict) if conflicts < MAX_LEDGER_CONFLICTS => {
                conflicts += 1;
                info!(job = %job, after_line = start_line, "The campaign ledger changed under an ingest batch (another job sent to one of its citizens); reading the batch again.");
                (last_line, total_rows, rows) = (start_line, start_total, start_rows);
                ingest = Ingest::open_inputs(recipients_path, &template, inputs)?;
                if start_line > 0 {
                    ingest.resume_after(start_line)?;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if warnings.count > 0 {
            update_meta(store, &job, |m| {
                m.due_date_in_past.count += warnings.count;
                for l in &warnings.lines {
                    if m.due_date_in_past.lines.len() < WARNING_LINES {
                        m.due_date_in_past.lines.push(*l);
                    }
                }
            })?;
        }
        on_rows(total_rows);
        if complete {
            break;
        }
    }
    // Every physical line after the header is one row: anything else is a bug or a file that
    // changed under us, and nothing is sent.
    let data_lines = identified.lines.saturating_sub(1);
    if total_rows != data_lines {
        return Err(job::JobError::LineCount {
            path: recipients_path.to_owned(),
            lines: identified.lines,
            rows: total_rows,
        }
        .into());
    }
    let _ = meta;
    // Only rows and phase change here: an operator's pause or cancel written meanwhile stays.
    update_meta(store, &job, |m| {
        m.rows = total_rows;
        m.phase = JobPhase::Running;
    })?;
    store.flush().await?;
    info!(job = %job, rows = total_rows, "Ingest complete.");
    Ok(Prepared {
        job,
        resumed,
        rows_ingested: rows,
    })
}

/// Records an operator's pause / resume / cancel in the job's metadata (durable), so a restart
/// keeps it. Returns the updated metadata.
pub async fn set_job_flags(
    store: &Store,
    job: &JobId,
    paused: Option<bool>,
    cancelled: Option<bool>,
) -> Result<JobMeta, DispatchError> {
    let meta = update_meta(store, job, |m| {
        if let Some(p) = paused {
            m.paused = p;
        }
        if let Some(c) = cancelled {
            m.cancelled = c;
        }
    })?
    .ok_or_else(|| DispatchError::UnknownJob(job.to_string()))?;
    store.flush().await?;
    Ok(meta)
}

/// Changes a job's metadata atomically (concurrent changes to other fields are kept).
/// `None` when the job has no metadata.
pub fn update_meta(
    store: &Store,
    job: &JobId,
    mut change: impl FnMut(&mut JobMeta),
) -> Result<Option<JobMeta>, DispatchError> {
    let mut corrupt = None;
    let written = store.update_job_meta(job, |bytes| {
        match serde_json::from_slice::<JobMeta>(bytes) {
            Ok(mut meta) => {
                change(&mut meta);
                Some(meta.encode())
            }
            Err(e) => {
                corrupt = Some(e.to_string());
                None
            }
        }
    })?;
    if let Some(e) = corrupt {
        return Err(DispatchError::Corrupt(format!("job {job} metadata: {e}")));
    }
    written
        .map(|bytes| {
            serde_json::from_slice(&bytes)
                .map_err(|e| DispatchError::Corrupt(format!("job {job} metadata: {e}")))
        })
        .transpose()
}

/// Marks a job done (every recipient has an outcome).
pub fn mark_done(store: &Store, job: &JobId) -> Result<(), DispatchError> {
    update_meta(store, job, |m| m.phase = JobPhase::Done)?;
    Ok(())
}

/// What [`requeue_unknown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Recipients found in `sending` (an interrupted run) and made `unknown` first.
    pub recovered: u64,
    /// Recipients queued again.
    pub requeued: u64,
    /// `unknown` recipients left alone because IO answered with a message id: their message
    /// exists, a re-send would be a certain duplicate.
    pub kept_with_id: u64,
}

/// Puts every `Unknown` recipient of `job` back in `Queued` (the operator decided to re-send
/// them, accepting that IO may already have created some). Recipients still `Sending` after a
/// crash are made `Unknown` first (what a run's recovery does), so they are counted and
/// re-sent too; an `Unknown` with a message id is kept (IO certainly created it). The job's
/// phase only moves from Done back to Running: an interrupted ingest stays one, so the rest of
/// the file is still read.
pub async fn requeue_unknown(store: &Store, job: &JobId) -> Result<Requeued, DispatchError> {
    let mut batch = store.batch();
    let mut done = Requeued::default();
    for rec in store.scan_recipients(job, 0) {
        let rec = rec?;
        match rec.state {
            RecipientState::Sending { .. } => {
                done.recovered += 1;
                done.requeued += 1;
                batch.set_state(job, rec.line, RecipientState::Queued);
            }
            RecipientState::Unknown { id: Some(_), .. } => done.kept_with_id += 1,
            RecipientState::Unknown { id: None, .. } => {
                batch.set_state(job, rec.line, RecipientState::Queued);
                done.requeued += 1;
            }
            _ => {}
        }
    }
    update_meta(store, job, |m| {
        if m.phase == JobPhase::Done {
            m.phase = JobPhase::Running;
        }
    })?;
    store.commit(batch).await?;
    Ok(done)
}

#[cfg(test)]
mod scenarios;
#[cfg(test)]
mod tests;
