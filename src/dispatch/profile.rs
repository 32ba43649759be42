//! One profile check (`filter = "profile"`): whether the citizen exists on IO and allows this
//! sender; a refusal settles the recipient as `not_subscribed` without a send.

use std::sync::Arc;

use super::committer::{Change, Committer};
use super::context::JobContext;
use super::error::DispatchError;
use super::task::{fiscal_code_of, Done};
use crate::io_api::IoError;
use crate::model::{NotSubscribedReason, RecipientRecord, RecipientState};
use crate::rate::CallPermit;

/// Checks one recipient's profile (one GET).
pub(super) async fn profile_one(
    ctx: Arc<JobContext>,
    committer: Committer,
    record: RecipientRecord,
    permit: CallPermit,
) -> Done {
    let line = record.line;
    let fc = match fiscal_code_of(&record) {
        Ok(fc) => fc,
        Err(e) => return Done::Fatal(e),
    };
    let result = ctx.client.get_profile(&fc).await;
    drop(permit);
    let state = match result {
        Ok(profile) if profile.sender_allowed => return Done::ProfileAllowed(record),
        Ok(_) => RecipientState::NotSubscribed {
            reason: NotSubscribedReason::SenderNotAllowed,
        },
        Err(IoError::NotFound { .. }) => RecipientState::NotSubscribed {
            reason: NotSubscribedReason::ProfileNotFound,
        },
        Err(e) if e.is_retryable() => return Done::ProfileRetry(record),
        Err(IoError::Unauthorized { .. }) => return Done::Fatal(DispatchError::Unauthorized),
        Err(e) if e.is_misconfiguration() => {
            return Done::Fatal(DispatchError::IoMisconfigured(e.to_string()))
        }
        Err(e) => {
            let (status, title, detail) = e.problem();
            RecipientState::Failed {
                status,
                title,
                detail,
            }
        }
    };
    ctx.counters.transition(&record.state, &state);
    if let Err(e) = committer.lazy(vec![Change::State { line, state }]).await {
        return Done::Fatal(DispatchError::Commit(e.to_string()));
    }
    Done::ProfileSettled(line)
}
