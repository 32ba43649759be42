//! [`Ingest`]: streams a recipients file (`,` or `;`; UTF-8 with or without BOM, UTF-16 with
//! BOM, or the encoding the template names) into [`Row`]s in file order, never loading the
//! file whole. Every physical line after the header is exactly one row, numbered as an editor
//! shows it (LF, CRLF and CR alike): a value never spans lines, and a blank line is a row too.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::lines::{scan, FileEncoding, LineError, Lines};
use super::record::{control_char, Fields, SplitError};
use super::template::{BoundTemplate, RowWarning, Template};
use super::JobError;
use crate::model::FiscalCode;

/// One data row. `Debug` masks the fiscal code field (its `Debug` impl below).
#[derive(Clone)]
pub struct Row {
    /// Physical line (1-based; the header is line 1).
    pub line: u64,
    /// The fiscal code field as written (kept masked in reports).
    pub raw_fiscal_code: String,
    /// Valid or not.
    pub outcome: RowOutcome,
}

/// The raw fiscal code field is personal data even when invalid: a code-shaped field (in
/// either case) is shown masked, anything else by its length.
impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let raw = &self.raw_fiscal_code;
        let shown = if raw.len() == 16
            && raw.is_ascii()
            && FiscalCode::parse(&raw.to_ascii_uppercase()).is_ok()
        {
            crate::model::fiscal_code::mask(raw)
        } else {
            format!("({} chars)", raw.chars().count())
        };
        f.debug_struct("Row")
            .field("line", &self.line)
            .field("raw_fiscal_code", &shown)
            .field("outcome", &self.outcome)
            .finish()
    }
}

/// A row's verdict. `Debug` shows how many values a valid row has, not the values (they
/// are personal data, and a template may use the fiscal code column in its text).
#[derive(Clone)]
pub enum RowOutcome {
    /// Ready to send.
    Valid {
        /// The recipient.
        fiscal_code: FiscalCode,
        /// Values of the template's used columns.
        values: Vec<String>,
        /// Worth a look, not blocking.
        warnings: Vec<RowWarning>,
    },
    /// Not sendable.
    Invalid {
        /// Field (column or message field).
        field: String,
        /// Reason (never the clear fiscal code).
        reason: String,
    },
}

impl std::fmt::Debug for RowOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RowOutcome::Valid {
                fiscal_code,
                values,
                warnings,
            } => f
                .debug_struct("Valid")
                .field("fiscal_code", fiscal_code)
                .field("values", &format_args!("({} values)", values.len()))
                .field("warnings", warnings)
                .finish(),
            RowOutcome::Invalid { field, reason } => f
                .debug_struct("Invalid")
                .field("field", field)
                .field("reason", reason)
                .finish(),
        }
    }
}

/// Field name of problems that belong to the whole line.
pub const ROW_FIELD: &str = "(row)";

/// Streams a CSV into rows.
pub struct Ingest {
    path: PathBuf,
    lines: Lines,
    delimiter: u8,
    header: Vec<String>,
    template: BoundTemplate,
    fc_column: String,
    fields: Fields,
    skip_through: u64,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Picks the delimiter from the header line: the more frequent of `,` and `;` outside quotes.
fn detect_delimiter(header_line: &[u8]) -> u8 {
    let (mut commas, mut semis, mut quoted) = (0, 0, false);
    for &b in header_line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semis += 1,
            _ => {}
        }
    }
    if semis > commas {
        b';'
    } else {
        b','
    }
}

fn line_error(path: &Path, e: LineError) -> JobError {
    match e {
        LineError::Io(source) => JobError::Io {
            path: path.to_owned(),
            line: None,
            source,
        },
        LineError::NotUtf8 { line } => JobError::NotUtf8 {
            path: path.to_owned(),
            line,
        },
    }
}

impl Ingest {
    /// Opens `path` (decoded as the template's `encoding`), reads the header and binds
    /// `template` to it.
    pub fn open(path: &Path, template: &Template) -> Result<Ingest, JobError> {
        Self::open_with(path, template, None)
    }

