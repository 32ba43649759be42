//! What may stop a job's sends without stopping its polls: [`JobControl`] (pause, resume,
//! cancel, from an operator) and its [`SendWindow`] (hours and days in Europe/Rome when
//! citizens may get a push notification), read through one [`JobControl::gate`].
//!
//! Wall time comes from a [`WallClock`], so a window can be tested on a shifted clock or in
//! tokio's paused time.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

pub use crate::model::send_window::{SendWindow, WindowError, DEFAULT_TIMEZONE};

/// Where "now" comes from.
#[derive(Debug, Clone, Default)]
pub enum WallClock {
    /// The system clock.
    #[default]
    System,
    /// The system clock shifted (rehearsals and tests of send windows).
    Shifted(chrono::Duration),
    /// `base` plus tokio's elapsed time since `since`: moves with `tokio::time::advance`.
    Tokio {
        /// Wall time at `since`.
        base: DateTime<Utc>,
        /// Tokio instant of `base`.
        since: tokio::time::Instant,
    },
}

impl WallClock {
    /// A clock that reads `base` now and follows tokio's (possibly paused) time.
    pub fn tokio_at(base: DateTime<Utc>) -> WallClock {
        WallClock::Tokio {
            base,
            since: tokio::time::Instant::now(),
        }
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            WallClock::System => Utc::now(),
            WallClock::Shifted(d) => Utc::now() + *d,
            WallClock::Tokio { base, since } => {
                *base
                    + chrono::Duration::from_std(since.elapsed())
                        .expect("elapsed time fits a chrono duration")
            }
        }
    }
}

/// Why a job may not send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// Sending allowed.
    Open,
    /// Paused by an operator.
    Paused,
    /// Cancelled: never again.
    Cancelled,
    /// Outside the send window until then.
    WindowClosed {
        /// Next opening.
        opens_at: DateTime<Utc>,
    },
}

/// An operator's hold on one job, and its send window.
#[derive(Debug, Default)]
pub struct JobControl {
    paused: AtomicBool,
    cancelled: AtomicBool,
    changed: Notify,
    window: Option<SendWindow>,
    clock: WallClock,
}

impl JobControl {
    /// A control with `window` (None: always open) read on `clock`.
    pub fn new(window: Option<SendWindow>, clock: WallClock) -> JobControl {
        JobControl {
            window,
            clock,
            ..JobControl::default()
        }
    }

    /// Stops sends (polls go on) until [`JobControl::resume`].
    pub fn pause(&self) {
        self.paused.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Lets sends go again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Stops sends for good: queued recipients end `cancelled`; polls go on.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Paused?
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Cancelled?
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }

    /// The send window, if any.
    pub fn window(&self) -> Option<&SendWindow> {
        self.window.as_ref()
    }

    /// The clock.
    pub fn clock(&self) -> &WallClock {
        &self.clock
    }

    /// May the job send now?
    pub fn gate(&self) -> Gate {
        if self.is_cancelled() {
            return Gate::Cancelled;
        }
        if self.is_paused() {
            return Gate::Paused;
        }
        match &self.window {
            None => Gate::Open,
            Some(w) => {
                let now = self.clock.now();
                let opens_at = w.next_open(now);
                if opens_at <= now {
                    Gate::Open
                } else {
                    Gate::WindowClosed { opens_at }
                }
            }
        }
    }

    /// How long until a closed window opens (tokio time), if it is closed.
    pub fn until_open(&self) -> Option<std::time::Duration> {
        match self.gate() {
            Gate::WindowClosed { opens_at } => Some(
                (opens_at - self.clock.now())
                    .to_std()
                    .unwrap_or_default()
                    .max(std::time::Duration::from_millis(1)),
            ),
            _ => None,
        }
    }

    /// Resolves at the next pause, resume or cancel.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn rome(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        DEFAULT_TIMEZONE
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[tokio::test(start_paused = true)]
    async fn the_gate_opens_when_the_window_does_in_paused_time() {
        let w = SendWindow::parse("mon-fri 09:00-18:00", DEFAULT_TIMEZONE).unwrap();
        // Sunday 2026-11-29 22:00 Rome.
        let control = JobControl::new(Some(w), WallClock::tokio_at(rome(2026, 11, 29, 22, 0)));
        let opens = rome(2026, 11, 30, 9, 0);
        assert_eq!(control.gate(), Gate::WindowClosed { opens_at: opens });
        let wait = control.until_open().unwrap();
        assert_eq!(wait, std::time::Duration::from_secs(11 * 3600));
        tokio::time::advance(wait - std::time::Duration::from_secs(1)).await;
        assert!(matches!(control.gate(), Gate::WindowClosed { .. }));
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert_eq!(control.gate(), Gate::Open);
        control.pause();
        assert_eq!(control.gate(), Gate::Paused);
        control.resume();
        control.cancel();
        assert_eq!(control.gate(), Gate::Cancelled);
    }
}
