//! [`BudgetObserver`]: the one place where every IO response feeds the shared rate budget (retry
//! hints, remaining calls, 429s) and the request metrics. The client calls it once per exchange.

use crate::io_api::{CallObserver, CallRecord};
use crate::metrics::{IO_REQUESTS_TOTAL, IO_REQUEST_DURATION_SECONDS};
use crate::rate::{CallOutcome, RateBudget};

/// Forwards each IO exchange to the budget and records `corriere_io_requests_total` and
/// `corriere_io_request_duration_seconds`.
pub struct BudgetObserver {
    budget: RateBudget,
}

impl BudgetObserver {
    /// Observer feeding `budget`.
    pub fn new(budget: RateBudget) -> Self {
        BudgetObserver { budget }
    }
}

impl CallObserver for BudgetObserver {
    fn observe(&self, call: &CallRecord) {
        let endpoint = call.endpoint.as_str();
        let status: &'static str = match call.status {
            Some(s) => status_label(s),
            None => "transport",
        };
        metrics::counter!(IO_REQUESTS_TOTAL, "endpoint" => endpoint, "status" => status)
            .increment(1);
        metrics::histogram!(IO_REQUEST_DURATION_SECONDS, "endpoint" => endpoint)
            .record(call.elapsed.as_secs_f64());
        self.budget.on_response(CallOutcome {
            status: call.status,
            remaining: call.rate.remaining,
            retry_after: call.rate.retry_after,
            latency: call.elapsed,
        });
    }
}

/// A static label per HTTP status we expect from IO (no unbounded label values).
fn status_label(status: u16) -> &'static str {
    match status {
        200 => "200",
        201 => "201",
        202 => "202",
        204 => "204",
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        409 => "409",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        s if s < 300 => "2xx",
        s if s < 500 => "4xx",
        _ => "5xx",
    }
}
