//! Simulation tests, in paused time: the budget against in-process simulated IO gateways whose
//! window, capacity and latency come from a table of scenarios. Ranges, never wall-clock.

use super::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use std::collections::VecDeque;

/// A simulated gateway: answers (status, remaining, retry_after) at time `now`.
trait Gateway: Send {
    fn call(&mut self, now: Instant) -> (u16, Option<u32>, Option<Duration>);
    fn set_capacity(&mut self, _per_second: f64) {}
}

/// APIM-like fixed window starting at the first call after the previous one ended; rejected
/// calls do not count.
struct FixedWindow {
    calls: u32,
    period: Duration,
    start: Option<Instant>,
    used: u32,
}

impl Gateway for FixedWindow {
    fn call(&mut self, now: Instant) -> (u16, Option<u32>, Option<Duration>) {
        if self.start.is_none_or(|s| now >= s + self.period) {
            self.start = Some(now);
            self.used = 0;
        }
        if self.used < self.calls {
            self.used += 1;
            (200, Some(self.calls - self.used), None)
        } else {
            let left = (self.start.unwrap() + self.period) - now;
            (
                429,
                Some(0),
                Some(Duration::from_secs(left.as_secs_f64().ceil() as u64)),
            )
        }
    }
}

/// Sliding window: at most `calls` accepted in any `period`.
struct SlidingWindow {
    calls: usize,
    period: Duration,
    log: VecDeque<Instant>,
}

impl Gateway for SlidingWindow {
    fn call(&mut self, now: Instant) -> (u16, Option<u32>, Option<Duration>) {
        while self
            .log
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.period)
        {
            self.log.pop_front();
        }
        if self.log.len() < self.calls {
            self.log.push_back(now);
            (200, Some((self.calls - self.log.len()) as u32), None)
        } else {
            let left = self.period - now.duration_since(self.log[0]);
            (
                429,
                Some(0),
                Some(Duration::from_secs(left.as_secs_f64().ceil() as u64)),
            )
        }
    }
}

/// Overload capacity: a token bucket at `rate` with a small burst; 429 without a hint above it.
struct Capacity {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl Gateway for Capacity {
    fn call(&mut self, now: Instant) -> (u16, Option<u32>, Option<Duration>) {
        if let Some(last) = self.last {
            self.tokens =
                (self.tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.burst);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            (200, None, None)
        } else {
            (429, None, None)
        }
    }
    fn set_capacity(&mut self, per_second: f64) {
        self.rate = per_second;
        self.burst = (per_second / 20.0).max(2.0);
        if self.last.is_none() {
            self.tokens = self.burst;
        }
    }
}

#[derive(Default, Clone, Copy, Debug)]
struct Tally {
    ok: u64,
    throttled: u64,
}

/// Runs `workers` callers with always-available demand for `secs` simulated seconds; returns
/// the tally per phase (`phases` = list of (start second, capacity change)).
async fn drive(
    budget: RateBudget,
    gateway: Box<dyn Gateway>,
    workers: usize,
    latency_ms: (u64, u64),
    secs: u64,
    phases: Vec<(u64, Option<f64>)>,
) -> Vec<Tally> {
    let gateway = Arc::new(Mutex::new(gateway));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let bounds: Vec<u64> = phases.iter().map(|p| p.0).collect();
    let tallies = Arc::new(Mutex::new(vec![Tally::default(); phases.len()]));
    let mut handles = Vec::new();
    for w in 0..workers {
        let (budget, gateway, tallies, bounds) = (
            budget.clone(),
            gateway.clone(),
            tallies.clone(),
            bounds.clone(),
        );
        handles.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(w as u64);
            loop {
                let permit = budget.acquire().await;
                let now = Instant::now();
                if now >= end {
                    break;
                }
                let (status, remaining, retry_after) = gateway.lock().unwrap().call(now);
                let latency = Duration::from_millis(rng.gen_range(latency_ms.0..=latency_ms.1));
                tokio::time::sleep(latency).await;
                let phase = bounds
                    .iter()
                    .rposition(|b| now.duration_since(start).as_secs() >= *b)
                    .unwrap();
                {
                    let mut t = tallies.lock().unwrap();
                    if status == 429 {
                        t[phase].throttled += 1
                    } else {
                        t[phase].ok += 1
                    }
                }
                permit.record(CallOutcome {
                    status: Some(status),
                    remaining,
                    retry_after,
                    latency,
                });
            }
        }));
    }
    // Capacity changes at phase starts.
    for (at, change) in phases.iter().skip(1) {
        tokio::time::sleep_until(start + Duration::from_secs(*at)).await;
        if let Some(c) = change {
            gateway.lock().unwrap().set_capacity(*c);
        }
    }
    for h in handles {
        h.await.unwrap();
    }
    let t = tallies.lock().unwrap().clone();
    t
}

