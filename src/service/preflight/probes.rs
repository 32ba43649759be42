//! The IO calls of the preflight: the service as the manage API shows it, and POST /profiles
//! probes that tell a sandbox key from a production one.

use std::collections::BTreeSet;

use crate::io_api::{ForbiddenKind, IoClient, IoError};
use crate::model::FiscalCode;

use super::facts::*;
use super::report::*;
use super::rules::*;
use super::*;

/// Fiscal codes for the sandbox probe: IO's sandbox pattern (`…A..Y…X`, FACTS §2) with a
/// municipality code that does not exist, so the probe never asks about a real person.
pub const PROBE_FISCAL_CODES: [&str; 2] = ["AAAAAA00A00Y000X", "BBBBBB00A00Y000X"];

pub(super) async fn read_service(
    client: &IoClient,
    settings: &PreflightSettings,
    report: &mut PreflightReport,
) -> Option<ServiceView> {
    if !settings.manage {
        report.push(
            Severity::Warning,
            checks::SERVICE,
            "no manage key (io.manage_key): mandatory data, lifecycle, payment limit and \
             authorized_cidrs are not checked",
        );
        return None;
    }
    let Some(id) = settings.service_id.as_deref() else {
        report.push(
            Severity::Warning,
            checks::SERVICE,
            "no service id (io.service_id or --service-id): mandatory data, lifecycle, payment \
             limit and authorized_cidrs are not checked",
        );
        return None;
    };
    let service = match client.cms_get_service(id).await {
        Ok(s) => s,
        Err(e) => {
            let detail = match &e {
                IoError::NotFound { .. } => format!(
                    "service {id} not found with this manage key (check io.service_id): its data is not checked"
                ),
                _ => format!("cannot read service {id} ({e}): its data is not checked"),
            };
            report.push(Severity::Warning, checks::SERVICE, detail);
            return None;
        }
    };
    let publication = match client.cms_get_published_service(id).await {
        Ok(p) => match p.status.as_str() {
            "published" => Publication::Published,
            "unpublished" => Publication::Unpublished,
            other => Publication::Unknown(format!("publication status {other:?}")),
        },
        Err(IoError::NotFound { .. }) => Publication::Never,
        Err(e) => Publication::Unknown(e.to_string()),
    };
    report.push(
        Severity::Ok,
        checks::SERVICE,
        format!("read service {id} ({:?})", service.data.name),
    );
    if let Some(key) = &settings.api_key {
        match client.cms_get_service_keys(id).await {
            Ok(keys) if keys.primary_key == key.expose() || keys.secondary_key == key.expose() => {
                report.push(
                    Severity::Ok,
                    checks::KEY,
                    format!("io.api_key is a key of service {id}"),
                )
            }
            Ok(_) => report.push(
                Severity::Blocking,
                checks::KEY,
                format!(
                    "io.api_key is not a key of service {id}: the messages would leave from \
                     another service than the one checked here (fix io.api_key or io.service_id)"
                ),
            ),
            Err(e) => report.push(
                Severity::Warning,
                checks::KEY,
                format!("cannot read the keys of service {id} ({e}): not compared with io.api_key"),
            ),
        }
    }
    Some(ServiceView {
        id: service.id,
        lifecycle: service.status,
        publication,
        data: service.data,
    })
}

pub(super) enum KeyKind {
    Production,
    Sandbox,
    Refused(String),
    Unknown(String),
}

pub(super) fn key_kind(answer: Result<crate::io_api::LimitedProfile, IoError>) -> KeyKind {
    match answer {
        Ok(_) | Err(IoError::NotFound { .. }) => KeyKind::Production,
        Err(IoError::Forbidden {
            kind: ForbiddenKind::RecipientForbidden,
            ..
        }) => KeyKind::Sandbox,
        Err(e @ IoError::Unauthorized { .. }) => KeyKind::Refused(e.to_string()),
        Err(e) => KeyKind::Unknown(e.to_string()),
    }
}

pub(super) const SANDBOX_MEANS: &str =
    "IO refuses recipients outside authorized_recipients (403 Recipient \
                             forbidden: a sandbox key, or a service missing mandatory data)";

pub(super) async fn probe_key(
    client: &IoClient,
    job: &JobFacts,
    authorized: Option<&BTreeSet<FiscalCode>>,
    reach: Reach,
    report: &mut PreflightReport,
) {
    let probe = PROBE_FISCAL_CODES
        .iter()
        .filter_map(|s| FiscalCode::parse(s).ok())
        .find(|fc| authorized.is_none_or(|a| !a.contains(fc)));
    let Some(probe) = probe else {
        report.push(
            Severity::Warning,
            checks::SANDBOX,
            "not probed: the service authorizes every probe fiscal code",
        );
        return;
    };
    match key_kind(client.get_profile(&probe).await) {
        KeyKind::Production => report.push(
            Severity::Ok,
            checks::SANDBOX,
            "production key: IO answers for recipients outside authorized_recipients",
        ),
        KeyKind::Refused(e) => report.push(
            Severity::Blocking,
            checks::SANDBOX,
            format!("{e}: no message can be sent; check io.api_key"),
        ),
        KeyKind::Unknown(e) => report.push(
            Severity::Warning,
            checks::SANDBOX,
            format!("profile probe failed ({e}): sandbox or production key unknown"),
        ),
        KeyKind::Sandbox => match reach {
            Reach::OnlyAuthorized => report.push(
                Severity::Ok,
                checks::SANDBOX,
                format!("{SANDBOX_MEANS}; every target of the job is an authorized recipient"),
            ),
            Reach::Others(o) => report.push(
                Severity::Blocking,
                checks::SANDBOX,
                format!("{SANDBOX_MEANS}, and {}", describe_outside(&o)),
            ),
            Reach::NoJob => report.push(
                Severity::Blocking,
                checks::SANDBOX,
                format!("{SANDBOX_MEANS}: a campaign to citizens would fail"),
            ),
            Reach::ListUnknown => probe_first_target(client, job, probe, report).await,
        },
    }
}

/// A sandbox key whose list is unknown: one more probe, with the job's first target.
pub(super) async fn probe_first_target(
    client: &IoClient,
    job: &JobFacts,
    probe: FiscalCode,
    report: &mut PreflightReport,
) {
    let first = job
        .targets
        .as_ref()
        .and_then(TargetSet::first)
        .filter(|fc| *fc != probe);
    let Some(first) = first else {
        report.push(
            Severity::Warning,
            checks::SANDBOX,
            format!("{SANDBOX_MEANS}; the job has no other target to check"),
        );
        return;
    };
    match key_kind(client.get_profile(&first).await) {
        KeyKind::Sandbox => report.push(
            Severity::Blocking,
            checks::SANDBOX,
            format!("{SANDBOX_MEANS}, and IO refuses the job's recipient {first}"),
        ),
        KeyKind::Production => report.push(
            Severity::Warning,
            checks::SANDBOX,
            format!(
                "{SANDBOX_MEANS}; the job's recipient {first} is authorized, the others are not \
                 checked (set io.manage_key and io.service_id)"
            ),
        ),
        KeyKind::Refused(e) | KeyKind::Unknown(e) => report.push(
            Severity::Warning,
            checks::SANDBOX,
            format!("{SANDBOX_MEANS}; checking the job's recipient {first} failed ({e})"),
        ),
    }
}
