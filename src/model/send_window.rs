//! [`SendWindow`]: the days and hours (in Europe/Rome unless configured) when a job may send:
//! citizens get a push notification for every message, and nobody wants one at 3 a.m.
//! Pure time arithmetic, daylight saving time included.

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;

/// The time zone of send windows unless configured otherwise.
pub const DEFAULT_TIMEZONE: Tz = chrono_tz::Europe::Rome;

/// Why a window spec is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("send window {spec:?}: {reason} (expected e.g. \"mon-fri 09:00-18:00\")")]
pub struct WindowError {
    /// The text.
    pub spec: String,
    /// What is wrong.
    pub reason: String,
}

/// Days and hours when a job may send, in a time zone (Europe/Rome by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendWindow {
    /// Monday first.
    days: [bool; 7],
    from: NaiveTime,
    to: NaiveTime,
    tz: Tz,
    spec: String,
}

const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl std::fmt::Display for SendWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.spec, self.tz)
    }
}

impl SendWindow {
    /// Parses `"mon-fri 09:00-18:00"`: days (`mon`…`sun`, ranges with `-`, lists with `,`, or
    /// `all`), then `HH:MM-HH:MM` (the end after the start; `24:00` for midnight).
    pub fn parse(spec: &str, tz: Tz) -> Result<SendWindow, WindowError> {
        let err = |reason: &str| WindowError {
            spec: spec.to_owned(),
            reason: reason.to_owned(),
        };
        let mut parts = spec.split_whitespace();
        let (days_text, hours) = match (parts.next(), parts.next(), parts.next()) {
            (Some(d), Some(h), None) => (d, h),
            (Some(h), None, None) if h.contains(':') => ("all", h),
            _ => return Err(err("give days and hours")),
        };
        let mut days = [false; 7];
        for item in days_text.to_ascii_lowercase().split(',') {
            let day = |name: &str| {
                DAY_NAMES
                    .iter()
                    .position(|d| *d == name)
                    .ok_or_else(|| err(&format!("unknown day {name:?}")))
            };
            match item.split_once('-') {
                _ if item == "all" || item == "*" => days = [true; 7],
                Some((a, b)) => {
                    let (a, b) = (day(a)?, day(b)?);
                    let mut i = a;
                    loop {
                        days[i] = true;
                        if i == b {
                            break;
                        }
                        i = (i + 1) % 7;
                    }
                }
                None => days[day(item)?] = true,
            }
        }
        let (from, to) = hours
            .split_once('-')
            .ok_or_else(|| err("hours must be HH:MM-HH:MM"))?;
        let time = |t: &str| {
            if t == "24:00" {
                return Ok(None);
            }
            NaiveTime::parse_from_str(t, "%H:%M")
                .map(Some)
                .map_err(|_| err(&format!("{t:?} is not a time HH:MM")))
        };
        let from = time(from)?.ok_or_else(|| err("a window cannot start at 24:00"))?;
        let to = time(to)?.unwrap_or(NaiveTime::MIN);
        if to != NaiveTime::MIN && to <= from {
            return Err(err("the end must be after the start"));
        }
        Ok(SendWindow {
            days,
            from,
            to,
            tz,
            spec: spec.trim().to_owned(),
        })
    }

    /// The window of local day `d`, as UTC instants (None when the day is off).
    fn span(&self, d: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.days[d.weekday().num_days_from_monday() as usize] {
            return None;
        }
        let local = |date: NaiveDate, t: NaiveTime| {
            // A time skipped by a DST change becomes the first valid instant after it.
            let naive = date.and_time(t);
            self.tz
                .from_local_datetime(&naive)
                .earliest()
                .or_else(|| {
                    self.tz
                        .from_local_datetime(&(naive + chrono::Duration::hours(1)))
                        .earliest()
                })
                .map(|dt| dt.with_timezone(&Utc))
        };
        let start = local(d, self.from)?;
        let end = if self.to == NaiveTime::MIN {
            local(d.succ_opt()?, NaiveTime::MIN)?
        } else {
            local(d, self.to)?
        };
        Some((start, end))
    }

