//! Live per-job outcome counts: [`Counters`], seeded from the store when a run starts and moved by
//! every transition, read by the progress bar, the admin API and `corriere_recipients_total`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::RecipientState;

/// Every outcome label a recipient can have (the store's `outcome_name`), in report order.
pub const OUTCOMES: &[&str] = &[
    "queued",
    "sending",
    "submitted",
    "processed",
    "rejected",
    "failed_status",
    "poll_expired",
    "not_subscribed",
    "invalid",
    "duplicate",
    "failed",
    "unknown",
    "cancelled",
    "already_sent",
    "duplicate_conflict",
];

/// Outcomes after which nothing more happens to a recipient in this job.
pub const TERMINAL: &[&str] = &[
    "processed",
    "rejected",
    "failed_status",
    "poll_expired",
    "not_subscribed",
    "invalid",
    "duplicate",
    "failed",
    "unknown",
    "cancelled",
    "already_sent",
    "duplicate_conflict",
];

/// The outcome label of a state (the store's name, which splits IO's final statuses).
pub fn outcome_of(state: &RecipientState) -> &'static str {
    state.outcome_name()
}

/// Atomic counts per outcome for one job.
#[derive(Debug)]
pub struct Counters {
    job: String,
    counts: Vec<AtomicU64>,
    /// `corriere_poll_queue_depth{job}`, registered once (not per transition).
    backlog: metrics::Gauge,
}

impl Counters {
    /// Zero counts for `job`.
    pub fn new(job: &str) -> Self {
        Counters {
            job: job.to_owned(),
            counts: OUTCOMES.iter().map(|_| AtomicU64::new(0)).collect(),
            backlog: metrics::gauge!(crate::metrics::POLL_QUEUE_DEPTH, "job" => job.to_owned()),
        }
    }

    fn slot(outcome: &str) -> usize {
        OUTCOMES
            .iter()
            .position(|o| *o == outcome)
            .unwrap_or_else(|| OUTCOMES.len() - 1)
    }

    /// Sets a count (seeding from a store scan). Terminal outcomes also raise
    /// `corriere_recipients_total` to at least `n`, so after a restart the counter still
    /// matches the job's report (a counter only moves up; loading a job twice adds nothing).
    pub fn set(&self, outcome: &str, n: u64) {
        let slot = Self::slot(outcome);
        self.counts[slot].store(n, Ordering::Relaxed);
        if TERMINAL.contains(&OUTCOMES[slot]) {
            metrics::counter!(crate::metrics::RECIPIENTS_TOTAL, "job" => self.job.clone(), "outcome" => OUTCOMES[slot])
                .absolute(n);
        }
        if OUTCOMES[slot] == "submitted" {
            self.poll_backlog();
        }
    }

    /// `corriere_poll_queue_depth{job}`: messages IO accepted that still wait for a final
    /// status (what the poller has left to do).
    fn poll_backlog(&self) {
        self.backlog.set(self.get("submitted") as f64);
    }

    /// Adds a new recipient in `state`.
    pub fn add(&self, state: &RecipientState) {
        let outcome = outcome_of(state);
        self.counts[Self::slot(outcome)].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::RECIPIENTS_TOTAL, "job" => self.job.clone(), "outcome" => outcome)
            .increment(1);
    }

    /// Moves one recipient from `from` to `to`.
    pub fn transition(&self, from: &RecipientState, to: &RecipientState) {
        let (a, b) = (outcome_of(from), outcome_of(to));
        if a == b {
            return;
        }
        self.counts[Self::slot(a)].fetch_sub(1, Ordering::Relaxed);
        self.counts[Self::slot(b)].fetch_add(1, Ordering::Relaxed);
        if TERMINAL.contains(&b) {
            metrics::counter!(crate::metrics::RECIPIENTS_TOTAL, "job" => self.job.clone(), "outcome" => b)
                .increment(1);
        }
        if a == "submitted" || b == "submitted" {
            self.poll_backlog();
        }
    }

    /// Count of one outcome.
    pub fn get(&self, outcome: &str) -> u64 {
        self.counts[Self::slot(outcome)].load(Ordering::Relaxed)
    }

    /// All counts, by outcome.
    pub fn snapshot(&self) -> BTreeMap<&'static str, u64> {
        OUTCOMES.iter().map(|o| (*o, self.get(o))).collect()
    }

    /// Recipients in this job.
    pub fn total(&self) -> u64 {
        OUTCOMES.iter().map(|o| self.get(o)).sum()
    }

    /// Recipients with a terminal outcome.
    pub fn settled(&self) -> u64 {
        TERMINAL.iter().map(|o| self.get(o)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `corriere_recipients_total` as rendered by a recorder local to this test.
    fn rendered(f: impl FnOnce()) -> String {
        let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, f);
        handle.render()
    }

    #[test]
    fn seeded_terminal_counts_are_the_counter_then_transitions_add() {
        let text = rendered(|| {
            let c = Counters::new("j1");
            c.set("invalid", 3);
            c.set("queued", 5);
            c.set("processed", 2);
            c.transition(
                &RecipientState::Queued,
                &RecipientState::Invalid {
                    field: "f".into(),
                    reason: "r".into(),
                },
            );
        });
        assert!(
            text.contains("corriere_recipients_total{job=\"j1\",outcome=\"invalid\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("corriere_recipients_total{job=\"j1\",outcome=\"processed\"} 2"),
            "{text}"
        );
        assert!(
            !text.contains("outcome=\"queued\""),
            "non-terminal counts are not exported: {text}"
        );
    }
}
