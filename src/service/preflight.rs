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

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use tracing::warn;

use super::ServiceError;
use crate::dispatch::JobMeta;
use crate::io_api::{
    ApiKey, CmsLifecycleStatus, CmsServicePayload, ForbiddenKind, IoClient, IoError,
};
use crate::job::{BoundTemplate, Ingest, RowOutcome, Template};
use crate::model::{FeatureLevelType, FiscalCode};
use crate::store::{FcBytes, JobId, RecipientState, Store};

/// Fiscal codes for the sandbox probe: IO's sandbox pattern (`…A..Y…X`, FACTS §2) with a
/// municipality code that does not exist, so the probe never asks about a real person.
pub const PROBE_FISCAL_CODES: [&str; 2] = ["AAAAAA00A00Y000X", "BBBBBB00A00Y000X"];

/// Distinct targets kept in memory to compare with `authorized_recipients` (a sandbox list holds a
/// handful of test codes; beyond this many distinct targets, some are certainly outside it).
pub const TARGETS_KEPT: usize = 10_000;

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

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// IO would refuse the campaign (or every message of a kind): the job does not start.
    Blocking,
    /// Worth a look (or not checkable): shown and logged, the job goes on.
    Warning,
    /// Checked and fine.
    Ok,
}

impl Severity {
    /// The table's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Blocking => "BLOCKING",
            Severity::Warning => "WARNING",
            Severity::Ok => "ok",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report. `detail` never holds a clear fiscal code or a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// What was checked: a service field (`metadata.privacy_url`) or one of [`checks`].
    pub check: &'static str,
    /// What was found, and what to do.
    pub detail: String,
}

/// Everything the preflight found, in the order it checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightReport {
    /// The findings.
    pub findings: Vec<Finding>,
}

/// Width of the DETAIL column before it wraps.
const DETAIL_WIDTH: usize = 72;

impl PreflightReport {
    fn push(&mut self, severity: Severity, check: &'static str, detail: impl Into<String>) {
        self.findings.push(Finding {
            severity,
            check,
            detail: detail.into(),
        });
    }

    /// The blocking findings.
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocking)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }

    /// Whether a campaign must not start.
    pub fn is_blocked(&self) -> bool {
        self.blocking().next().is_some()
    }

    /// `Err(Blocked)` when a campaign must not start.
    pub fn refusal(&self) -> Result<(), super::ServiceError> {
        match self.blocking().count() {
            0 => Ok(()),
            blocking => Err(super::ServiceError::Blocked { blocking }),
        }
    }

    /// The findings of one check.
    pub fn of(&self, check: &str) -> impl Iterator<Item = &Finding> {
        let check = check.to_owned();
        self.findings.iter().filter(move |f| f.check == check)
    }

    /// Logs warnings and blocking findings (fields first, a sentence last).
    pub fn log(&self) {
        for f in &self.findings {
            match f.severity {
                Severity::Blocking => {
                    warn!(check = f.check, detail = %f.detail, "Service preflight: blocking.")
                }
                Severity::Warning => {
                    warn!(check = f.check, detail = %f.detail, "Service preflight: warning.")
                }
                Severity::Ok => {}
            }
        }
    }

    /// The report as a table: SEVERITY, CHECK, DETAIL (wrapped), and a summary line.
    pub fn table(&self) -> String {
        let check_width = self
            .findings
            .iter()
            .map(|f| f.check.chars().count())
            .chain(std::iter::once("CHECK".len()))
            .max()
            .unwrap_or(5);
        let sev_width = "BLOCKING".len();
        let mut out = String::new();
        out.push_str(&format!(
            "{:<sev_width$}  {:<check_width$}  DETAIL\n",
            "SEVERITY", "CHECK"
        ));
        out.push_str(&format!(
            "{}  {}  {}\n",
            "-".repeat(sev_width),
            "-".repeat(check_width),
            "-".repeat(DETAIL_WIDTH.min(40))
        ));
        for f in &self.findings {
            let lines = wrap(&f.detail, DETAIL_WIDTH);
            for (i, line) in lines.iter().enumerate() {
                if i == 0 {
                    out.push_str(&format!(
                        "{:<sev_width$}  {:<check_width$}  {line}\n",
                        f.severity.as_str(),
                        f.check
                    ));
                } else {
                    out.push_str(&format!(
                        "{:<sev_width$}  {:<check_width$}  {line}\n",
                        "", ""
                    ));
                }
            }
        }
        let blocking = self.blocking().count();
        let warnings = self.warnings().count();
        let ok = self.findings.len() - blocking - warnings;
        out.push_str(&format!(
            "{blocking} blocking, {warnings} warning(s), {ok} ok\n"
        ));
        out
    }
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

