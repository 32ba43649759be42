//! Jobs: a [`Template`] (TOML with `{{column}}` placeholders) and a recipients file streamed by
//! [`Ingest`] into [`Row`]s, each valid (fiscal code + the values the template uses) or invalid
//! (line, field, reason), one per physical line of a CSV ([`lines`] reads them, in any of the
//! [`FileEncoding`]s a spreadsheet writes) or per sheet row of a workbook ([`workbook`]: .xlsx,
//! .xlsm, .ods). [`identify`] derives a job's identity from its
//! inputs and counts the file's lines before anything is ingested.

mod ingest;
pub mod lines;
mod record;
mod template;
pub mod workbook;

use std::path::PathBuf;

pub use ingest::{
    identify, job_id, job_id_with, Identified, Ingest, JobInputs, Row, RowOutcome, ROW_FIELD,
};
pub use lines::FileEncoding;
pub use template::{
    parse_amount, parse_due_date, toml_error, BoundTemplate, FilterMode, JobOptions, PollPolicy,
    RowError, RowWarning, Template, DEFAULT_DATE_FORMAT, DEFAULT_FISCAL_CODE_COLUMN,
};
pub use workbook::WorkbookKind;

/// A job's inputs are unusable as a whole (row problems are [`RowOutcome::Invalid`] instead).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JobError {
    /// A file could not be read.
    #[error("{}{}: {source}", path.display(), line.map(|l| format!(", line {l}")).unwrap_or_default())]
    Io {
        /// File.
        path: PathBuf,
        /// Line, when reading rows.
        line: Option<u64>,
        /// Cause.
        source: std::io::Error,
    },
    /// The template is wrong.
    #[error("template {}: {field}: {reason}", path.display())]
    Template {
        /// Template file.
        path: PathBuf,
        /// Field of the template.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Placeholders (or the fiscal code column) name columns the CSV lacks. The message names
    /// the template's columns and counts the header's, never quoting a header cell: the CSV's
    /// first line is file content the submitter may not be entitled to read.
    #[error(
        "template {} expects column{} {} that the CSV header (line 1, {columns} column{}) lacks",
        template.display(),
        if missing.len() == 1 { "" } else { "s" },
        missing.iter().map(|m| format!("{m:?}")).collect::<Vec<_>>().join(", "),
        if *columns == 1 { "" } else { "s" }
    )]
    MissingColumns {
        /// Template file.
        template: PathBuf,
        /// Missing column names (as the template names them).
        missing: Vec<String>,
        /// How many columns the CSV header has.
        columns: usize,
    },
    /// The CSV is not valid UTF-8 and no other encoding was named: nothing is ingested.
    #[error(
        "{}, line {line}: not valid UTF-8 text. A spreadsheet's \"CSV\" export is often Windows-1252: add encoding = \"windows-1252\" to the template (or pass --encoding windows-1252) and run again; nothing was sent",
        path.display()
    )]
    NotUtf8 {
        /// CSV file.
        path: PathBuf,
        /// First line that does not decode.
        line: u64,
    },
    /// The template (or `--encoding`) names a single-byte encoding but the file is UTF-8 text
    /// with accents: read that way, every accent would be garbled.
    #[error(
        "{}: the file is UTF-8 text with accented letters, but the job reads it as {encoding}, which would garble them; remove `encoding` from the template (or --encoding)",
        path.display()
    )]
    Utf8ReadAsSingleByte {
        /// CSV file.
        path: PathBuf,
        /// The declared encoding.
        encoding: &'static str,
    },
    /// The ingest did not account for every physical line: the job stops before sending.
    #[error(
        "{}: the file has {lines} lines but {rows} rows were read after the header; the job stops before sending (was the file changed while it was read?)",
        path.display()
    )]
    LineCount {
        /// CSV file.
        path: PathBuf,
        /// Physical lines, header included.
        lines: u64,
        /// Rows the ingest produced.
        rows: u64,
    },
    /// A workbook (.xlsx, .xlsm, .ods) cannot be read, or has no such sheet, or is empty.
    #[error("{}: {reason}", path.display())]
    Workbook {
        /// Workbook file.
        path: PathBuf,
        /// What is wrong (never a cell's content).
        reason: String,
    },
    /// `--encoding` was given for a workbook, whose text has no encoding to choose.
    #[error("{}: --encoding applies to CSV files; a workbook's text is Unicode already", path.display())]
    EncodingOfWorkbook {
        /// Workbook file.
        path: PathBuf,
    },
    /// The CSV cannot be read as CSV at all (header).
    #[error("{}, line {line}: {reason}", path.display())]
    Csv {
        /// CSV file.
        path: PathBuf,
        /// Line.
        line: u64,
        /// What is wrong.
        reason: String,
    },
}
