//! The report as a workbook: [`write_report_xlsx`] writes the rows of the CSV report
//! ([`super::report`]) to a first sheet whose header is frozen and filtered, the outcome cell
//! coloured by what the operator has to do about it, and a second sheet with the counts per
//! outcome and the job's facts. Every value is written as a text cell (the line as a number),
//! so nothing from the input can become a formula; the sheet is written row by row to
//! temporary files (rust_xlsxwriter's constant-memory mode), so a million rows never sit in
//! memory.

use std::io::Write;

use rust_xlsxwriter::{Color, Format, FormatBorder, Workbook, XlsxError};

use super::error::DispatchError;
use super::report::{FiscalCodes, JobSummary, ReportRow, REPORT_HEADER};
use crate::model::job::{JobMeta, JobPhase};
use crate::model::Outcome;
use crate::store::{JobId, Store};

/// Name of the sheet with one row per input line.
pub const ROWS_SHEET: &str = "esito";
/// Name of the sheet with the counts and the job's facts.
pub const SUMMARY_SHEET: &str = "riepilogo";
/// Media type of an `.xlsx` file.
pub const XLSX_MEDIA_TYPE: &str =
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";

/// Whether a report path asks for a workbook (its name ends in `.xlsx`, any case).
pub fn is_xlsx(path: &std::path::Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("xlsx"))
}

/// What an outcome asks of the operator, for its colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeClass {
    /// Delivered (green).
    Delivered,
    /// Still on its way (blue).
    Pending,
    /// Not sent, by design (yellow): not subscribed, duplicate, already sent, cancelled.
    NotSent,
    /// Needs a look (red): invalid, refused, failed, unknown.
    Problem,
}

impl OutcomeClass {
    /// The class of a report outcome.
    pub fn of(outcome: Outcome) -> OutcomeClass {
        match outcome {
            Outcome::Processed => OutcomeClass::Delivered,
            o if !o.is_terminal() => OutcomeClass::Pending,
            Outcome::NotSubscribed
            | Outcome::Duplicate
            | Outcome::AlreadySent
            | Outcome::Cancelled
            | Outcome::PollExpired => OutcomeClass::NotSent,
            _ => OutcomeClass::Problem,
        }
    }

    fn fill(self) -> Color {
        match self {
            OutcomeClass::Delivered => Color::RGB(0xC6EFCE),
            OutcomeClass::Pending => Color::RGB(0xDDEBF7),
            OutcomeClass::NotSent => Color::RGB(0xFFEB9C),
            OutcomeClass::Problem => Color::RGB(0xFFC7CE),
        }
    }
}

/// Column widths of the rows sheet (characters), in the order of [`REPORT_HEADER`].
const WIDTHS: [f64; 10] = [8.0, 20.0, 18.0, 28.0, 14.0, 12.0, 14.0, 14.0, 22.0, 60.0];

fn xlsx_err(e: XlsxError) -> DispatchError {
    DispatchError::Internal(format!("writing the .xlsx report: {e}"))
}

