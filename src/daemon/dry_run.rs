//! The dry run: a job's inputs read whole, every row validated and rendered, the filter
//! applied, and the calls and time it would take estimated; nothing sent, no job created.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Clock;
use crate::dispatch::{self, DueDateWarnings};
use crate::feed::Freshness;
use crate::job::{FilterMode, Ingest, JobInputs, PollPolicy, RowOutcome, Template};
use crate::runner;
use crate::runtime::Quiet;
use crate::store::Store;

use api::{BackendError, CallEstimate, DryRunReport, InvalidRow};

use super::*;

impl Daemon {
    /// Validates inputs and predicts outcomes and calls without sending anything.
    pub(super) async fn dry_run(
        &self,
        template_path: PathBuf,
        recipients_path: PathBuf,
        inputs: JobInputs,
    ) -> Result<DryRunReport, BackendError> {
        let rt = self.runtime();
        dry_run(DryRun {
            template_path,
            recipients_path,
            inputs,
            store: Some(rt.store().clone()),
            feed: rt.feed(&Quiet).await.map_err(internal)?,
            rate: rt.budget().current_rate(),
            default_window: rt.settings().send_window.clone(),
            clock: rt.settings().clock.clone(),
            polls_per_message: runner::polls_per_message(rt.store()),
        })
        .await
    }
}

/// What a dry run needs.
pub struct DryRun {
    /// Template file.
    pub template_path: PathBuf,
    /// Recipients CSV.
    pub recipients_path: PathBuf,
    /// `--encoding`, `--allow-repeat`.
    pub inputs: JobInputs,
    /// The store, whose campaign ledger tells who already has the message (None: not read).
    pub store: Option<Store>,
    /// The feed (for `filter = "feed"`).
    pub feed: Option<Arc<crate::feed::Feed>>,
    /// The budget's rate now (calls/s).
    pub rate: f64,
    /// Send window of templates that name none.
    pub default_window: Option<crate::model::SendWindow>,
    /// Wall clock.
    pub clock: Clock,
    /// Polls per message to expect.
    pub polls_per_message: f64,
}

