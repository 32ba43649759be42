//! [`preflight_job`]: the service preflight of one stored job, run before its first send by every
//! way a job runs (`send`, `resend-unknown`, the daemon). One gate, so none of them can skip it.

use std::net::IpAddr;

use tracing::info;

use super::preflight::{self, JobFacts, PreflightReport, PreflightSettings};
use super::ServiceError;
use crate::io_api::IoClient;
use crate::store::{JobId, Store};

/// Checks `job`'s queued recipients against the service. `Ok(None)`: nothing is left to send,
/// nothing was checked. `Ok(Some(report))`: the findings (already logged); the caller shows the
/// table and stops the job when [`PreflightReport::refusal`] says so.
pub async fn preflight_job(
    client: &IoClient,
    settings: &PreflightSettings,
    store: &Store,
    job: &JobId,
    source_ip: Option<IpAddr>,
) -> Result<Option<PreflightReport>, ServiceError> {
    let facts = {
        // A scan of every recipient record: off the async threads.
        let (store, job) = (store.clone(), job.clone());
        tokio::task::spawn_blocking(move || JobFacts::from_store(&store, &job, source_ip))
            .await
            .map_err(|e| ServiceError::Job(format!("preflight scan failed: {e}")))??
    };
    if facts.targets.as_ref().is_some_and(|t| t.is_empty()) {
        info!(job = %job, "Service preflight skipped: nothing left to send.");
        return Ok(None);
    }
    let report = preflight::check(client, settings, &facts).await;
    report.log();
    Ok(Some(report))
}
