//! [`MessagesApi`]: the three calls a job makes (submit a message, read its status, read a
//! profile), behind a trait. The scheduler holds one: the real [`IoClient`] in every run, and in
//! the scheduler's scenario tests an in-process table of answers, so poll back-off, retries
//! after a 429, cancel, restart recovery and send windows are tested in paused tokio time.

use futures::future::BoxFuture;

use super::{ExternalMessage, IoClient, IoError, LimitedProfile, MessageCreated};
use crate::model::{FiscalCode, NewMessage};

/// The calls of a job's send and poll loop.
pub trait MessagesApi: Send + Sync {
    /// submitMessageforUserWithFiscalCodeInBody: POST /messages.
    fn submit_message<'a>(
        &'a self,
        message: &'a NewMessage,
    ) -> BoxFuture<'a, Result<MessageCreated, IoError>>;

    /// getMessage: GET /messages/{fiscal_code}/{id}.
    fn get_message<'a>(
        &'a self,
        fiscal_code: &'a FiscalCode,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ExternalMessage, IoError>>;

    /// getProfileByPOST: POST /profiles.
    fn get_profile<'a>(
        &'a self,
        fiscal_code: &'a FiscalCode,
    ) -> BoxFuture<'a, Result<LimitedProfile, IoError>>;
}

impl MessagesApi for IoClient {
    fn submit_message<'a>(
        &'a self,
        message: &'a NewMessage,
    ) -> BoxFuture<'a, Result<MessageCreated, IoError>> {
        Box::pin(IoClient::submit_message(self, message))
    }

    fn get_message<'a>(
        &'a self,
        fiscal_code: &'a FiscalCode,
        id: &'a str,
    ) -> BoxFuture<'a, Result<ExternalMessage, IoError>> {
        Box::pin(IoClient::get_message(self, fiscal_code, id))
    }

    fn get_profile<'a>(
        &'a self,
        fiscal_code: &'a FiscalCode,
    ) -> BoxFuture<'a, Result<LimitedProfile, IoError>> {
        Box::pin(IoClient::get_profile(self, fiscal_code))
    }
}
