//! A recipient as the engine tracks it: [`RecipientRecord`] (its line, fiscal code, the values
//! of the template's columns) and its [`RecipientState`]; [`NotSubscribedReason`] says why one
//! was filtered out. Data only: the store encodes it (`store::codec`), the engine moves it.

use std::fmt;

use super::fiscal_code::FiscalCode;
use super::outcome::Outcome;

/// A row's fiscal code: a valid [`FiscalCode`] (what the store hands back, so no reader parses
/// it again), or the raw (truncated) text of an invalid row, kept for the report.
#[derive(Clone, PartialEq, Eq)]
pub enum RowFiscalCode {
    /// A valid code.
    Valid(FiscalCode),
    /// The raw field of an invalid row (at most [`RowFiscalCode::RAW_MAX`] bytes).
    Raw(Vec<u8>),
}

impl RowFiscalCode {
    /// Longest raw field kept.
    pub const RAW_MAX: usize = 32;

    /// A valid code.
    pub fn valid(code: FiscalCode) -> RowFiscalCode {
        RowFiscalCode::Valid(code)
    }

    /// The valid code; None for the raw text of an invalid row.
    pub fn code(&self) -> Option<&FiscalCode> {
        match self {
            RowFiscalCode::Valid(code) => Some(code),
            RowFiscalCode::Raw(_) => None,
        }
    }

    /// The raw text of an invalid row, truncated on a char boundary.
    pub fn raw(text: &str) -> RowFiscalCode {
        let mut end = text.len().min(Self::RAW_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        RowFiscalCode::Raw(text.as_bytes()[..end].to_vec())
    }

    /// The bytes: a valid code's 16 ASCII bytes, or the raw text's.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            RowFiscalCode::Valid(code) => code.as_bytes(),
            RowFiscalCode::Raw(b) => b,
        }
    }
}

impl fmt::Debug for RowFiscalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Personal data: never in Debug output.
        write!(f, "RowFiscalCode({} bytes)", self.as_bytes().len())
    }
}

/// Why a recipient was filtered out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotSubscribedReason {
    /// Not in the subscriptions feed.
    Feed,
    /// POST /profiles answered 404.
    ProfileNotFound,
    /// `sender_allowed: false`.
    SenderNotAllowed,
}

/// Where a recipient is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientState {
    /// Waiting to be sent.
    Queued,
    /// The intent to send, durable before the POST leaves.
    Sending {
        /// When.
        at_ms: u64,
    },
    /// IO returned an id (durable before it counts as submitted).
    Submitted {
        /// Message id.
        id: String,
        /// When.
        at_ms: u64,
    },
    /// IO reported a final status.
    Final {
        /// Message id.
        id: String,
        /// PROCESSED, REJECTED, FAILED, or a future value.
        status: String,
        /// ADVANCED: read status.
        read_status: Option<String>,
        /// ADVANCED: payment status.
        payment_status: Option<String>,
        /// Notification summary, when IO sent one.
        notification: Option<String>,
        /// When.
        at_ms: u64,
        /// Polls it took.
        polls: u16,
    },
    /// No final status before the poll deadline ("Unknown status").
    PollExpired {
        /// Message id.
        id: String,
        /// When.
        at_ms: u64,
        /// Polls made.
        polls: u16,
    },
    /// Filtered out before sending.
    NotSubscribed {
        /// Why.
        reason: NotSubscribedReason,
    },
    /// The row failed validation.
    Invalid {
        /// Field.
        field: String,
        /// Reason.
        reason: String,
    },
    /// Same fiscal code as an earlier line.
    Duplicate {
        /// That line.
        first_line: u64,
    },
    /// IO refused the message (400/403): final.
    Failed {
        /// HTTP status.
        status: u16,
        /// IO's title.
        title: String,
        /// IO's detail.
        detail: String,
    },
    /// The job was cancelled before this recipient was sent: nothing left for it.
    Cancelled,
    /// The citizen already has a message of this campaign from another job (campaign ledger):
    /// not sent.
    AlreadySent {
        /// That job.
        job: String,
        /// Its line in that job.
        line: u64,
        /// The message id, when that job has one (None: still sending, or never answered).
        id: Option<String>,
    },
    /// Same fiscal code as an earlier line of this job, with different values: not sent.
    DuplicateConflict {
        /// That line.
        first_line: u64,
    },
    /// IO may or may not have created the message: not re-sent unless the operator asks.
    Unknown {
        /// Why.
        reason: String,
        /// The id, if one was seen.
        id: Option<String>,
    },
}

impl RecipientState {
    /// IO has, may have, or is about to have a message for this recipient: `sending` (the
    /// request may be in flight), `submitted`, a final status, `poll_expired`, `unknown`. The
    /// campaign ledger's rule for `already_sent`: a claim in any other state (queued,
    /// cancelled, refused, filtered out) never sent anything and may be taken over.
    pub fn may_have_created(&self) -> bool {
        matches!(
            self,
            RecipientState::Sending { .. }
                | RecipientState::Submitted { .. }
                | RecipientState::Final { .. }
                | RecipientState::PollExpired { .. }
                | RecipientState::Unknown { .. }
        )
    }

    /// The message id IO gave, if any.
    pub fn message_id(&self) -> Option<&str> {
        match self {
            RecipientState::Submitted { id, .. }
            | RecipientState::Final { id, .. }
            | RecipientState::PollExpired { id, .. } => Some(id),
            RecipientState::Unknown { id, .. } => id.as_deref(),
            _ => None,
        }
    }

    /// The outcome of this state (counts, metrics, the report's `outcome` column): IO's final
    /// statuses are split into `processed`, `rejected` and `failed_status`.
    pub fn outcome(&self) -> Outcome {
        match self {
            RecipientState::Queued => Outcome::Queued,
            RecipientState::Sending { .. } => Outcome::Sending,
            RecipientState::Submitted { .. } => Outcome::Submitted,
            RecipientState::Final { status, .. } => match status.as_str() {
                "PROCESSED" => Outcome::Processed,
                "REJECTED" => Outcome::Rejected,
                _ => Outcome::FailedStatus,
            },
            RecipientState::PollExpired { .. } => Outcome::PollExpired,
            RecipientState::NotSubscribed { .. } => Outcome::NotSubscribed,
            RecipientState::Invalid { .. } => Outcome::Invalid,
            RecipientState::Duplicate { .. } => Outcome::Duplicate,
            RecipientState::Failed { .. } => Outcome::Failed,
            RecipientState::Unknown { .. } => Outcome::Unknown,
            RecipientState::Cancelled => Outcome::Cancelled,
            RecipientState::AlreadySent { .. } => Outcome::AlreadySent,
            RecipientState::DuplicateConflict { .. } => Outcome::DuplicateConflict,
        }
    }
}

/// One recipient: its line, fiscal code, the values of the template's columns, its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecipientRecord {
    /// CSV line (1-based; the header is line 1).
    pub line: u64,
    /// Fiscal code.
    pub fiscal_code: RowFiscalCode,
    /// Values of the columns the template uses (empty for rows that are never sent).
    pub values: Vec<String>,
    /// State.
    pub state: RecipientState,
}
