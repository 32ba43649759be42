//! The campaign preflight: [`check`] turns what IO knows about the service and what a job needs
//! ([`JobFacts`]) into a [`PreflightReport`] of [`Finding`]s (`Blocking`, `Warning`, `Ok`).
//!
//! A finding is **blocking** only when IO is certain to refuse the campaign (or every message of a
//! kind): a sandbox key or an incomplete service while the job targets citizens outside
//! `authorized_recipients`, an amount above `max_allowed_payment_amount`, ADVANCED messages from a
//! service declared without Premium, our address outside `authorized_cidrs`, a refused key.
//! What cannot be known (no manage key, no service id, a probe that failed, our public address)
//! is a warning that says what to set: the preflight never blocks on "unknown".
//!
//! Calls: cmsGetService and cmsGetPublishedService (manage key, when configured), one POST
//! /profiles with a fiscal code that belongs to nobody (tells a sandbox key from a production one),
//! and, only for a sandbox key whose authorized recipients are unknown, one more POST /profiles
//! with the job's first target.
//!
//! Files: [`report`] (findings and the table, the presentation), [`facts`] (what a job needs,
//! read from the store or the files), [`rules`] (each check: what IO will refuse, from the
//! facts and the service's data), [`probes`] (the IO calls that find the facts the API does not
//! state: the service's data, the kind of key).

mod facts;
mod probes;
mod report;
mod rules;
#[cfg(test)]
mod tests;

use super::ServiceError;
use crate::io_api::{ApiKey, IoClient};

pub use facts::{JobFacts, PaymentFacts, TargetSet, TARGETS_KEPT};
pub use probes::PROBE_FISCAL_CODES;
pub use report::{Finding, PreflightReport, Severity};
pub use rules::{cidr_allows, missing_mandatory};

use probes::{probe_key, read_service};
use rules::{
    authorized_set, check_lifecycle, check_mandatory, check_payments, check_premium,
    check_source_ip, Reach,
};

/// Names of the checks (the table's CHECK column) that are not service fields.
pub mod checks {
    /// Reading the service through the manage API.
    pub const SERVICE: &str = "service data";
    /// The service key belongs to the service read.
    pub const KEY: &str = "api key";
    /// The lifecycle (draft, submitted, approved, rejected, deleted).
    pub const LIFECYCLE: &str = "lifecycle";
    /// Published or not (the guide's is_visible).
    pub const PUBLICATION: &str = "publication";
    /// The service key: accepted, sandbox or production.
    pub const SANDBOX: &str = "sandbox";
    /// Amounts against `max_allowed_payment_amount`.
    pub const PAYMENTS: &str = "payments";
    /// ADVANCED messages against Premium.
    pub const PREMIUM: &str = "premium";
    /// Our address against `authorized_cidrs`.
    pub const SOURCE_IP: &str = "source address";
}

/// What the preflight may use.
#[derive(Debug, Clone, Default)]
pub struct PreflightSettings {
    /// The service to read (cmsGetService).
    pub service_id: Option<String>,
    /// The client holds a manage key.
    pub manage: bool,
    /// Whether the service has Premium (IO's API does not say it; config `io.premium`).
    pub premium: Option<bool>,
    /// Probe the service key with POST /profiles (one call, two for a sandbox key whose
    /// authorized recipients are unknown).
    pub probe: bool,
    /// The service key in use, compared with the service's keys (cmsGetServiceKeys) so the
    /// report is about the service that will send. Never printed.
    pub api_key: Option<ApiKey>,
}

/// warning.
pub async fn check(
    client: &IoClient,
    settings: &PreflightSettings,
    job: &JobFacts,
) -> PreflightReport {
    let mut report = PreflightReport::default();
    let service = read_service(client, settings, &mut report).await;
    let authorized = service.as_ref().map(|s| authorized_set(&s.data));
    let reach = Reach::of(job.targets.as_ref(), authorized.as_ref());
    if let Some(s) = &service {
        check_mandatory(&s.data, reach, &mut report);
        check_lifecycle(s, &mut report);
    }
    if settings.probe {
        probe_key(client, job, authorized.as_ref(), reach, &mut report).await;
    }
    check_payments(
        service
            .as_ref()
            .map(|s| s.data.max_allowed_payment_amount.unwrap_or(0)),
        job.payments,
        &mut report,
    );
    check_premium(settings.premium, job.advanced, &mut report);
    check_source_ip(
        service.as_ref().map(|s| s.data.authorized_cidrs.as_slice()),
        job.source_ip,
        &mut report,
    );
    report
}
