//! Workbooks as a row source: a recipients file ending in `.xlsx`, `.xlsm` or `.ods` is read
//! with calamine, one sheet ([`SheetReader`]), each sheet row as one row of the job numbered as
//! the spreadsheet numbers it. Cells become text the way the user sees them ([`cell_text`]):
//! numbers never through a lossy conversion (a number cell that cannot be shown exactly is a
//! cell problem, the row is `invalid`), date cells in the template's `date_format`, formulas by
//! their cached value. [`scan_workbook`] is the identify pass: the job's identity is the sheet's
//! content, not the file's bytes (saving the same workbook again is the same job).
//!
//! An `.xlsx` sheet is streamed: a reader thread parses it cell by cell and hands rows over a
//! bounded channel, so a sheet is never held in memory (only the workbook's shared strings
//! are, as calamine loads them). An `.ods` is loaded whole by calamine (its format has no
//! separate strings table to stream against).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use calamine::{Data, DataRef, ExcelDateTime, Ods, Reader, SheetType, SheetVisible, Xlsx};
use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
use sha2::{Digest, Sha256};

use super::JobError;

/// Rows per message from the reader thread.
const ROWS_PER_BATCH: usize = 512;
/// Batches the reader thread may run ahead of the ingest.
const BATCHES_AHEAD: usize = 4;
/// Spreadsheets keep 15 significant digits of a number: an integer of 16 or more digits in a
/// number cell may already have been rounded when it was typed or pasted.
const EXACT_INTEGER_LIMIT: f64 = 1e15;
/// Significant digits a number cell shows exactly.
const EXACT_DIGITS: usize = 15;

/// The reason of a cell holding a long integer as a number.
pub(crate) const LONG_NUMBER: &str = "a number cell of 16 or more digits: spreadsheets keep only 15 significant digits, so the value may already be rounded (a notice number or a long code must be a text cell: format the column as Text and type the value again)";
/// The reason of a cell holding a number that has no exact short decimal form.
pub(crate) const INEXACT_NUMBER: &str = "a number cell whose value has more than 15 significant digits (often a formula's result, such as 12.499999999999998) cannot be read exactly: round it in the sheet (ROUND) or make it a text cell";

/// Which reader a file needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkbookKind {
    /// Office Open XML (`.xlsx`, `.xlsm`).
    Xlsx,
    /// OpenDocument spreadsheet (`.ods`).
    Ods,
}

impl WorkbookKind {
    /// The workbook kind of `path`, by its extension (case-insensitive); None for a CSV.
    pub fn of(path: &Path) -> Option<WorkbookKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "xlsx" | "xlsm" => Some(WorkbookKind::Xlsx),
            "ods" => Some(WorkbookKind::Ods),
            _ => None,
        }
    }
}

/// One cell as text, or why it cannot be read exactly.
pub(crate) type CellText = Result<String, &'static str>;

/// A sheet row that is not blank: its 0-based row index and its cells by 0-based column.
#[derive(Debug, Clone, Default)]
pub(crate) struct SheetRow {
    pub(crate) row: u32,
    pub(crate) cells: Vec<(u32, CellText)>,
}

impl SheetRow {
    fn is_blank(&self) -> bool {
        self.cells
            .iter()
            .all(|(_, c)| matches!(c, Ok(t) if t.trim().is_empty()))
    }
}

