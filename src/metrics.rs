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
}
