//! A job's metadata as the engine reads and changes it: [`JobMeta::load`], [`update_meta`]
//! (atomic), the operator's flags ([`set_job_flags`]) and [`mark_done`].

use super::error::DispatchError;
use crate::model::job::{JobMeta, JobPhase};
use crate::store::{JobId, Store};

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