    /// [`Ingest::open`], with the encoding given by the operator (`--encoding`) instead of the
    /// template's.
    pub fn open_with(
        path: &Path,
        template: &Template,
        encoding: Option<FileEncoding>,
    ) -> Result<Ingest, JobError> {
        let encoding = encoding.unwrap_or_else(|| template.encoding());
        let mut lines = Lines::open(path, encoding).map_err(|source| JobError::Io {
            path: path.to_owned(),
            line: None,
            source,
        })?;
        let csv_error = |reason: &str| JobError::Csv {
            path: path.to_owned(),
            line: 1,
            reason: reason.to_owned(),
        };
        let Some((_, first)) = lines.next_line().map_err(|e| line_error(path, e))? else {
            return Err(csv_error("the file has no header line"));
        };
        let delimiter = detect_delimiter(first.as_bytes());
        let mut fields = Fields::default();
        fields
            .split(first, delimiter)
            .map_err(|_| csv_error("the header has a quote that is not closed on its line"))?;
        let header: Vec<String> = fields.iter().map(|h| h.trim().to_owned()).collect();
        if header.iter().all(String::is_empty) {
            return Err(csv_error("the file has no header line"));
        }
        let bound = template.bind(&header)?;
        Ok(Ingest {
            path: path.to_owned(),
            lines,
            delimiter,
            header,
            template: bound,
            fc_column: template.fiscal_code_column().to_owned(),
            fields,
            skip_through: 0,
        })
    }

    /// The CSV header.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The delimiter found in the header line (`,` or `;`).
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// The bound template.
    pub fn template(&self) -> &BoundTemplate {
        &self.template
    }

    /// Skips rows at or before `line` (an interrupted ingest resumes after its last
    /// committed line).
    pub fn resume_after(&mut self, line: u64) -> Result<(), JobError> {
        self.skip_through = line;
        Ok(())
    }

    fn column_name(&self, i: usize) -> String {
        self.header
            .get(i)
            .filter(|h| !h.is_empty())
            .cloned()
            .unwrap_or_else(|| format!("column {}", i + 1))
    }

    fn judge(&self, line: u64, split: Result<(), SplitError>) -> Row {
        let fc_index = self.template.fiscal_code_index();
        let raw_fc = self
            .fields
            .get(fc_index)
            .map(|f| f.trim().to_owned())
            .unwrap_or_default();
        let invalid = |field: &str, reason: String| Row {
            line,
            raw_fiscal_code: raw_fc.clone(),
            outcome: RowOutcome::Invalid {
                field: field.to_owned(),
                reason,
            },
        };
        match split {
            Ok(()) => {}
            Err(SplitError::Unclosed(i)) => {
                return invalid(
                    &self.column_name(i),
                    "a quote opens this value and the line ends before it closes: a value cannot span lines (write a quote inside a value as \"\" or remove it)"
                        .to_owned(),
                )
            }
            Err(SplitError::AfterQuote(i)) => {
                return invalid(
                    &self.column_name(i),
                    "text after the closing quote of a quoted value".to_owned(),
                )
            }
        }
        if self.fields.iter().all(|f| f.trim().is_empty()) {
            return invalid(ROW_FIELD, "blank line".to_owned());
        }
        if self.fields.len() != self.header.len() {
            return invalid(
                ROW_FIELD,
                format!(
                    "{} fields, the header has {}",
                    self.fields.len(),
                    self.header.len()
                ),
            );
        }
        for (i, f) in self.fields.iter().enumerate() {
            if let Some(c) = control_char(f.trim()) {
                return invalid(
                    &self.column_name(i),
                    format!("holds a control character (U+{:04X})", c as u32),
                );
            }
        }
        let fiscal_code = match FiscalCode::parse(&raw_fc) {
            Ok(fc) => fc,
            Err(e) => return invalid(&self.fc_column, e.to_string()),
        };
        let values: Vec<String> = self
            .template
            .used_indices()
            .iter()
            .map(|&i| self.fields.get(i).unwrap_or("").trim().to_owned())
            .collect();
        match self.template.validate_row(&values) {
            Ok(mut warnings) => {
                if fiscal_code.check_char_mismatch().is_some() {
                    warnings.push(RowWarning::CheckChar);
                }
                Row {
                    line,
                    raw_fiscal_code: raw_fc,
                    outcome: RowOutcome::Valid {
                        fiscal_code,
                        values,
                        warnings,
                    },
                }
            }
            Err(e) => invalid(&e.field, e.reason),
        }
    }
}

