//! The one call budget every IO call spends: [`RateBudget`]. The path of a call reads as a few
//! steps: an in-flight slot ([`tokio::sync::Semaphore`]) → any global pause (a retry hint) → the
//! `governor` limiter's cell → the call → [`RateBudget::on_response`] feeds the answer back.
//!
//! The hard ceiling and the adaptive part are separate pieces: in `Window` mode the limiter
//! paces just under IO's window (calls/period × [`WINDOW_SAFETY`], burst 2, so no 5-second
//! window can ever see more than `calls`); in `Adaptive` mode an [`Aimd`] controller moves the
//! rate between a floor and a ceiling. governor fixes a quota at construction, so a new rate
//! swaps in a new limiter with a tiny burst (no real burst can slip through).
//!
//! The limiter runs on tokio's clock ([`TokioClock`]), so tests drive it in paused time.

mod aimd;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use rand::Rng;
use serde::Deserialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::warn;

pub use aimd::{Aimd, AimdParams};

/// Share of IO's window corriere uses: a steady 98 % leaves room for clock skew between us and
/// the gateway's window without a 429.
pub const WINDOW_SAFETY: f64 = 0.98;
/// Default in-flight cap.
pub const DEFAULT_IN_FLIGHT: usize = 64;
/// First back-off after a 429 without a retry hint.
pub const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest back-off after repeated 429s without a hint.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Margin added to the estimated end of IO's window before calling again after
/// `x-rate-limit-remaining: 0` (clocks and latency are not exact).
pub const WINDOW_END_MARGIN: Duration = Duration::from_millis(20);

const METRIC_RATE: &str = crate::metrics::RATE_LIMIT_PER_SECOND;
const METRIC_REMAINING: &str = crate::metrics::IO_RATE_LIMIT_REMAINING;
const METRIC_IN_FLIGHT: &str = crate::metrics::IO_IN_FLIGHT;
const METRIC_THROTTLED: &str = crate::metrics::THROTTLED_TOTAL;

/// How the budget is paced.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum RateMode {
    /// IO's gateway window: `calls` per `period`.
    Window {
        /// Calls per period.
        calls: u32,
        /// Period.
        #[serde(with = "humantime_serde")]
        period: Duration,
    },
    /// No fixed limit: find the rate IO sustains between `floor` and `ceiling` (calls/s).
    Adaptive {
        /// Starting rate.
        initial: f64,
        /// Lowest rate.
        floor: f64,
        /// Highest rate.
        ceiling: f64,
    },
    /// No pacing, only the in-flight cap.
    Unlimited,
}

/// Budget settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RateConfig {
    /// Pacing.
    pub mode: RateMode,
    /// Requests in flight at once.
    pub in_flight: usize,
}

impl Default for RateConfig {
    fn default() -> Self {
        RateConfig {
            mode: RateMode::Window {
                calls: 150,
                period: Duration::from_secs(5),
            },
            in_flight: DEFAULT_IN_FLIGHT,
        }
    }
}

