//! The checks: from the facts and the service's data, what IO is certain to refuse (blocking)
//! and what cannot be known (a warning that says what to set).

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::io_api::{CmsLifecycleStatus, CmsServicePayload};
use crate::model::FiscalCode;

use super::facts::*;
use super::report::*;
use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Publication {
    Published,
    Unpublished,
    Never,
    Unknown(String),
}

/// The service as the manage API shows it.
#[derive(Debug, Clone)]
pub(super) struct ServiceView {
    pub(super) id: String,
    pub(super) lifecycle: CmsLifecycleStatus,
    pub(super) publication: Publication,
    pub(super) data: CmsServicePayload,
}

/// Whom the job reaches, compared with the service's `authorized_recipients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reach {
    /// No job: a campaign to citizens is assumed.
    NoJob,
    /// Every target is an authorized recipient (IO's sandbox and quality checks do not apply).
    OnlyAuthorized,
    /// Targets outside the list.
    Others(Outside),
    /// Targets known, the list not.
    ListUnknown,
}

impl Reach {
    pub(super) fn of(
        targets: Option<&TargetSet>,
        authorized: Option<&BTreeSet<FiscalCode>>,
    ) -> Reach {
        match (targets, authorized) {
            (None, _) => Reach::NoJob,
            (Some(_), None) => Reach::ListUnknown,
            (Some(t), Some(a)) => {
                let out = t.outside(a);
                if out.count == 0 {
                    Reach::OnlyAuthorized
                } else {
                    Reach::Others(out)
                }
            }
        }
    }
}

pub(super) fn describe_outside(o: &Outside) -> String {
    let count = if o.exact {
        format!("{}", o.count)
    } else {
        format!("at least {}", o.count)
    };
    match o.first {
        Some(fc) => format!("{count} of the job's targets (e.g. {fc}) are not listed"),
        None => format!("{count} of the job's targets are not listed"),
    }
}

pub(super) fn authorized_set(data: &CmsServicePayload) -> BTreeSet<FiscalCode> {
    data.authorized_recipients
        .iter()
        .filter_map(|s| FiscalCode::parse(s).ok())
        .collect()
}

/// A mandatory field the service lacks: (field, what the guide §4.1 calls it).
pub fn missing_mandatory(data: &CmsServicePayload) -> Vec<(&'static str, &'static str)> {
    let filled = |s: &str| !s.trim().is_empty();
    let some = |s: &Option<String>| s.as_deref().is_some_and(filled);
    let mut missing = Vec::new();
    if !filled(&data.name) {
        missing.push(("name", "service_name"));
    }
    if !filled(&data.organization.name) {
        missing.push(("organization.name", "organization_name"));
    }
    let fc = &data.organization.fiscal_code;
    if !(fc.len() == 11 && fc.bytes().all(|b| b.is_ascii_digit())) {
        missing.push(("organization.fiscal_code", "organization_fiscal_code"));
    }
    if data.authorized_cidrs.is_empty() {
        missing.push(("authorized_cidrs", "authorized_cidrs"));
    }
    if !matches!(
        data.metadata.scope.as_deref(),
        Some("LOCAL") | Some("NATIONAL")
    ) {
        missing.push(("metadata.scope", "service_metadata.scope"));
    }
    if !some(&data.metadata.privacy_url) {
        missing.push(("metadata.privacy_url", "service_metadata.privacy_url"));
    }
    if !filled(&data.description) {
        missing.push(("description", "service_metadata.description"));
    }
    let m = &data.metadata;
    if ![&m.phone, &m.email, &m.pec, &m.support_url]
        .iter()
        .any(|c| some(c))
    {
        missing.push((
            "metadata.contact",
            "a contact: phone, email, pec or support_url",
        ));
    }
    missing
}

pub(super) fn check_mandatory(
    data: &CmsServicePayload,
    reach: Reach,
    report: &mut PreflightReport,
) {
    let missing = missing_mandatory(data);
    if missing.is_empty() {
        report.push(
            Severity::Ok,
            "mandatory data",
            "complete (name, organization, description, scope, privacy_url, a contact, \
             authorized_cidrs)",
        );
        return;
    }
    // IO refuses messages from a service without these (its ValidService check, 403 Recipient
    // forbidden) to anyone but the service's authorized recipients; the guide (§4.3) says such
    // a service "non permette l'invio dei messaggi ai cittadini".
    let (severity, why) = match reach {
        Reach::OnlyAuthorized => (
            Severity::Warning,
            "mandatory for production (guide §4.1); the job targets only authorized recipients, \
             which IO still serves"
                .to_owned(),
        ),
        Reach::Others(o) => (
            Severity::Blocking,
            format!(
                "mandatory for production (guide §4.1): IO refuses messages from an incomplete \
                 service to anyone but its authorized_recipients (403), and {}",
                describe_outside(&o)
            ),
        ),
        Reach::NoJob | Reach::ListUnknown => (
            Severity::Blocking,
            "mandatory for production (guide §4.1): IO refuses messages from an incomplete \
             service to citizens (403)"
                .to_owned(),
        ),
    };
    for (field, guide) in missing {
        let name = if field == guide {
            String::new()
        } else {
            format!(" ({guide})")
        };
        report.push(
            severity,
            field,
            format!("missing{name}: {why}; fix it with `corriere service update`"),
        );
    }
}

