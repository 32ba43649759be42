//! [`Outcome`]: where a recipient stands, as the report, the counts and the metrics name it,
//! and whether anything more happens to it in its job ([`Outcome::is_terminal`]).

use std::fmt;

/// A recipient's outcome: the label of its state ([`super::RecipientState::outcome`]), with
/// IO's final statuses split (`processed`, `rejected`, `failed_status`). The snake_case names
/// ([`Outcome::as_str`]) are the report's `outcome` column, the keys of the counts and the
/// `outcome` label of `corriere_recipients_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    /// Waiting to be sent.
    Queued,
    /// The POST may be in flight.
    Sending,
    /// IO accepted the message; waiting for its final status.
    Submitted,
    /// IO's final status PROCESSED: in the citizen's inbox.
    Processed,
    /// IO's final status REJECTED.
    Rejected,
    /// Any other final status of IO (FAILED, EXPIRED, a future value).
    FailedStatus,
    /// No final status before the poll deadline.
    PollExpired,
    /// Filtered out before sending.
    NotSubscribed,
    /// The row failed validation.
    Invalid,
    /// Same fiscal code and values as an earlier line.
    Duplicate,
    /// IO refused the message.
    Failed,
    /// IO may or may not have created the message.
    Unknown,
    /// The job was cancelled before this recipient was sent.
    Cancelled,
    /// Another job of the campaign has this citizen.
    AlreadySent,
    /// Same fiscal code as an earlier line, with different values.
    DuplicateConflict,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 15] = [
        Outcome::Queued,
        Outcome::Sending,
        Outcome::Submitted,
        Outcome::Processed,
        Outcome::Rejected,
        Outcome::FailedStatus,
        Outcome::PollExpired,
        Outcome::NotSubscribed,
        Outcome::Invalid,
        Outcome::Duplicate,
        Outcome::Failed,
        Outcome::Unknown,
        Outcome::Cancelled,
        Outcome::AlreadySent,
        Outcome::DuplicateConflict,
    ];

    /// The stable snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Queued => "queued",
            Outcome::Sending => "sending",
            Outcome::Submitted => "submitted",
            Outcome::Processed => "processed",
            Outcome::Rejected => "rejected",
            Outcome::FailedStatus => "failed_status",
            Outcome::PollExpired => "poll_expired",
            Outcome::NotSubscribed => "not_subscribed",
            Outcome::Invalid => "invalid",
            Outcome::Duplicate => "duplicate",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
            Outcome::Cancelled => "cancelled",
            Outcome::AlreadySent => "already_sent",
            Outcome::DuplicateConflict => "duplicate_conflict",
        }
    }

    /// The outcome named `name` ([`Outcome::as_str`]), if any.
    pub fn parse(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// Whether nothing more happens to a recipient with this outcome in its job: everything
    /// but `queued`, `sending` and `submitted`. (`unknown` is terminal for the job: only the
    /// operator's `resend-unknown` queues it again.)
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Outcome::Queued | Outcome::Sending | Outcome::Submitted
        )
    }

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_all_is_in_declaration_order() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(Outcome::parse(o.as_str()), Some(o));
        }
        assert_eq!(Outcome::parse("delivered"), None);
    }

    #[test]
    fn only_queued_sending_and_submitted_are_not_terminal() {
        let open: Vec<&str> = Outcome::ALL
            .into_iter()
            .filter(|o| !o.is_terminal())
            .map(Outcome::as_str)
            .collect();
        assert_eq!(open, ["queued", "sending", "submitted"]);
    }
}