/// governor clock on tokio's time, so paused-time tests drive the limiter.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;
    fn now(&self) -> Duration {
        self.start.elapsed()
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// What one exchange told us.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallOutcome {
    /// HTTP status, None when no answer arrived.
    pub status: Option<u16>,
    /// `x-rate-limit-remaining`.
    pub remaining: Option<u32>,
    /// Retry hint.
    pub retry_after: Option<Duration>,
    /// Latency.
    pub latency: Duration,
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateStats {
    /// Permits granted.
    pub calls: u64,
    /// 429 answers.
    pub throttled: u64,
}

struct State {
    limiter: Option<Arc<Limiter>>,
    rate: f64,
    pause_until: Option<Instant>,
    backoff_attempt: u32,
    aimd: Option<Aimd>,
    /// Send time of the call that opened IO's current window (`remaining == calls - 1`).
    window_opened: Option<Instant>,
}

struct Inner {
    mode: RateMode,
    clock: TokioClock,
    slots: Arc<Semaphore>,
    in_flight_cap: usize,
    state: Mutex<State>,
    calls: AtomicU64,
    throttled: AtomicU64,
}

/// The shared call budget. Cheap to clone.
#[derive(Clone)]
pub struct RateBudget {
    inner: Arc<Inner>,
}

/// A granted call: holds an in-flight slot until dropped.
pub struct CallPermit {
    _slot: OwnedSemaphorePermit,
    budget: RateBudget,
}

impl Drop for CallPermit {
    fn drop(&mut self) {
        metrics::gauge!(METRIC_IN_FLIGHT).set(self.budget.in_flight().saturating_sub(1) as f64);
    }
}

/// Cells of burst: 2, or 5 ms worth at high rates. A waiter wakes up to a timer tick (1 ms)
/// late; with burst 1 that lateness is lost for good (35 ms instead of 34 ms per call is 5 % of
/// IO's window). Two cells absorb it while no 5 s window can see more than 2 extra calls.
fn burst_for(rate: f64) -> u32 {
    ((rate * 0.005).ceil() as u32).max(2)
}

fn limiter_for(rate: f64, clock: TokioClock) -> Arc<Limiter> {
    let period = Duration::from_secs_f64(1.0 / rate.max(0.001));
    let burst = std::num::NonZeroU32::new(burst_for(rate)).expect("burst is at least 2");
    let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
        .expect("period is positive")
        .allow_burst(burst);
    Arc::new(RateLimiter::direct_with_clock(quota, clock))
}

impl RateBudget {
    /// A budget for `config`.
    pub fn new(config: RateConfig) -> RateBudget {
        let clock = TokioClock {
            start: Instant::now(),
        };
        let (rate, aimd) = match &config.mode {
            RateMode::Window { calls, period } => (
                f64::from(*calls) / period.as_secs_f64() * WINDOW_SAFETY,
                None,
            ),
            RateMode::Adaptive {
                initial,
                floor,
                ceiling,
            } => (
                *initial,
                Some(Aimd::new(AimdParams::new(*initial, *floor, *ceiling))),
            ),
            RateMode::Unlimited => (f64::INFINITY, None),
        };
        let limiter = rate.is_finite().then(|| limiter_for(rate, clock));
        let in_flight = config.in_flight.max(1);
        if rate.is_finite() {
            metrics::gauge!(METRIC_RATE).set(rate);
        }
        RateBudget {
            inner: Arc::new(Inner {
                mode: config.mode,
                clock,
                slots: Arc::new(Semaphore::new(in_flight)),
                in_flight_cap: in_flight,
                state: Mutex::new(State {
                    limiter,
                    rate,
                    pause_until: None,
                    backoff_attempt: 0,
                    aimd,
                    window_opened: None,
                }),
                calls: AtomicU64::new(0),
                throttled: AtomicU64::new(0),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .expect("rate state lock is never poisoned")
    }

    /// Waits until a call may start: an in-flight slot, the end of any pause, a limiter cell.
    pub async fn acquire(&self) -> CallPermit {
        let slot = self.take_slot().await;
        loop {
            if let Some(until) = self.pause() {
                tokio::time::sleep_until(until).await;
                continue;
            }
            match self.try_cell() {
                Ok(()) => break,
                Err(wait) => tokio::time::sleep(wait).await,
            }
        }
        self.inner.calls.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(METRIC_IN_FLIGHT).set(self.in_flight() as f64);
        CallPermit {
            _slot: slot,
            budget: self.clone(),
        }
    }

    async fn take_slot(&self) -> OwnedSemaphorePermit {
        self.inner
            .slots
            .clone()
            .acquire_owned()
            .await
            .expect("the in-flight semaphore is never closed")
    }

    /// The pause in force, if any.
    fn pause(&self) -> Option<Instant> {
        let mut s = self.state();
        match s.pause_until {
            Some(t) if t > Instant::now() => Some(t),
            Some(_) => {
                s.pause_until = None;
                None
            }
            None => None,
        }
    }

    /// Takes a limiter cell, or says how long to wait for one.
    fn try_cell(&self) -> Result<(), Duration> {
        let limiter = self.state().limiter.clone();
        match limiter {
            None => Ok(()),
            Some(l) => l
                .check()
                .map_err(|not_until| not_until.wait_time_from(self.inner.clock.now())),
        }
    }

    /// Feeds one exchange's answer back: 429 pauses everyone (never shortening a pause in
    /// force) and slows an adaptive rate; healthy answers let it grow.
    pub fn on_response(&self, outcome: CallOutcome) {
        if let Some(r) = outcome.remaining {
            metrics::gauge!(METRIC_REMAINING).set(f64::from(r));
        }
        let now = Instant::now();
        let mut s = self.state();
        match outcome.status {
            Some(429) => {
                self.inner.throttled.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(METRIC_THROTTLED).increment(1);
                // A hint is always honoured. Without one, a fixed-limit account backs off with
                // jitter; an adaptive one relies on the controller's decrease (pausing everyone
                // on each overload 429 would throw away a second of capacity every time).
                let paused = s.pause_until.is_some_and(|t| t > now);
                let wait = match outcome.retry_after {
                    Some(d) => Some(d),
                    None if s.aimd.is_some() => None,
                    // The other answers of one burst belong to the pause already in force: back
                    // off once per episode, not once per 429, or a burst of 40 would compound
                    // to the maximum.
                    None if paused => None,
                    None => {
                        s.backoff_attempt = s.backoff_attempt.saturating_add(1);
                        Some(full_jitter(s.backoff_attempt))
                    }
                };
                if let Some(wait) = wait {
                    let until = now + wait;
                    if s.pause_until.is_none_or(|t| t < until) {
                        if s.pause_until.is_none() {
                            warn!(
                                retry_after_ms = wait.as_millis() as u64,
                                "Rate limited by IO; pausing."
                            );
                        }
                        s.pause_until = Some(until);
                    }
                }
                if let Some(aimd) = s.aimd.as_mut() {
                    if let Some(rate) = aimd.on_throttle(now) {
                        self.set_rate(&mut s, rate);
                    }
                }
            }
            Some(status) if status < 500 => {
                s.backoff_attempt = 0;
                if let RateMode::Window { calls, period } = &self.inner.mode {
                    self.pace_by_remaining(&mut s, outcome, now, *calls, *period);
                }
                let calls = self.inner.calls.load(Ordering::Relaxed);
                if let Some(aimd) = s.aimd.as_mut() {
                    if let Some(rate) = aimd.on_healthy(now, calls, outcome.latency) {
                        self.set_rate(&mut s, rate);
                    }
                }
            }
            // 5xx and transport errors say nothing reliable about capacity.
            _ => {}
        }
    }

    /// `x-rate-limit-remaining` tells where IO's window is: `calls - 1` means the call just
    /// answered opened a window (at its send time); `0` means the window is spent, so the next
    /// call would be a 429 (and a whole-second pause): hold until that window's end instead.
    fn pace_by_remaining(
        &self,
        s: &mut State,
        outcome: CallOutcome,
        now: Instant,
        calls: u32,
        period: Duration,
    ) {
        match outcome.remaining {
            Some(r) if r + 1 == calls => s.window_opened = Some(now - outcome.latency),
            Some(0) => {
                let end = s
                    .window_opened
                    .map(|t| t + period + WINDOW_END_MARGIN)
                    .filter(|end| *end > now && *end <= now + period)
                    .unwrap_or(now + period / calls);
                if s.pause_until.is_none_or(|t| t < end) {
                    s.pause_until = Some(end);
                }
            }
            _ => {}
        }
    }

    fn set_rate(&self, s: &mut State, rate: f64) {
        s.rate = rate;
        s.limiter = Some(limiter_for(rate, self.inner.clock));
        metrics::gauge!(METRIC_RATE).set(rate);
    }

    /// Calls per second allowed now (infinite when unlimited).
    pub fn current_rate(&self) -> f64 {
        self.state().rate
    }

    /// Requests in flight.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight_cap - self.inner.slots.available_permits()
    }

    /// The in-flight cap.
    pub fn in_flight_cap(&self) -> usize {
        self.inner.in_flight_cap
    }

    /// End of the pause in force, if any.
    pub fn paused_until(&self) -> Option<Instant> {
        self.pause()
    }

    /// Counters since start.
    pub fn stats(&self) -> RateStats {
        RateStats {
            calls: self.inner.calls.load(Ordering::Relaxed),
            throttled: self.inner.throttled.load(Ordering::Relaxed),
        }
    }
}

impl CallPermit {
    /// Feeds the answer of the call this permit was for back to the budget.
    pub fn record(&self, outcome: CallOutcome) {
        self.budget.on_response(outcome);
    }
}

/// Exponential back-off with full jitter: uniform in [0, min(MAX, BASE × 2^attempt)].
fn full_jitter(attempt: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let ms = rand::thread_rng().gen_range(0..=cap.as_millis() as u64);
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests;
