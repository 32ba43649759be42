//! The admin HTTP API (axum) over a [`Backend`]: jobs (submit, list, inspect, pause, resume,
//! cancel, report), health (`/healthz`, `/readyz`) and Prometheus `/metrics`. [`serve`] runs it
//! under [`ServerLimits`] (header, idle and request timeouts, a connection cap, upload size and
//! staging quota: see `server`), [`check_bind`] refuses a public address without a token,
//! the CLI side is in the binary (`corriere submit`, `jobs`, …).
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `GET /healthz` | no | 200 |
//! | `GET /readyz` | bearer | 200 / 503 + [`crate::daemon::api::Readiness`] |
//! | `GET /metrics` | bearer | Prometheus text |
//! | `POST /jobs[?dry_run=true]` | bearer | 201 + `Location` (new), 200 (existing, dry run) |
//! | `GET /jobs`, `GET /jobs/{id}` | bearer | [`crate::daemon::api::JobView`] JSON |
//! | `POST /jobs/{id}/pause\|resume\|cancel` | bearer | `JobView` JSON |
//! | `GET /jobs/{id}/report[?codes=clear][&format=xlsx]` | bearer | `text/csv` (or `.xlsx`), streamed |
//!
//! Every error is `application/problem+json` ([`problem::Problem`]).

pub mod auth;
pub mod problem;
mod routes;
mod server;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::config::Secret;
use crate::daemon::api::Backend;
use crate::metrics::MetricsHandle;

pub use routes::{CSV, PROMETHEUS_TEXT};

/// Largest multipart submit (template + CSV) held in memory, for a backend without a staging
/// directory ([`crate::daemon::api::Input::Bytes`]); a smaller `upload_limit` wins.
pub const MAX_UPLOAD_BYTES: u64 = 512 * 1024 * 1024;
/// Longest multipart part header (the `Content-Disposition` and `Content-Type` lines of a part:
/// a few hundred bytes in practice), and longest preamble before the first part.
pub const MAX_PART_HEADER_BYTES: u64 = 8 * 1024;
/// Largest JSON submit body (two paths).
pub const MAX_JSON_BYTES: usize = 64 * 1024;
/// How often histogram samples are folded into buckets when nobody scrapes `/metrics`.
pub const METRICS_UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Why the admin API cannot run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    /// A non-loopback address without a token would open the daemon to the network.
    #[error(
        "refusing to serve the admin API on {addr} without a token: it is not a loopback \
         address; set CORRIERE_ADMIN_TOKEN or admin.token_file, or listen on 127.0.0.1"
    )]
    PublicWithoutToken {
        /// The address asked for.
        addr: SocketAddr,
    },
    /// Accepting or serving connections failed.
    #[error("admin API on {addr}: {source}")]
    Serve {
        /// Listen address.
        addr: String,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// The limits the admin server enforces (from `[admin]` in the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerLimits {
    /// Time a client has to send a whole request header.
    pub header_timeout: Duration,
    /// A connection with no byte moving for this long is closed.
    pub idle_timeout: Duration,
    /// Longest time from a request's header to its answer's header.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Largest submit body, bytes.
    pub upload_limit: u64,
    /// Bytes of uploads being staged on disk at once.
    pub staging_quota: u64,
}

impl ServerLimits {
    /// The limits `[admin]` configures.
    pub fn from_config(c: &crate::config::AdminConfig) -> ServerLimits {
        ServerLimits {
            header_timeout: c.header_timeout,
            idle_timeout: c.idle_timeout,
            request_timeout: c.request_timeout,
            max_connections: c.max_connections,
            upload_limit: c.upload_limit,
            staging_quota: c.staging_quota,
        }
    }
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits::from_config(&crate::config::AdminConfig::default())
    }
}

/// Refuses `addr` when it is not a loopback address and no (non-empty) token is configured.
/// The daemon calls it before binding; [`serve`] checks again on the bound address.
pub fn check_bind(addr: SocketAddr, token: Option<&Secret>) -> Result<(), AdminError> {
    let has_token = token.is_some_and(|t| !t.expose().is_empty());
    if addr.ip().is_loopback() || has_token {
        Ok(())
    } else {
        Err(AdminError::PublicWithoutToken { addr })
    }
}

