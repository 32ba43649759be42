//! A job's metadata in the store (`j/<job>`, JSON): [`JobMeta::load`] and [`JobMeta::update`]
//! hand out the domain's [`JobMeta`], so a reader (the engine, the daemon, the preflight, the
//! commands) needs the store, not the engine, to know a job.

use super::{JobId, Store, StoreError};
use crate::model::job::JobMeta;

fn corrupt(job: &JobId, e: &serde_json::Error) -> StoreError {
    StoreError::JobMeta {
        job: job.to_string(),
        reason: e.to_string(),
    }
}

impl JobMeta {
    /// Reads a job's metadata; None when the store has no such job.
    pub fn load(store: &Store, job: &JobId) -> Result<Option<JobMeta>, StoreError> {
        match store.job_meta(job)? {
            None => Ok(None),
            Some(bytes) => JobMeta::decode(&bytes)
                .map(Some)
                .map_err(|e| corrupt(job, &e)),
        }
    }

    /// Changes a job's metadata atomically (concurrent changes to other fields are kept; durable
    /// on the next flush). None when the job has no metadata.
    pub fn update(
        store: &Store,
        job: &JobId,
        mut change: impl FnMut(&mut JobMeta),
    ) -> Result<Option<JobMeta>, StoreError> {
        let mut failed = None;
        let written = store.update_job_meta(job, |bytes| match JobMeta::decode(bytes) {
            Ok(mut meta) => {
                // sled retries this closure when another writer raced it: only the last
                // attempt's decode decides.
                failed = None;
                change(&mut meta);
                Some(meta.encode())
            }
            Err(e) => {
                failed = Some(corrupt(job, &e));
                None
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
        written
            .map(|bytes| JobMeta::decode(&bytes).map_err(|e| corrupt(job, &e)))
            .transpose()
    }
}
