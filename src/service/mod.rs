//! IO services: the campaign preflight and service management.
//!
//! - [`preflight`]: [`preflight::check`] reads the service (cmsGetService with the *manage* key)
//!   and probes the service key, compares both with what a job needs ([`preflight::JobFacts`]) and
//!   returns a [`preflight::PreflightReport`]: blocking problems refuse the job before its first
//!   send, warnings are shown and logged.
//! - [`payload`]: service files (TOML or JSON) validated against the spec's `CmsServicePayload`
//!   rules before `create` / `update`, errors naming the field.
//! - [`logo`]: the local 300×300 PNG check a logo passes before any upload.
//! - [`gate`]: [`preflight_job`], the preflight of a stored job before its first send, shared by
//!   every way a job runs. (`corriere service …` / `organization …` are commands of the binary.)
//!
//! The guide's publication words map to the spec's states: "in review" = lifecycle `submitted`,
//! "dati incompleti o incorretti" = `rejected` with its reason, "servizio attivo" = publication
//! `published`.

pub mod gate;
pub mod logo;
pub mod payload;
pub mod preflight;

use std::path::PathBuf;

use crate::io_api::IoError;

pub use gate::preflight_job;
pub use logo::LogoError;
pub use payload::{FieldProblem, ServiceFileError};
pub use preflight::{Finding, JobFacts, PreflightReport, PreflightSettings, Severity};

/// Why a service command or the preflight gate failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// An IO call failed.
    #[error(transparent)]
    Io(#[from] IoError),
    /// The service file is unusable.
    #[error(transparent)]
    ServiceFile(#[from] ServiceFileError),
    /// The logo is not a 300×300 PNG (checked locally, nothing uploaded).
    #[error(transparent)]
    Logo(#[from] LogoError),
    /// The command needs the manage key.
    #[error("no manage key: set io.manage_key_file in the config or CORRIERE_IO_MANAGE_KEY (the Back-office \"manage\" key)")]
    NoManageKey,
    /// The command needs the service key.
    #[error("no IO API key: set io.api_key_file in the config or CORRIERE_IO_API_KEY")]
    NoApiKey,
    /// The command needs a service id.
    #[error("no service id: pass --service-id or set io.service_id (CORRIERE_IO_SERVICE_ID)")]
    NoServiceId,
    /// A destructive command without its confirmation.
    #[error("{0}")]
    NeedsConfirmation(String),
    /// The preflight found problems that make the campaign fail: nothing was sent.
    #[error("service preflight: {blocking} blocking problem(s); the job is refused before any message is sent")]
    Blocked {
        /// How many blocking findings.
        blocking: usize,
    },
    /// The job's data could not be read (template, CSV, store).
    #[error("reading the job for the preflight: {0}")]
    Job(String),
    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

impl ServiceError {
    /// Exit code: 65 (EX_DATAERR) for a refused job or unusable input (service file, logo),
    /// 64 (EX_USAGE) for missing configuration or confirmation, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ServiceError::Blocked { .. }
            | ServiceError::ServiceFile(_)
            | ServiceError::Logo(_)
            | ServiceError::Job(_) => 65,
            ServiceError::NoManageKey
            | ServiceError::NoApiKey
            | ServiceError::NoServiceId
            | ServiceError::NeedsConfirmation(_)
            | ServiceError::Io(IoError::Unauthorized { .. } | IoError::Config(_)) => 64,
            _ => 1,
        }
    }
}