/// Greedy word wrap (a word longer than `width` gets its own line).
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = if line.is_empty() {
            word.chars().count()
        } else {
            line.chars().count() + 1 + word.chars().count()
        };
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}

/// The distinct targets of a job, kept up to [`TARGETS_KEPT`].
#[derive(Debug, Clone, Default)]
pub struct TargetSet {
    kept: BTreeSet<FiscalCode>,
    more: bool,
}

/// How many targets are outside a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Outside {
    /// How many (a lower bound when not `exact`).
    count: usize,
    exact: bool,
    /// One of them.
    first: Option<FiscalCode>,
}

impl TargetSet {
    /// Adds a target.
    pub fn insert(&mut self, fc: FiscalCode) {
        if self.kept.len() < TARGETS_KEPT || self.kept.contains(&fc) {
            self.kept.insert(fc);
        } else {
            self.more = true;
        }
    }

    /// No targets.
    pub fn is_empty(&self) -> bool {
        self.kept.is_empty()
    }

    /// Distinct targets (a lower bound when more than [`TARGETS_KEPT`]).
    pub fn len(&self) -> usize {
        self.kept.len() + usize::from(self.more)
    }

    /// The first target (in fiscal code order).
    pub fn first(&self) -> Option<FiscalCode> {
        self.kept.iter().next().copied()
    }

    fn outside(&self, authorized: &BTreeSet<FiscalCode>) -> Outside {
        let mut listed_out = self.kept.iter().filter(|fc| !authorized.contains(fc));
        let first = listed_out.next().copied();
        let kept_out = usize::from(first.is_some()) + listed_out.count();
        if self.more {
            // More than TARGETS_KEPT distinct targets: at most |authorized| of them are listed.
            let floor = (TARGETS_KEPT + 1).saturating_sub(authorized.len());
            Outside {
                count: kept_out.max(floor),
                exact: false,
                first,
            }
        } else {
            Outside {
                count: kept_out,
                exact: true,
                first,
            }
        }
    }
}

/// Payments a job carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PaymentFacts {
    /// Messages with payment data.
    pub messages: u64,
    /// The largest amount, in euro cents.
    pub max_amount: u64,
}

/// What a job needs from the service.
#[derive(Debug, Clone, Default)]
pub struct JobFacts {
    /// The recipients still to send to; None without a job (a campaign to citizens is assumed).
    pub targets: Option<TargetSet>,
    /// Payments, when the job carries any.
    pub payments: Option<PaymentFacts>,
    /// The job sends ADVANCED messages.
    pub advanced: bool,
    /// Our public address as IO sees it, when known (config `io.source_ip`, `--source-ip`).
    pub source_ip: Option<IpAddr>,
}

impl JobFacts {
    /// No job: what a campaign to citizens would meet.
    pub fn without_job(source_ip: Option<IpAddr>) -> JobFacts {
        JobFacts {
            source_ip,
            ..JobFacts::default()
        }
    }

    fn for_template(bound: &BoundTemplate, source_ip: Option<IpAddr>) -> JobFacts {
        JobFacts {
            targets: Some(TargetSet::default()),
            payments: None,
            advanced: bound.feature_level_type() == Some(FeatureLevelType::Advanced),
            source_ip,
        }
    }

