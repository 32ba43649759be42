//! A job as the store keeps it: [`JobMeta`] (its inputs, phase, the operator's choices),
//! [`JobPhase`], and the warnings found at ingest ([`DueDateWarnings`]). Data only: the engine
//! writes and reads it (`dispatch`), the daemon, the preflight and the commands show it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// The CSV is being read into the store.
    Ingesting,
    /// Sending and polling.
    Running,
    /// Every recipient has an outcome.
    Done,
}

/// A job's metadata, stored once (the template text, never the rendered messages).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobMeta {
    /// Job id (derived from the template and CSV contents).
    pub id: String,
    /// When the job was created (RFC 3339).
    pub created_at: String,
    /// Template file as given.
    pub template_path: PathBuf,
    /// Template text (the job runs from the store alone once ingested).
    pub template_text: String,
    /// Recipients CSV as given.
    pub recipients_path: PathBuf,
    /// The CSV header.
    pub header: Vec<String>,
    /// Phase.
    pub phase: JobPhase,
    /// Rows read so far (all of them once ingest is complete).
    pub rows: u64,
    /// Paused by an operator (sends stop, polls go on).
    #[serde(default)]
    pub paused: bool,
    /// Cancelled by an operator (queued recipients end `cancelled`).
    #[serde(default)]
    pub cancelled: bool,
    /// The campaign (template's `campaign`, else its subject); None for jobs from before.
    #[serde(default)]
    pub campaign: Option<String>,
    /// `--allow-repeat`: sent even to citizens who have a message of the campaign.
    #[serde(default)]
    pub allow_repeat: bool,
    /// `--encoding`, when the operator gave one.
    #[serde(default)]
    pub encoding: Option<String>,
    /// The CSV's delimiter (the report uses it).
    #[serde(default)]
    pub delimiter: Option<char>,
    /// Physical lines of the CSV, header included (of a workbook: its rows from the header's
    /// to the last non-blank one).
    #[serde(default)]
    pub lines: Option<u64>,
    /// The sheet read, when the recipients file is a workbook (`--sheet` or the template's
    /// `sheet` or its first).
    #[serde(default)]
    pub sheet: Option<String>,
    /// Due dates in the past among the rows to send.
    #[serde(default)]
    pub due_date_in_past: DueDateWarnings,
}

impl JobMeta {
    /// The stored form (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("JobMeta serializes")
    }

    /// Reads the stored form back.
    pub fn decode(bytes: &[u8]) -> Result<JobMeta, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Due dates in the past found at ingest: how many, and the first lines.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DueDateWarnings {
    /// Rows whose due date is in the past (IO accepts them).
    pub count: u64,
    /// Their first lines (at most [`WARNING_LINES`]).
    pub lines: Vec<u64>,
}

/// Lines kept per warning kind.
pub const WARNING_LINES: usize = 10;

impl DueDateWarnings {
    /// Counts one more row.
    pub fn add(&mut self, line: u64) {
        self.count += 1;
        if self.lines.len() < WARNING_LINES {
            self.lines.push(line);
        }
    }
}
