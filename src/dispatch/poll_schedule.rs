//! When to poll a submitted message: [`PollScheduler`] learns, per job, how long IO takes to
//! process a message and schedules the first poll at a chosen quantile of that delay, then backs
//! off.
//!
//! Why a quantile and not a mean: IO answers `ACCEPTED` until a message is processed, and each
//! poll costs a call from the same budget as sends. Polling at the q-quantile of the processing
//! delay makes a share q of first polls final, so the expected number of polls per message is
//! about `1 + (1 - q) × (polls after a miss)`. With q = 0.8 and a ×1.6 back-off that is ≈ 1.25.
//!
//! How it learns without seeing the delay: a poll only tells whether the delay was *below* the
//! time elapsed since the submit (final) or above it (still ACCEPTED). That indicator is exactly
//! what a stochastic-approximation quantile estimator needs: move the first-poll delay `d` up by
//! a small factor on a miss and down on a hit, weighted so that it settles where
//! `P(delay ≤ d) = q`. Polls that happened much later than planned (the budget was busy with
//! sends) carry little information about `d` and are ignored.

use std::time::Duration;

/// Share of first polls that should find the message final.
pub const TARGET_QUANTILE: f64 = 0.8;
/// Step size of the estimator (log scale): small enough not to chase noise, large enough to
/// move from the initial guess to the real delay within a few hundred messages.
pub const LEARNING_RATE: f64 = 0.06;
/// First-poll delay before anything is known (IO usually processes within seconds).
pub const INITIAL_FIRST_POLL: Duration = Duration::from_secs(2);
/// Bounds of the learned first-poll delay.
pub const MIN_FIRST_POLL: Duration = Duration::from_millis(200);
/// Upper bound of the learned first-poll delay.
pub const MAX_FIRST_POLL: Duration = Duration::from_secs(600);
/// Each further poll waits this factor times the time already elapsed since the submit.
pub const BACKOFF_FACTOR: f64 = 1.6;
/// No gap between two polls of one message exceeds this.
pub const MAX_POLL_GAP: Duration = Duration::from_secs(3600);
/// A poll that ran later than `LATE_FACTOR × planned` says little about the planned delay.
pub const LATE_FACTOR: f64 = 1.5;
/// Only polls planned within this relative distance of the current estimate teach it anything.
/// Sends go out in bursts, so hundreds of first polls planned at the same delay come back
/// together; counting them all would compound one burst's misses into a huge jump. Ignoring
/// polls planned at an outdated estimate makes the estimate move only as fast as evidence
/// about it arrives.
pub const RELEVANT_SPAN: f64 = 0.15;

/// Learns the first-poll delay of one job and computes poll times.
#[derive(Debug, Clone)]
pub struct PollScheduler {
    first_poll_secs: f64,
    quantile: f64,
    hits: u64,
    misses: u64,
}

impl Default for PollScheduler {
    fn default() -> Self {
        Self::new(INITIAL_FIRST_POLL, TARGET_QUANTILE)
    }
}

impl PollScheduler {
    /// A scheduler starting from `initial`, aiming at quantile `quantile` (0 < q < 1).
    pub fn new(initial: Duration, quantile: f64) -> Self {
        PollScheduler {
            first_poll_secs: clamp_secs(initial.as_secs_f64()),
            quantile: quantile.clamp(0.05, 0.99),
            hits: 0,
            misses: 0,
        }
    }

    /// Delay from the submit to the first poll, as learned so far.
    pub fn first_poll_delay(&self) -> Duration {
        Duration::from_secs_f64(self.first_poll_secs)
    }

    /// Delay from the submit to the next poll, after `polls` polls found the message pending
    /// and `elapsed` has passed since the submit.
    pub fn next_poll_delay(&self, polls: u32, elapsed: Duration) -> Duration {
        if polls == 0 {
            return self.first_poll_delay();
        }
        let base = elapsed.as_secs_f64().max(self.first_poll_secs);
        let next = (base * BACKOFF_FACTOR).min(base + MAX_POLL_GAP.as_secs_f64());
        Duration::from_secs_f64(next)
    }

    /// Records the result of a *first* poll made `elapsed` after the submit, `planned` being the
    /// delay it was scheduled at. `final_status` is whether IO had processed the message.
    pub fn observe_first_poll(&mut self, planned: Duration, elapsed: Duration, final_status: bool) {
        if elapsed.as_secs_f64() > planned.as_secs_f64() * LATE_FACTOR + 0.05 {
            return;
        }
        if (planned.as_secs_f64() / self.first_poll_secs - 1.0).abs() > RELEVANT_SPAN {
            return;
        }
        // Robbins–Monro on the log of the delay: E[step] = 0 where P(final at d) = q.
        let step = if final_status {
            self.hits += 1;
            -(1.0 - self.quantile)
        } else {
            self.misses += 1;
            self.quantile
        };
        self.first_poll_secs = clamp_secs(self.first_poll_secs * (LEARNING_RATE * step).exp());
    }

