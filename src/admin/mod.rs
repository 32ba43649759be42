//! The admin HTTP API (axum) over a [`Backend`]: jobs (submit, list, inspect, pause, resume,
//! cancel, report), health (`/healthz`, `/readyz`) and Prometheus `/metrics`. [`serve`] runs it,
//! [`check_bind`] refuses a public address without a token, the CLI side is in the binary (`corriere submit`, `jobs`, …).
//!
//! | route | auth | answers |
//! |---|---|---|
//! | `GET /healthz` | no | 200 |
//! | `GET /readyz` | bearer | 200 / 503 + [`crate::daemon::api::Readiness`] |
//! | `GET /metrics` | bearer | Prometheus text |
//! | `POST /jobs[?dry_run=true]` | bearer | 201 + `Location` (new), 200 (existing, dry run) |
//! | `GET /jobs`, `GET /jobs/{id}` | bearer | [`crate::daemon::api::JobView`] JSON |
//! | `POST /jobs/{id}/pause\|resume\|cancel` | bearer | `JobView` JSON |
//! | `GET /jobs/{id}/report[?codes=clear]` | bearer | `text/csv`, streamed |
//!
//! Every error is `application/problem+json` ([`problem::Problem`]).

pub mod auth;
pub mod problem;
mod routes;

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
/// directory ([`crate::daemon::api::Input::Bytes`]).
pub const MAX_UPLOAD_BYTES: usize = 512 * 1024 * 1024;
/// Largest multipart submit streamed to the backend's staging directory (the daemon's case:
/// memory does not grow with the CSV). 16 GiB is far beyond 40 million rows.
pub const MAX_STREAMED_UPLOAD_BYTES: usize = 16 * 1024 * 1024 * 1024;
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
) -> Router {
    let upload_limit = if backend.staging_dir().is_some() {
        MAX_STREAMED_UPLOAD_BYTES
    } else {
        MAX_UPLOAD_BYTES
    };
    let state = routes::AppState { backend, metrics };
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
        .layer(DefaultBodyLimit::max(upload_limit))
        .layer(axum::middleware::from_fn_with_state(
            auth::BearerToken::new(token),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn(log_request))
}

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

/// Serves the admin API on `listener` until `shutdown` is cancelled, then stops accepting and
/// waits for the requests in flight (a report being downloaded included: bound the wait with a
/// timeout if the drain must be short). Also runs the metrics upkeep every
/// [`METRICS_UPKEEP_INTERVAL`].
pub async fn serve<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: Arc<B>,
    token: Option<Secret>,
    metrics: MetricsHandle,
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
    let app = router(backend, token.as_ref(), metrics);
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await;
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