/// A cell value from either reader.
enum Value<'a> {
    Empty,
    Text(&'a str),
    Float(f64),
    Int(i64),
    Bool(bool),
    DateTime(&'a ExcelDateTime),
    Iso(&'a str),
    Error(&'a calamine::CellErrorType),
}

impl<'a> From<&'a DataRef<'a>> for Value<'a> {
    fn from(d: &'a DataRef<'a>) -> Self {
        match d {
            DataRef::Empty => Value::Empty,
            DataRef::String(s) => Value::Text(s),
            DataRef::SharedString(s) => Value::Text(s),
            DataRef::Float(f) => Value::Float(*f),
            DataRef::Int(i) => Value::Int(*i),
            DataRef::Bool(b) => Value::Bool(*b),
            DataRef::DateTime(d) => Value::DateTime(d),
            DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Value::Iso(s),
            DataRef::Error(e) => Value::Error(e),
        }
    }
}

impl<'a> From<&'a Data> for Value<'a> {
    fn from(d: &'a Data) -> Self {
        match d {
            Data::Empty => Value::Empty,
            Data::String(s) => Value::Text(s),
            Data::Float(f) => Value::Float(*f),
            Data::Int(i) => Value::Int(*i),
            Data::Bool(b) => Value::Bool(*b),
            Data::DateTime(d) => Value::DateTime(d),
            Data::DateTimeIso(s) | Data::DurationIso(s) => Value::Iso(s),
            Data::Error(e) => Value::Error(e),
        }
    }
}

/// A number cell as the text a user typed: an integer without decimals, a fraction in its
/// shortest exact decimal form. A value a spreadsheet cannot show exactly is refused, never
/// rounded.
fn number_text(f: f64) -> CellText {
    if !f.is_finite() {
        return Err(INEXACT_NUMBER);
    }
    if f == f.trunc() {
        if f.abs() >= EXACT_INTEGER_LIMIT {
            return Err(LONG_NUMBER);
        }
        // Exact: |f| < 10^15 < 2^53, and -0 reads as 0.
        return Ok(format!("{}", f as i64));
    }
    // Rust prints the shortest decimal that reads back as the same f64: what was typed, for
    // anything of at most 15 significant digits.
    let s = format!("{f}");
    let significant = s
        .trim_start_matches('-')
        .bytes()
        .filter(u8::is_ascii_digit)
        .skip_while(|&b| b == b'0')
        .count();
    if significant > EXACT_DIGITS {
        return Err(INEXACT_NUMBER);
    }
    Ok(s)
}

/// Whether a strftime pattern shows the time of day.
fn shows_time(format: &str) -> bool {
    ["%H", "%I", "%k", "%l", "%T", "%R", "%r", "%X", "%c"]
        .iter()
        .any(|p| format.contains(p))
}

/// A date(-time) in the template's date format; with its time of day (`HH:MM`) when it has
/// one and the format does not show it.
fn date_text(dt: NaiveDateTime, date_format: &str) -> String {
    if dt.time() == NaiveTime::MIN || shows_time(date_format) {
        dt.format(date_format).to_string()
    } else {
        format!("{} {}", dt.format(date_format), dt.format("%H:%M"))
    }
}

fn excel_date_text(d: &ExcelDateTime, date_format: &str) -> String {
    let (y, mo, day, h, mi, s, _) = d.to_ymd_hms_milli();
    if d.is_duration() || d.as_f64() < 1.0 {
        // A time of day or a duration: no date to show.
        let total = (d.as_f64() * 86_400.0).round() as i64;
        return format!(
            "{}:{:02}:{:02}",
            total / 3600,
            (total % 3600) / 60,
            total % 60
        );
    }
    match NaiveDate::from_ymd_opt(i32::from(y), u32::from(mo), u32::from(day))
        .and_then(|date| date.and_hms_opt(u32::from(h), u32::from(mi), u32::from(s)))
    {
        Some(dt) => date_text(dt, date_format),
        None => format!("{}", d.as_f64()),
    }
}

/// An ISO 8601 date (as ODS stores date cells) in the template's date format; anything else
/// (a duration) as written.
fn iso_text(s: &str, date_format: &str) -> String {
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return date_text(
            d.and_hms_opt(0, 0, 0).expect("midnight exists"),
            date_format,
        );
    }
    if let Ok(dt) = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f") {
        return date_text(dt, date_format);
    }
    s.to_owned()
}

/// The text of a cell as the user sees it (see the module doc).
fn cell_text(v: Value<'_>, date_format: &str) -> Option<CellText> {
    Some(match v {
        Value::Empty => return None,
        Value::Text(s) => Ok(s.to_owned()),
        Value::Float(f) => number_text(f),
        Value::Int(i) if (i as f64).abs() >= EXACT_INTEGER_LIMIT => Err(LONG_NUMBER),
        Value::Int(i) => Ok(i.to_string()),
        Value::Bool(b) => Ok(if b { "TRUE" } else { "FALSE" }.to_owned()),
        Value::DateTime(d) => Ok(excel_date_text(d, date_format)),
        Value::Iso(s) => Ok(iso_text(s, date_format)),
        Value::Error(e) => Err(error_reason(e)),
    })
}

fn error_reason(e: &calamine::CellErrorType) -> &'static str {
    use calamine::CellErrorType as E;
    match e {
        E::Div0 => "the cell shows the error #DIV/0! (a formula that fails)",
        E::NA => "the cell shows the error #N/A (a formula that fails)",
        E::Name => "the cell shows the error #NAME? (a formula that fails)",
        E::Null => "the cell shows the error #NULL! (a formula that fails)",
        E::Num => "the cell shows the error #NUM! (a formula that fails)",
        E::Ref => "the cell shows the error #REF! (a formula that fails)",
        E::Value => "the cell shows the error #VALUE! (a formula that fails)",
        E::GettingData => "the cell shows #DATA! (data still loading when it was saved)",
    }
}

