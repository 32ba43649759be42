//! Preparing a job: [`prepare_job`] creates it (its identity derives from its inputs) or finds
//! it, then ingests whatever part of the CSV is not in the store yet, each row claimed in the
//! campaign ledger and settled (`queued`, `duplicate`, `already_sent`, `invalid`…) before a
//! single call to IO.

use std::path::Path;

use tracing::{info, warn};

use super::error::DispatchError;
use super::ledger::{backfill_campaign_ledger, held_state, values_crc, MAX_LEDGER_CONFLICTS};
use super::meta::update_meta;
use crate::clock::Clock;
use crate::job::{self, Ingest, RowOutcome, Template};
use crate::model::job::{DueDateWarnings, JobMeta, JobPhase, WARNING_LINES};
use crate::model::{RecipientRecord, RecipientState};
use crate::store::{CampaignKey, JobId, Ledger, RecipientClaim, Store, StoreError};

/// Rows written to the store per ingest batch (one flush each).
pub const INGEST_BATCH: usize = 4096;

/// What [`prepare_job`] did.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The job id.
    pub job: JobId,
    /// The job already existed (this is a resume).
    pub resumed: bool,
    /// Rows read in this call (0 when the ingest was already complete).
    pub rows_ingested: u64,
}

/// The operator's choices for a job.
#[derive(Debug, Clone, Default)]
pub struct PrepareOptions {
    /// `--encoding`, `--sheet`, `--allow-repeat` (part of the job's identity).
    pub inputs: job::JobInputs,
}

