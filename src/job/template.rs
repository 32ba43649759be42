//! [`Template`]: the message of a job, read from TOML, with `{{column}}` placeholders; bound to a
//! CSV header it becomes a [`BoundTemplate`] that validates a row cheaply (lengths without
//! building strings) and renders a [`NewMessage`] at send time.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;

use super::lines::FileEncoding;
use super::JobError;
use crate::model::content::{
    check_amount, check_markdown_len, check_notice_number, check_payee, check_subject_len,
    check_ttl, MARKDOWN_MAX, MARKDOWN_MIN, SUBJECT_MAX, SUBJECT_MIN,
};
use crate::model::{FeatureLevelType, FiscalCode, MessageContent, NewMessage, Payee, PaymentData};

/// Default name of the fiscal code column.
pub const DEFAULT_FISCAL_CODE_COLUMN: &str = "fiscal_code";

/// How a workbook's date cells read by default: as an Italian spreadsheet shows them, and a
/// form `due_date` accepts.
pub const DEFAULT_DATE_FORMAT: &str = "%d/%m/%Y";

/// How recipients are filtered before sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    /// The local subscriber set built from the subscriptions feed.
    Feed,
    /// POST /profiles per recipient (`sender_allowed`; 404 = not on IO).
    Profile,
    /// Send to everyone; IO answers REJECTED for non-subscribers.
    None,
}

/// Which messages are polled for their final status.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PollPolicy {
    /// Every message.
    All,
    /// None: the job ends at submission.
    None,
    /// A deterministic sample (0..1), for a delivery estimate at a fraction of the calls.
    Fraction(f64),
}

impl PollPolicy {
    /// Whether the message of `line` is polled: all, none, or a deterministic sample.
    pub fn should_poll(&self, line: u64) -> bool {
        match self {
            PollPolicy::All => true,
            PollPolicy::None => false,
            PollPolicy::Fraction(f) => {
                // A fixed hash of the line: the same recipients are sampled after a restart.
                let h = line.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
                (h as f64 / (1u64 << 53) as f64) < *f
            }
        }
    }
}

/// Per-job dispatch options, from the template.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct JobOptions {
    /// Filter.
    pub filter: FilterMode,
    /// Poll policy.
    pub poll: PollPolicy,
    /// Sends take the budget first (polls keep a floor share); otherwise they alternate.
    pub sends_first: bool,
}

/// A row problem: the field and the reason, with the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct RowError {
    /// Field (`subject`, `markdown`, `due_date`, `payment_data.amount`, the fiscal code column…).
    pub field: String,
    /// Reason.
    pub reason: String,
}

impl RowError {
    fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        RowError {
            field: field.into(),
            reason: reason.into(),
        }
    }
    /// The field.
    pub fn field(&self) -> &str {
        &self.field
    }
}