/// What the reader thread sends.
enum Msg {
    /// The sheet read (sent first) and what the dry run should know of it.
    Opened { sheet: String, merged: usize },
    /// Non-blank rows, in order.
    Rows(Vec<SheetRow>),
    /// The read failed.
    Failed(JobError),
}

fn workbook_error(path: &Path, reason: impl Into<String>) -> JobError {
    JobError::Workbook {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

/// The sheet to read: the one named, else the first visible worksheet.
fn pick_sheet(
    path: &Path,
    meta: &[calamine::Sheet],
    named: Option<&str>,
) -> Result<String, JobError> {
    match named {
        Some(name) => meta
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.name.clone())
            .ok_or_else(|| {
                let names: Vec<String> = meta.iter().map(|s| format!("{:?}", s.name)).collect();
                workbook_error(
                    path,
                    format!("has no sheet {name:?} (its sheets: {})", names.join(", ")),
                )
            }),
        None => meta
            .iter()
            .find(|s| s.typ == SheetType::WorkSheet && s.visible == SheetVisible::Visible)
            .or_else(|| meta.iter().find(|s| s.typ == SheetType::WorkSheet))
            .map(|s| s.name.clone())
            .ok_or_else(|| workbook_error(path, "has no worksheet")),
    }
}

/// Collects a reader's cells into rows and sends the non-blank ones in batches. False when the
/// receiver is gone (the ingest was dropped): the reader stops.
struct RowSink<'a> {
    tx: &'a SyncSender<Msg>,
    current: SheetRow,
    batch: Vec<SheetRow>,
}

impl RowSink<'_> {
    fn cell(&mut self, row: u32, col: u32, text: CellText) -> bool {
        if row != self.current.row && !self.current.cells.is_empty() && !self.end_row() {
            return false;
        }
        self.current.row = row;
        self.current.cells.push((col, text));
        true
    }

    fn end_row(&mut self) -> bool {
        let row = std::mem::take(&mut self.current);
        if !row.is_blank() {
            self.batch.push(row);
        }
        if self.batch.len() >= ROWS_PER_BATCH {
            let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(ROWS_PER_BATCH));
            return self.tx.send(Msg::Rows(batch)).is_ok();
        }
        true
    }

    fn finish(mut self) {
        if !self.current.cells.is_empty() && !self.end_row() {
            return;
        }
        if !self.batch.is_empty() {
            let _ = self.tx.send(Msg::Rows(self.batch));
        }
    }
}

fn read_xlsx(
    path: &Path,
    sheet: Option<&str>,
    date_format: &str,
    count_merged: bool,
    tx: &SyncSender<Msg>,
) -> Result<(), JobError> {
    let mut wb: Xlsx<BufReader<File>> = calamine::open_workbook(path)
        .map_err(|e| workbook_error(path, format!("is not a readable .xlsx workbook: {e}")))?;
    let name = pick_sheet(path, wb.sheets_metadata(), sheet)?;
    // calamine finds merged ranges with a pass of their own over the sheet: only when asked.
    let merged = if count_merged {
        wb.worksheet_merge_cells(&name)
            .and_then(Result::ok)
            .map_or(0, |m| m.len())
    } else {
        0
    };
    if tx
        .send(Msg::Opened {
            sheet: name.clone(),
            merged,
        })
        .is_err()
    {
        return Ok(());
    }
    let mut cells = wb
        .worksheet_cells_reader(&name)
        .map_err(|e| workbook_error(path, format!("sheet {name:?}: {e}")))?;
    let mut sink = RowSink {
        tx,
        current: SheetRow::default(),
        batch: Vec::with_capacity(ROWS_PER_BATCH),
    };
    while let Some(cell) = cells
        .next_cell()
        .map_err(|e| workbook_error(path, format!("sheet {name:?}: {e}")))?
    {
        let (row, col) = cell.get_position();
        let Some(text) = cell_text(Value::from(cell.get_value()), date_format) else {
            continue;
        };
        if !sink.cell(row, col, text) {
            return Ok(());
        }
    }
    sink.finish();
    Ok(())
}

