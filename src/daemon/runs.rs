//! A job's run in the daemon: its runner task (ingest from the inputs it was created from,
//! then the one job runner) and [`LiveView`], what the API sees of it while it runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::dispatch::{
    prepare_job_with, DispatchError, JobContext, JobMeta, JobPhase, PrepareOptions,
};
use crate::runner;
use crate::store::Store;

use super::*;

/// How the daemon watches a running job: its live counts and controls become visible to the
/// API, and its settled count is sampled for the rate and ETA.
pub(super) struct LiveView {
    pub(super) entry: Arc<JobEntry>,
    pub(super) store: Store,
    pub(super) sampler: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl crate::runtime::FeedObserver for LiveView {}

impl runner::RunObserver for LiveView {
    fn started(&self, ctx: &Arc<JobContext>) -> Result<(), DispatchError> {
        let entry = &self.entry;
        *entry.ctx.lock().expect("job ctx lock") = Some(ctx.clone());
        *entry.final_counts.lock().expect("job counts lock") = None;
        // A pause, resume or cancel that came while the context loaded found no context to
        // tell: read the flags again now that it is visible (a store that cannot say stops the
        // run: sending against an unknown cancel is not an option).
        match JobMeta::load(&self.store, &entry.id)? {
            Some(m) if m.cancelled => ctx.control.cancel(),
            Some(m) if m.paused => ctx.control.pause(),
            Some(_) => ctx.control.resume(),
            None => {}
        }
        let entry = entry.clone();
        let counters = ctx.counters.clone();
        let sampler = tokio::spawn(async move {
            let mut tick = tokio::time::interval(RATE_SAMPLE_EVERY);
            loop {
                tick.tick().await;
                let mut s = entry.samples.lock().expect("samples lock");
                s.push_back((Instant::now(), counters.settled()));
                if s.len() > RATE_SAMPLES {
                    s.pop_front();
                }
            }
        });
        *self.sampler.lock().expect("sampler lock") = Some(sampler);
        Ok(())
    }

    fn stopped(&self) {
        if let Some(sampler) = self.sampler.lock().expect("sampler lock").take() {
            sampler.abort();
        }
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        runner::RunObserver::stopped(self);
    }
}

impl Daemon {
    /// Starts (or restarts) a job's runner.
    pub(super) fn spawn_runner(
        &self,
        entry: Arc<JobEntry>,
        template: PathBuf,
        recipients: PathBuf,
    ) {
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
                let counts = ctx.counters.snapshot();
                *entry.final_counts.lock().expect("job counts lock") = Some(counts);
            }
            if let Err(e) = &result {
                error!(job = %entry.id, error = %e, "Job stopped by an error; resume it once the cause is fixed.");
                *entry.error.lock().expect("job error lock") = Some(e.to_string());
            }
            entry.running.store(false, Ordering::SeqCst);
        });
    }

    pub(super) async fn run_one(
        &self,
        entry: &Arc<JobEntry>,
        template: &Path,
        recipients: &Path,
        stop: &CancellationToken,
    ) -> Result<(), runner::RunError> {
        self.ingest(entry, template, recipients).await?;
        if stop.is_cancelled() {
            return Ok(());
        }
        let observer = LiveView {
            entry: entry.clone(),
            store: self.store().clone(),
            sampler: Mutex::new(None),
        };
        runner::run(self.runtime(), &entry.id, &observer, stop).await?;
        Ok(())
    }

    /// Reads a job's recipients into the store unless done already, from the very inputs the
    /// job was created from.
    pub(super) async fn ingest(
        &self,
        entry: &Arc<JobEntry>,
        template: &Path,
        recipients: &Path,
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
            let options = PrepareOptions { inputs };
            prepare_job_with(&store, template, recipients, &options, &|_| {}).await?;
        }
        Ok(())
    }
}
