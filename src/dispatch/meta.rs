//! A job's metadata as the engine changes it: [`update_meta`] (atomic, the store's
//! [`JobMeta::update`]), the operator's flags ([`set_job_flags`]) and [`mark_done`]. Reading it
//! is the store's ([`JobMeta::load`]).

use super::error::DispatchError;
use crate::model::job::{JobMeta, JobPhase};
use crate::store::{JobId, Store};

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
    change: impl FnMut(&mut JobMeta),
) -> Result<Option<JobMeta>, DispatchError> {
    Ok(JobMeta::update(store, job, change)?)
}

/// Marks a job done (every recipient has an outcome).
pub fn mark_done(store: &Store, job: &JobId) -> Result<(), DispatchError> {
    update_meta(store, job, |m| m.phase = JobPhase::Done)?;
    Ok(())
}