fn read_ods(
    path: &Path,
    sheet: Option<&str>,
    date_format: &str,
    tx: &SyncSender<Msg>,
) -> Result<(), JobError> {
    let mut wb: Ods<BufReader<File>> = calamine::open_workbook(path)
        .map_err(|e| workbook_error(path, format!("is not a readable .ods workbook: {e}")))?;
    let name = pick_sheet(path, wb.sheets_metadata(), sheet)?;
    let range = wb
        .worksheet_range(&name)
        .map_err(|e| workbook_error(path, format!("sheet {name:?}: {e}")))?;
    // The workbook's own copy of every sheet is not needed any more.
    drop(wb);
    if tx
        .send(Msg::Opened {
            sheet: name,
            merged: 0,
        })
        .is_err()
    {
        return Ok(());
    }
    let mut sink = RowSink {
        tx,
        current: SheetRow::default(),
        batch: Vec::with_capacity(ROWS_PER_BATCH),
    };
    for (row, col, value) in range.used_cells() {
        let (row, col) = (
            range.start().map_or(0, |s| s.0) + row as u32,
            range.start().map_or(0, |s| s.1) + col as u32,
        );
        let Some(text) = cell_text(Value::from(value), date_format) else {
            continue;
        };
        if !sink.cell(row, col, text) {
            return Ok(());
        }
    }
    sink.finish();
    Ok(())
}

/// The non-blank rows of one sheet, in order, read by a thread of their own.
pub(crate) struct SheetReader {
    path: PathBuf,
    rx: Receiver<Msg>,
    batch: std::vec::IntoIter<SheetRow>,
    sheet: String,
    merged: usize,
}

impl std::fmt::Debug for SheetReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SheetReader")
            .field("path", &self.path)
            .field("sheet", &self.sheet)
            .finish_non_exhaustive()
    }
}

impl SheetReader {
    /// Opens `path`'s sheet `sheet` (else its first visible worksheet); `count_merged`: count
    /// its merged cell ranges too (an extra pass over an .xlsx sheet).
    pub(crate) fn open(
        path: &Path,
        kind: WorkbookKind,
        sheet: Option<&str>,
        date_format: &str,
        count_merged: bool,
    ) -> Result<SheetReader, JobError> {
        let (tx, rx) = sync_channel(BATCHES_AHEAD);
        let (p, s, f) = (
            path.to_owned(),
            sheet.map(str::to_owned),
            date_format.to_owned(),
        );
        std::thread::Builder::new()
            .name("corriere-workbook".to_owned())
            .spawn(move || {
                let read = match kind {
                    WorkbookKind::Xlsx => read_xlsx(&p, s.as_deref(), &f, count_merged, &tx),
                    WorkbookKind::Ods => read_ods(&p, s.as_deref(), &f, &tx),
                };
                if let Err(e) = read {
                    let _ = tx.send(Msg::Failed(e));
                }
            })
            .map_err(|source| JobError::Io {
                path: path.to_owned(),
                line: None,
                source,
            })?;
        let (sheet, merged) = match rx.recv() {
            Ok(Msg::Opened { sheet, merged }) => (sheet, merged),
            Ok(Msg::Failed(e)) => return Err(e),
            Ok(Msg::Rows(_)) | Err(_) => {
                return Err(workbook_error(
                    path,
                    "the reader stopped before opening the sheet",
                ))
            }
        };
        Ok(SheetReader {
            path: path.to_owned(),
            rx,
            batch: Vec::new().into_iter(),
            sheet,
            merged,
        })
    }

    /// The name of the sheet read.
    pub(crate) fn sheet(&self) -> &str {
        &self.sheet
    }

    /// The next non-blank row: `Ok(None)` after the last one.
    pub(crate) fn next_row(&mut self) -> Result<Option<SheetRow>, JobError> {
        loop {
            if let Some(row) = self.batch.next() {
                return Ok(Some(row));
            }
            match self.rx.recv() {
                Ok(Msg::Rows(rows)) => self.batch = rows.into_iter(),
                Ok(Msg::Failed(e)) => return Err(e),
                Ok(Msg::Opened { .. }) => {
                    return Err(workbook_error(&self.path, "the sheet was opened twice"))
                }
                // The thread ended after its last rows.
                Err(_) => return Ok(None),
            }
        }
    }
}

/// What the identify pass learns of a workbook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WorkbookScan {
    /// Rows from the header's to the last non-blank one, both included (the CSV's "lines").
    pub(crate) lines: u64,
    /// The sheet's number (1-based) of the header row.
    pub(crate) header_row: u64,
    /// The sheet read.
    pub(crate) sheet: String,
    /// Merged cell ranges in the sheet (.xlsx only): each is read as its first cell's value.
    pub(crate) merged: usize,
}

