//! Live per-job outcome counts: [`Counters`], seeded from the store when a run starts and moved by
//! every transition, read by the progress bar, the admin API and `corriere_recipients_total`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::model::{Outcome, RecipientState};

/// Atomic counts per outcome for one job.
#[derive(Debug)]
pub struct Counters {
    job: String,
    /// One count per outcome, at [`Outcome::index`].
    counts: Vec<AtomicU64>,
    /// `corriere_poll_queue_depth{job}`, registered once (not per transition).
    backlog: metrics::Gauge,
}

impl Counters {
    /// Zero counts for `job`.
    pub fn new(job: &str) -> Self {
        Counters {
            job: job.to_owned(),
            counts: Outcome::ALL.iter().map(|_| AtomicU64::new(0)).collect(),
            backlog: metrics::gauge!(crate::metrics::POLL_QUEUE_DEPTH, "job" => job.to_owned()),
        }
    }

    /// Sets a count (seeding from a store scan). Terminal outcomes also raise
    /// `corriere_recipients_total` to at least `n`, so after a restart the counter still
    /// matches the job's report (a counter only moves up; loading a job twice adds nothing).
    pub fn set(&self, outcome: Outcome, n: u64) {
        self.counts[outcome.index()].store(n, Ordering::Relaxed);
        if outcome.is_terminal() {
            metrics::counter!(crate::metrics::RECIPIENTS_TOTAL, "job" => self.job.clone(), "outcome" => outcome.as_str())
                .absolute(n);
        }
        if outcome == Outcome::Submitted {
            self.poll_backlog();
        }
    }

    /// `corriere_poll_queue_depth{job}`: messages IO accepted that still wait for a final
    /// status (what the poller has left to do).
    fn poll_backlog(&self) {
        self.backlog.set(self.get(Outcome::Submitted) as f64);
    }

    /// Adds a new recipient in `state`.
    pub fn add(&self, state: &RecipientState) {
        let outcome = state.outcome();
        self.counts[outcome.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!(crate::metrics::RECIPIENTS_TOTAL, "job" => self.job.clone(), "outcome" => outcome.as_str())
            .increment(1);
    }

    /// Moves one recipient from `from` to `to`.
    pub fn transition(&self, from: &RecipientState, to: &RecipientState) {
        let (a, b) = (from.outcome(), to.outcome());
        if a == b {
            return;
        }
        self.counts[a.index()].fetch_sub(1, Ordering::Relaxed);
        self.counts[b.index()].fetch_add(1, Ordering::Relaxed);
        if b.is_terminal() {
            metrics::counter!(crate::metrics::RECIPIENTS_TOTAL, "job" => self.job.clone(), "outcome" => b.as_str())
                .increment(1);
        }
        if a == Outcome::Submitted || b == Outcome::Submitted {
            self.poll_backlog();
        }
    }

    /// Count of one outcome.
    pub fn get(&self, outcome: Outcome) -> u64 {
        self.counts[outcome.index()].load(Ordering::Relaxed)
    }

    /// All counts, by outcome (every outcome, zeros included).
    pub fn snapshot(&self) -> BTreeMap<Outcome, u64> {
        Outcome::ALL.into_iter().map(|o| (o, self.get(o))).collect()
    }

    /// Recipients in this job.
    pub fn total(&self) -> u64 {
        Outcome::ALL.into_iter().map(|o| self.get(o)).sum()
    }

    /// Recipients with a terminal outcome ([`Outcome::is_terminal`]).
    pub fn settled(&self) -> u64 {
        Outcome::ALL
            .into_iter()
            .filter(|o| o.is_terminal())
            .map(|o| self.get(o))
            .sum()
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
            c.set(Outcome::Invalid, 3);
            c.set(Outcome::Queued, 5);
            c.set(Outcome::Processed, 2);
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
