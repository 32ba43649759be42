//! # corriere
//!
//! Sends a personal message to millions of citizens through the App IO API, at the rate IO
//! allows, without losing or duplicating one.
//!
//! # Layout
//!
//! ```text
//!   CSV + template ──► job ──► feed (filter) ──► rate ──► io_api ──► store ──► dispatch (poll) ──► report
//! ```
//!
//! - [`clock`]: the one source of wall time ([`clock::Clock`]: system, shifted, or paused tokio
//!   time); `clippy.toml` forbids reading the wall clock anywhere else.
//! - [`model`]: fiscal codes, message content and every limit of the IO spec (no I/O).
//! - [`io_api`]: the typed App IO client and its error classification
//!   (`IoError::may_have_created_message`).
//! - [`rate`]: the one shared call budget: a `governor` limiter paced by IO's window, paused by
//!   retry headers, moved by an AIMD controller for accounts without a fixed limit.
//! - [`feed`]: the subscriptions feed sync and the compact [`feed::SubscriberSet`] the
//!   dispatcher filters with, lock-free for readers while a sync publishes new days.
//! - [`store`]: `sled` keyspaces, compact record encoding, group commit. The source of truth.
//! - [`config`]: layered configuration (TOML < environment < flags), validated once.
//! - [`admin`]: the daemon's admin HTTP API (jobs, health, Prometheus `/metrics`) over
//!   [`daemon::api::Backend`], and its CLI client (`corriere submit`, `jobs`, `job`, …).
//! - [`metrics`]: every metric name, declared once, and the Prometheus recorder.
//! - [`service`]: the campaign preflight (service data, sandbox, payments, premium, source
//!   address) `send` runs before its first message, and service management (/manage/services).
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod feed;
pub mod io_api;
pub mod job;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod rate;
pub mod service;
pub mod store;