/// Reads the sheet once, feeding its content to `h` (row by row, cell by cell: the sheet's
/// name and what each cell reads as, so the same content saved again hashes the same).
pub(crate) fn scan_workbook(
    path: &Path,
    kind: WorkbookKind,
    sheet: Option<&str>,
    date_format: &str,
    h: &mut Sha256,
) -> Result<WorkbookScan, JobError> {
    let mut reader = SheetReader::open(path, kind, sheet, date_format, true)?;
    h.update(b"corriere workbook v1\0");
    h.update((reader.sheet().len() as u64).to_be_bytes());
    h.update(reader.sheet().as_bytes());
    let mut first = None;
    let mut last = 0u64;
    while let Some(row) = reader.next_row()? {
        let number = u64::from(row.row) + 1;
        first.get_or_insert(number);
        last = number;
        h.update(b"R");
        h.update(number.to_be_bytes());
        for (col, text) in &row.cells {
            h.update(col.to_be_bytes());
            match text {
                Ok(t) => {
                    h.update([0]);
                    h.update((t.len() as u64).to_be_bytes());
                    h.update(t.as_bytes());
                }
                Err(reason) => {
                    h.update([1]);
                    h.update((reason.len() as u64).to_be_bytes());
                    h.update(reason.as_bytes());
                }
            }
        }
    }
    let Some(header_row) = first else {
        return Err(workbook_error(
            path,
            format!("sheet {:?} is empty: it has no header row", reader.sheet()),
        ));
    };
    Ok(WorkbookScan {
        lines: last - header_row + 1,
        header_row,
        sheet: reader.sheet().to_owned(),
        merged: reader.merged,
    })
}

/// Column letters of a 0-based column index (`0` → `A`, `27` → `AB`).
pub(crate) fn column_letters(mut col: u32) -> String {
    let mut out = Vec::new();
    loop {
        out.push(b'A' + (col % 26) as u8);
        if col < 26 {
            break;
        }
        col = col / 26 - 1;
    }
    out.reverse();
    String::from_utf8(out).expect("ASCII letters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_typed_or_are_refused() {
        assert_eq!(number_text(12.5), Ok("12.5".to_owned()));
        assert_eq!(number_text(0.1), Ok("0.1".to_owned()));
        assert_eq!(number_text(1250.0), Ok("1250".to_owned()));
        assert_eq!(number_text(-0.0), Ok("0".to_owned()));
        assert_eq!(
            number_text(999_999_999_999_999.0),
            Ok("999999999999999".to_owned())
        );
        // An 18-digit notice number typed into a number cell.
        assert_eq!(number_text(302_000_100_000_019_421.0), Err(LONG_NUMBER));
        assert_eq!(number_text(1e15), Err(LONG_NUMBER));
        // A formula's binary artefact.
        assert_eq!(number_text(0.1 + 0.2), Err(INEXACT_NUMBER));
        assert_eq!(number_text(f64::NAN), Err(INEXACT_NUMBER));
        assert_eq!(
            number_text(123_456_789.012_345),
            Ok("123456789.012345".to_owned())
        );
    }

    #[test]
    fn dates_use_the_template_format_and_keep_a_time_of_day() {
        let d = ExcelDateTime::new(46_387.0, calamine::ExcelDateTimeType::DateTime, false);
        assert_eq!(excel_date_text(&d, "%d/%m/%Y"), "31/12/2026");
        assert_eq!(excel_date_text(&d, "%Y-%m-%d"), "2026-12-31");
        let t = ExcelDateTime::new(46_387.75, calamine::ExcelDateTimeType::DateTime, false);
        assert_eq!(excel_date_text(&t, "%d/%m/%Y"), "31/12/2026 18:00");
        assert_eq!(excel_date_text(&t, "%d/%m/%Y %H:%M"), "31/12/2026 18:00");
        assert_eq!(iso_text("2026-12-31", "%d/%m/%Y"), "31/12/2026");
        assert_eq!(iso_text("PT10H", "%d/%m/%Y"), "PT10H");
    }

    #[test]
    fn column_letters_count_like_a_spreadsheet() {
        assert_eq!(column_letters(0), "A");
        assert_eq!(column_letters(25), "Z");
        assert_eq!(column_letters(26), "AA");
        assert_eq!(column_letters(27), "AB");
        assert_eq!(column_letters(701), "ZZ");
        assert_eq!(column_letters(702), "AAA");
    }

    #[test]
    fn workbooks_are_known_by_extension() {
        assert_eq!(
            WorkbookKind::of(Path::new("a/b.XLSX")),
            Some(WorkbookKind::Xlsx)
        );
        assert_eq!(
            WorkbookKind::of(Path::new("b.xlsm")),
            Some(WorkbookKind::Xlsx)
        );
        assert_eq!(
            WorkbookKind::of(Path::new("b.ods")),
            Some(WorkbookKind::Ods)
        );
        assert_eq!(WorkbookKind::of(Path::new("b.csv")), None);
        assert_eq!(WorkbookKind::of(Path::new("xlsx")), None);
    }
}