/// A row is valid but worth a look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowWarning {
    /// The fiscal code's check character differs from the computed one (IO accepts it).
    CheckChar,
    /// The due date is in the past (IO accepts it).
    DueDateInPast,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum IntOrText {
    Int(i64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum BoolOrText {
    Bool(bool),
    Text(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum PollValue {
    Text(String),
    Fraction(f64),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPayment {
    amount: IntOrText,
    #[serde(default)]
    amount_unit: Option<String>,
    notice_number: String,
    #[serde(default)]
    invalid_after_due_date: Option<BoolOrText>,
    #[serde(default)]
    payee: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    subject: String,
    markdown: String,
    #[serde(default)]
    fiscal_code_column: Option<String>,
    #[serde(default)]
    due_date: Option<String>,
    #[serde(default, alias = "feature_type")]
    feature_level_type: Option<FeatureLevelType>,
    #[serde(default)]
    time_to_live: Option<u32>,
    #[serde(default)]
    require_secure_channels: Option<bool>,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    poll: Option<PollValue>,
    #[serde(default)]
    sends_first: Option<bool>,
    #[serde(default)]
    send_window: Option<String>,
    #[serde(default)]
    payment_data: Option<RawPayment>,
    /// The campaign a citizen gets at most one message of (default: the subject as written).
    #[serde(default)]
    campaign: Option<String>,
    /// How the CSV is decoded (default UTF-8; a BOM wins).
    #[serde(default)]
    encoding: Option<String>,
    /// The sheet of a workbook (.xlsx, .xlsm, .ods) to read (default: the first).
    #[serde(default)]
    sheet: Option<String>,
    /// How a workbook's date cells become text (strftime, default `%d/%m/%Y`).
    #[serde(default)]
    date_format: Option<String>,
}

/// A parsed template (not yet bound to a CSV header).
#[derive(Debug, Clone)]
pub struct Template {
    path: PathBuf,
    raw: RawTemplate,
    options: JobOptions,
    encoding: FileEncoding,
}

/// A piece of a text with placeholders.
#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Lit(String, usize),
    Col(String),
}

#[derive(Debug, Clone, PartialEq)]
struct Text {
    segs: Vec<Seg>,
}

impl Text {
    /// Characters of the fixed text (placeholders counted empty).
    fn fixed_chars(&self) -> usize {
        self.segs
            .iter()
            .map(|s| match s {
                Seg::Lit(_, n) => *n,
                Seg::Col(_) => 0,
            })
            .sum()
    }
}

/// A piece of a bound text: a literal or an index into the row's used values.
#[derive(Debug, Clone)]
enum BSeg {
    Lit(String),
    Val(usize),
}

#[derive(Debug, Clone)]
struct BText {
    segs: Vec<BSeg>,
    static_chars: usize,
}

fn parse_text(text: &str, file: &Path, field: &'static str) -> Result<Text, JobError> {
    let mut segs = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            let lit = &rest[..start];
            segs.push(Seg::Lit(lit.to_owned(), lit.chars().count()));
        }
        let after = &rest[start + 2..];
        let end = after.find("}}").ok_or_else(|| JobError::Template {
            path: file.to_owned(),
            field,
            reason: "a placeholder opened with {{ is never closed with }}".to_owned(),
        })?;
        let name = after[..end].trim();
        if name.is_empty() || name.contains("{{") {
            return Err(JobError::Template {
                path: file.to_owned(),
                field,
                reason: "empty or malformed placeholder {{ }}".to_owned(),
            });
        }
        segs.push(Seg::Col(name.to_owned()));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        segs.push(Seg::Lit(rest.to_owned(), rest.chars().count()));
    }
    Ok(Text { segs })
}

impl Template {
    /// Reads a template file.
    pub fn from_toml_file(path: &Path) -> Result<Template, JobError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobError::Io {
            path: path.to_owned(),
            line: None,
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Parses template text (`path` names it in errors).
    pub fn from_toml_str(text: &str, path: &Path) -> Result<Template, JobError> {
        let raw: RawTemplate = toml::from_str(text).map_err(|e| JobError::Template {
            path: path.to_owned(),
            field: "(file)",
            reason: toml_error(&e, text),
        })?;
        let bad = |field: &'static str, reason: String| JobError::Template {
            path: path.to_owned(),
            field,
            reason,
        };
        if let Some(ttl) = raw.time_to_live {
            check_ttl(ttl).map_err(|v| bad("time_to_live", v.reason))?;
        }
        let filter = match raw.filter.as_deref().unwrap_or("profile") {
            "feed" => FilterMode::Feed,
            "profile" => FilterMode::Profile,
            "none" => FilterMode::None,
            other => {
                return Err(bad(
                    "filter",
                    format!("{other:?}: expected \"feed\", \"profile\" or \"none\""),
                ))
            }
        };
        let poll = match &raw.poll {
            None => PollPolicy::All,
            Some(PollValue::Text(t)) if t == "all" => PollPolicy::All,
            Some(PollValue::Text(t)) if t == "none" => PollPolicy::None,
            Some(PollValue::Fraction(f)) if (0.0..=1.0).contains(f) => PollPolicy::Fraction(*f),
            Some(other) => {
                return Err(bad(
                    "poll",
                    format!("{other:?}: expected \"all\", \"none\" or a fraction between 0 and 1"),
                ))
            }
        };
        if let Some(p) = &raw.payment_data {
            match p.amount_unit.as_deref() {
                None | Some("cents") | Some("euro") => {}
                Some(other) => {
                    return Err(bad(
                        "payment_data.amount_unit",
                        format!("{other:?}: expected \"cents\" or \"euro\""),
                    ))
                }
            }
        }
        if let Some(w) = &raw.send_window {
            crate::model::SendWindow::parse(w, crate::model::send_window::DEFAULT_TIMEZONE)
                .map_err(|e| bad("send_window", e.to_string()))?;
        }
        let encoding = match &raw.encoding {
            Some(label) => FileEncoding::from_label(label).map_err(|r| bad("encoding", r))?,
            None => FileEncoding::default(),
        };
        if let Some(f) = &raw.date_format {
            check_date_format(f).map_err(|r| bad("date_format", r))?;
        }
        if let Some(sheet) = &raw.sheet {
            if sheet.trim().is_empty() {
                return Err(bad("sheet", "must not be empty".to_owned()));
            }
        }
        if let Some(c) = &raw.campaign {
            if c.trim().is_empty() {
                return Err(bad("campaign", "must not be empty".to_owned()));
            }
        }
        let template = Template {
            encoding,
            path: path.to_owned(),
            options: JobOptions {
                filter,
                poll,
                sends_first: raw.sends_first.unwrap_or(true),
            },
            raw,
        };
        // Every text must parse now, not at the first row; the fixed text must fit IO's
        // limits now, not fail every row one at a time.
        for (field, text) in template.texts()? {
            let (min, max) = match field {
                "subject" => (SUBJECT_MIN, SUBJECT_MAX),
                "markdown" => (MARKDOWN_MIN, MARKDOWN_MAX),
                _ => continue,
            };
            let fixed = text.fixed_chars();
            let has_placeholders = text.segs.iter().any(|s| matches!(s, Seg::Col(_)));
            if fixed > max {
                return Err(bad(
                    field,
                    format!("its fixed text is {fixed} characters (placeholders counted empty); IO accepts at most {max}"),
                ));
            }
            if fixed < min && !has_placeholders {
                return Err(bad(
                    field,
                    format!("{fixed} characters; IO needs at least {min}"),
                ));
            }
        }
        Ok(template)
    }

    /// The campaign: `campaign` when the template names one, else the subject as written
    /// (placeholders included). A citizen gets at most one message per campaign.
    pub fn campaign(&self) -> &str {
        self.raw.campaign.as_deref().unwrap_or(&self.raw.subject)
    }

    /// How the CSV is decoded (`encoding`; UTF-8 by default).
    pub fn encoding(&self) -> FileEncoding {
        self.encoding
    }

    /// The workbook sheet the template names (`sheet`), if any.
    pub fn sheet(&self) -> Option<&str> {
        self.raw.sheet.as_deref()
    }

    /// How a workbook's date cells become text (`date_format`, strftime).
    pub fn date_format(&self) -> &str {
        self.raw
            .date_format
            .as_deref()
            .unwrap_or(DEFAULT_DATE_FORMAT)
    }

    /// Dispatch options.
    pub fn options(&self) -> JobOptions {
        self.options
    }

    /// The job's own send window (e.g. `"mon-fri 09:00-18:00"`, Europe/Rome), if it has one.
    pub fn send_window(&self) -> Option<&str> {
        self.raw.send_window.as_deref()
    }

    /// The fiscal code column's name.
    pub fn fiscal_code_column(&self) -> &str {
        self.raw
            .fiscal_code_column
            .as_deref()
            .unwrap_or(DEFAULT_FISCAL_CODE_COLUMN)
    }

    /// Every placeholder text, by field.
    fn texts(&self) -> Result<Vec<(&'static str, Text)>, JobError> {
        let p = &self.path;
        let mut out = vec![
            ("subject", parse_text(&self.raw.subject, p, "subject")?),
            ("markdown", parse_text(&self.raw.markdown, p, "markdown")?),
        ];
        if let Some(d) = &self.raw.due_date {
            out.push(("due_date", parse_text(d, p, "due_date")?));
        }
        if let Some(pay) = &self.raw.payment_data {
            let amount = match &pay.amount {
                IntOrText::Int(i) => i.to_string(),
                IntOrText::Text(t) => t.clone(),
            };
            out.push((
                "payment_data.amount",
                parse_text(&amount, p, "payment_data.amount")?,
            ));
            out.push((
                "payment_data.notice_number",
                parse_text(&pay.notice_number, p, "payment_data.notice_number")?,
            ));
            if let Some(v) = &pay.invalid_after_due_date {
                let t = match v {
                    BoolOrText::Bool(b) => b.to_string(),
                    BoolOrText::Text(t) => t.clone(),
                };
                out.push((
                    "payment_data.invalid_after_due_date",
                    parse_text(&t, p, "payment_data.invalid_after_due_date")?,
                ));
            }
            if let Some(payee) = &pay.payee {
                out.push((
                    "payment_data.payee",
                    parse_text(payee, p, "payment_data.payee")?,
                ));
            }
        }
        Ok(out)
    }

    /// Binds to a CSV header: every placeholder must name a column.
    pub fn bind(&self, header: &[String]) -> Result<BoundTemplate, JobError> {
        let texts = self.texts()?;
        let fc_column = self.fiscal_code_column();
        let fc_index =
            header
                .iter()
                .position(|h| h == fc_column)
                .ok_or_else(|| JobError::MissingColumns {
                    template: self.path.clone(),
                    missing: vec![fc_column.to_owned()],
                    columns: header.len(),
                })?;
        let mut used: Vec<String> = Vec::new();
        let mut missing: Vec<String> = Vec::new();
        for (_, text) in &texts {
            for seg in &text.segs {
                if let Seg::Col(name) = seg {
                    if !header.iter().any(|h| h == name) {
                        if !missing.contains(name) {
                            missing.push(name.clone());
                        }
                    } else if !used.contains(name) {
                        used.push(name.clone());
                    }
                }
            }
        }
        if !missing.is_empty() {
            return Err(JobError::MissingColumns {
                template: self.path.clone(),
                missing,
                columns: header.len(),
            });
        }
        let bind_text = |t: &Text| {
            let mut static_chars = 0;
            let segs = t
                .segs
                .iter()
                .map(|s| match s {
                    Seg::Lit(l, n) => {
                        static_chars += n;
                        BSeg::Lit(l.clone())
                    }
                    Seg::Col(c) => {
                        BSeg::Val(used.iter().position(|u| u == c).expect("bound above"))
                    }
                })
                .collect();
            BText { segs, static_chars }
        };
        let get = |field: &str| {
            texts
                .iter()
                .find(|(f, _)| *f == field)
                .map(|(_, t)| bind_text(t))
        };
        let used_indices = used
            .iter()
            .map(|u| header.iter().position(|h| h == u).expect("bound above"))
            .collect();
        Ok(BoundTemplate {
            subject: get("subject").expect("subject is required"),
            markdown: get("markdown").expect("markdown is required"),
            due_date: get("due_date"),
            amount: get("payment_data.amount"),
            amount_in_euro: self
                .raw
                .payment_data
                .as_ref()
                .is_some_and(|p| p.amount_unit.as_deref() == Some("euro")),
            notice_number: get("payment_data.notice_number"),
            invalid_after: get("payment_data.invalid_after_due_date"),
            payee: get("payment_data.payee"),
            feature_level_type: self.raw.feature_level_type,
            time_to_live: self.raw.time_to_live,
            require_secure_channels: self.raw.require_secure_channels,
            used_columns: used,
            used_indices,
            fc_index,
        })
    }
}

/// A template bound to a CSV header.
#[derive(Debug, Clone)]
pub struct BoundTemplate {
    subject: BText,
    markdown: BText,
    due_date: Option<BText>,
    amount: Option<BText>,
    amount_in_euro: bool,
    notice_number: Option<BText>,
    invalid_after: Option<BText>,
    payee: Option<BText>,
    feature_level_type: Option<FeatureLevelType>,
    time_to_live: Option<u32>,
    require_secure_channels: Option<bool>,
    used_columns: Vec<String>,
    used_indices: Vec<usize>,
    fc_index: usize,
}

fn render(t: &BText, values: &[String]) -> String {
    let mut out = String::with_capacity(t.static_chars + 32);
    for s in &t.segs {
        match s {
            BSeg::Lit(l) => out.push_str(l),
            BSeg::Val(i) => out.push_str(values.get(*i).map(String::as_str).unwrap_or("")),
        }
    }
    out
}

fn char_len(t: &BText, values: &[String]) -> usize {
    t.static_chars
        + t.segs
            .iter()
            .map(|s| match s {
                BSeg::Lit(_) => 0,
                BSeg::Val(i) => values.get(*i).map_or(0, |v| v.chars().count()),
            })
            .sum::<usize>()
}

/// Parses a due date: RFC 3339 (→ UTC), or a plain `YYYY-MM-DD` / `DD/MM/YYYY` (→ 00:00 UTC).
/// The year has four digits: `31/12/26` is refused, not read as the year 26.
pub fn parse_due_date(s: &str) -> Result<DateTime<Utc>, String> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc));
    }
    for (fmt, sep, year_at) in [("%Y-%m-%d", '-', 0), ("%d/%m/%Y", '/', 2)] {
        if let Ok(d) = NaiveDate::parse_from_str(s, fmt) {
            let year = s.split(sep).nth(year_at).unwrap_or("");
            if year.len() != 4 {
                return Err(format!(
                    "{:?}: the year must have four digits (31/12/2026 or 2026-12-31), not {}",
                    truncate(s),
                    year.len()
                ));
            }
            return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
        }
    }
    Err(format!(
        "{:?} is not a date (2026-12-31T00:00:00Z, 2026-12-31 or 31/12/2026)",
        truncate(s)
    ))
}

