//! [`Clock`]: the one place corriere reads wall time (UTC). Everything that needs "now" as a date
//! or as persisted milliseconds — the scheduler's submit and poll times, send windows, the feed's
//! "yesterday", due-date checks, job creation times — asks a `Clock`; intervals use
//! `tokio::time::Instant`. `clippy.toml` forbids `SystemTime::now`, `Utc::now` and `Local::now`
//! everywhere else, so a test can run the scheduler on a shifted clock or in paused tokio time
//! (`Clock::tokio_at`) without sleeping.
//!
//! Uses nothing of ours (like `model`): every module may use it.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, NaiveDate, Utc};

/// Where wall time comes from.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    /// The system clock.
    #[default]
    System,
    /// The system clock shifted (rehearsals; tests of send windows and feed days).
    Shifted(chrono::Duration),
    /// `base` plus tokio's elapsed time since `since`: moves with `tokio::time::advance`.
    Tokio {
        /// Wall time at `since`.
        base: DateTime<Utc>,
        /// Tokio instant of `base`.
        since: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that reads `base` now and follows tokio's (possibly paused) time.
    pub fn tokio_at(base: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            base,
            since: tokio::time::Instant::now(),
        }
    }

    /// The system clock shifted so that it reads `at` now (and moves on from there).
    pub fn starting_at(at: DateTime<Utc>) -> Clock {
        Clock::Shifted(at - system_now())
    }

    /// Now.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => system_now(),
            Clock::Shifted(d) => system_now() + *d,
            Clock::Tokio { base, since } => {
                *base
                    + chrono::Duration::from_std(since.elapsed())
                        .expect("elapsed time fits a chrono duration")
            }
        }
    }

    /// Milliseconds since the Unix epoch (persisted times: they must survive a restart).
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.now().timestamp_millis()).unwrap_or(0)
    }

    /// Today's date (UTC).
    pub fn today(&self) -> NaiveDate {
        self.now().date_naive()
    }

    /// Now as a `SystemTime` (what HTTP-date headers are compared with).
    pub fn system_time(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms())
    }
}

/// The system clock: the only call of `Utc::now` in the crate.
#[allow(clippy::disallowed_methods)]
fn system_now() -> DateTime<Utc> {
    Utc::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_with_paused_time_only() {
        let base = DateTime::parse_from_rfc3339("2026-11-29T22:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::tokio_at(base);
        assert_eq!(clock.now(), base);
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(clock.now(), base + chrono::Duration::seconds(90));
        assert_eq!(
            clock.now_ms(),
            base.timestamp_millis() as u64 + 90_000,
            "milliseconds follow the same time"
        );
        assert_eq!(
            clock.today(),
            NaiveDate::from_ymd_opt(2026, 11, 29).unwrap()
        );
    }

    #[test]
    fn a_clock_starting_at_a_date_reads_that_date() {
        let at = DateTime::parse_from_rfc3339("2020-05-24T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let clock = Clock::starting_at(at);
        let drift = (clock.now() - at).num_seconds();
        assert!((0..60).contains(&drift), "drift {drift} s");
        assert_eq!(clock.today(), NaiveDate::from_ymd_opt(2020, 5, 24).unwrap());
        let as_system = clock.system_time().duration_since(UNIX_EPOCH).unwrap();
        let drift = as_system.as_secs() as i64 - at.timestamp();
        assert!((0..60).contains(&drift), "system time drift {drift} s");
    }
}
