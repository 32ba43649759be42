//! What a POST /messages result means for one recipient: [`SendDecision`].
//!
//! This is where the no-duplicate guarantee is decided. IO has no idempotency key (FACTS §3): a
//! POST that reached IO may have created a message even if we never saw the answer, and sending
//! it again would deliver it twice. So a failed POST is retried **only** when IO cannot have
//! created the message; every ambiguous failure leaves the recipient `Unknown` for the operator.
//!
//! | result                                         | decision                          |
//! |------------------------------------------------|-----------------------------------|
//! | 201 with an id                                 | `Submitted` (then polled)         |
//! | 429 (gateway throttling, before the function)  | retry after the hint              |
//! | connection refused / connect timeout           | retry with back-off               |
//! | 401 (key refused at the gateway)               | retry a few times, then stop job  |
//! | 400, 403, 404 (IO refused the message)         | `Failed` with IO's title/detail   |
//! | 5xx, response timeout, connection dropped after the request left, unreadable 201 | `Unknown` |

use std::time::Duration;

use crate::io_api::{IoError, MessageCreated};

/// Consecutive 401 answers after which a job stops: the key is wrong, not flaky.
pub const MAX_UNAUTHORIZED_STREAK: u32 = 5;
/// Back-off before retrying a connection that could not be opened.
pub const CONNECT_RETRY_DELAY: Duration = Duration::from_secs(1);

/// What to do with a recipient after one POST /messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendDecision {
    /// IO accepted the message: record the id, then poll.
    Submitted {
        /// The message id IO returned.
        id: String,
    },
    /// IO cannot have created the message: send again later.
    Retry {
        /// Why (for logs and metrics).
        reason: &'static str,
        /// Wait at least this long (the rate budget also pauses on 429 hints).
        after: Duration,
        /// The retry counts towards the unauthorized streak (401).
        unauthorized: bool,
    },
    /// IO refused the message for good (400/403/404): never re-sent.
    Failed {
        /// HTTP status.
        status: u16,
        /// IO's title.
        title: String,
        /// IO's detail.
        detail: String,
    },
    /// IO may or may not have created the message: not re-sent unless the operator asks.
    Unknown {
        /// Why we cannot know.
        reason: String,
    },
}

/// Classifies the result of one POST /messages.
pub fn classify_send(result: Result<MessageCreated, IoError>) -> SendDecision {
    match result {
        Ok(created) => SendDecision::Submitted { id: created.id },
        Err(err) => classify_send_error(&err),
    }
}

/// Classifies a failed POST /messages (see the module table).
pub fn classify_send_error(err: &IoError) -> SendDecision {
    if err.may_have_created_message() {
        return SendDecision::Unknown {
            reason: err.to_string(),
        };
    }
    match err {
        IoError::Throttled { retry_after, .. } => SendDecision::Retry {
            reason: "throttled",
            after: retry_after.unwrap_or(Duration::ZERO),
            unauthorized: false,
        },
        IoError::Unauthorized { .. } => SendDecision::Retry {
            reason: "unauthorized",
            after: CONNECT_RETRY_DELAY,
            unauthorized: true,
        },
        IoError::InvalidPayload { title, detail } => SendDecision::Failed {
            status: 400,
            title: title.clone(),
            detail: detail.clone(),
        },
        IoError::Forbidden { title, detail, .. } => SendDecision::Failed {
            status: 403,
            title: title.clone(),
            detail: detail.clone(),
        },
        IoError::NotFound { title, detail } => SendDecision::Failed {
            status: 404,
            title: title.clone(),
            detail: detail.clone(),
        },
        // Connect failures, connect timeouts: the request never left.
        _ => SendDecision::Retry {
            reason: "not_sent",
            after: CONNECT_RETRY_DELAY,
            unauthorized: false,
        },
    }
}
