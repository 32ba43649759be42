//! Jobs: a [`Template`] (TOML with `{{column}}` placeholders) and a recipients CSV streamed by
//! [`Ingest`] into [`Row`]s, each valid (fiscal code + the values the template uses) or invalid
//! (line, field, reason). [`job_id`] derives a job's identity from its inputs.

mod ingest;
mod template;

use std::path::PathBuf;

pub use ingest::{job_id, Ingest, Row, RowOutcome};
pub use template::{
    parse_amount, parse_due_date, toml_error, BoundTemplate, FilterMode, JobOptions, PollPolicy,
    RowError, RowWarning, Template, DEFAULT_FISCAL_CODE_COLUMN,
};

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
    /// Placeholders (or the fiscal code column) name columns the CSV lacks.
    #[error(
        "template {} uses columns the CSV lacks: {} (CSV columns: {})",
        template.display(),
        missing.join(", "),
        available.join(", ")
    )]
    MissingColumns {
        /// Template file.
        template: PathBuf,
        /// Missing column names.
        missing: Vec<String>,
        /// The CSV header.
        available: Vec<String>,
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