/// Parses an amount: integer cents, or euro (`12,50`, `12.50`, `12`) when `euro`.
pub fn parse_amount(s: &str, euro: bool) -> Result<u64, String> {
    let s = s.trim();
    if !euro {
        return s
            .parse::<u64>()
            .map_err(|_| format!("{:?} is not a whole number of euro cents", truncate(s)));
    }
    let (int, frac) = match s.find([',', '.']) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, ""),
    };
    let ok = !int.is_empty()
        && int.bytes().all(|b| b.is_ascii_digit())
        && frac.len() <= 2
        && frac.bytes().all(|b| b.is_ascii_digit());
    if !ok {
        return Err(format!(
            "{:?} is not an amount in euro like 12,50",
            truncate(s)
        ));
    }
    let cents = match frac.len() {
        0 => 0,
        1 => frac.parse::<u64>().unwrap_or(0) * 10,
        _ => frac.parse::<u64>().unwrap_or(0),
    };
    int.parse::<u64>()
        .ok()
        .and_then(|e| e.checked_mul(100))
        .and_then(|c| c.checked_add(cents))
        .ok_or_else(|| "amount too large".to_owned())
}

/// A `date_format` must be a strftime pattern chrono understands and must show a date.
fn check_date_format(f: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    let items: Vec<Item<'_>> = StrftimeItems::new(f).collect();
    if items.iter().any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "{:?} is not a strftime pattern (e.g. \"%d/%m/%Y\" or \"%Y-%m-%d\")",
            truncate(f)
        ));
    }
    if !items
        .iter()
        .any(|i| matches!(i, Item::Numeric(..) | Item::Fixed(..)))
    {
        return Err(format!(
            "{:?} shows no part of a date (e.g. \"%d/%m/%Y\")",
            truncate(f)
        ));
    }
    Ok(())
}

