//! What a job needs from IO, read from the store or the files: its targets, amounts, message
//! kinds and our address.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::Path;

use super::ServiceError;
use crate::job::{BoundTemplate, Ingest, RowOutcome, Template};
use crate::model::job::JobMeta;
use crate::model::RecipientState;
use crate::model::{FeatureLevelType, FiscalCode};
use crate::store::{JobId, Store};

/// Distinct targets kept in memory to compare with `authorized_recipients` (a sandbox list holds a
/// handful of test codes; beyond this many distinct targets, some are certainly outside it).
pub const TARGETS_KEPT: usize = 10_000;

/// The distinct targets of a job, kept up to [`TARGETS_KEPT`].
#[derive(Debug, Clone, Default)]
pub struct TargetSet {
    pub(super) kept: BTreeSet<FiscalCode>,
    pub(super) more: bool,
}

/// How many targets are outside a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Outside {
    /// How many (a lower bound when not `exact`).
    pub(super) count: usize,
    pub(super) exact: bool,
    /// One of them.
    pub(super) first: Option<FiscalCode>,
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

    pub(super) fn outside(&self, authorized: &BTreeSet<FiscalCode>) -> Outside {
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

    pub(super) fn for_template(bound: &BoundTemplate, source_ip: Option<IpAddr>) -> JobFacts {
        JobFacts {
            targets: Some(TargetSet::default()),
            payments: None,
            advanced: bound.feature_level_type() == Some(FeatureLevelType::Advanced),
            source_ip,
        }
    }

    pub(super) fn add(&mut self, bound: &BoundTemplate, fc: FiscalCode, values: &[String]) {
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
            let Some(fc) = rec.fiscal_code.code() else {
                continue;
            };
            facts.add(&bound, *fc, &rec.values);
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