pub(super) fn check_lifecycle(s: &ServiceView, report: &mut PreflightReport) {
    let reason = s.lifecycle.reason.as_deref().unwrap_or("no reason given");
    match s.lifecycle.value.as_str() {
        "approved" => report.push(Severity::Ok, checks::LIFECYCLE, "approved"),
        "draft" => report.push(
            Severity::Warning,
            checks::LIFECYCLE,
            format!(
                "draft: never submitted for review (`corriere service review --service-id {}`)",
                s.id
            ),
        ),
        "submitted" => report.push(
            Severity::Warning,
            checks::LIFECYCLE,
            "submitted: in review at PagoPA (frozen until the review ends)",
        ),
        "rejected" => {
            // The guide's words, unless IO's reason already says them.
            let gloss = if reason.to_lowercase().contains("dati incompleti") {
                ""
            } else {
                " (dati incompleti o incorretti)"
            };
            report.push(
                Severity::Warning,
                checks::LIFECYCLE,
                format!("rejected{gloss}: {reason}; update the service and submit it again"),
            )
        }
        "deleted" => report.push(
            Severity::Blocking,
            checks::LIFECYCLE,
            "deleted: the service cannot send any more",
        ),
        other => report.push(
            Severity::Warning,
            checks::LIFECYCLE,
            format!("unknown lifecycle status {other:?}"),
        ),
    }
    match &s.publication {
        Publication::Published => report.push(
            Severity::Ok,
            checks::PUBLICATION,
            "published: visible in App IO (servizio attivo)",
        ),
        Publication::Unpublished => report.push(
            Severity::Warning,
            checks::PUBLICATION,
            "unpublished: citizens no longer see the service in App IO (is_visible false)",
        ),
        Publication::Never => report.push(
            Severity::Warning,
            checks::PUBLICATION,
            "never published: the service is not visible in App IO (is_visible false); \
             `corriere service publish` once approved",
        ),
        Publication::Unknown(e) => report.push(
            Severity::Warning,
            checks::PUBLICATION,
            format!("publication state unknown: {e}"),
        ),
    }
}

pub(super) fn check_payments(
    service_max: Option<u64>,
    payments: Option<PaymentFacts>,
    report: &mut PreflightReport,
) {
    let Some(p) = payments else { return };
    match service_max {
        Some(max) if p.max_amount > max => report.push(
            Severity::Blocking,
            checks::PAYMENTS,
            format!(
                "the job's largest amount is {} cents but max_allowed_payment_amount is {max} \
                 cents{}: IO answers 400 to every payment message above it",
                p.max_amount,
                if max == 0 {
                    " (the default: every payment message is refused)"
                } else {
                    ""
                }
            ),
        ),
        Some(max) => report.push(
            Severity::Ok,
            checks::PAYMENTS,
            format!(
                "{} payment message(s), largest amount {} cents ≤ max_allowed_payment_amount {max}",
                p.messages, p.max_amount
            ),
        ),
        None => report.push(
            Severity::Warning,
            checks::PAYMENTS,
            format!(
                "{} payment message(s) up to {} cents, but the service's \
                 max_allowed_payment_amount is unknown (set io.manage_key and io.service_id): \
                 IO's default is 0, which refuses every payment message",
                p.messages, p.max_amount
            ),
        ),
    }
}

pub(super) fn check_premium(premium: Option<bool>, advanced: bool, report: &mut PreflightReport) {
    if !advanced {
        return;
    }
    match premium {
        Some(true) => report.push(
            Severity::Ok,
            checks::PREMIUM,
            "ADVANCED messages; Premium declared (io.premium)",
        ),
        Some(false) => report.push(
            Severity::Blocking,
            checks::PREMIUM,
            "ADVANCED messages from a service without Premium (io.premium = false): IO answers \
             403 to every one; send STANDARD or ask IO for Premium (guide §2.6)",
        ),
        None => report.push(
            Severity::Warning,
            checks::PREMIUM,
            "ADVANCED messages: IO answers 403 to each one unless the service has Premium, which \
             its API does not tell; set io.premium = true once IO has enabled it",
        ),
    }
}

/// Whether `ip` may call IO under `cidrs` (empty: anyone), as IO reads them: an address without
/// a prefix is a single host (FACTS §2).
pub fn cidr_allows(cidrs: &[String], ip: IpAddr) -> bool {
    if cidrs.is_empty() {
        return true;
    }
    cidrs.iter().any(|c| {
        let c = c.trim();
        let net = if c.contains('/') {
            c.parse::<ipnet::IpNet>().ok()
        } else {
            c.parse::<IpAddr>().ok().map(ipnet::IpNet::from)
        };
        net.is_some_and(|n| n.contains(&ip))
    })
}

pub(super) fn check_source_ip(
    cidrs: Option<&[String]>,
    ip: Option<IpAddr>,
    report: &mut PreflightReport,
) {
    match (cidrs, ip) {
        // Empty: any address (reported as missing mandatory data).
        (Some([]), _) | (None, None) => {}
        (Some(c), Some(ip)) if cidr_allows(c, ip) => report.push(
            Severity::Ok,
            checks::SOURCE_IP,
            format!("{ip} is inside authorized_cidrs"),
        ),
        (Some(c), Some(ip)) => report.push(
            Severity::Blocking,
            checks::SOURCE_IP,
            format!(
                "{ip} is outside authorized_cidrs ({}): IO answers 403 (You are not allowed \
                 here) to every call from it",
                c.join(", ")
            ),
        ),
        (Some(c), None) => report.push(
            Severity::Warning,
            checks::SOURCE_IP,
            format!(
                "authorized_cidrs is {}; corriere does not know its public address: set \
                 io.source_ip (or --source-ip) to check it",
                c.join(", ")
            ),
        ),
        (None, Some(ip)) => report.push(
            Severity::Warning,
            checks::SOURCE_IP,
            format!(
                "{ip} not checked: the service's authorized_cidrs are unknown (set io.manage_key \
                 and io.service_id)"
            ),
        ),
    }
}