    /// First polls that found the message final / still pending (informational).
    pub fn hit_miss(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

fn clamp_secs(s: f64) -> f64 {
    s.clamp(MIN_FIRST_POLL.as_secs_f64(), MAX_FIRST_POLL.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::SmallRng, Rng, SeedableRng};

    /// A log-normal-ish delay like IO's: median `median`, long right tail.
    fn delay(rng: &mut SmallRng, median: f64) -> f64 {
        let u: f64 = rng.gen_range(1e-9..1.0);
        let v: f64 = rng.gen_range(0.0..1.0);
        let z = (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos();
        median * (0.5 * z).exp()
    }

    /// Simulates polling `n` messages with the scheduler and returns polls per message.
    fn simulate(median: f64, n: usize, seed: u64) -> (f64, PollScheduler) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut s = PollScheduler::default();
        let mut polls = 0u64;
        for _ in 0..n {
            let d = delay(&mut rng, median);
            let planned = s.first_poll_delay();
            let mut at = planned.as_secs_f64();
            polls += 1;
            s.observe_first_poll(planned, planned, d <= at);
            let mut k = 1;
            while d > at {
                at = s
                    .next_poll_delay(k, Duration::from_secs_f64(at))
                    .as_secs_f64();
                polls += 1;
                k += 1;
            }
        }
        (polls as f64 / n as f64, s)
    }

    #[test]
    fn learns_a_slow_delay_and_stays_under_target_polls_per_message() {
        let (ppm, s) = simulate(6.0, 20_000, 1);
        println!(
            "median 6 s: {ppm:.3} polls per message, first poll at {:?}",
            s.first_poll_delay()
        );
        assert!(ppm <= 1.3, "polls per message {ppm}");
        let d = s.first_poll_delay().as_secs_f64();
        // The 0.8 quantile of this distribution is 6 × e^(0.5×0.84) ≈ 9.1 s.
        assert!((7.0..12.0).contains(&d), "first poll {d}");
    }

    #[test]
    fn learns_a_fast_delay_without_waiting_needlessly() {
        let (ppm, s) = simulate(0.5, 20_000, 2);
        println!(
            "median 0.5 s: {ppm:.3} polls per message, first poll at {:?}",
            s.first_poll_delay()
        );
        assert!(ppm <= 1.3, "polls per message {ppm}");
        assert!(s.first_poll_delay() < Duration::from_secs(1));
    }

    #[test]
    fn first_poll_hit_rate_settles_near_the_target_quantile() {
        let (_, s) = simulate(1.5, 50_000, 3);
        let (hits, misses) = s.hit_miss();
        let rate = hits as f64 / (hits + misses) as f64;
        assert!((0.75..0.85).contains(&rate), "hit rate {rate}");
    }

    /// A burst: 3000 messages submitted at once, all first polls planned at the same delay and
    /// observed together before any new plan. The estimate must not run away.
    #[test]
    fn a_burst_of_observations_at_one_planned_delay_moves_the_estimate_a_little() {
        let mut rng = SmallRng::seed_from_u64(9);
        let mut s = PollScheduler::default();
        let planned = s.first_poll_delay();
        for _ in 0..3000 {
            let d = delay(&mut rng, 1.5);
            s.observe_first_poll(planned, planned, d <= planned.as_secs_f64());
        }
        let after = s.first_poll_delay().as_secs_f64() / planned.as_secs_f64();
        assert!((0.8..1.25).contains(&after), "moved by {after}");
    }

    #[test]
    fn late_polls_do_not_teach_anything() {
        let mut s = PollScheduler::default();
        let before = s.first_poll_delay();
        s.observe_first_poll(before, before * 10, true);
        assert_eq!(s.first_poll_delay(), before);
        assert_eq!(s.hit_miss(), (0, 0));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let s = PollScheduler::default();
        let a = s.next_poll_delay(1, Duration::from_secs(2));
        let b = s.next_poll_delay(2, a);
        assert!(b > a && a > Duration::from_secs(2));
        let far = s.next_poll_delay(9, Duration::from_secs(100_000));
        assert_eq!(far, Duration::from_secs(100_000) + MAX_POLL_GAP);
    }

    #[test]
    fn learned_delay_stays_within_bounds() {
        let mut s = PollScheduler::default();
        for _ in 0..10_000 {
            let p = s.first_poll_delay();
            s.observe_first_poll(p, p, true);
        }
        assert_eq!(s.first_poll_delay(), MIN_FIRST_POLL);
        for _ in 0..100_000 {
            let p = s.first_poll_delay();
            s.observe_first_poll(p, p, false);
        }
        assert_eq!(s.first_poll_delay(), MAX_FIRST_POLL);
    }
}
