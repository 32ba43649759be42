//! Every metric corriere exports, declared once: names as consts, descriptions in [`describe`].
//! Labels come from small fixed sets (job id, endpoint, status class, outcome); never a fiscal
//! code or anything derived from one.

/// Counter: recipients reaching an outcome, `{job, outcome}`.
pub const RECIPIENTS_TOTAL: &str = "corriere_recipients_total";
/// Counter: IO requests, `{endpoint, status}` (status = HTTP code, or `transport`).
pub const IO_REQUESTS_TOTAL: &str = "corriere_io_requests_total";
/// Histogram: IO request duration in seconds, `{endpoint}`.
pub const IO_REQUEST_DURATION_SECONDS: &str = "corriere_io_request_duration_seconds";
/// Gauge: the rate the budget currently allows, calls per second.
pub const RATE_LIMIT_PER_SECOND: &str = "corriere_rate_limit_per_second";
/// Gauge: the last `x-rate-limit-remaining` IO sent.
pub const IO_RATE_LIMIT_REMAINING: &str = "corriere_io_rate_limit_remaining";
/// Gauge: IO requests in flight.
pub const IO_IN_FLIGHT: &str = "corriere_io_in_flight";
/// Counter: 429 answers.
pub const THROTTLED_TOTAL: &str = "corriere_throttled_total";
/// Gauge: messages IO accepted that still wait for a final status, `{job}` (the poll backlog).
pub const POLL_QUEUE_DEPTH: &str = "corriere_poll_queue_depth";
/// Gauge: subscribers in the local set.
pub const FEED_SUBSCRIBERS: &str = "corriere_feed_subscribers";
/// Gauge: the last feed day applied, as the Unix time of its midnight UTC.
pub const FEED_LAST_SYNCED_DAY: &str = "corriere_feed_last_synced_day_timestamp_seconds";
/// Counter: admin API connections refused at once because every open connection was busy.
pub const ADMIN_CONNECTIONS_REFUSED: &str = "corriere_admin_connections_refused_total";
/// Counter: idle admin API connections closed to make room for a new one (the cap was reached).
pub const ADMIN_CONNECTIONS_EVICTED: &str = "corriere_admin_connections_evicted_total";

/// Histogram buckets for IO request durations (seconds): IO answers in tens of milliseconds
/// normally, seconds when overloaded.
pub const DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Registers descriptions and units with the installed recorder (call once at start-up).
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        RECIPIENTS_TOTAL,
        "Recipients that reached an outcome, by job and outcome."
    );
    describe_counter!(
        IO_REQUESTS_TOTAL,
        "Requests made to IO, by endpoint and HTTP status."
    );
    describe_histogram!(
        IO_REQUEST_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of IO requests, by endpoint."
    );
    describe_gauge!(
        RATE_LIMIT_PER_SECOND,
        "Calls per second the shared budget allows now."
    );
    describe_gauge!(
        IO_RATE_LIMIT_REMAINING,
        "Last x-rate-limit-remaining sent by IO."
    );
    describe_gauge!(IO_IN_FLIGHT, "IO requests in flight.");
    describe_counter!(THROTTLED_TOTAL, "IO answers with HTTP 429.");
    describe_gauge!(POLL_QUEUE_DEPTH, "Messages waiting for a status poll.");
    describe_gauge!(
        FEED_SUBSCRIBERS,
        "Subscribers in the local set built from the subscriptions feed."
    );
    describe_gauge!(
        FEED_LAST_SYNCED_DAY,
        Unit::Seconds,
        "Midnight UTC (Unix time) of the last subscriptions feed day applied."
    );
    describe_counter!(
        ADMIN_CONNECTIONS_REFUSED,
        "Admin API connections refused: admin.max_connections reached, every one busy."
    );
    describe_counter!(
        ADMIN_CONNECTIONS_EVICTED,
        "Idle admin API connections closed to make room under admin.max_connections."
    );
}

/// Every metric name above: what `/metrics` may show and what a dashboard may query.
pub const ALL: &[&str] = &[
    RECIPIENTS_TOTAL,
    IO_REQUESTS_TOTAL,
    IO_REQUEST_DURATION_SECONDS,
    RATE_LIMIT_PER_SECOND,
    IO_RATE_LIMIT_REMAINING,
    IO_IN_FLIGHT,
    THROTTLED_TOTAL,
    POLL_QUEUE_DEPTH,
    FEED_SUBSCRIBERS,
    FEED_LAST_SYNCED_DAY,
    ADMIN_CONNECTIONS_REFUSED,
    ADMIN_CONNECTIONS_EVICTED,
];

/// Why the Prometheus recorder could not be installed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MetricsError {
    /// Another (non-corriere) recorder owns the process-wide slot.
    #[error("another metrics recorder is installed already")]
    RecorderTaken,
    /// The exporter refused its settings.
    #[error("metrics exporter: {0}")]
    Build(String),
}

/// Renders the installed recorder's metrics in the Prometheus text format (for `GET /metrics`).
/// Cheap to clone.
#[derive(Clone, Debug)]
pub struct MetricsHandle(metrics_exporter_prometheus::PrometheusHandle);

impl MetricsHandle {
    /// Every metric, in the Prometheus text exposition format (0.0.4).
    pub fn render(&self) -> String {
        self.0.render()
    }

    /// Drains histogram samples into their buckets and forgets idle series. `render` does it
    /// too; call this periodically when nobody scrapes, or samples pile up in memory.
    pub fn run_upkeep(&self) {
        self.0.run_upkeep();
    }
}

/// The process-wide recorder, installed at most once.
static INSTALLED: std::sync::OnceLock<Result<MetricsHandle, MetricsError>> =
    std::sync::OnceLock::new();

/// The exporter's settings: no HTTP listener of its own, IO durations as true histograms with
/// [`DURATION_BUCKETS`] (without buckets they would come out as summaries).
fn builder() -> Result<metrics_exporter_prometheus::PrometheusBuilder, MetricsError> {
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(IO_REQUEST_DURATION_SECONDS.to_owned()),
            DURATION_BUCKETS,
        )
        .map_err(|e| MetricsError::Build(e.to_string()))
}

/// Installs the Prometheus recorder as the process-wide `metrics` recorder, with no HTTP
/// listener of its own (the admin API renders it on `GET /metrics`), IO durations as true
/// histograms with [`DURATION_BUCKETS`], and every description from [`describe`].
///
/// Idempotent: a second call in the same process returns the same handle (tests start several
/// servers in one process). Fails only when another recorder was installed first.
pub fn install() -> Result<MetricsHandle, MetricsError> {
    INSTALLED
        .get_or_init(|| {
            let handle = builder()?
                .install_recorder()
                .map_err(|_| MetricsError::RecorderTaken)?;
            describe();
            Ok(MetricsHandle(handle))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_name_once_with_the_prefix() {
        let mut names: Vec<&str> = ALL.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len());
        assert!(ALL.iter().all(|n| n.starts_with("corriere_")));
    }

    #[test]
    fn durations_are_histograms_with_our_buckets() {
        let recorder = builder().unwrap().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            describe();
            metrics::histogram!(IO_REQUEST_DURATION_SECONDS, "endpoint" => "submit_message")
                .record(0.02);
        });
        let text = handle.render();
        assert!(
            text.contains("corriere_io_request_duration_seconds_bucket{endpoint=\"submit_message\",le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(text.contains("# TYPE corriere_io_request_duration_seconds histogram"));
        assert!(text.contains("le=\"30\""), "{text}");
    }
}
