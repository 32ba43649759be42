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
//! | 3xx (never followed: `io.base_url` is wrong)   | before classifying: requeued, job stops |

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

/// Classifies a failed POST /messages (see the module table). Anything IO may have created is
/// `Unknown`; only what certainly never reached IO's function is retried; the rest is final.
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
        e if e.certainly_not_sent() => SendDecision::Retry {
            reason: "not_sent",
            after: CONNECT_RETRY_DELAY,
            unauthorized: false,
        },
        // 400, 403, 404, 409, another 4xx: IO refused the message.
        other => {
            let (status, title, detail) = other.problem();
            SendDecision::Failed {
                status,
                title,
                detail,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io_api::{ForbiddenKind, TimeoutPhase};

    #[test]
    fn only_what_never_reached_io_is_retried() {
        let retry = [
            IoError::Throttled {
                retry_after: Some(Duration::from_secs(2)),
                remaining: Some(0),
            },
            IoError::Connect("refused".into()),
            IoError::Timeout {
                phase: TimeoutPhase::Connect,
            },
            IoError::Unauthorized {
                message: String::new(),
            },
        ];
        for e in &retry {
            assert!(
                matches!(classify_send_error(e), SendDecision::Retry { .. }),
                "{e:?}"
            );
        }
        let unknown = [
            IoError::Server {
                status: 500,
                detail: String::new(),
            },
            IoError::Server {
                status: 502,
                detail: "<html>".into(),
            },
            IoError::Timeout {
                phase: TimeoutPhase::Response,
            },
            IoError::Transport("reset".into()),
            IoError::Decode {
                status: 201,
                reason: "no id".into(),
            },
        ];
        for e in &unknown {
            assert!(
                matches!(classify_send_error(e), SendDecision::Unknown { .. }),
                "{e:?}"
            );
        }
        let failed = [
            IoError::InvalidPayload {
                title: "t".into(),
                detail: "d".into(),
            },
            IoError::Forbidden {
                kind: ForbiddenKind::RecipientForbidden,
                title: "Recipient forbidden".into(),
                detail: "d".into(),
            },
            IoError::NotFound {
                title: "t".into(),
                detail: "d".into(),
            },
            IoError::Conflict {
                title: "t".into(),
                detail: "d".into(),
            },
            IoError::UnexpectedStatus {
                status: 418,
                detail: String::new(),
            },
        ];
        for e in &failed {
            assert!(
                matches!(classify_send_error(e), SendDecision::Failed { .. }),
                "{e:?}"
            );
        }
        match classify_send_error(&failed[1]) {
            SendDecision::Failed { status, title, .. } => {
                assert_eq!((status, title.as_str()), (403, "Recipient forbidden"))
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            classify_send(Ok(crate::io_api::MessageCreated { id: "X".into() })),
            SendDecision::Submitted { id: "X".into() }
        );
    }
}
