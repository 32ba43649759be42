//! The send path's campaign ledger step ([`before_send`]): before a job writes its `Sending`
//! intent, it claims the citizen in the campaign ledger ([`crate::store::Store::claim_for_send`],
//! one atomic step). Granted, it sends and holds the guard ([`SendingGuard`]) until its intent is
//! applied; otherwise the row ends `already_sent` (another job has sent the citizen, is sending
//! or may have), `duplicate` (another line of this job holds it), or waits a moment (another
//! job's send to it is in flight). A job with `--allow-repeat` sends in every case, and still
//! claims the citizens nobody has sent, so that other jobs leave them.

use std::time::Duration;

use tracing::{debug, info};

use super::classify::SendDecision;
use super::committer::{Change, Committer};
use super::context::JobContext;
use super::error::DispatchError;
use super::ledger::{already_sent, values_crc};
use crate::model::{RecipientRecord, RecipientState};
use crate::store::{SendClaim, SendingGuard};

/// How long a send waits when another job's send to the same citizen is in flight (between its
/// claim and its `Sending` intent: one group commit).
pub const BUSY_RETRY: Duration = Duration::from_millis(20);

/// What the ledger step decided.
pub(super) enum Claimed {
    /// Send. Keep the guard until the `Sending` intent is applied (None: an `--allow-repeat`
    /// send of a citizen another job holds).
    Send(Option<SendingGuard>),
    /// Not sent now: the record as it is now, and what the scheduler should do with it.
    Skip {
        /// The recipient (its new state written, or still queued for a retry).
        record: RecipientRecord,
        /// A `Retry` (another job's send is in flight) or a final non-send.
        decision: SendDecision,
    },
    /// The store failed.
    Fatal(DispatchError),
}

/// The ledger step of a send (see the module doc).
pub(super) async fn before_send(
    ctx: &JobContext,
    committer: &Committer,
    record: &RecipientRecord,
) -> Claimed {
    let line = record.line;
    let Some(fc) = record.fiscal_code.code().map(|fc| *fc.as_bytes()) else {
        return Claimed::Fatal(DispatchError::Corrupt(format!(
            "line {line}: a queued row without a valid fiscal code"
        )));
    };
    // A read or two and at most one write of sled under the ledger lock (microseconds).
    let claim = match ctx.store.claim_for_send(
        &ctx.campaign,
        &fc,
        &ctx.job,
        line,
        values_crc(&record.values),
    ) {
        Ok(c) => c,
        Err(e) => return Claimed::Fatal(e.into()),
    };
    let state = match claim {
        SendClaim::Granted(guard) => return Claimed::Send(Some(guard)),
        // `--allow-repeat` sends what another job has sent, but waits like any job while
        // another job's send to the citizen is in flight: that send may yet create nothing
        // (a 429), and then this job must claim the citizen, not send beside a later retry.
        SendClaim::OtherLine { .. } | SendClaim::Sent { .. } if ctx.allow_repeat => {
            return Claimed::Send(None)
        }
        // This job holds the citizen under another of its lines (the entry went to another job
        // and came back with a later line): this line is the duplicate, never a second send.
        SendClaim::OtherLine { line: first_line } => RecipientState::Duplicate { first_line },
        SendClaim::Sent {
            job,
            line: held,
            state,
        } => {
            info!(job = %ctx.job, line, holder = %job, "Another job of the campaign has sent this citizen; not sent.");
            already_sent(&job, held, state.as_ref())
        }
        SendClaim::Busy { job, .. } => {
            // Debug: it repeats every BUSY_RETRY while the other send is in flight.
            debug!(job = %ctx.job, line, holder = %job, "Another job of the campaign is sending to this citizen; trying again in a moment.");
            return Claimed::Skip {
                record: record.clone(),
                decision: SendDecision::Retry {
                    reason: "another job of the campaign is sending to this citizen",
                    after: BUSY_RETRY,
                    unauthorized: false,
                },
            };
        }
    };
    ctx.counters.transition(&record.state, &state);
    if let Err(e) = committer
        .lazy(vec![Change::State {
            line,
            state: state.clone(),
        }])
        .await
    {
        return Claimed::Fatal(DispatchError::Commit(e.to_string()));
    }
    Claimed::Skip {
        record: RecipientRecord {
            state,
            ..record.clone()
        },
        decision: SendDecision::Failed {
            status: 0,
            title: String::new(),
            detail: String::new(),
        },
    }
}
