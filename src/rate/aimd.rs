//! [`Aimd`]: the adaptive rate for accounts with no fixed limit. Multiplicative decrease on a
//! 429 (at most once per decision window, so the burst of 429s from one overshoot counts once);
//! additive increase while healthy and only when demand actually reached the current rate (an
//! idle job must not inflate the rate it never tested). The step is large far from the last rate
//! that met a 429 and small near it, and multiplicative above it (CUBIC's idea), so the rate
//! spends most of its time just under the real capacity and probes upward when capacity grows.

use std::time::Duration;

use tokio::time::Instant;

/// Factor applied on a 429.
pub const DECREASE: f64 = 0.85;
/// Additive step far from the last overshoot, as a share of it (or of the rate).
pub const FAST_STEP: f64 = 0.05;
/// Additive step near the last overshoot (within ±[`NEAR`]).
pub const SLOW_STEP: f64 = 0.01;
/// "Near" the last overshoot.
pub const NEAR: f64 = 0.06;
/// Increase decisions happen at most this often.
pub const TICK: Duration = Duration::from_millis(500);
/// After a decrease, ignore further 429s (answers to calls already in flight) this long.
pub const DECISION_WINDOW: Duration = Duration::from_secs(1);
/// Demand reached the rate when at least this share of the allowed calls was taken.
pub const DEMAND_SHARE: f64 = 0.9;
/// Before the first 429 the rate grows by this factor per tick (slow start: find the capacity
/// in seconds, not minutes).
pub const SLOW_START: f64 = 1.25;
/// Growth per tick once the rate is clearly above the last overshoot (capacity grew).
pub const PROBE: f64 = 1.1;
/// On a 429 the rate goes to this share of the goodput of the last second (what IO sustained
/// just now): a mild overshoot costs 5 %, and a sharp capacity drop is followed in one step.
pub const GOODPUT_SHARE: f64 = 0.95;
/// Goodput is measured over this span, in buckets of [`BUCKET`].
pub const GOODPUT_SPAN: Duration = Duration::from_secs(1);
/// Goodput bucket width.
pub const BUCKET: Duration = Duration::from_millis(100);

/// Bounds and starting point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdParams {
    /// Starting rate (calls/s).
    pub initial: f64,
    /// Lowest rate.
    pub floor: f64,
    /// Highest rate.
    pub ceiling: f64,
}

impl AimdParams {
    /// Params clamped to be consistent.
    pub fn new(initial: f64, floor: f64, ceiling: f64) -> Self {
        let floor = floor.max(0.1);
        let ceiling = ceiling.max(floor);
        AimdParams {
            initial: initial.clamp(floor, ceiling),
            floor,
            ceiling,
        }
    }
}

/// The controller state.
#[derive(Debug, Clone)]
pub struct Aimd {
    p: AimdParams,
    rate: f64,
    last_overshoot: Option<f64>,
    last_decrease: Option<Instant>,
    last_tick: Option<Instant>,
    calls_at_tick: u64,
    /// Successful answers per [`BUCKET`], newest last, covering [`GOODPUT_SPAN`].
    ok_buckets: std::collections::VecDeque<(Instant, u32)>,
}

impl Aimd {
    /// Starts at `p.initial`.
    pub fn new(p: AimdParams) -> Self {
        Aimd {
            p,
            rate: p.initial,
            last_overshoot: None,
            last_decrease: None,
            last_tick: None,
            calls_at_tick: 0,
            ok_buckets: std::collections::VecDeque::new(),
        }
    }

