//! One unit of the scheduler's work and what its task reports back: [`Work`] is exactly one IO
//! call (a send, a profile check or a poll); [`Done`] is its result, handed back to the
//! scheduler (`scheduler.rs`), which owns every in-memory queue.

use std::time::Duration;

use super::classify::SendDecision;
use super::error::DispatchError;
use crate::model::FiscalCode;
use crate::model::RecipientRecord;

/// One unit of work: exactly one IO call.
pub(super) enum Work {
    Profile(RecipientRecord),
    Send(RecipientRecord),
    Poll { line: u64, due_ms: u64 },
}

/// What a task reports back to the scheduler.
pub(super) enum Done {
    ProfileAllowed(RecipientRecord),
    ProfileRetry(RecipientRecord),
    ProfileSettled(u64),
    Send {
        record: RecipientRecord,
        decision: SendDecision,
        /// When to poll the message (submitted, and the poll policy samples it).
        poll_due: Option<u64>,
    },
    Poll {
        line: u64,
        first: Option<(Duration, Duration, bool)>,
        /// When to poll again; None when the message has settled (final, expired, or gone).
        next_due: Option<u64>,
    },
    Fatal(DispatchError),
}

/// The fiscal code of a record about to be called for; the raw text of an invalid row (never
/// queued) here would be a corrupt store.
pub(super) fn fiscal_code_of(record: &RecipientRecord) -> Result<FiscalCode, DispatchError> {
    record
        .fiscal_code
        .code()
        .copied()
        .ok_or_else(|| DispatchError::Corrupt(format!("line {}: stored fiscal code", record.line)))
}
