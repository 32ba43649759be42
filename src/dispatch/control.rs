//! What may stop a job's sends without stopping its polls: [`JobControl`] (pause, resume,
//! cancel, from an operator) and its [`SendWindow`] (hours and days in Europe/Rome when
//! citizens may get a push notification), read through one [`JobControl::gate`].
//!
//! Wall time comes from the [`Clock`], so a window can be tested on a shifted clock or in
//! tokio's paused time.

use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::Notify;

use crate::clock::Clock;

pub use crate::model::send_window::{SendWindow, WindowError, DEFAULT_TIMEZONE};

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
    clock: Clock,
}

impl JobControl {
    /// A control with `window` (None: always open) read on `clock`.
    pub fn new(window: Option<SendWindow>, clock: Clock) -> JobControl {
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
    pub fn clock(&self) -> &Clock {
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
        let control = JobControl::new(Some(w), Clock::tokio_at(rome(2026, 11, 29, 22, 0)));
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
