//! One send: render the message, check the campaign ledger, write the durable intent
//! (`Sending`), POST it, hand the result to the classification ([`super::classify`]) and commit
//! the outcome before the in-flight slot is released.

use std::sync::Arc;
use std::time::Duration;

use tracing::warn;

use super::classify::{classify_send, SendDecision};
use super::committer::{Change, Committer};
use super::context::JobContext;
use super::error::DispatchError;
use super::task::{fiscal_code_of, Done};
use crate::model::{RecipientRecord, RecipientState};
use crate::rate::CallPermit;

/// Sends one recipient (one POST), `first_poll` after which its message is first polled.
pub(super) async fn send_one(
    ctx: Arc<JobContext>,
    committer: Committer,
    record: RecipientRecord,
    permit: CallPermit,
    first_poll: Duration,
) -> Done {
    let line = record.line;
    let fc = match fiscal_code_of(&record) {
        Ok(fc) => fc,
        Err(e) => return Done::Fatal(e),
    };
    let message = match ctx.template.render(&fc, &record.values) {
        Ok(m) => m,
        Err(e) => {
            // Validated at ingest; a template changed under a running job would land here.
            let state = RecipientState::Invalid {
                field: e.field().to_owned(),
                reason: e.to_string(),
            };
            ctx.counters.transition(&record.state, &state);
            let _ = committer.lazy(vec![Change::State { line, state }]).await;
            return Done::Send {
                record,
                decision: SendDecision::Failed {
                    status: 0,
                    title: String::new(),
                    detail: String::new(),
                },
                poll_due: None,
            };
        }
    };
    // 0. The campaign ledger: claim the citizen (atomic); another job may hold it.
    let claim = match super::claim::before_send(&ctx, &committer, &record).await {
        super::claim::Claimed::Send(guard) => guard,
        super::claim::Claimed::Skip { record, decision } => {
            return Done::Send {
                record,
                decision,
                poll_due: None,
            }
        }
        super::claim::Claimed::Fatal(e) => return Done::Fatal(e),
    };
    // 1. The intent is durable before the request leaves.
    let sending = RecipientState::Sending {
        at_ms: ctx.settings.clock.now_ms(),
    };
    if let Err(e) = committer
        .durable(vec![Change::State {
            line,
            state: sending.clone(),
        }])
        .await
    {
        return Done::Fatal(DispatchError::Commit(e.to_string()));
    }
    // The intent is applied: other jobs now see this citizen `sending`.
    drop(claim);
    ctx.counters.transition(&record.state, &sending);
    // 2. The call.
    let result = ctx.client.submit_message(&message).await;
    if let Err(e) = &result {
        if e.is_misconfiguration() {
            // Nothing was created (a redirect): the recipient is queued again, durably, and
            // the job stops until the configuration is fixed.
            let queued = RecipientState::Queued;
            let back = committer
                .durable(vec![Change::State {
                    line,
                    state: queued.clone(),
                }])
                .await;
            ctx.counters.transition(&sending, &queued);
            return Done::Fatal(match back {
                Ok(()) => DispatchError::IoMisconfigured(e.to_string()),
                Err(c) => DispatchError::Commit(c.to_string()),
            });
        }
    }
    let decision = classify_send(result);
    // 3. The outcome, durable before the permit (and so the in-flight slot) is released.
    let submitted_at = ctx.settings.clock.now_ms();
    let (state, poll_due) = match &decision {
        SendDecision::Submitted { id } => {
            let poll_due = ctx
                .options
                .poll
                .should_poll(line)
                .then(|| submitted_at + first_poll.as_millis() as u64);
            (
                RecipientState::Submitted {
                    id: id.clone(),
                    at_ms: submitted_at,
                },
                poll_due,
            )
        }
        SendDecision::Retry { .. } => (RecipientState::Queued, None),
        SendDecision::Failed {
            status,
            title,
            detail,
        } => (
            RecipientState::Failed {
                status: *status,
                title: title.clone(),
                detail: detail.clone(),
            },
            None,
        ),
        SendDecision::Unknown { reason } => {
            warn!(line, recipient = %fc, reason = %reason, "IO may have created this message; recipient is Unknown and will not be re-sent.");
            (
                RecipientState::Unknown {
                    reason: reason.clone(),
                    id: None,
                },
                None,
            )
        }
    };
    let changes = vec![Change::State {
        line,
        state: state.clone(),
    }];
    // The poll queue (the scheduler's, in memory) gets the message only after its `Submitted`
    // record is durable: a restart rebuilds the queue from those records.
    let queued = match decision {
        // The id must be durable before the recipient counts as submitted.
        SendDecision::Submitted { .. } => committer.queue_durable(changes).await.map(Some),
        _ => committer.lazy(changes).await.map(|()| None),
    };
    // The outcome is queued: the intent a later send queues with this in-flight slot comes
    // after it (the committer is FIFO) and is never durable before it, so at most `in_flight`
    // intents are ever durable without their outcome (what a crash can leave `unknown`), and
    // the next intent shares this outcome's sync instead of waiting for a sync of its own.
    drop(permit);
    let committed = match queued {
        Ok(Some(pending)) => pending.wait().await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = committed {
        if let SendDecision::Submitted { id } = &decision {
            keep_created_id(&ctx, line, id, &state).await;
        }
        return Done::Fatal(DispatchError::Commit(e.to_string()));
    }
    ctx.counters.transition(&sending, &state);
    let record = RecipientRecord { state, ..record };
    Done::Send {
        record,
        decision,
        poll_due,
    }
}

/// IO created a message (201) but the group commit of its id failed: the committer has stopped,
/// so the id is written straight to the store; if that fails too, it is logged (job, line,
/// id: no personal data) for the operator. Without this the recipient would end `unknown`
/// without an id after the restart, and `resend-unknown` would send it a second message.
async fn keep_created_id(ctx: &JobContext, line: u64, id: &str, state: &RecipientState) {
    let mut batch = ctx.store.batch();
    batch.set_state(&ctx.job, line, state.clone());
    match ctx.store.commit(batch).await {
        Ok(()) => {
            warn!(job = %ctx.job, line, message_id = id, "The group commit failed after IO created a message; its id was written directly.");
        }
        Err(e) => {
            tracing::error!(job = %ctx.job, line, message_id = id, error = %e, "IO created this message but the store could not record its id: do not re-send this line.");
        }
    }
}