    /// Current rate.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    fn count_ok(&mut self, now: Instant) {
        match self.ok_buckets.back_mut() {
            Some((start, n)) if now.duration_since(*start) < BUCKET => *n += 1,
            _ => self.ok_buckets.push_back((now, 1)),
        }
        while self
            .ok_buckets
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > GOODPUT_SPAN)
        {
            self.ok_buckets.pop_front();
        }
    }

    /// Successful answers per second over the last [`GOODPUT_SPAN`] (None with under half of it
    /// observed).
    fn recent_goodput(&self, now: Instant) -> Option<f64> {
        let first = self
            .ok_buckets
            .iter()
            .find(|(t, _)| now.duration_since(*t) <= GOODPUT_SPAN)?;
        let span = now.duration_since(first.0).as_secs_f64();
        if span < GOODPUT_SPAN.as_secs_f64() / 2.0 {
            return None;
        }
        let n: u32 = self
            .ok_buckets
            .iter()
            .filter(|(t, _)| now.duration_since(*t) <= GOODPUT_SPAN)
            .map(|(_, n)| n)
            .sum();
        Some(f64::from(n) / span)
    }

    /// A 429: decrease, unless one was just decided. Returns the new rate if it changed.
    pub fn on_throttle(&mut self, now: Instant) -> Option<f64> {
        if self
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < DECISION_WINDOW)
        {
            return None;
        }
        let goodput = self.recent_goodput(now);
        let new = match goodput {
            // Never above the rate: a 429 is not a reason to speed up.
            Some(g) => (g * GOODPUT_SHARE).min(self.rate),
            None => self.rate * DECREASE,
        };
        self.last_overshoot = Some(goodput.map_or(self.rate, |g| g.min(self.rate)));
        self.last_decrease = Some(now);
        let new = new.max(self.p.floor);
        let changed = new != self.rate;
        self.rate = new;
        changed.then_some(new)
    }

    /// A healthy answer; `calls_total` is the budget's running count of granted calls.
    /// Returns the new rate if it changed.
    pub fn on_healthy(
        &mut self,
        now: Instant,
        calls_total: u64,
        _latency: Duration,
    ) -> Option<f64> {
        self.count_ok(now);
        let Some(last) = self.last_tick else {
            self.last_tick = Some(now);
            self.calls_at_tick = calls_total;
            return None;
        };
        let elapsed = now.duration_since(last);
        if elapsed < TICK {
            return None;
        }
        let granted = calls_total.saturating_sub(self.calls_at_tick) as f64;
        self.last_tick = Some(now);
        self.calls_at_tick = calls_total;
        let demand_reached = granted >= DEMAND_SHARE * self.rate * elapsed.as_secs_f64();
        let settling = self
            .last_decrease
            .is_some_and(|t| now.duration_since(t) < DECISION_WINDOW);
        if !demand_reached || settling || self.rate >= self.p.ceiling {
            return None;
        }
        let new = match self.last_overshoot {
            None => self.rate * SLOW_START,
            // Above the last overshoot: capacity grew, probe multiplicatively.
            Some(o) if self.rate > o * (1.0 + NEAR) => self.rate * PROBE,
            // Near it: creep. Below it: climb back in a few large additive steps.
            Some(o) => {
                let near = self.rate >= o * (1.0 - NEAR);
                self.rate + (o * if near { SLOW_STEP } else { FAST_STEP }).max(0.1)
            }
        };
        self.rate = new.min(self.p.ceiling);
        Some(self.rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aimd(initial: f64) -> Aimd {
        Aimd::new(AimdParams::new(initial, 10.0, 1000.0))
    }

    #[tokio::test(start_paused = true)]
    async fn decreases_at_most_once_per_window() {
        let mut a = aimd(500.0);
        let t0 = Instant::now();
        assert_eq!(a.on_throttle(t0), Some(500.0 * DECREASE));
        assert_eq!(a.on_throttle(t0 + Duration::from_millis(300)), None);
        assert_eq!(a.rate(), 500.0 * DECREASE);
        assert!(a.on_throttle(t0 + DECISION_WINDOW).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn increases_only_when_demand_reached_the_rate() {
        let mut a = aimd(100.0);
        let t0 = Instant::now();
        a.on_healthy(t0, 0, Duration::ZERO);
        // 10 calls in 1 s at 100/s allowed: the job is idle, no increase.
        assert_eq!(
            a.on_healthy(t0 + Duration::from_secs(1), 10, Duration::ZERO),
            None
        );
        // 100 calls in 1 s: demand met, increase.
        let r = a
            .on_healthy(t0 + Duration::from_secs(2), 110, Duration::ZERO)
            .unwrap();
        assert!(r > 100.0);
    }

    #[tokio::test(start_paused = true)]
    async fn steps_are_small_near_the_last_overshoot_and_clamped() {
        let mut a = aimd(100.0);
        let t0 = Instant::now();
        a.on_throttle(t0); // overshoot at 100, now 85
        a.on_healthy(t0, 0, Duration::ZERO);
        let mut t = t0 + DECISION_WINDOW;
        let mut calls = 0;
        a.on_healthy(t, calls, Duration::ZERO);
        let mut rates = vec![];
        for _ in 0..12 {
            t += TICK;
            calls += (a.rate() * TICK.as_secs_f64()) as u64 + 1;
            if let Some(r) = a.on_healthy(t, calls, Duration::ZERO) {
                rates.push(r);
            }
        }
        // Fast from 85 to ~95, then 1-per-tick steps near 100.
        assert!(rates[0] - 85.0 > 4.0, "{rates:?}");
        let near: Vec<f64> = rates
            .windows(2)
            .filter(|w| w[0] > 95.0 && w[0] < 105.0)
            .map(|w| w[1] - w[0])
            .collect();
        assert!(
            !near.is_empty() && near.iter().all(|d| *d <= 1.01),
            "{rates:?}"
        );
        let mut b = Aimd::new(AimdParams::new(995.0, 10.0, 1000.0));
        b.on_healthy(t0, 0, Duration::ZERO);
        assert_eq!(
            b.on_healthy(t0 + Duration::from_secs(1), 10_000, Duration::ZERO),
            Some(1000.0)
        );
        let mut c = Aimd::new(AimdParams::new(10.0, 10.0, 1000.0));
        assert_eq!(c.on_throttle(t0), None);
        assert_eq!(c.rate(), 10.0);
    }
}