/// The admin API as a router (for [`serve`], or to nest in another server). Requests need
/// `Authorization: Bearer <token>` on every route but `/healthz` when `token` is set.
pub fn router<B: Backend>(
    backend: Arc<B>,
    token: Option<&Secret>,
    metrics: MetricsHandle,
    limits: &ServerLimits,
) -> Router {
    let upload_limit = if backend.staging_dir().is_some() {
        limits.upload_limit
    } else {
        limits.upload_limit.min(MAX_UPLOAD_BYTES)
    };
    let state = routes::AppState {
        backend,
        metrics,
        upload_limit,
        staging: Arc::new(routes::StagingQuota::new(limits.staging_quota)),
    };
    Router::new()
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz::<B>))
        .route("/metrics", get(routes::metrics::<B>))
        .route("/jobs", get(routes::list::<B>).post(routes::submit::<B>))
        .route("/jobs/{id}", get(routes::get::<B>))
        .route("/jobs/{id}/pause", post(routes::pause::<B>))
        .route("/jobs/{id}/resume", post(routes::resume::<B>))
        .route("/jobs/{id}/cancel", post(routes::cancel::<B>))
        .route("/jobs/{id}/report", get(routes::report::<B>))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(DefaultBodyLimit::max(
            usize::try_from(upload_limit).unwrap_or(usize::MAX),
        ))
        .layer(axum::middleware::from_fn_with_state(
            auth::BearerToken::new(token),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn(log_request))
}

/// The audit line of an export of clear fiscal codes (the API's `?codes=clear`, the CLI's
/// `--clear`): which job and who asked (a client address, or the local CLI), never a code.
pub fn audit_clear_export(job: &str, client: &str) {
    tracing::info!(
        target: AUDIT_TARGET,
        job,
        client,
        "Clear fiscal codes exported."
    );
}

/// The `tracing` target of audit lines (filter or route them with it).
pub const AUDIT_TARGET: &str = "corriere::audit";

/// One debug line per request: method, path (job ids only, never a query or a header), status.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(%method, path, status = response.status().as_u16(), "Admin request.");
    response
}

/// Serves the admin API on `listener` under `limits` until `shutdown` is cancelled, then stops
/// accepting and waits for the requests in flight (a report being downloaded included: bound
/// the wait with a timeout if the drain must be short). Also runs the metrics upkeep every
/// [`METRICS_UPKEEP_INTERVAL`].
pub async fn serve<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: Arc<B>,
    token: Option<Secret>,
    metrics: MetricsHandle,
    limits: ServerLimits,
    shutdown: CancellationToken,
) -> Result<(), AdminError> {
    let addr = listener.local_addr().map_err(|source| AdminError::Serve {
        addr: "(unbound)".to_owned(),
        source,
    })?;
    check_bind(addr, token.as_ref())?;
    if token.is_none() {
        tracing::warn!(%addr, "Admin API without a token: any local user can control the daemon.");
    }
    tracing::info!(%addr, "Admin API listening.");
    let upkeep = tokio::spawn({
        let metrics = metrics.clone();
        let shutdown = shutdown.clone();
        async move {
            let mut tick = tokio::time::interval(METRICS_UPKEEP_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => metrics.run_upkeep(),
                }
            }
        }
    });
    let app = router(backend, token.as_ref(), metrics, &limits);
    let result = server::run(listener, app, limits, shutdown.clone()).await;
    upkeep.abort();
    result.map_err(|source| AdminError::Serve {
        addr: addr.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_fine_without_a_token_public_is_not() {
        let token = Secret::new("t");
        assert!(check_bind("127.0.0.1:9464".parse().unwrap(), None).is_ok());
        assert!(check_bind("[::1]:9464".parse().unwrap(), None).is_ok());
        let err = check_bind("0.0.0.0:9464".parse().unwrap(), None).unwrap_err();
        assert!(matches!(err, AdminError::PublicWithoutToken { .. }));
        assert!(err.to_string().contains("CORRIERE_ADMIN_TOKEN"), "{err}");
        assert!(check_bind("10.1.2.3:9464".parse().unwrap(), Some(&Secret::new(" "))).is_err());
        assert!(check_bind("0.0.0.0:9464".parse().unwrap(), Some(&token)).is_ok());
    }
}