impl Iterator for Ingest {
    type Item = Result<Row, JobError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (line, text) = match self.lines.next_line() {
                Ok(None) => return None,
                Ok(Some(found)) => found,
                Err(e) => return Some(Err(line_error(&self.path, e))),
            };
            if line <= self.skip_through {
                continue;
            }
            let split = self.fields.split(text, self.delimiter);
            return Some(Ok(self.judge(line, split)));
        }
    }
}

/// What identifies a job besides its two files: the operator's choices that change what is
/// read or sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobInputs {
    /// `--encoding`: how the CSV is decoded, over the template's `encoding`.
    pub encoding: Option<FileEncoding>,
    /// `--allow-repeat`: send to citizens who already have a message of this campaign.
    pub allow_repeat: bool,
}

/// A recipients file read once before ingest: the job's identity and what the ingest must
/// match.
#[derive(Debug, Clone)]
pub struct Identified {
    /// The job id.
    pub id: String,
    /// Physical lines of the CSV, header included.
    pub lines: u64,
    /// The encoding used.
    pub encoding: &'static str,
}

/// Reads the CSV once: the job's identity (see [`job_id`]) and its physical line count. A file
/// that does not decode stops here, before anything is created or sent: the error names the
/// first bad line and the `encoding` key.
pub fn identify(
    template_text: &str,
    csv_path: &Path,
    template: &Template,
    inputs: &JobInputs,
) -> Result<Identified, JobError> {
    let encoding = inputs.encoding.unwrap_or_else(|| template.encoding());
    let mut h = id_hasher(template_text);
    let scan = scan(csv_path, encoding, &mut h).map_err(|source| JobError::Io {
        path: csv_path.to_owned(),
        line: None,
        source,
    })?;
    if let Some(line) = scan.first_bad_line {
        return Err(JobError::NotUtf8 {
            path: csv_path.to_owned(),
            line,
        });
    }
    if scan.utf8_with_accents {
        return Err(JobError::Utf8ReadAsSingleByte {
            path: csv_path.to_owned(),
            encoding: scan.encoding,
        });
    }
    Ok(Identified {
        id: id_of(h, inputs),
        lines: scan.lines,
        encoding: scan.encoding,
    })
}

fn id_hasher(template_text: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update((template_text.len() as u64).to_be_bytes());
    h.update(template_text.as_bytes());
    h
}

/// The id from a hasher fed the template and the CSV's bytes ([`id_hasher`], [`scan`]).
fn id_of(mut h: Sha256, inputs: &JobInputs) -> String {
    // Options only when set: jobs created before they existed keep their ids.
    if let Some(e) = inputs.encoding {
        h.update(b"encoding=");
        h.update(e.name().as_bytes());
    }
    if inputs.allow_repeat {
        h.update(b"allow-repeat");
    }
    hex::encode(&h.finalize()[..8])
}

/// A job's identity: the first 16 hex digits of SHA-256 over the template text, the CSV's
/// bytes and the operator's [`JobInputs`] (when set). The same inputs give the same job, so re-running
/// resumes it. (Whether a citizen may get the message is the campaign ledger's decision.)
pub fn job_id(template_text: &str, csv_path: &Path) -> Result<String, JobError> {
    job_id_with(template_text, csv_path, &JobInputs::default())
}

/// [`job_id`] with the operator's options.
pub fn job_id_with(
    template_text: &str,
    csv_path: &Path,
    inputs: &JobInputs,
) -> Result<String, JobError> {
    let mut h = id_hasher(template_text);
    scan(csv_path, inputs.encoding.unwrap_or_default(), &mut h).map_err(|source| JobError::Io {
        path: csv_path.to_owned(),
        line: None,
        source,
    })?;
    Ok(id_of(h, inputs))
}

#[cfg(test)]
mod tests;