    fn add(&mut self, bound: &BoundTemplate, fc: FiscalCode, values: &[String]) {
        if let Some(t) = &mut self.targets {
            t.insert(fc);
        }
        if bound.has_payment() {
            // A row whose payment does not render is Invalid at ingest and never sent.
            if let Ok(Some(p)) = bound.payment_data(values) {
                let facts = self.payments.get_or_insert(PaymentFacts {
                    messages: 0,
                    max_amount: 0,
                });
                facts.messages += 1;
                facts.max_amount = facts.max_amount.max(p.amount);
            }
        }
    }

    /// The facts of an ingested job: its recipients still `queued` (on a resume, those already
    /// sent are not targets any more).
    pub fn from_store(
        store: &Store,
        job: &JobId,
        source_ip: Option<IpAddr>,
    ) -> Result<JobFacts, ServiceError> {
        let meta = JobMeta::load(store, job)
            .map_err(|e| ServiceError::Job(e.to_string()))?
            .ok_or_else(|| ServiceError::Job(format!("no job {job} in the store")))?;
        let template = Template::from_toml_str(&meta.template_text, &meta.template_path)
            .map_err(|e| ServiceError::Job(e.to_string()))?;
        let bound = template
            .bind(&meta.header)
            .map_err(|e| ServiceError::Job(e.to_string()))?;
        let mut facts = JobFacts::for_template(&bound, source_ip);
        for rec in store.scan_recipients(job, 0) {
            let rec = rec.map_err(|e| ServiceError::Job(e.to_string()))?;
            if !matches!(rec.state, RecipientState::Queued) {
                continue;
            }
            let FcBytes::Valid(bytes) = rec.fiscal_code else {
                continue;
            };
            let Some(fc) = std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| FiscalCode::parse(s).ok())
            else {
                continue;
            };
            facts.add(&bound, fc, &rec.values);
        }
        Ok(facts)
    }

    /// The facts of a template and a recipients CSV, read without a store (`service check`).
    pub fn from_files(
        template: &Path,
        recipients: &Path,
        source_ip: Option<IpAddr>,
    ) -> Result<JobFacts, ServiceError> {
        let template =
            Template::from_toml_file(template).map_err(|e| ServiceError::Job(e.to_string()))?;
        let ingest =
            Ingest::open(recipients, &template).map_err(|e| ServiceError::Job(e.to_string()))?;
        let bound = ingest.template().clone();
        let mut facts = JobFacts::for_template(&bound, source_ip);
        for row in ingest {
            let row = row.map_err(|e| ServiceError::Job(e.to_string()))?;
            if let RowOutcome::Valid {
                fiscal_code,
                values,
                ..
            } = row.outcome
            {
                facts.add(&bound, fiscal_code, &values);
            }
        }
        Ok(facts)
    }
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

/// Publication state of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Publication {
    Published,
    Unpublished,
    Never,
    Unknown(String),
}

/// The service as the manage API shows it.
#[derive(Debug, Clone)]
struct ServiceView {
    id: String,
    lifecycle: CmsLifecycleStatus,
    publication: Publication,
    data: CmsServicePayload,
}

