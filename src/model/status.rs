//! Statuses IO reports: [`MessageStatus`], [`ReadStatus`], [`PaymentStatus`],
//! [`NotificationStatus`]. All are x-extensible in the spec: an unknown value is kept as
//! `Other`, never a parse failure. Where the guide and the spec spell a value differently, both
//! are read.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! open_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal $(| $alias:literal)*),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
            /// A value this version does not know (the spec allows new ones).
            Other(String),
        }

        impl $name {
            /// The spec's spelling.
            pub fn as_str(&self) -> &str {
                match self {
                    $($name::$variant => $text,)+
                    $name::Other(s) => s,
                }
            }

            /// Reads a value, accepting the older spellings too.
            pub fn parse(s: &str) -> Self {
                match s {
                    $($text $(| $alias)* => $name::$variant,)+
                    other => $name::Other(other.to_owned()),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok($name::parse(&s))
            }
        }
    };
}

open_enum! {
    /// Processing status of a message (`MessageStatusValue`).
    MessageStatus {
        /// Accepted, not processed yet (also what IO answers before any status exists).
        Accepted = "ACCEPTED",
        /// Legacy: a temporary failure; retried for up to 7 days.
        Throttled = "THROTTLED",
        /// Stored in the citizen's inbox.
        Processed = "PROCESSED",
        /// The recipient does not exist on IO or blocked the sender.
        Rejected = "REJECTED",
        /// Permanent failure.
        Failed = "FAILED",
    }
}

impl MessageStatus {
    /// Whether IO will not change this status any more. Unknown values are final only when they
    /// look like an end state (`EXPIRED`); otherwise polling goes on until the deadline.
    pub fn is_final(&self) -> bool {
        match self {
            MessageStatus::Processed | MessageStatus::Rejected | MessageStatus::Failed => true,
            MessageStatus::Accepted | MessageStatus::Throttled => false,
            MessageStatus::Other(s) => s == "EXPIRED",
        }
    }
}

open_enum! {
    /// Whether the citizen read an ADVANCED message (`ReadStatus`).
    ReadStatus {
        /// The citizen does not share read status.
        Unavailable = "UNAVAILABLE",
        /// Not read (the guide says `NOT_READ`).
        Unread = "UNREAD" | "NOT_READ",
        /// Read.
        Read = "READ",
    }
}

open_enum! {
    /// Payment status of an ADVANCED message's notice (`PaymentStatus`).
    PaymentStatus {
        /// Paid.
        Paid = "PAID",
        /// Not paid.
        NotPaid = "NOT_PAID",
    }
}

open_enum! {
    /// Status of a notification channel (`NotificationChannelStatusValue`).
    NotificationStatus {
        /// Sent.
        Sent = "SENT",
        /// Temporarily failed, retried.
        Throttled = "THROTTLED",
        /// The message's time to live passed before sending.
        Expired = "EXPIRED",
        /// Failed permanently.
        Failed = "FAILED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_statuses() {
        let s: MessageStatus = serde_json::from_str("\"PROCESSED\"").unwrap();
        assert_eq!(s, MessageStatus::Processed);
        assert!(s.is_final());
        let s: MessageStatus = serde_json::from_str("\"ACCEPTED\"").unwrap();
        assert!(!s.is_final());
        let s: MessageStatus = serde_json::from_str("\"QUEUED_SOMEWHERE\"").unwrap();
        assert_eq!(s, MessageStatus::Other("QUEUED_SOMEWHERE".into()));
        assert!(!s.is_final());
        assert!(MessageStatus::parse("EXPIRED").is_final());
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"QUEUED_SOMEWHERE\"");
    }

    #[test]
    fn both_spellings_of_unread() {
        assert_eq!(ReadStatus::parse("UNREAD"), ReadStatus::Unread);
        assert_eq!(ReadStatus::parse("NOT_READ"), ReadStatus::Unread);
        assert_eq!(ReadStatus::Unread.as_str(), "UNREAD");
        assert_eq!(PaymentStatus::parse("NOT_PAID"), PaymentStatus::NotPaid);
        assert_eq!(
            NotificationStatus::parse("QUEUED"),
            NotificationStatus::Other("QUEUED".into())
        );
    }
}
