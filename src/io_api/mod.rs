//! The typed App IO client: [`IoClient`] (one method per operation; [`MessagesApi`] the three a
//! job's loop makes, as a trait), [`IoError`] (classified:
//! `may_have_created_message`, `is_retryable`, `is_back_pressure`), [`RateHeaders`] (the
//! gateway's budget headers) and the request/response types of the specs.

mod client;
mod error;
mod headers;
mod messages;
pub mod types;

pub use client::{
    ApiKey, CallObserver, CallRecord, Endpoint, IoClient, IoClientConfig, KEY_HEADER,
};
pub use error::{mask_fiscal_codes, ForbiddenKind, IoError, TimeoutPhase};
pub use headers::{RateHeaders, MAX_RETRY_AFTER};
pub use messages::MessagesApi;
pub use types::*;