/// Validates and renders every row, applies the filter and predicts the outcomes, the IO calls
/// and the time a job will take, without sending anything (`POST /jobs?dry_run=true`,
/// `corriere send --dry-run`).
pub async fn dry_run(d: DryRun) -> Result<DryRunReport, BackendError> {
    let DryRun {
        template_path,
        recipients_path,
        inputs,
        store,
        feed,
        rate,
        default_window,
        clock,
        polls_per_message,
    } = d;
    let template_text = read_template(&template_path)?;
    let template = Template::from_toml_str(&template_text, &template_path)
        .map_err(|e| BackendError::BadRequest(e.to_string()))?;
    let options = template.options();
    let identified = crate::job::identify(&template_text, &recipients_path, &template, &inputs)
        .map_err(|e| BackendError::BadRequest(e.to_string()))?;
    let id = identified.id.clone();
    let campaign = crate::store::CampaignKey::of(template.campaign());
    let ledger = store.filter(|_| !inputs.allow_repeat);
    let ingest_inputs = inputs.clone();
    let subscribers = match options.filter {
        FilterMode::Feed => match &feed {
            Some(f) => Some(f.subscribers()),
            None => {
                return Err(BackendError::BadRequest(
                    "filter = \"feed\" but the daemon runs without the subscriptions feed"
                        .to_owned(),
                ))
            }
        },
        _ => None,
    };
    let feed_days = match (&options.filter, &feed) {
        (FilterMode::Feed, Some(f)) => match f.freshness() {
            Freshness::Fresh { through } | Freshness::Stale { through, .. } => {
                (f.last_complete_day() - through).num_days().max(0) as u64
            }
            Freshness::NeverSynced => {
                (f.last_complete_day() - crate::feed::feed_epoch()).num_days() as u64 + 1
            }
        },
        _ => 0,
    };
    let scan = tokio::task::spawn_blocking(move || -> Result<_, BackendError> {
        let ingest = Ingest::open_inputs(&recipients_path, &template, &ingest_inputs)
            .map_err(|e| BackendError::BadRequest(e.to_string()))?;
        let mut counts: BTreeMap<String, u64> = BTreeMap::new();
        let mut invalid = Vec::new();
        let mut conflicts = Vec::new();
        let mut due = DueDateWarnings::default();
        let mut seen: HashMap<[u8; 16], (u64, u32)> = HashMap::new();
        let mut rows = 0u64;
        for row in ingest {
            let row = row.map_err(|e| BackendError::BadRequest(e.to_string()))?;
            rows += 1;
            let outcome = match row.outcome {
                RowOutcome::Invalid { field, reason } => {
                    if invalid.len() < DRY_RUN_INVALID_LISTED {
                        invalid.push(InvalidRow {
                            line: row.line,
                            field,
                            reason,
                        });
                    }
                    "invalid"
                }
                RowOutcome::Valid {
                    fiscal_code,
                    values,
                    warnings,
                } => {
                    let key: [u8; 16] = fiscal_code
                        .expose()
                        .as_bytes()
                        .try_into()
                        .expect("a fiscal code is 16 ASCII bytes");
                    let crc = dispatch::values_crc(&values);
                    let held = match &ledger {
                        Some(store) => match store.ledger_holder(&campaign, &key).map_err(internal)? {
                            Some((holder, line)) => dispatch::held_state(store, &holder, line)
                                .map_err(internal)?
                                .is_some(),
                            None => false,
                        },
                        None => false,
                    };
                    if let Some(&(first, first_crc)) = seen.get(&key) {
                        if first_crc == crc {
                            "duplicate"
                        } else {
                            if conflicts.len() < DRY_RUN_INVALID_LISTED {
                                conflicts.push(InvalidRow {
                                    line: row.line,
                                    field: template.fiscal_code_column().to_owned(),
                                    reason: format!("duplicate_conflict: same fiscal code as line {first} with different values; not sent"),
                                });
                            }
                            "duplicate_conflict"
                        }
                    } else if held {
                        seen.insert(key, (row.line, crc));
                        "already_sent"
                    } else {
                        seen.insert(key, (row.line, crc));
                        if warnings.contains(&crate::job::RowWarning::DueDateInPast) {
                            due.add(row.line);
                        }
                        match (&options.filter, &subscribers) {
                            // A set never synced knows nobody: the sync comes first.
                            (FilterMode::Feed, Some(set)) if !set.is_synced() => "feed_check",
                            (FilterMode::Feed, Some(set)) => {
                                if set.contains_digest(&fiscal_code.feed_hash_bytes()) {
                                    "send"
                                } else {
                                    "not_subscribed"
                                }
                            }
                            (FilterMode::Profile, _) => "profile_check",
                            _ => "send",
                        }
                    }
                }
            };
            *counts.entry(outcome.to_owned()).or_insert(0) += 1;
        }
        // Conflicting duplicates first: they need a decision, not just a fix.
        conflicts.extend(invalid);
        conflicts.truncate(DRY_RUN_INVALID_LISTED);
        let invalid = conflicts;
        Ok((rows, counts, invalid, due))
    })
    .await
    .map_err(internal)??;
    let (rows, counts, invalid, due_date_in_past) = scan;
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    let profile_checks = get("profile_check");
    // Recipients the filter cannot decide yet (a profile check, or a set not synced yet) may
    // all be sent: an upper bound.
    let sends = get("send") + profile_checks + get("feed_check");
    let poll_share = match options.poll {
        PollPolicy::All => 1.0,
        PollPolicy::None => 0.0,
        PollPolicy::Fraction(f) => f,
    };
    let polls = (sends as f64 * poll_share * polls_per_message).round() as u64;
    let total = sends + polls + profile_checks + feed_days;
    let calls = CallEstimate {
        sends,
        polls,
        profile_checks,
        feed_days,
        total,
    };
    let estimated_seconds = if !rate.is_finite() || rate <= 0.0 || total == 0 {
        0.0
    } else {
        let needed = Duration::from_secs_f64(total as f64 / rate);
        let window = template_window(&template_text, &template_path).or(default_window);
        match window {
            Some(w) => {
                let now = clock.now();
                (w.finish_after(now, needed) - now)
                    .to_std()
                    .unwrap_or_default()
                    .as_secs_f64()
            }
            None => needed.as_secs_f64(),
        }
    };
    Ok(DryRunReport {
        id,
        rows,
        counts,
        invalid,
        due_date_in_past,
        calls,
        estimated_seconds,
        sheet: identified.sheet,
        merged_cells: identified.merged_cells,
    })
}