#[tokio::test(start_paused = true)]
async fn window_scenarios_use_at_least_97_percent_with_few_429s() {
    struct Case {
        name: &'static str,
        calls: u32,
        period_s: u64,
        sliding: bool,
    }
    let cases = [
        Case {
            name: "IO default 150/5s",
            calls: 150,
            period_s: 5,
            sliding: false,
        },
        Case {
            name: "premium 250/5s",
            calls: 250,
            period_s: 5,
            sliding: false,
        },
        Case {
            name: "tight 10/1s",
            calls: 10,
            period_s: 1,
            sliding: false,
        },
        Case {
            name: "sliding 150/5s",
            calls: 150,
            period_s: 5,
            sliding: true,
        },
    ];
    for c in cases {
        let period = Duration::from_secs(c.period_s);
        let budget = RateBudget::new(RateConfig {
            mode: RateMode::Window {
                calls: c.calls,
                period,
            },
            in_flight: 16,
        });
        let gateway: Box<dyn Gateway> = if c.sliding {
            Box::new(SlidingWindow {
                calls: c.calls as usize,
                period,
                log: VecDeque::new(),
            })
        } else {
            Box::new(FixedWindow {
                calls: c.calls,
                period,
                start: None,
                used: 0,
            })
        };
        let secs = 120;
        let t = drive(budget, gateway, 16, (20, 80), secs, vec![(0, None)]).await[0];
        let capacity = f64::from(c.calls) * secs as f64 / c.period_s as f64;
        let used = t.ok as f64 / capacity;
        let share429 = t.throttled as f64 / (t.ok + t.throttled) as f64;
        println!(
            "{}: used {:.3} of capacity, 429 share {:.4}",
            c.name, used, share429
        );
        assert!(used >= 0.97, "{}: used {used}", c.name);
        assert!(share429 <= 0.005, "{}: 429 share {share429}", c.name);
    }
}

#[tokio::test(start_paused = true)]
async fn adaptive_finds_and_follows_a_hidden_capacity() {
    // An order of magnitude of capacities; 45 simulated seconds each (the simulation's cost is
    // the calls it makes, so the suite stays quick in a debug build).
    for r in [200.0, 800.0, 1600.0] {
        let budget = RateBudget::new(RateConfig {
            mode: RateMode::Adaptive {
                initial: 50.0,
                floor: 5.0,
                ceiling: 10_000.0,
            },
            in_flight: 512,
        });
        let mut gw = Capacity {
            rate: r,
            burst: 0.0,
            tokens: 0.0,
            last: None,
        };
        gw.set_capacity(r);
        let workers = ((r * 0.08) as usize).max(16) * 2;
        // Phase 0 is warm-up (slow start), phase 1 is measured.
        let t = drive(
            budget,
            Box::new(gw),
            workers,
            (20, 80),
            45,
            vec![(0, None), (15, None)],
        )
        .await;
        let m = t[1];
        let goodput = m.ok as f64 / 30.0;
        let share429 = m.throttled as f64 / (m.ok + m.throttled) as f64;
        println!(
            "capacity {r}: goodput {:.3} R, 429 share {:.4}",
            goodput / r,
            share429
        );
        assert!(goodput >= 0.95 * r, "R={r}: goodput {goodput}");
        assert!(share429 <= 0.01, "R={r}: 429 share {share429}");
    }
}

