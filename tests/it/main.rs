//! The integration tests, one binary (one link of sled, reqwest and axum instead of one per
//! file): each module starts the real thing on 127.0.0.1 against the bundled fake IO
//! (`corriere_fake_io`) and asserts through the fake's records. Shared set-up in [`common`].

mod common;

mod admin_api;
mod campaigns;
mod campaigns_api;
mod client_fake;
mod contract;
mod crash_resume;
mod daemon_http;
mod daemon_jobs;
mod dispatch_e2e;
mod dispatch_faults;
mod feed_sync;
mod fuzz_inputs;
mod grafana_dashboard;
mod hardening_cli;
mod security;
mod service_cli;
mod service_preflight;
mod store_sync;
mod workbooks;