    /// Whether sending is allowed at `at`.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.next_open(at) == at
    }

    /// `at` when open, else the next opening.
    pub fn next_open(&self, at: DateTime<Utc>) -> DateTime<Utc> {
        let today = at.with_timezone(&self.tz).date_naive();
        for offset in 0..=8u64 {
            let Some(d) = today.checked_add_days(chrono::Days::new(offset)) else {
                break;
            };
            if let Some((start, end)) = self.span(d) {
                if at < end {
                    return at.max(start);
                }
            }
        }
        // No day enabled (impossible after parse, which requires one): never open.
        at + chrono::Duration::days(3650)
    }

    /// The first instant from which `needed` of open time has passed (sending for `needed`
    /// inside the window, starting at `at`): the ETA of work that only runs when open.
    pub fn finish_after(&self, at: DateTime<Utc>, needed: std::time::Duration) -> DateTime<Utc> {
        let mut left = chrono::Duration::from_std(needed).unwrap_or(chrono::Duration::MAX);
        let mut t = at;
        for _ in 0..(366 * 10) {
            let open = self.next_open(t);
            let today = open.with_timezone(&self.tz).date_naive();
            let Some((_, end)) = self.span(today) else {
                t = open + chrono::Duration::minutes(1);
                continue;
            };
            let available = end - open;
            if available >= left {
                return open + left;
            }
            left -= available;
            t = end;
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rome(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        DEFAULT_TIMEZONE
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .unwrap()
            .with_timezone(&Utc)
    }

    #[test]
    fn parses_days_and_hours_and_refuses_nonsense() {
        let w = SendWindow::parse("mon-fri 09:00-18:00", DEFAULT_TIMEZONE).unwrap();
        assert_eq!(w.days, [true, true, true, true, true, false, false]);
        let w = SendWindow::parse("sat,sun 10:00-24:00", DEFAULT_TIMEZONE).unwrap();
        assert_eq!(w.days, [false, false, false, false, false, true, true]);
        let w = SendWindow::parse("fri-mon 08:00-20:00", DEFAULT_TIMEZONE).unwrap();
        assert_eq!(w.days, [true, false, false, false, true, true, true]);
        assert!(
            SendWindow::parse("08:00-20:00", DEFAULT_TIMEZONE)
                .unwrap()
                .days
                == [true; 7]
        );
        for bad in [
            "",
            "mon-fri",
            "mon-fri 18:00-09:00",
            "mon-fri 9-18",
            "lun-ven 09:00-18:00",
            "mon 24:00-10:00",
        ] {
            let e = SendWindow::parse(bad, DEFAULT_TIMEZONE).unwrap_err();
            assert!(e.to_string().contains("send window"), "{bad}: {e}");
        }
    }

    #[test]
    fn open_and_next_open_in_rome_time_across_weekends_and_dst() {
        let w = SendWindow::parse("mon-fri 09:00-18:00", DEFAULT_TIMEZONE).unwrap();
        // Wednesday 2026-11-25, 10:00 Rome: open.
        assert!(w.is_open(rome(2026, 11, 25, 10, 0)));
        // 03:00: closed until 09:00 the same day.
        assert_eq!(
            w.next_open(rome(2026, 11, 25, 3, 0)),
            rome(2026, 11, 25, 9, 0)
        );
        // Friday 18:00 (the end is exclusive): next Monday 09:00.
        assert_eq!(
            w.next_open(rome(2026, 11, 27, 18, 0)),
            rome(2026, 11, 30, 9, 0)
        );
        // Across the end of summer time (2026-10-25): Monday 26 at 09:00 CET = 08:00 UTC.
        let after_dst = w.next_open(rome(2026, 10, 24, 12, 0));
        assert_eq!(after_dst, rome(2026, 10, 26, 9, 0));
        assert_eq!(after_dst.format("%H:%M").to_string(), "08:00");
    }

    #[test]
    fn finish_after_counts_only_open_time() {
        let w = SendWindow::parse("mon-fri 09:00-18:00", DEFAULT_TIMEZONE).unwrap();
        // Friday 17:00 with 2 h of work: 1 h on Friday, 1 h on Monday.
        let done = w.finish_after(
            rome(2026, 11, 27, 17, 0),
            std::time::Duration::from_secs(7200),
        );
        assert_eq!(done, rome(2026, 11, 30, 10, 0));
        // Fits in today's window.
        let done = w.finish_after(
            rome(2026, 11, 25, 10, 0),
            std::time::Duration::from_secs(60),
        );
        assert_eq!(done, rome(2026, 11, 25, 10, 1));
    }
}