fn parse_bool(s: &str) -> Result<bool, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "si" | "sì" | "yes" | "s" | "y" => Ok(true),
        "false" | "0" | "no" | "n" | "" => Ok(false),
        other => Err(format!(
            "{:?} is not true/false (si/no, 1/0)",
            truncate(other)
        )),
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

impl BoundTemplate {
    /// Names of the CSV columns the template uses, in the order of a row's stored values.
    pub fn used_columns(&self) -> &[String] {
        &self.used_columns
    }

    /// Positions of the used columns in the CSV header.
    pub fn used_indices(&self) -> &[usize] {
        &self.used_indices
    }

    /// Position of the fiscal code column in the CSV header.
    pub fn fiscal_code_index(&self) -> usize {
        self.fc_index
    }

    /// STANDARD / ADVANCED, as the template says (None: IO's default, STANDARD).
    pub fn feature_level_type(&self) -> Option<FeatureLevelType> {
        self.feature_level_type
    }

    /// Whether the template carries payment data.
    pub fn has_payment(&self) -> bool {
        self.amount.is_some() && self.notice_number.is_some()
    }

    /// A row's payment data, without rendering the texts (the service preflight reads amounts).
    pub fn payment_data(&self, values: &[String]) -> Result<Option<PaymentData>, RowError> {
        self.payment(values)
    }

