//! The domain, with no I/O: [`FiscalCode`], message content ([`NewMessage`],
//! [`MessageContent`], [`PaymentData`]) with every limit of IO's spec, and the statuses IO
//! reports ([`MessageStatus`], [`ReadStatus`], [`PaymentStatus`]), and the [`SendWindow`] a job
//! may send in; a job as the store keeps it ([`job::JobMeta`], [`job::JobPhase`]); a recipient
//! and where it stands ([`RecipientRecord`], [`RecipientState`], its [`Outcome`]).

pub mod content;
pub mod fiscal_code;
pub mod job;
pub mod outcome;
pub mod recipient;
pub mod send_window;
pub mod status;

pub use content::{
    ContentError, FeatureLevelType, MessageContent, NewMessage, Payee, PaymentData, Violation,
};
pub use fiscal_code::{CheckCharMismatch, FiscalCode, FiscalCodeError};
pub use outcome::Outcome;
pub use recipient::{NotSubscribedReason, RecipientRecord, RecipientState, RowFiscalCode};
pub use send_window::SendWindow;
pub use status::{MessageStatus, NotificationStatus, PaymentStatus, ReadStatus};
