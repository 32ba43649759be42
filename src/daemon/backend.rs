//! What the daemon offers the admin API ([`Backend`]): submit, list, job views, pause,
//! resume, cancel, the report stream, readiness.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use crate::dispatch::control::Gate;
use crate::dispatch::report::{write_report, FiscalCodes};
use crate::dispatch::{self, DispatchError};
use crate::feed::Freshness;
use crate::job::{FilterMode, Ingest, Template};
use crate::model::job::{JobMeta, JobPhase};
use crate::model::Outcome;
use crate::runtime::Quiet;
use crate::store::JobId;

use inputs::UploadUse;

use api::{Backend, BackendError, Codes, Input, JobSpec, JobState, JobView, Readiness, Submitted};

use super::*;

impl Daemon {
    /// The job view of one entry.
    pub(super) fn view(&self, entry: &JobEntry) -> Result<JobView, BackendError> {
        let store = self.store();
        let meta = JobMeta::load(store, &entry.id)
            .map_err(internal)?
            .ok_or_else(|| BackendError::NotFound(entry.id.to_string()))?;
        let ctx = entry.ctx();
        let by_outcome: BTreeMap<Outcome, u64> = match &ctx {
            Some(c) => c.counters.snapshot(),
            None => {
                let mut cache = entry.final_counts.lock().expect("job counts lock");
                match &*cache {
                    Some(c) => c.clone(),
                    None => {
                        let counts = store.count_states(&entry.id).map_err(internal)?;
                        // Only a finished job's counts stay put.
                        if meta.phase == JobPhase::Done {
                            *cache = Some(counts.clone());
                        }
                        counts
                    }
                }
            }
        };
        let settled: u64 = by_outcome
            .iter()
            .filter(|(o, _)| o.is_terminal())
            .map(|(_, v)| v)
            .sum();
        let counts: BTreeMap<String, u64> = by_outcome
            .into_iter()
            .map(|(o, v)| (o.as_str().to_owned(), v))
            .collect();
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
                        let now = self.runtime().settings().clock.now();
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
        let has_feed = self.runtime().has_feed();
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

    async fn report(&self, id: &str, codes: Codes) -> Result<ReportStream, BackendError> {
        let (store, job) = self.report_source(id)?;
        let codes = fiscal_codes(codes);
        Ok(stream_blocking(move |out| {
            write_report(&store, &job, Some(out), codes).map(|_| ())
        }))
    }

    async fn report_xlsx(&self, id: &str, codes: Codes) -> Result<ReportStream, BackendError> {
        let (store, job) = self.report_source(id)?;
        let codes = fiscal_codes(codes);
        let service_id = self
            .runtime()
            .preflight()
            .and_then(|p| p.settings.service_id.clone());
        Ok(stream_blocking(move |out| {
            let facts = crate::runner::report_facts(&store, &job, service_id.as_deref());
            crate::dispatch::report_xlsx::write_report_xlsx(&store, &job, out, codes, &facts)
                .map(|_| ())
        }))
    }

    fn staging_dir(&self) -> Option<PathBuf> {
        Some(self.inner.parts.uploads_dir.join("staging"))
    }

    async fn readiness(&self) -> Readiness {
        let store = self.store().size_on_disk().is_ok();
        let (subscriber_set, detail) = match &self.runtime().feed(&Quiet).await {
            Err(_) => (
                false,
                Some("the subscriber set could not be opened (see the log)".to_owned()),
            ),
            Ok(None) => (true, None),
            Ok(Some(f)) => match f.freshness() {
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
    pub(super) async fn flags(
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

    /// The store and job a report of `id` reads (409 while the job is not in the store yet).
    fn report_source(&self, id: &str) -> Result<(crate::store::Store, JobId), BackendError> {
        let entry = self.entry(id)?;
        if JobMeta::load(self.store(), &entry.id)
            .map_err(internal)?
            .is_none()
        {
            return Err(BackendError::Conflict(format!(
                "job {id} has not been read into the store yet"
            )));
        }
        Ok((self.store().clone(), entry.id.clone()))
    }
}

/// The API's choice of codes in a report, as the report writer takes it.
fn fiscal_codes(codes: Codes) -> FiscalCodes {
    match codes {
        Codes::Masked => FiscalCodes::Masked,
        Codes::Clear => FiscalCodes::Clear,
    }
}