/// Whom the job reaches, compared with the service's `authorized_recipients`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
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
    fn of(targets: Option<&TargetSet>, authorized: Option<&BTreeSet<FiscalCode>>) -> Reach {
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

fn describe_outside(o: &Outside) -> String {
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

/// Runs every check it can and returns the report. Never fails: what it cannot check is a
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

async fn read_service(
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

fn authorized_set(data: &CmsServicePayload) -> BTreeSet<FiscalCode> {
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

fn check_mandatory(data: &CmsServicePayload, reach: Reach, report: &mut PreflightReport) {
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

fn check_lifecycle(s: &ServiceView, report: &mut PreflightReport) {
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

/// What a POST /profiles answer says about the key.
enum KeyKind {
    Production,
    Sandbox,
    Refused(String),
    Unknown(String),
}

fn key_kind(answer: Result<crate::io_api::LimitedProfile, IoError>) -> KeyKind {
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

const SANDBOX_MEANS: &str = "IO refuses recipients outside authorized_recipients (403 Recipient \
                             forbidden: a sandbox key, or a service missing mandatory data)";

async fn probe_key(
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
async fn probe_first_target(
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

fn check_payments(
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

fn check_premium(premium: Option<bool>, advanced: bool, report: &mut PreflightReport) {
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

fn check_source_ip(cidrs: Option<&[String]>, ip: Option<IpAddr>, report: &mut PreflightReport) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io_api::{CmsOrganization, CmsServiceMetadata};

    fn fc(s: &str) -> FiscalCode {
        FiscalCode::parse(s).unwrap()
    }

    fn complete() -> CmsServicePayload {
        CmsServicePayload {
            name: "TARI".into(),
            description: "Avvisi TARI".into(),
            organization: CmsOrganization {
                name: "Comune di Prova".into(),
                fiscal_code: "01234567890".into(),
                department_name: None,
            },
            metadata: CmsServiceMetadata {
                scope: Some("LOCAL".into()),
                privacy_url: Some("https://comune.example/privacy".into()),
                pec: Some("comune@pec.example".into()),
                ..Default::default()
            },
            require_secure_channel: None,
            authorized_recipients: vec!["AAAAAA00A00A000A".into()],
            authorized_cidrs: vec!["203.0.113.0/24".into()],
            max_allowed_payment_amount: Some(100_000),
        }
    }

    #[test]
    fn a_complete_service_misses_nothing() {
        assert!(missing_mandatory(&complete()).is_empty());
    }

    #[test]
    fn each_missing_mandatory_field_is_named() {
        type Break = Box<dyn Fn(&mut CmsServicePayload)>;
        let cases: Vec<(&str, Break)> = vec![
            ("name", Box::new(|d| d.name = " ".into())),
            ("description", Box::new(|d| d.description.clear())),
            (
                "organization.name",
                Box::new(|d| d.organization.name.clear()),
            ),
            (
                "organization.fiscal_code",
                Box::new(|d| d.organization.fiscal_code = "123".into()),
            ),
            ("authorized_cidrs", Box::new(|d| d.authorized_cidrs.clear())),
            ("metadata.scope", Box::new(|d| d.metadata.scope = None)),
            (
                "metadata.privacy_url",
                Box::new(|d| d.metadata.privacy_url = Some(String::new())),
            ),
            ("metadata.contact", Box::new(|d| d.metadata.pec = None)),
        ];
        for (field, breaks) in cases {
            let mut d = complete();
            breaks(&mut d);
            let missing: Vec<&str> = missing_mandatory(&d).iter().map(|m| m.0).collect();
            assert_eq!(missing, vec![field]);
        }
    }

    #[test]
    fn missing_data_blocks_only_when_the_job_reaches_beyond_the_authorized() {
        let mut d = complete();
        d.metadata.privacy_url = None;
        let authorized: BTreeSet<FiscalCode> = [fc("AAAAAA00A00A000A")].into();
        let mut only_test = TargetSet::default();
        only_test.insert(fc("AAAAAA00A00A000A"));
        let mut r = PreflightReport::default();
        check_mandatory(&d, Reach::of(Some(&only_test), Some(&authorized)), &mut r);
        assert_eq!(r.findings[0].severity, Severity::Warning);
        let mut citizens = only_test.clone();
        citizens.insert(fc("RSSMRA85T10A562S"));
        let mut r = PreflightReport::default();
        check_mandatory(&d, Reach::of(Some(&citizens), Some(&authorized)), &mut r);
        assert_eq!(r.findings[0].severity, Severity::Blocking);
        assert_eq!(r.findings[0].check, "metadata.privacy_url");
        assert!(r.findings[0].detail.contains("1 of the job's targets"));
        // Masked, never in clear.
        assert!(!r.findings[0].detail.contains("RSSMRA85T10A562S"));
    }

    #[test]
    fn targets_beyond_the_kept_set_are_counted_by_pigeonhole() {
        let mut t = TargetSet::default();
        let code = |i: usize| {
            fc(&format!(
                "RSSMRA{:02}A{:02}H{:03}X",
                i / 100_000 % 100,
                i / 1000 % 100,
                i % 1000
            ))
        };
        for i in 0..TARGETS_KEPT + 10 {
            t.insert(code(i));
        }
        let authorized: BTreeSet<FiscalCode> = [code(0), fc("AAAAAA00A00A000A")].into();
        let o = t.outside(&authorized);
        assert!(!o.exact);
        assert!(o.count >= TARGETS_KEPT - 1, "{o:?}");
    }

    #[test]
    fn payments_above_the_limit_block_and_the_default_zero_is_named() {
        let p = Some(PaymentFacts {
            messages: 3,
            max_amount: 5_000,
        });
        let mut r = PreflightReport::default();
        check_payments(Some(0), p, &mut r);
        assert_eq!(r.findings[0].severity, Severity::Blocking);
        assert!(r.findings[0].detail.contains("the default"));
        let mut r = PreflightReport::default();
        check_payments(Some(5_000), p, &mut r);
        assert_eq!(r.findings[0].severity, Severity::Ok);
        let mut r = PreflightReport::default();
        check_payments(None, p, &mut r);
        assert_eq!(r.findings[0].severity, Severity::Warning);
        let mut r = PreflightReport::default();
        check_payments(Some(0), None, &mut r);
        assert!(r.findings.is_empty());
    }

    #[test]
    fn advanced_without_premium_blocks_and_unknown_premium_warns() {
        for (premium, want) in [
            (Some(false), Some(Severity::Blocking)),
            (None, Some(Severity::Warning)),
            (Some(true), Some(Severity::Ok)),
        ] {
            let mut r = PreflightReport::default();
            check_premium(premium, true, &mut r);
            assert_eq!(r.findings.first().map(|f| f.severity), want);
        }
        let mut r = PreflightReport::default();
        check_premium(Some(false), false, &mut r);
        assert!(r.findings.is_empty());
    }

    #[test]
    fn source_address_against_cidrs_as_io_reads_them() {
        let cidrs = vec!["203.0.113.0/24".to_owned(), "198.51.100.7".to_owned()];
        assert!(cidr_allows(&cidrs, "203.0.113.9".parse().unwrap()));
        assert!(cidr_allows(&cidrs, "198.51.100.7".parse().unwrap()));
        assert!(!cidr_allows(&cidrs, "198.51.100.8".parse().unwrap()));
        assert!(cidr_allows(&[], "192.0.2.1".parse().unwrap()));
        let mut r = PreflightReport::default();
        check_source_ip(Some(&cidrs), Some("192.0.2.1".parse().unwrap()), &mut r);
        assert_eq!(r.findings[0].severity, Severity::Blocking);
        let mut r = PreflightReport::default();
        check_source_ip(Some(&cidrs), None, &mut r);
        assert_eq!(r.findings[0].severity, Severity::Warning);
        assert!(r.findings[0].detail.contains("io.source_ip"));
    }

    #[test]
    fn the_table_has_one_row_per_finding_and_a_summary() {
        let mut r = PreflightReport::default();
        r.push(Severity::Ok, checks::SERVICE, "read service X");
        r.push(
            Severity::Blocking,
            checks::PAYMENTS,
            "a long detail ".repeat(12),
        );
        r.push(Severity::Warning, checks::PREMIUM, "short");
        let t = r.table();
        assert!(t.starts_with("SEVERITY"));
        assert!(t.contains("BLOCKING  payments"));
        assert!(t
            .lines()
            .all(|l| l.chars().count() <= 8 + 2 + 14 + 2 + DETAIL_WIDTH));
        assert!(t.ends_with("1 blocking, 1 warning(s), 1 ok\n"), "{t}");
        assert!(r.is_blocked());
    }

    #[test]
    fn probe_codes_are_fiscal_codes_of_nobody() {
        for s in PROBE_FISCAL_CODES {
            let f = fc(s);
            assert_eq!(f.expose(), s);
            assert_eq!(&s[11..12], "Y", "municipality letter Y does not exist");
        }
    }
}