/// Creates the job for (`template_path`, `recipients_path`) or finds it if these exact inputs
/// were submitted before, then ingests whatever part of the CSV is not in the store yet.
/// `on_rows` is called after each batch with the total rows read (for a progress display).
pub async fn prepare_job(
    store: &Store,
    template_path: &Path,
    recipients_path: &Path,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<Prepared, DispatchError> {
    prepare_job_with(
        store,
        template_path,
        recipients_path,
        &PrepareOptions::default(),
        on_rows,
    )
    .await
}

/// [`prepare_job`] with the operator's options. Store-wide, ingests take turns: each reads the
/// campaign ledger the previous one wrote.
pub async fn prepare_job_with(
    store: &Store,
    template_path: &Path,
    recipients_path: &Path,
    options: &PrepareOptions,
    on_rows: &(dyn Fn(u64) + Sync),
) -> Result<Prepared, DispatchError> {
    let template_text =
        std::fs::read_to_string(template_path).map_err(|source| job::JobError::Io {
            path: template_path.to_owned(),
            line: None,
            source,
        })?;
    let template = Template::from_toml_str(&template_text, template_path)?;
    let inputs = &options.inputs;
    // One read of the CSV before anything is created: its identity, its lines, and an
    // encoding that does not decode stops the job here.
    let identified = job::identify(&template_text, recipients_path, &template, inputs)?;
    let job = JobId::new(identified.id.as_str());
    let existing = JobMeta::load(store, &job)?;
    let resumed = existing.is_some();
    let mut ingest = Ingest::open_inputs(recipients_path, &template, inputs)?;
    let meta = match existing {
        Some(meta) if meta.phase != JobPhase::Ingesting => {
            return Ok(Prepared {
                job,
                resumed: true,
                rows_ingested: 0,
            })
        }
        Some(meta) => meta,
        None => {
            let meta = JobMeta {
                id: job.to_string(),
                created_at: Clock::System.now().to_rfc3339(),
                template_path: template_path.to_owned(),
                template_text,
                recipients_path: recipients_path.to_owned(),
                header: ingest.header().to_vec(),
                phase: JobPhase::Ingesting,
                rows: 0,
                paused: false,
                cancelled: false,
                campaign: Some(template.campaign().to_owned()),
                allow_repeat: inputs.allow_repeat,
                encoding: inputs.encoding.map(|e| e.name().to_owned()),
                delimiter: Some(char::from(ingest.delimiter())),
                lines: Some(identified.lines),
                sheet: identified.sheet.clone(),
                due_date_in_past: DueDateWarnings::default(),
            };
            store.put_job_meta(&job, &meta.encode())?;
            if inputs.allow_repeat {
                warn!(job = %job, campaign = template.campaign(), "--allow-repeat: citizens who already have a message of this campaign get it again.");
            }
            meta
        }
    };
    let campaign = CampaignKey::of(template.campaign());
    let ledger = if inputs.allow_repeat {
        Ledger::Record(&campaign)
    } else {
        Ledger::Enforce(&campaign)
    };
    // Ingests take turns: a citizen is claimed in the ledger by exactly one of them.
    let _turn = store.ingest_turn().await;
    backfill_campaign_ledger(store).await?;
    let (lines_done, _, rows_done) = store.ingest_progress_rows(&job)?;
    if lines_done > 0 {
        ingest.resume_after(lines_done)?;
        info!(job = %job, after_line = lines_done, "Resuming an interrupted ingest.");
    }
    let mut total_rows = rows_done.unwrap_or_else(|| lines_done.saturating_sub(1));
    let mut rows = 0u64;
    let mut last_line = lines_done;
    let mut conflicts = 0u32;
    loop {
        // Where this batch starts: a batch the ledger refuses is read again from here.
        let (start_line, start_total, start_rows) = (last_line, total_rows, rows);
        let mut batch = store.batch();
        let mut warnings = DueDateWarnings::default();
        let mut n = 0;
        for row in ingest.by_ref() {
            let row = row?;
            match row.outcome {
                RowOutcome::Valid {
                    fiscal_code: fc,
                    values,
                    warnings: row_warnings,
                } => {
                    let bytes = *fc.as_bytes();
                    let crc = values_crc(&values);
                    let claim =
                        store.claim_recipient(&mut batch, &job, ledger, bytes, row.line, crc)?;
                    let state = match claim {
                        RecipientClaim::New | RecipientClaim::SameLine => RecipientState::Queued,
                        RecipientClaim::Duplicate {
                            first_line,
                            same_values: true,
                        } => RecipientState::Duplicate { first_line },
                        RecipientClaim::Duplicate { first_line, .. } => {
                            RecipientState::DuplicateConflict { first_line }
                        }
                        RecipientClaim::Held {
                            job: holder,
                            line,
                            entry,
                        } => match held_state(store, &holder, line)? {
                            Some(state) => state,
                            None => {
                                store.take_over(
                                    &mut batch,
                                    &campaign,
                                    &job,
                                    bytes,
                                    row.line,
                                    crc,
                                    &entry,
                                    (holder, line),
                                );
                                RecipientState::Queued
                            }
                        },
                    };
                    if matches!(state, RecipientState::Queued)
                        && row_warnings.contains(&job::RowWarning::DueDateInPast)
                    {
                        warnings.add(row.line);
                    }
                    batch.put_recipient(
                        &job,
                        &RecipientRecord {
                            line: row.line,
                            fiscal_code: crate::model::RowFiscalCode::valid(fc),
                            values: if matches!(state, RecipientState::Queued) {
                                values
                            } else {
                                Vec::new()
                            },
                            state,
                        },
                    );
                }
                RowOutcome::Invalid { field, reason } => {
                    batch.put_recipient(
                        &job,
                        &RecipientRecord {
                            line: row.line,
                            fiscal_code: crate::model::RowFiscalCode::raw(&row.raw_fiscal_code),
                            values: Vec::new(),
                            state: RecipientState::Invalid { field, reason },
                        },
                    );
                }
            }
            last_line = row.line;
            n += 1;
            if n == INGEST_BATCH {
                break;
            }
        }
        rows += n as u64;
        total_rows += n as u64;
        let complete = n < INGEST_BATCH;
        batch.set_ingest_progress(&job, last_line, complete, total_rows);
        match store.commit(batch).await {
            Ok(()) => conflicts = 0,
            // A send of another job claimed one of this batch's citizens after the batch read
            // the ledger: nothing was written; the batch is read again and decided afresh.
            Err(StoreError::LedgerConflict) if conflicts < MAX_LEDGER_CONFLICTS => {
                conflicts += 1;
                info!(job = %job, after_line = start_line, "The campaign ledger changed under an ingest batch (another job sent to one of its citizens); reading the batch again.");
                // A running job of the campaign sending through this batch's citizens in the
                // same order refuses it until it has moved past them: give it time (20 ms
                // more each time, at most 1 s; ~40 s over the retries in a row).
                tokio::time::sleep(std::time::Duration::from_millis(
                    20 * u64::from(conflicts.min(50)),
                ))
                .await;
                (last_line, total_rows, rows) = (start_line, start_total, start_rows);
                ingest = Ingest::open_inputs(recipients_path, &template, inputs)?;
                if start_line > 0 {
                    ingest.resume_after(start_line)?;
                }
                continue;
            }
            Err(e) => return Err(e.into()),
        }
        if warnings.count > 0 {
            update_meta(store, &job, |m| {
                m.due_date_in_past.count += warnings.count;
                for l in &warnings.lines {
                    if m.due_date_in_past.lines.len() < WARNING_LINES {
                        m.due_date_in_past.lines.push(*l);
                    }
                }
            })?;
        }
        on_rows(total_rows);
        if complete {
            break;
        }
    }
    // Every physical line after the header is one row: anything else is a bug or a file that
    // changed under us, and nothing is sent.
    let data_lines = identified.lines.saturating_sub(1);
    if total_rows != data_lines {
        return Err(job::JobError::LineCount {
            path: recipients_path.to_owned(),
            lines: identified.lines,
            rows: total_rows,
        }
        .into());
    }
    let _ = meta;
    // Only rows and phase change here: an operator's pause or cancel written meanwhile stays.
    update_meta(store, &job, |m| {
        m.rows = total_rows;
        m.phase = JobPhase::Running;
    })?;
    store.flush().await?;
    info!(job = %job, rows = total_rows, "Ingest complete.");
    Ok(Prepared {
        job,
        resumed,
        rows_ingested: rows,
    })
}
