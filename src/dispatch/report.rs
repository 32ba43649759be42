//! Reports: [`write_report`] streams one CSV row per input line (every line of the CSV accounted
//! for exactly once) and returns the per-job [`JobSummary`].

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::error::DispatchError;
use crate::model::job::JobMeta;
use crate::model::{NotSubscribedReason, Outcome, RecipientState, RowFiscalCode};
use crate::store::{JobId, Store};

/// Columns of the per-recipient report.
pub const REPORT_HEADER: &[&str] = &[
    "line",
    "fiscal_code",
    "outcome",
    "message_id",
    "status",
    "read_status",
    "payment_status",
    "notification",
    "field",
    "reason",
];

/// Per-job counts by outcome.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct JobSummary {
    /// Rows in the report (= data lines of the CSV).
    pub rows: u64,
    /// Count per outcome (every outcome listed, zeros included).
    pub outcomes: BTreeMap<String, u64>,
}

impl JobSummary {
    /// Count of one outcome.
    pub fn get(&self, outcome: &str) -> u64 {
        self.outcomes.get(outcome).copied().unwrap_or(0)
    }
}

/// How fiscal codes appear in the report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FiscalCodes {
    /// `RSSMRA*******62S` (default: a report is often mailed around).
    Masked,
    /// The clear code (`--clear`), for the ente's own follow-up.
    Clear,
}

/// UTF-8 byte order mark: with it, a double-click in Excel reads the report as UTF-8.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// Writes the report of `job` as CSV to `out` (when given) and returns the summary. The report
/// starts with a UTF-8 BOM and uses the input's delimiter, so Excel (Italian locale: `;`)
/// opens it in columns with its accents.
pub fn write_report(
    store: &Store,
    job: &JobId,
    out: Option<&mut dyn Write>,
    codes: FiscalCodes,
) -> Result<JobSummary, DispatchError> {
    let delimiter = JobMeta::load(store, job)?
        .and_then(|m| m.delimiter)
        .filter(|d| d.is_ascii())
        .map_or(b',', |d| d as u8);
    let mut writer = match out {
        Some(out) => {
            out.write_all(UTF8_BOM)
                .map_err(|e| DispatchError::Internal(format!("writing report: {e}")))?;
            Some(
                csv::WriterBuilder::new()
                    .delimiter(delimiter)
                    .from_writer(out),
            )
        }
        None => None,
    };
    if let Some(w) = writer.as_mut() {
        w.write_record(REPORT_HEADER).map_err(csv_err)?;
    }
    let mut summary = JobSummary {
        rows: 0,
        outcomes: Outcome::ALL
            .iter()
            .map(|o| (o.as_str().to_owned(), 0))
            .collect(),
    };
    for rec in store.scan_recipients(job, 0) {
        let rec = rec?;
        let outcome = rec.state.outcome();
        summary.rows += 1;
        *summary
            .outcomes
            .entry(outcome.as_str().to_owned())
            .or_insert(0) += 1;
        let Some(w) = writer.as_mut() else { continue };
        let row = ReportRow::of(&rec, codes);
        w.write_record([
            row.line.as_str(),
            &spreadsheet_safe(&row.fiscal_code),
            row.outcome.as_str(),
            &row.message_id,
            &row.status,
            &row.read_status,
            &row.payment_status,
            &row.notification,
            &spreadsheet_safe(&row.field),
            &spreadsheet_safe(&row.reason),
        ])
        .map_err(csv_err)?;
    }
    if let Some(w) = writer.as_mut() {
        w.flush()
            .map_err(|e| DispatchError::Internal(format!("writing report: {e}")))?;
    }
    Ok(summary)
}

/// One row of the report, the same in every format (the columns of [`REPORT_HEADER`]).
pub(crate) struct ReportRow {
    pub(crate) line: String,
    pub(crate) fiscal_code: String,
    pub(crate) outcome: Outcome,
    pub(crate) message_id: String,
    pub(crate) status: String,
    pub(crate) read_status: String,
    pub(crate) payment_status: String,
    pub(crate) notification: String,
    pub(crate) field: String,
    pub(crate) reason: String,
}

impl ReportRow {
    /// The report row of a recipient record.
    pub(crate) fn of(rec: &crate::model::RecipientRecord, codes: FiscalCodes) -> ReportRow {
        let fc = match (&rec.fiscal_code, codes) {
            (RowFiscalCode::Valid(code), FiscalCodes::Clear) => code.expose().to_owned(),
            (RowFiscalCode::Valid(code), FiscalCodes::Masked) => code.masked(),
            (RowFiscalCode::Raw(raw), FiscalCodes::Clear) => {
                String::from_utf8_lossy(raw).into_owned()
            }
            (RowFiscalCode::Raw(raw), FiscalCodes::Masked) => {
                crate::model::fiscal_code::mask(&String::from_utf8_lossy(raw))
            }
        };
        let mut row = ReportRow {
            line: rec.line.to_string(),
            fiscal_code: fc,
            outcome: rec.state.outcome(),
            message_id: String::new(),
            status: String::new(),
            read_status: String::new(),
            payment_status: String::new(),
            notification: String::new(),
            field: String::new(),
            reason: String::new(),
        };
        fill(&mut row, &rec.state);
        row
    }

