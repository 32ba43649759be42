//! [`Ingest`]: streams a recipients file into [`Row`]s in file order, never loading the file
//! whole. Two row sources, one judgement: a CSV (`,` or `;`; UTF-8 with or without BOM, UTF-16
//! with BOM, or the encoding the template names), where every physical line after the header is
//! exactly one row, numbered as an editor shows it (LF, CRLF and CR alike: a value never spans
//! lines, and a blank line is a row too); or a workbook sheet ([`super::workbook`]), where every
//! sheet row after the header (the first non-blank row) up to the last non-blank one is a row,
//! numbered as the spreadsheet shows it.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::lines::{scan, FileEncoding, LineError, Lines};
use super::record::{control_char, Fields, SplitError};
use super::template::{BoundTemplate, RowWarning, Template};
use super::workbook::{column_letters, scan_workbook, SheetReader, SheetRow, WorkbookKind};
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

/// Streams a recipients file (CSV or workbook) into rows.
pub struct Ingest {
    path: PathBuf,
    source: Source,
    header: Vec<String>,
    template: BoundTemplate,
    fc_column: String,
    fields: Fields,
    /// Cells of the current sheet row that cannot be read exactly: (column, reason).
    cell_problems: Vec<(usize, &'static str)>,
    skip_through: u64,
}

/// Where rows come from.
enum Source {
    /// A CSV's physical lines.
    Csv { lines: Lines, delimiter: u8 },
    /// A workbook sheet's rows.
    Sheet {
        reader: SheetReader,
        /// The sheet row number the next row has.
        next_line: u64,
        /// A non-blank row read ahead (the rows before it are blank).
        pending: Option<SheetRow>,
        /// Whether the current row has a value right of the header's last column, and where.
        beyond_header: Option<u32>,
    },
}

/// How a line split into fields (always `Ok` for a sheet row).
type Split = Result<(), SplitError>;

/// The delimiter a workbook job's CSV report uses: an Italian spreadsheet's.
const WORKBOOK_REPORT_DELIMITER: u8 = b';';

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
        Self::open_inputs(
            path,
            template,
            &JobInputs {
                encoding,
                ..JobInputs::default()
            },
        )
    }

    /// [`Ingest::open`] with the operator's choices: `--encoding` for a CSV, `--sheet` for a
    /// workbook (over the template's `encoding` and `sheet`).
    pub fn open_inputs(
        path: &Path,
        template: &Template,
        inputs: &JobInputs,
    ) -> Result<Ingest, JobError> {
        if let Some(kind) = WorkbookKind::of(path) {
            return Self::open_workbook(path, kind, template, inputs);
        }
        let encoding = inputs.encoding.unwrap_or_else(|| template.encoding());
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
            source: Source::Csv { lines, delimiter },
            header,
            template: bound,
            fc_column: template.fiscal_code_column().to_owned(),
            fields,
            cell_problems: Vec::new(),
            skip_through: 0,
        })
    }

    fn open_workbook(
        path: &Path,
        kind: WorkbookKind,
        template: &Template,
        inputs: &JobInputs,
    ) -> Result<Ingest, JobError> {
        if inputs.encoding.is_some() {
            return Err(JobError::EncodingOfWorkbook {
                path: path.to_owned(),
            });
        }
        let sheet = inputs.sheet.as_deref().or(template.sheet());
        let mut reader = SheetReader::open(path, kind, sheet, template.date_format(), false)?;
        let Some(first) = reader.next_row()? else {
            return Err(JobError::Workbook {
                path: path.to_owned(),
                reason: format!("sheet {:?} is empty: it has no header row", reader.sheet()),
            });
        };
        // The header spans to its last named column; a header cell that is an error reads as
        // an unnamed column.
        let mut header = Vec::new();
        for (col, text) in &first.cells {
            let name = text.as_deref().map(str::trim).unwrap_or("");
            if name.is_empty() {
                continue;
            }
            let col = *col as usize;
            if header.len() <= col {
                header.resize(col + 1, String::new());
            }
            header[col] = name.to_owned();
        }
        let bound = template.bind(&header)?;
        Ok(Ingest {
            path: path.to_owned(),
            source: Source::Sheet {
                reader,
                next_line: u64::from(first.row) + 2,
                pending: None,
                beyond_header: None,
            },
            header,
            template: bound,
            fc_column: template.fiscal_code_column().to_owned(),
            fields: Fields::default(),
            cell_problems: Vec::new(),
            skip_through: 0,
        })
    }

    /// The header (a CSV's first line, a sheet's first non-blank row).
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// The delimiter found in the header line (`,` or `;`); `;` for a workbook (its CSV report
    /// opens in columns in an Italian spreadsheet).
    pub fn delimiter(&self) -> u8 {
        match &self.source {
            Source::Csv { delimiter, .. } => *delimiter,
            Source::Sheet { .. } => WORKBOOK_REPORT_DELIMITER,
        }
    }

    /// The sheet read, for a workbook.
    pub fn sheet(&self) -> Option<&str> {
        match &self.source {
            Source::Csv { .. } => None,
            Source::Sheet { reader, .. } => Some(reader.sheet()),
        }
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
        if let Source::Sheet {
            beyond_header: Some(col),
            ..
        } = &self.source
        {
            return invalid(
                ROW_FIELD,
                format!(
                    "a value in column {}, right of the header's last column ({}): give the column a header or clear it",
                    column_letters(*col),
                    column_letters(self.header.len().saturating_sub(1) as u32)
                ),
            );
        }
        if self.cell_problems.is_empty() && self.fields.iter().all(|f| f.trim().is_empty()) {
            let what = match self.source {
                Source::Csv { .. } => "blank line",
                Source::Sheet { .. } => "blank row",
            };
            return invalid(ROW_FIELD, what.to_owned());
        }
        // A cell the template reads (or the fiscal code's) that cannot be read exactly.
        if let Some(&(i, reason)) = self
            .cell_problems
            .iter()
            .find(|(i, _)| *i == fc_index || self.template.used_indices().contains(i))
        {
            return invalid(&self.column_name(i), reason.to_owned());
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

impl Ingest {
    /// The next CSV line, split: None at the end of the file.
    fn next_csv(&mut self) -> Option<Result<(u64, Split), JobError>> {
        let Source::Csv { lines, delimiter } = &mut self.source else {
            unreachable!("next_csv on a CSV source");
        };
        loop {
            let (line, text) = match lines.next_line() {
                Ok(None) => return None,
                Ok(Some(found)) => found,
                Err(e) => return Some(Err(line_error(&self.path, e))),
            };
            if line <= self.skip_through {
                continue;
            }
            return Some(Ok((line, self.fields.split(text, *delimiter))));
        }
    }

    /// The next sheet row, its cells in `fields` (one per header column, blank rows included
    /// up to the last non-blank one): None after the last non-blank row.
    fn next_sheet_row(&mut self) -> Option<Result<u64, JobError>> {
        let Source::Sheet {
            reader,
            next_line,
            pending,
            beyond_header,
        } = &mut self.source
        else {
            unreachable!("next_sheet_row on a sheet source");
        };
        let width = self.header.len();
        loop {
            if pending.is_none() {
                match reader.next_row() {
                    Ok(Some(row)) => *pending = Some(row),
                    Ok(None) => return None,
                    Err(e) => return Some(Err(e)),
                }
            }
            let ahead = pending.as_ref().map_or(0, |r| u64::from(r.row) + 1);
            if ahead < *next_line {
                return Some(Err(JobError::Workbook {
                    path: self.path.clone(),
                    reason: format!(
                        "sheet row {ahead} comes after row {}: the sheet's rows are out of order",
                        *next_line - 1
                    ),
                }));
            }
            let line = *next_line;
            *next_line += 1;
            self.fields.clear();
            self.cell_problems.clear();
            *beyond_header = None;
            if line < ahead {
                // A blank row between two that are not.
                if line <= self.skip_through {
                    continue;
                }
                for _ in 0..width {
                    self.fields.push("");
                }
                return Some(Ok(line));
            }
            let row = pending.take().expect("a row was read ahead");
            if line <= self.skip_through {
                continue;
            }
            let mut col = 0usize;
            for (c, text) in &row.cells {
                let c = *c as usize;
                if c >= width {
                    if !matches!(text, Ok(t) if t.trim().is_empty()) {
                        beyond_header.get_or_insert(c as u32);
                    }
                    continue;
                }
                while col < c {
                    self.fields.push("");
                    col += 1;
                }
                match text {
                    Ok(t) => self.fields.push(t),
                    Err(reason) => {
                        self.fields.push("");
                        self.cell_problems.push((c, reason));
                    }
                }
                col += 1;
            }
            while col < width {
                self.fields.push("");
                col += 1;
            }
            return Some(Ok(line));
        }
    }
}

impl Iterator for Ingest {
    type Item = Result<Row, JobError>;

    fn next(&mut self) -> Option<Self::Item> {
        let (line, split) = match &self.source {
            Source::Csv { .. } => match self.next_csv()? {
                Ok(found) => found,
                Err(e) => return Some(Err(e)),
            },
            Source::Sheet { .. } => match self.next_sheet_row()? {
                Ok(line) => (line, Ok(())),
                Err(e) => return Some(Err(e)),
            },
        };
        Some(Ok(self.judge(line, split)))
    }
}

/// What identifies a job besides its two files: the operator's choices that change what is
/// read or sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobInputs {
    /// `--encoding`: how the CSV is decoded, over the template's `encoding`.
    pub encoding: Option<FileEncoding>,
    /// `--sheet`: the sheet of a workbook to read, over the template's `sheet`.
    pub sheet: Option<String>,
    /// `--allow-repeat`: send to citizens who already have a message of this campaign.
    pub allow_repeat: bool,
}

/// A recipients file read once before ingest: the job's identity and what the ingest must
/// match.
#[derive(Debug, Clone)]
pub struct Identified {
    /// The job id.
    pub id: String,
    /// Physical lines of the CSV, header included; for a workbook, the sheet's rows from the
    /// header's to the last non-blank one.
    pub lines: u64,
    /// The encoding used (`UTF-8` for a workbook).
    pub encoding: &'static str,
    /// The sheet read, for a workbook.
    pub sheet: Option<String>,
    /// Merged cell ranges in that sheet (.xlsx): each reads as its first cell, the others
    /// as empty.
    pub merged_cells: usize,
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
    let mut h = id_hasher(template_text);
    if let Some(kind) = WorkbookKind::of(csv_path) {
        if inputs.encoding.is_some() {
            return Err(JobError::EncodingOfWorkbook {
                path: csv_path.to_owned(),
            });
        }
        let sheet = inputs.sheet.as_deref().or(template.sheet());
        let scan = scan_workbook(csv_path, kind, sheet, template.date_format(), &mut h)?;
        return Ok(Identified {
            id: id_of(h, inputs),
            lines: scan.lines,
            encoding: "UTF-8",
            sheet: Some(scan.sheet),
            merged_cells: scan.merged,
        });
    }
    let encoding = inputs.encoding.unwrap_or_else(|| template.encoding());
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
        sheet: None,
        merged_cells: 0,
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
    // `sheet` is not hashed: the content hashed is the sheet's, its name included.
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
    if WorkbookKind::of(csv_path).is_some() {
        // A workbook's identity is its content as the template reads it (sheet, date format).
        let template = Template::from_toml_str(template_text, Path::new("(template)"))?;
        return identify(template_text, csv_path, &template, inputs).map(|i| i.id);
    }
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