    /// Checks a row's rendered message against every limit without building the markdown.
    pub fn validate_row(&self, values: &[String]) -> Result<Vec<RowWarning>, RowError> {
        let mut warnings = Vec::new();
        check_subject_len(char_len(&self.subject, values))
            .map_err(|v| RowError::new("subject", v.reason))?;
        check_markdown_len(char_len(&self.markdown, values))
            .map_err(|v| RowError::new("markdown", v.reason))?;
        if let Some(d) = &self.due_date {
            let date =
                parse_due_date(&render(d, values)).map_err(|r| RowError::new("due_date", r))?;
            if date < crate::clock::Clock::System.now() {
                warnings.push(RowWarning::DueDateInPast);
            }
        }
        self.payment(values)?;
        Ok(warnings)
    }

    fn payment(&self, values: &[String]) -> Result<Option<PaymentData>, RowError> {
        let (Some(amount), Some(notice)) = (&self.amount, &self.notice_number) else {
            return Ok(None);
        };
        let amount = parse_amount(&render(amount, values), self.amount_in_euro)
            .map_err(|r| RowError::new("payment_data.amount", r))?;
        check_amount(amount).map_err(|v| RowError::new("payment_data.amount", v.reason))?;
        let notice_number = render(notice, values).trim().to_owned();
        check_notice_number(&notice_number)
            .map_err(|v| RowError::new("payment_data.notice_number", v.reason))?;
        let invalid_after_due_date = match &self.invalid_after {
            Some(t) => parse_bool(&render(t, values))
                .map_err(|r| RowError::new("payment_data.invalid_after_due_date", r))?,
            None => false,
        };
        let payee = match &self.payee {
            Some(t) => {
                let fc = render(t, values).trim().to_owned();
                check_payee(&fc).map_err(|v| RowError::new("payment_data.payee", v.reason))?;
                Some(Payee { fiscal_code: fc })
            }
            None => None,
        };
        Ok(Some(PaymentData {
            amount,
            notice_number,
            invalid_after_due_date,
            payee,
        }))
    }

    /// Renders the message for one recipient (at send time).
    pub fn render(
        &self,
        fiscal_code: &FiscalCode,
        values: &[String],
    ) -> Result<NewMessage, RowError> {
        let subject = render(&self.subject, values);
        let markdown = render(&self.markdown, values);
        check_subject_len(subject.chars().count())
            .map_err(|v| RowError::new("subject", v.reason))?;
        check_markdown_len(markdown.chars().count())
            .map_err(|v| RowError::new("markdown", v.reason))?;
        let due_date = match &self.due_date {
            Some(d) => {
                Some(parse_due_date(&render(d, values)).map_err(|r| RowError::new("due_date", r))?)
            }
            None => None,
        };
        Ok(NewMessage {
            fiscal_code: Some(*fiscal_code),
            time_to_live: self.time_to_live,
            content: MessageContent {
                subject,
                markdown,
                due_date,
                payment_data: self.payment(values)?,
                require_secure_channels: self.require_secure_channels,
            },
            feature_level_type: self.feature_level_type,
        })
    }
}

/// A TOML error as "line L, column C: message", without the source snippet `toml` adds (the
/// line may hold a secret, or be a file an admin API caller should not read).
pub fn toml_error(e: &toml::de::Error, text: &str) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_owned(),
    }
}