    /// The cells, in the order of [`REPORT_HEADER`].
    pub(crate) fn cells(&self) -> [&str; 10] {
        [
            &self.line,
            &self.fiscal_code,
            self.outcome.as_str(),
            &self.message_id,
            &self.status,
            &self.read_status,
            &self.payment_status,
            &self.notification,
            &self.field,
            &self.reason,
        ]
    }
}

fn fill(row: &mut ReportRow, state: &RecipientState) {
    match state {
        RecipientState::Queued | RecipientState::Sending { .. } => {}
        RecipientState::Submitted { id, .. } => {
            row.message_id = id.clone();
            row.status = "ACCEPTED".to_owned();
        }
        RecipientState::Final {
            id,
            status,
            read_status,
            payment_status,
            notification,
            ..
        } => {
            row.message_id = id.clone();
            row.status = status.clone();
            row.read_status = read_status.clone().unwrap_or_default();
            row.payment_status = payment_status.clone().unwrap_or_default();
            row.notification = notification.clone().unwrap_or_default();
        }
        RecipientState::PollExpired { id, polls, .. } => {
            row.message_id = id.clone();
            row.reason = format!("no final status after {polls} polls (Unknown status)");
        }
        RecipientState::NotSubscribed { reason } => {
            row.reason = match reason {
                NotSubscribedReason::Feed => "not in the subscriptions feed",
                NotSubscribedReason::ProfileNotFound => "profile not found on IO (404)",
                NotSubscribedReason::SenderNotAllowed => {
                    "citizen does not accept this service (sender_allowed=false)"
                }
            }
            .to_owned();
        }
        RecipientState::Invalid { field, reason } => {
            row.field = field.clone();
            row.reason = reason.clone();
        }
        RecipientState::Duplicate { first_line } => {
            row.reason = format!("same fiscal code as line {first_line}; sent once");
        }
        RecipientState::Failed {
            status,
            title,
            detail,
        } => {
            row.status = status.to_string();
            row.reason = format!("{title}: {detail}");
        }
        RecipientState::Unknown { reason, id } => {
            row.message_id = id.clone().unwrap_or_default();
            row.reason = format!("{reason} (may have been delivered; not re-sent)");
        }
        RecipientState::Cancelled => {
            row.reason = "the job was cancelled before this message was sent".to_owned();
        }
        RecipientState::AlreadySent { job, line, id } => {
            row.message_id = id.clone().unwrap_or_default();
            row.reason = match id {
                Some(_) => format!("already has this campaign's message from job {job} (line {line}); not sent"),
                None => format!("job {job} (line {line}) holds this citizen for this campaign and sends or sent it; not sent"),
            };
        }
        RecipientState::DuplicateConflict { first_line } => {
            row.reason = format!(
                "same fiscal code as line {first_line} with different values; not sent (check which row is right, fix the file and run it again)"
            );
        }
    }
}

fn csv_err(e: csv::Error) -> DispatchError {
    DispatchError::Internal(format!("writing report: {e}"))
}

/// A cell a spreadsheet shows as text: a value from the input file (an invalid row's code, a
/// column name, a reason quoting it) that starts like a formula (`=`, `+`, `-`, `@`, TAB, CR) is
/// prefixed with `'`, so a report opened in Excel never runs a formula a CSV row planted.
fn spreadsheet_safe(cell: &str) -> std::borrow::Cow<'_, str> {
    match cell.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{cell}").into(),
        _ => cell.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cell_that_looks_like_a_formula_is_shown_as_text() {
        assert_eq!(spreadsheet_safe("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        for lead in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(spreadsheet_safe(lead).starts_with('\''), "{lead:?}");
        }
        assert_eq!(spreadsheet_safe("RSSMRA*******62S"), "RSSMRA*******62S");
        assert_eq!(spreadsheet_safe(""), "");
    }

    #[test]
    fn raw_codes_are_masked_like_fiscal_codes() {
        assert_eq!(
            crate::model::fiscal_code::mask("RSSMRA85T10A562S"),
            "RSSMRA*******62S"
        );
        assert_eq!(crate::model::fiscal_code::mask("SHORT"), "*****");
        assert_eq!(crate::model::fiscal_code::mask(""), "");
    }
}
