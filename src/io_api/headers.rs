//! [`RateHeaders`]: what IO's gateway says about the budget on every response, parsed by one
//! pure function.

use std::time::{Duration, SystemTime};

use http::HeaderMap;

/// Longest pause a header may impose: a broken or hostile value must not stall a campaign.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// `x-rate-limit-remaining`, and the retry hint from `x-rate-limit-retry-after` or `Retry-After`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RateHeaders {
    /// Calls left in the current window.
    pub remaining: Option<u32>,
    /// How long to wait before the next call.
    pub retry_after: Option<Duration>,
}

impl RateHeaders {
    /// Parses the headers. `x-rate-limit-retry-after` is whole seconds (APIM);
    /// `Retry-After` is seconds or an HTTP date (a date in the past means zero). When both are
    /// present the longer wins; the result is clamped to [`MAX_RETRY_AFTER`].
    pub fn from_headers(headers: &HeaderMap, now: SystemTime) -> RateHeaders {
        let text = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
        };
        let remaining = text("x-rate-limit-remaining").and_then(|v| v.parse().ok());
        let apim = text("x-rate-limit-retry-after").and_then(parse_seconds);
        let standard = text("retry-after").and_then(|v| {
            parse_seconds(v).or_else(|| {
                httpdate::parse_http_date(v)
                    .ok()
                    .map(|at| at.duration_since(now).unwrap_or(Duration::ZERO))
            })
        });
        let retry_after = match (apim, standard) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
        .map(|d| d.min(MAX_RETRY_AFTER));
        RateHeaders {
            remaining,
            retry_after,
        }
    }
}

fn parse_seconds(v: &str) -> Option<Duration> {
    if let Ok(n) = v.parse::<u64>() {
        return Some(Duration::from_secs(n));
    }
    // Some gateways send fractions; never negative, never NaN.
    v.parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map(|f| Duration::from_secs_f64(f.min(MAX_RETRY_AFTER.as_secs_f64())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn apim_headers() {
        let r = RateHeaders::from_headers(
            &headers(&[
                ("x-rate-limit-remaining", "17"),
                ("x-rate-limit-retry-after", "3"),
            ]),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        assert_eq!(r.remaining, Some(17));
        assert_eq!(r.retry_after, Some(Duration::from_secs(3)));
    }

    #[test]
    fn retry_after_seconds_and_http_date() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = RateHeaders::from_headers(&headers(&[("retry-after", "2")]), now);
        assert_eq!(r.retry_after, Some(Duration::from_secs(2)));
        let at = httpdate::fmt_http_date(now + Duration::from_secs(7));
        let r = RateHeaders::from_headers(&headers(&[("retry-after", &at)]), now);
        assert_eq!(r.retry_after, Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        let r = RateHeaders::from_headers(&headers(&[("retry-after", &past)]), now);
        assert_eq!(r.retry_after, Some(Duration::ZERO));
    }

    #[test]
    fn longest_hint_wins_and_is_clamped() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let r = RateHeaders::from_headers(
            &headers(&[("x-rate-limit-retry-after", "1"), ("retry-after", "4")]),
            now,
        );
        assert_eq!(r.retry_after, Some(Duration::from_secs(4)));
        let r = RateHeaders::from_headers(&headers(&[("retry-after", "999999")]), now);
        assert_eq!(r.retry_after, Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn garbage_is_ignored() {
        let r = RateHeaders::from_headers(
            &headers(&[
                ("x-rate-limit-remaining", "lots"),
                ("retry-after", "soon"),
                ("x-rate-limit-retry-after", "-3"),
            ]),
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        assert_eq!(r, RateHeaders::default());
    }
}
