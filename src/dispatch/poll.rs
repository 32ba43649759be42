//! One poll of a submitted message: GET its status, record a final one (or `poll_expired` past
//! the deadline), and say when to poll again ([`super::poll_schedule`] decides how far apart).

use std::sync::Arc;
use std::time::Duration;

use tracing::info;

use super::committer::{Change, Committer};
use super::context::JobContext;
use super::error::DispatchError;
use super::poll_schedule::PollScheduler;
use super::task::{fiscal_code_of, Done};
use crate::model::RecipientState;
use crate::rate::CallPermit;

/// How long a failed poll (5xx, timeout) waits before the next try.
const POLL_RETRY_DELAY: Duration = Duration::from_secs(5);

/// Polls one message (one GET), its `polls_before`-th poll.
pub(super) async fn poll_one(
    ctx: Arc<JobContext>,
    committer: Committer,
    line: u64,
    due_ms: u64,
    polls_before: u16,
    scheduler: PollScheduler,
    permit: CallPermit,
) -> Done {
    let settled = Done::Poll {
        line,
        first: None,
        next_due: None,
    };
    let record = match ctx.store.recipient(&ctx.job, line) {
        Ok(Some(r)) => r,
        Ok(None) => return settled,
        Err(e) => return Done::Fatal(e.into()),
    };
    let (id, submitted_ms) = match &record.state {
        RecipientState::Submitted { id, at_ms } => (id.clone(), *at_ms),
        // No longer waiting for a status (settled by another path): nothing to poll.
        _ => return settled,
    };
    let fc = match fiscal_code_of(&record) {
        Ok(fc) => fc,
        Err(e) => return Done::Fatal(e),
    };
    let result = ctx.client.get_message(&fc, &id).await;
    drop(permit);
    if let Err(e) = &result {
        if e.is_misconfiguration() {
            // The message stays `Submitted`: polled again once the job is resumed.
            return Done::Fatal(DispatchError::IoMisconfigured(e.to_string()));
        }
    }
    let now = ctx.settings.clock.now_ms();
    let elapsed = Duration::from_millis(now.saturating_sub(submitted_ms));
    let polls = polls_before.saturating_add(1);
    let mut next_due = None;
    let mut final_status = false;
    let new_state = match result {
        Ok(message) if message.status.is_final() => {
            final_status = true;
            Some(RecipientState::Final {
                id: id.clone(),
                status: message.status.as_str().to_owned(),
                read_status: message.read_status.as_ref().map(|s| s.as_str().to_owned()),
                payment_status: message
                    .payment_status
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                notification: message.notification_summary(),
                at_ms: now,
                polls,
            })
        }
        Ok(_) | Err(_) if elapsed >= ctx.settings.poll_deadline => {
            Some(RecipientState::PollExpired {
                id: id.clone(),
                at_ms: now,
                polls,
            })
        }
        Ok(_) => {
            let next = scheduler.next_poll_delay(polls as u32, elapsed);
            next_due = Some(submitted_ms + next.as_millis() as u64);
            None
        }
        Err(e) if e.is_retryable() => {
            next_due = Some(now + POLL_RETRY_DELAY.as_millis() as u64);
            None
        }
        Err(e) => {
            // 403/404 on our own message id: IO will not tell us more. Keep the id.
            info!(line, error = %e, "Poll refused; the message's status stays unknown.");
            Some(RecipientState::PollExpired {
                id: id.clone(),
                at_ms: now,
                polls,
            })
        }
    };
    if let Some(state) = new_state {
        ctx.counters.transition(&record.state, &state);
        // Redoable: a crash before the flush leaves the message `Submitted`, polled again
        // after the restart.
        if let Err(e) = committer.lazy(vec![Change::State { line, state }]).await {
            return Done::Fatal(DispatchError::Commit(e.to_string()));
        }
    }
    let first = (polls_before == 0).then(|| {
        let planned = Duration::from_millis(due_ms.saturating_sub(submitted_ms));
        (planned, elapsed, final_status)
    });
    Done::Poll {
        line,
        first,
        next_due,
    }
}
