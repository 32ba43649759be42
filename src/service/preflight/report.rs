//! Findings and the preflight's table: what the operator reads.

use std::fmt;

use tracing::warn;

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// IO would refuse the campaign (or every message of a kind): the job does not start.
    Blocking,
    /// Worth a look (or not checkable): shown and logged, the job goes on.
    Warning,
    /// Checked and fine.
    Ok,
}

impl Severity {
    /// The table's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Blocking => "BLOCKING",
            Severity::Warning => "WARNING",
            Severity::Ok => "ok",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One line of the report. `detail` never holds a clear fiscal code or a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Severity.
    pub severity: Severity,
    /// What was checked: a service field (`metadata.privacy_url`) or one of [`checks`].
    pub check: &'static str,
    /// What was found, and what to do.
    pub detail: String,
}

/// Everything the preflight found, in the order it checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PreflightReport {
    /// The findings.
    pub findings: Vec<Finding>,
}

/// Width of the DETAIL column before it wraps.
pub(super) const DETAIL_WIDTH: usize = 72;

impl PreflightReport {
    pub(super) fn push(
        &mut self,
        severity: Severity,
        check: &'static str,
        detail: impl Into<String>,
    ) {
        self.findings.push(Finding {
            severity,
            check,
            detail: detail.into(),
        });
    }

    /// The blocking findings.
    pub fn blocking(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Blocking)
    }

    /// The warnings.
    pub fn warnings(&self) -> impl Iterator<Item = &Finding> {
        self.findings
            .iter()
            .filter(|f| f.severity == Severity::Warning)
    }

    /// Whether a campaign must not start.
    pub fn is_blocked(&self) -> bool {
        self.blocking().next().is_some()
    }

    /// `Err(Blocked)` when a campaign must not start.
    pub fn refusal(&self) -> Result<(), super::ServiceError> {
        match self.blocking().count() {
            0 => Ok(()),
            blocking => Err(super::ServiceError::Blocked { blocking }),
        }
    }

    /// The findings of one check.
    pub fn of(&self, check: &str) -> impl Iterator<Item = &Finding> {
        let check = check.to_owned();
        self.findings.iter().filter(move |f| f.check == check)
    }

    /// Logs warnings and blocking findings (fields first, a sentence last).
    pub fn log(&self) {
        for f in &self.findings {
            match f.severity {
                Severity::Blocking => {
                    warn!(check = f.check, detail = %f.detail, "Service preflight: blocking.")
                }
                Severity::Warning => {
                    warn!(check = f.check, detail = %f.detail, "Service preflight: warning.")
                }
                Severity::Ok => {}
            }
        }
    }

    /// The report as a table: SEVERITY, CHECK, DETAIL (wrapped), and a summary line.
    pub fn table(&self) -> String {
        let check_width = self
            .findings
            .iter()
            .map(|f| f.check.chars().count())
            .chain(std::iter::once("CHECK".len()))
            .max()
            .unwrap_or(5);
        let sev_width = "BLOCKING".len();
        let mut out = String::new();
        out.push_str(&format!(
            "{:<sev_width$}  {:<check_width$}  DETAIL\n",
            "SEVERITY", "CHECK"
        ));
        out.push_str(&format!(
            "{}  {}  {}\n",
            "-".repeat(sev_width),
            "-".repeat(check_width),
            "-".repeat(DETAIL_WIDTH.min(40))
        ));
        for f in &self.findings {
            let lines = wrap(&f.detail, DETAIL_WIDTH);
            for (i, line) in lines.iter().enumerate() {
                if i == 0 {
                    out.push_str(&format!(
                        "{:<sev_width$}  {:<check_width$}  {line}\n",
                        f.severity.as_str(),
                        f.check
                    ));
                } else {
                    out.push_str(&format!(
                        "{:<sev_width$}  {:<check_width$}  {line}\n",
                        "", ""
                    ));
                }
            }
        }
        let blocking = self.blocking().count();
        let warnings = self.warnings().count();
        let ok = self.findings.len() - blocking - warnings;
        out.push_str(&format!(
            "{blocking} blocking, {warnings} warning(s), {ok} ok\n"
        ));
        out
    }
}

impl fmt::Display for PreflightReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.table())
    }
}

/// Greedy word wrap (a word longer than `width` gets its own line).
pub(super) fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let needed = if line.is_empty() {
            word.chars().count()
        } else {
            line.chars().count() + 1 + word.chars().count()
        };
        if needed > width && !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() || lines.is_empty() {
        lines.push(line);
    }
    lines
}
