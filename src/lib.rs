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
//!   time); `clippy.toml` forbids reading the wall clock anywhere else. Uses none of ours.
//! - [`model`]: fiscal codes (one masking rule), message content and every limit of the IO spec,
//!   a job as the store keeps it ([`model::job::JobMeta`]), a recipient and its state
//!   ([`model::RecipientRecord`], [`model::RecipientState`]), the typed [`model::Outcome`]
//!   ([`model::Outcome::is_terminal`]); no I/O.
//! - [`job`]: templates (campaign, limits checked at load) and the streaming ingest: physical
//!   lines and encodings, one line's fields, workbook sheets (.xlsx, .ods), rows, the job's
//!   identity.
//! - [`feed`]: the subscriptions feed sync and the compact [`feed::SubscriberSet`] the
//!   dispatcher filters with, lock-free for readers while a sync publishes new days.
//! - [`rate`]: the one shared call budget: a `governor` limiter paced by IO's window, paused by
//!   retry headers, moved by an AIMD controller for accounts without a fixed limit.
//! - [`io_api`]: the typed App IO client ([`io_api::MessagesApi`]: the three calls of a job's
//!   loop, as a trait) and its error classification
//!   (`IoError::may_have_created_message`); [`observe`] feeds every exchange to the budget.
//! - [`store`]: `sled` keyspaces, compact record encoding (`codec`), group commit, the campaign
//!   ledger, a job's metadata (`JobMeta::load`); hands out the model's types (a stored fiscal
//!   code comes back a [`model::FiscalCode`]). The source of truth.
//! - [`dispatch`]: the engine, one file per step of a job's path: preparation (`prepare`,
//!   `ledger`), restart recovery (`recovery`), the job loop (`scheduler`), one call each
//!   (`profile`, the campaign ledger's claim before a send (`claim`), `send` with
//!   [`dispatch::classify`], `poll`), group commit, job control (pause,
//!   cancel, send windows), counts, reports (CSV and .xlsx).
//! - [`service`]: the campaign preflight (one gate, [`service::preflight_job`], which the runner
//!   calls for every way a job runs: facts, rules, probes, the table) and service files, logos.
//! - [`runtime`]: the parts a job runs on, built once ([`runtime::Runtime`]: store, the client
//!   wired to the budget, the budget, the feed on demand, engine and preflight settings).
//! - [`runner`]: the one job runner ([`runner::run`]: preflight → subscriber set → send and
//!   poll → done) behind `send`, `resend-unknown`, the daemon, the demo and the load test; a
//!   [`runner::RunObserver`] is what each of them shows.
//! - [`daemon`]: `corriere run`: many jobs under one runtime, path submits and uploads, feed
//!   schedule, dry run; [`daemon::api::Backend`] is what it offers the admin API.
//! - [`files`]: files private to the owner (the store's directory, uploads, reports).
//! - [`admin`]: the admin HTTP API (jobs, health, Prometheus `/metrics`), its connection loop and
//!   limits.
//! - [`config`]: layered configuration (TOML < environment < flags), validated once; above the
//!   domain (nothing below imports it).
//! - [`metrics`]: every metric name, declared once, and the Prometheus recorder.
//!
//! The command line (arguments, printing, progress bars, `anyhow`, the demo, the load test, the
//! figures, the daemon's HTTP client) is the binary's (`src/main.rs`, `src/cli/`); the bundled
//! fake IO is its own crate (`fake-io/`, `corriere_fake_io`), which uses nothing of this one.
#![forbid(unsafe_code)]

pub mod admin;
pub mod clock;
pub mod config;
pub mod daemon;
pub mod dispatch;
pub mod feed;
pub mod files;
pub mod io_api;
pub mod job;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod rate;
pub mod runner;
pub mod runtime;
pub mod service;
pub mod store;