/// Writes the report of `job` as an `.xlsx` workbook to `out` and returns the summary (the
/// same as [`super::report::write_report`]'s). `facts` are shown after the job's own (a
/// caller adds what it knows: the service, the run's calls per message…).
pub fn write_report_xlsx(
    store: &Store,
    job: &JobId,
    out: &mut (dyn Write + Send),
    codes: FiscalCodes,
    facts: &[(String, String)],
) -> Result<JobSummary, DispatchError> {
    let meta = JobMeta::load(store, job)?;
    let mut wb = Workbook::new();
    let header = Format::new()
        .set_bold()
        .set_background_color(Color::RGB(0xD9D9D9))
        .set_border_bottom(FormatBorder::Thin);
    let class_formats: Vec<(OutcomeClass, Format)> = [
        OutcomeClass::Delivered,
        OutcomeClass::Pending,
        OutcomeClass::NotSent,
        OutcomeClass::Problem,
    ]
    .into_iter()
    .map(|c| (c, Format::new().set_background_color(c.fill())))
    .collect();
    let format_of = |outcome: Outcome| {
        let class = OutcomeClass::of(outcome);
        &class_formats
            .iter()
            .find(|(c, _)| *c == class)
            .expect("every class has a format")
            .1
    };
    let mut summary = JobSummary {
        rows: 0,
        outcomes: Outcome::ALL
            .iter()
            .map(|o| (o.as_str().to_owned(), 0))
            .collect(),
    };
    {
        let ws = wb.add_worksheet_with_constant_memory();
        ws.set_name(ROWS_SHEET).map_err(xlsx_err)?;
        for (col, (name, width)) in REPORT_HEADER.iter().zip(WIDTHS).enumerate() {
            let col = col as u16;
            ws.write_string_with_format(0, col, *name, &header)
                .map_err(xlsx_err)?;
            ws.set_column_width(col, width).map_err(xlsx_err)?;
        }
        ws.set_freeze_panes(1, 0).map_err(xlsx_err)?;
        let mut row_n: u32 = 0;
        for rec in store.scan_recipients(job, 0) {
            let rec = rec?;
            let row = ReportRow::of(&rec, codes);
            summary.rows += 1;
            *summary
                .outcomes
                .entry(row.outcome.as_str().to_owned())
                .or_insert(0) += 1;
            row_n = row_n.checked_add(1).ok_or_else(|| {
                DispatchError::Internal("the report has more rows than a sheet holds".to_owned())
            })?;
            ws.write_number(row_n, 0, rec.line as f64)
                .map_err(xlsx_err)?;
            for (col, cell) in row.cells().iter().enumerate().skip(1) {
                let col = col as u16;
                if col == 2 {
                    ws.write_string_with_format(row_n, col, *cell, format_of(row.outcome))
                        .map_err(xlsx_err)?;
                } else if !cell.is_empty() {
                    ws.write_string(row_n, col, *cell).map_err(xlsx_err)?;
                }
            }
        }
        ws.autofilter(0, 0, row_n, (REPORT_HEADER.len() - 1) as u16)
            .map_err(xlsx_err)?;
    }
    {
        let ws = wb.add_worksheet();
        ws.set_name(SUMMARY_SHEET).map_err(xlsx_err)?;
        ws.set_column_width(0, 24).map_err(xlsx_err)?;
        ws.set_column_width(1, 40).map_err(xlsx_err)?;
        ws.write_string_with_format(0, 0, "outcome", &header)
            .map_err(xlsx_err)?;
        ws.write_string_with_format(0, 1, "rows", &header)
            .map_err(xlsx_err)?;
        let mut r: u32 = 1;
        for outcome in Outcome::ALL {
            ws.write_string_with_format(r, 0, outcome.as_str(), format_of(outcome))
                .map_err(xlsx_err)?;
            ws.write_number(r, 1, summary.get(outcome.as_str()) as f64)
                .map_err(xlsx_err)?;
            r += 1;
        }
        ws.write_string_with_format(r, 0, "total", &header)
            .map_err(xlsx_err)?;
        ws.write_number(r, 1, summary.rows as f64)
            .map_err(xlsx_err)?;
        r += 2;
        ws.write_string_with_format(r, 0, "job", &header)
            .map_err(xlsx_err)?;
        ws.write_string_with_format(r, 1, "", &header)
            .map_err(xlsx_err)?;
        r += 1;
        for (name, value) in job_facts(job, meta.as_ref(), codes)
            .into_iter()
            .chain(facts.iter().cloned())
        {
            ws.write_string(r, 0, &name).map_err(xlsx_err)?;
            ws.write_string(r, 1, &value).map_err(xlsx_err)?;
            r += 1;
        }
    }
    wb.save_to_writer(out).map_err(xlsx_err)?;
    Ok(summary)
}

/// What the store knows of a job, as (name, value) rows of the summary sheet.
fn job_facts(job: &JobId, meta: Option<&JobMeta>, codes: FiscalCodes) -> Vec<(String, String)> {
    let mut facts = vec![("job id".to_owned(), job.to_string())];
    let file_name = |p: &std::path::Path| {
        p.file_name().map_or_else(
            || p.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        )
    };
    if let Some(m) = meta {
        if let Some(c) = &m.campaign {
            facts.push(("campaign".to_owned(), c.clone()));
        }
        facts.push(("created".to_owned(), m.created_at.clone()));
        facts.push((
            "state".to_owned(),
            match (m.phase, m.cancelled, m.paused) {
                (JobPhase::Done, ..) => "done",
                (_, true, _) => "cancelled",
                (_, _, true) => "paused",
                (JobPhase::Ingesting, ..) => "ingesting",
                (JobPhase::Running, ..) => "running",
            }
            .to_owned(),
        ));
        facts.push(("template".to_owned(), file_name(&m.template_path)));
        facts.push(("recipients".to_owned(), file_name(&m.recipients_path)));
        if let Some(sheet) = &m.sheet {
            facts.push(("sheet".to_owned(), sheet.clone()));
        }
        facts.push(("rows".to_owned(), m.rows.to_string()));
        if m.allow_repeat {
            facts.push(("allow repeat".to_owned(), "yes".to_owned()));
        }
    }
    facts.push((
        "fiscal codes".to_owned(),
        match codes {
            FiscalCodes::Masked => "masked",
            FiscalCodes::Clear => "clear",
        }
        .to_owned(),
    ));
    facts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_outcome_has_a_class_and_problems_are_red() {
        assert_eq!(
            OutcomeClass::of(Outcome::Processed),
            OutcomeClass::Delivered
        );
        assert_eq!(OutcomeClass::of(Outcome::Invalid), OutcomeClass::Problem);
        assert_eq!(OutcomeClass::of(Outcome::Unknown), OutcomeClass::Problem);
        assert_eq!(
            OutcomeClass::of(Outcome::NotSubscribed),
            OutcomeClass::NotSent
        );
        assert_eq!(OutcomeClass::of(Outcome::Queued), OutcomeClass::Pending);
    }
}