#[tokio::test(start_paused = true)]
async fn adaptive_reconverges_when_capacity_changes() {
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Adaptive {
            initial: 50.0,
            floor: 5.0,
            ceiling: 10_000.0,
        },
        in_flight: 512,
    });
    let mut gw = Capacity {
        rate: 0.0,
        burst: 0.0,
        tokens: 0.0,
        last: None,
    };
    gw.set_capacity(500.0);
    // 500 → 200 at 40 s → 750 at 80 s. Each phase's first 10 s are settling (not measured).
    let phases = vec![
        (0, None),
        (15, None),
        (40, Some(200.0)),
        (50, None),
        (80, Some(750.0)),
        (90, None),
    ];
    let t = drive(budget, Box::new(gw), 300, (20, 80), 120, phases).await;
    for (i, r, secs) in [(1usize, 500.0, 25.0), (3, 200.0, 30.0), (5, 750.0, 30.0)] {
        let m = t[i];
        let goodput = m.ok as f64 / secs;
        let share429 = m.throttled as f64 / (m.ok + m.throttled) as f64;
        println!(
            "phase R={r}: goodput {:.3} R, 429 share {:.4}",
            goodput / r,
            share429
        );
        assert!(goodput >= 0.95 * r, "R={r}: goodput {goodput}");
        assert!(share429 <= 0.01, "R={r}: 429 share {share429}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_hint_pauses_every_caller_and_is_never_shortened() {
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: 8,
    });
    let t0 = Instant::now();
    budget.on_response(CallOutcome {
        status: Some(429),
        retry_after: Some(Duration::from_secs(3)),
        ..Default::default()
    });
    budget.on_response(CallOutcome {
        status: Some(429),
        retry_after: Some(Duration::from_secs(1)),
        ..Default::default()
    });
    let mut joins = Vec::new();
    for _ in 0..4 {
        let b = budget.clone();
        joins.push(tokio::spawn(async move {
            let _p = b.acquire().await;
            Instant::now()
        }));
    }
    for j in joins {
        let at = j.await.unwrap();
        assert!(
            at.duration_since(t0) >= Duration::from_secs(3),
            "{:?}",
            at.duration_since(t0)
        );
    }
    assert_eq!(budget.stats().throttled, 2);
}

#[tokio::test(start_paused = true)]
async fn in_flight_cap_is_never_exceeded() {
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: 5,
    });
    let peak = Arc::new(AtomicU64::new(0));
    let mut joins = Vec::new();
    for _ in 0..50 {
        let (b, peak) = (budget.clone(), peak.clone());
        joins.push(tokio::spawn(async move {
            let _p = b.acquire().await;
            peak.fetch_max(b.in_flight() as u64, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }));
    }
    for j in joins {
        j.await.unwrap();
    }
    assert_eq!(peak.load(Ordering::SeqCst), 5);
    assert_eq!(budget.in_flight(), 0);
    assert_eq!(budget.stats().calls, 50);
}

#[tokio::test(start_paused = true)]
async fn a_burst_of_hintless_429s_is_one_back_off_episode() {
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Unlimited,
        in_flight: 64,
    });
    for _ in 0..64 {
        budget.on_response(CallOutcome {
            status: Some(429),
            ..Default::default()
        });
    }
    let until = budget.paused_until().expect("a 429 pauses");
    // First episode: at most BACKOFF_BASE × 2.
    assert!(
        until.duration_since(Instant::now()) <= BACKOFF_BASE * 2,
        "{:?}",
        until.duration_since(Instant::now())
    );
    assert_eq!(budget.stats().throttled, 64);
}
