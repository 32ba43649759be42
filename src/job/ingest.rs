//! [`Ingest`]: streams a recipients CSV (`,` or `;`, UTF-8 with or without BOM) into [`Row`]s
//! in file order, never loading the file whole.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::template::{BoundTemplate, RowWarning, Template};
use super::JobError;
use crate::model::FiscalCode;

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// One data row. `Debug` masks the fiscal code field (see [`Row::fmt`]).
#[derive(Clone)]
pub struct Row {
    /// Physical line where the record starts (1-based; the header is line 1).
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
            format!("{}*******{}", &raw[..6], &raw[13..])
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

/// Streams a CSV into rows.
pub struct Ingest {
    path: PathBuf,
    reader: csv::Reader<Box<dyn Read + Send>>,
    header: Vec<String>,
    template: BoundTemplate,
    fc_column: String,
    record: csv::ByteRecord,
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

impl Ingest {
    /// Opens `path`, reads the header and binds `template` to it.
    pub fn open(path: &Path, template: &Template) -> Result<Ingest, JobError> {
        let io = |source| JobError::Io {
            path: path.to_owned(),
            line: None,
            source,
        };
        let mut buf = BufReader::with_capacity(1 << 16, File::open(path).map_err(io)?);
        // Skip a UTF-8 BOM, then sniff the delimiter from the header line.
        if buf.fill_buf().map_err(io)?.starts_with(BOM) {
            buf.consume(BOM.len());
        }
        let peek = buf.fill_buf().map_err(io)?;
        let first_line = peek.split(|b| *b == b'\n').next().unwrap_or(&[]);
        let delimiter = detect_delimiter(first_line);
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(true)
            .flexible(true)
            .from_reader(Box::new(buf) as Box<dyn Read + Send>);
        let header: Vec<String> = reader
            .byte_headers()
            .map_err(|e| JobError::Csv {
                path: path.to_owned(),
                line: 1,
                reason: e.to_string(),
            })?
            .iter()
            .map(|h| String::from_utf8_lossy(h).trim().to_owned())
            .collect();
        if header.iter().all(String::is_empty) {
            return Err(JobError::Csv {
                path: path.to_owned(),
                line: 1,
                reason: "the file has no header line".to_owned(),
            });
        }
        let bound = template.bind(&header)?;
        Ok(Ingest {
            path: path.to_owned(),
            reader,
            header,
            template: bound,
            fc_column: template.fiscal_code_column().to_owned(),
            record: csv::ByteRecord::new(),
            skip_through: 0,
        })
    }

    /// The CSV header.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The bound template.
    pub fn template(&self) -> &BoundTemplate {
        &self.template
    }

    /// Skips rows starting at or before `line` (an interrupted ingest resumes after its last
    /// committed line).
    pub fn resume_after(&mut self, line: u64) -> Result<(), JobError> {
        self.skip_through = line;
        Ok(())
    }

    fn judge(&self, line: u64) -> Row {
        let rec = &self.record;
        let fc_index = self.template.fiscal_code_index();
        let raw_fc = rec
            .get(fc_index)
            .map(|b| String::from_utf8_lossy(b).trim().to_owned())
            .unwrap_or_default();
        let invalid = |field: &str, reason: String| Row {
            line,
            raw_fiscal_code: raw_fc.clone(),
            outcome: RowOutcome::Invalid {
                field: field.to_owned(),
                reason,
            },
        };
        if rec.len() != self.header.len() {
            return invalid(
                "(row)",
                format!("{} fields, the header has {}", rec.len(), self.header.len()),
            );
        }
        let fiscal_code = match FiscalCode::parse(&raw_fc) {
            Ok(fc) => fc,
            Err(e) => return invalid(&self.fc_column, e.to_string()),
        };
        let mut values = Vec::with_capacity(self.template.used_indices().len());
        for (name, &i) in self
            .template
            .used_columns()
            .iter()
            .zip(self.template.used_indices())
        {
            match std::str::from_utf8(&rec[i]) {
                Ok(v) => values.push(v.trim().to_owned()),
                Err(_) => return invalid(name, "not valid UTF-8 text".to_owned()),
            }
        }
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
            match self.reader.read_byte_record(&mut self.record) {
                Ok(false) => return None,
                Ok(true) => {}
                Err(e) => {
                    let line = e.position().map_or(0, |p| p.line());
                    return Some(Err(match e.into_kind() {
                        csv::ErrorKind::Io(source) => JobError::Io {
                            path: self.path.clone(),
                            line: Some(line),
                            source,
                        },
                        other => JobError::Csv {
                            path: self.path.clone(),
                            line,
                            reason: format!("{other:?}"),
                        },
                    }));
                }
            }
            let line = self.record.position().map_or(0, |p| p.line());
            if line <= self.skip_through {
                continue;
            }
            // Blank lines (every field empty) are not recipients.
            if self
                .record
                .iter()
                .all(|f| f.iter().all(u8::is_ascii_whitespace))
            {
                continue;
            }
            return Some(Ok(self.judge(line)));
        }
    }
}

/// A job's identity: the first 16 hex digits of SHA-256 over the template text and the CSV
/// bytes (streamed). The same inputs give the same job, so re-running resumes it.
pub fn job_id(template_text: &str, csv_path: &Path) -> Result<String, JobError> {
    let mut h = Sha256::new();
    h.update((template_text.len() as u64).to_be_bytes());
    h.update(template_text.as_bytes());
    let mut file = BufReader::with_capacity(
        1 << 20,
        File::open(csv_path).map_err(|source| JobError::Io {
            path: csv_path.to_owned(),
            line: None,
            source,
        })?,
    );
    loop {
        let buf = file.fill_buf().map_err(|source| JobError::Io {
            path: csv_path.to_owned(),
            line: None,
            source,
        })?;
        if buf.is_empty() {
            break;
        }
        h.update(buf);
        let n = buf.len();
        file.consume(n);
    }
    Ok(hex::encode(&h.finalize()[..8]))
}

#[cfg(test)]
mod tests;
