//! The fake's state: services and keys, rate limiting per API user, messages (sharded), counters.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::time::Instant;

use super::cms::CmsStore;
use super::population::Population;
use super::{FakeIoConfig, FakeRate, FakeService, Faults, Processing};

const SHARDS: usize = 64;
/// Endpoint labels counted in the stats (the last one catches anything else).
const ENDPOINTS: &[&str] = &[
    "submit_message",
    "get_message",
    "get_profile",
    "subscriptions_feed",
    "organization_logo",
    "manage_services",
    "other",
];
/// Statuses counted in the stats; 0 = connection dropped; `u16::MAX` = anything else.
const STATUSES: &[u16] = &[
    0,
    200,
    201,
    202,
    204,
    400,
    401,
    403,
    404,
    409,
    429,
    500,
    502,
    503,
    504,
    u16::MAX,
];

/// Now, in ms since the epoch (message times survive nothing, but are comparable to IO's).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A stored message.
#[derive(Debug, Clone)]
pub struct Msg {
    pub fiscal_code: String,
    pub service_id: Arc<str>,
    pub created_ms: u64,
    pub ready_ms: u64,
    pub advanced: bool,
    pub time_to_live: u64,
    /// The message content as it came (JSON text: a tenth of a parsed value's memory).
    pub content: Box<str>,
    pub has_payee: bool,
}

/// Counters the fake reports (GET /__fake/stats).
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct FakeStats {
    /// Requests per "endpoint status", e.g. `submit_message 201`.
    pub requests: BTreeMap<String, u64>,
    /// All requests.
    pub requests_total: u64,
    /// 429 answers.
    pub throttled: u64,
    /// Messages created.
    pub messages_created: u64,
    /// Distinct recipients that got at least one message.
    pub recipients: u64,
    /// Most messages one recipient got.
    pub max_per_recipient: u32,
    /// Recipients that got more than one message.
    pub recipients_with_more_than_one: u64,
    /// 5xx answers injected (nothing created).
    pub fault_5xx: u64,
    /// Connections dropped before creating the message.
    pub fault_drop_before_create: u64,
    /// Connections dropped after creating the message.
    pub fault_drop_after_create: u64,
    /// Requests that created the message and then hung until dropped.
    pub fault_hang_after_create: u64,
}

enum Limiter {
    Window { start: Instant, used: u32 },
    Bucket { tokens: f64, last: Instant },
}

/// What the rate limiter says.
pub enum RateVerdict {
    /// Go on; `remaining` for the header (window mode).
    Allowed { remaining: Option<u32> },
    /// 429 with the retry hint (whole seconds), if any.
    Throttled { retry_after: Option<u64> },
}

pub struct FakeState {
    pub population: Population,
    pub processing: Processing,
    pub seed: u64,
    pub today: chrono::NaiveDate,
    services: RwLock<Vec<FakeService>>,
    pub manage_key: String,
    rate: RwLock<FakeRate>,
    limiters: Mutex<HashMap<String, Limiter>>,
    faults: RwLock<Faults>,
    messages: Vec<Mutex<HashMap<String, Msg>>>,
    per_recipient: Vec<Mutex<HashMap<String, u32>>>,
    /// Answers per (endpoint, status), allocation-free on the hot path.
    requests: Vec<AtomicU64>,
    pub counters: Counters,
    pub cms: CmsStore,
    pub auto_review: bool,
    fault_seq: AtomicU64,
    /// Feed days from this offset (days since the feed epoch) on answer "not available yet"
    /// even if before `today` (tests move IO's publication horizon). `u64::MAX`: no override.
    feed_horizon: AtomicU64,
}

#[derive(Default)]
pub struct Counters {
    pub requests_total: AtomicU64,
    pub throttled: AtomicU64,
    pub created: AtomicU64,
    pub fault_5xx: AtomicU64,
    pub drop_before: AtomicU64,
    pub drop_after: AtomicU64,
    pub hang_after: AtomicU64,
    /// Recipients with at least one message (kept as messages are stored: no scan per stats).
    pub recipients: AtomicU64,
    /// Recipients with more than one message.
    pub recipients_more: AtomicU64,
    /// Most messages one recipient got.
    pub max_per_recipient: AtomicU64,
}

fn shard_of(key: &str) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    (h.finish() as usize) % SHARDS
}

impl FakeState {
    pub fn new(config: FakeIoConfig) -> FakeState {
        let today = config
            .today
            .unwrap_or_else(|| chrono::Utc::now().date_naive());
        let population = Population::generate(config.population, config.seed, today);
        FakeState {
            population,
            processing: config.processing,
            seed: config.seed,
            today,
            cms: CmsStore::seeded(&config.services),
            services: RwLock::new(config.services),
            manage_key: config.manage_key,
            rate: RwLock::new(config.rate),
            limiters: Mutex::new(HashMap::new()),
            faults: RwLock::new(config.faults),
            messages: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_recipient: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            requests: (0..ENDPOINTS.len() * STATUSES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            counters: Counters::default(),
            auto_review: config.auto_review,
            fault_seq: AtomicU64::new(0),
            feed_horizon: AtomicU64::new(u64::MAX),
        }
    }

    /// The service owning `key` (primary or secondary).
    pub fn service_by_key(&self, key: &str) -> Option<FakeService> {
        self.services
            .read()
            .expect("services lock")
            .iter()
            .find(|s| s.primary_key == key || s.secondary_key == key)
            .cloned()
    }

    /// The service with this id.
    pub fn service_by_id(&self, id: &str) -> Option<FakeService> {
        self.services
            .read()
            .expect("services lock")
            .iter()
            .find(|s| s.id == id)
            .cloned()
    }

    /// Registers (or replaces) a service, e.g. one created through /manage/services.
    pub fn upsert_service(&self, service: FakeService) {
        let mut services = self.services.write().expect("services lock");
        match services.iter_mut().find(|s| s.id == service.id) {
            Some(s) => *s = service,
            None => services.push(service),
        }
    }

    pub fn faults(&self) -> Faults {
        self.faults.read().expect("faults lock").clone()
    }

    pub fn set_faults(&self, f: Faults) {
        *self.faults.write().expect("faults lock") = f;
    }

    /// Publishes the feed only before `day` (None: up to yesterday, as IO does).
    pub fn set_feed_horizon(&self, day: Option<chrono::NaiveDate>) {
        let v = day.map_or(u64::MAX, |d| {
            (d - super::feed_epoch()).num_days().max(0) as u64
        });
        self.feed_horizon.store(v, Ordering::Relaxed);
    }

    /// Whether the feed of `day` is published.
    pub fn feed_published(&self, day: chrono::NaiveDate) -> bool {
        let offset = (day - super::feed_epoch()).num_days();
        day < self.today
            && (offset < 0 || (offset as u64) < self.feed_horizon.load(Ordering::Relaxed))
    }

    pub fn set_rate(&self, r: FakeRate) {
        *self.rate.write().expect("rate lock") = r;
        self.limiters.lock().expect("limiters lock").clear();
    }

    /// A deterministic-per-run pseudo-random number in [0, 1) for fault decisions.
    pub fn roll(&self) -> f64 {
        let n = self.fault_seq.fetch_add(1, Ordering::Relaxed);
        let mut x =
            (self.seed ^ 0xD1B5_4A32_D192_ED03).wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        x ^= x >> 30;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 27;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^= x >> 31;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Counts a call against `api_user`'s budget (rejected calls do not count).
    pub fn check_rate(&self, api_user: &str) -> RateVerdict {
        let rate = self.rate.read().expect("rate lock").clone();
        let now = Instant::now();
        let mut limiters = self.limiters.lock().expect("limiters lock");
        match rate {
            FakeRate::Unlimited => RateVerdict::Allowed { remaining: None },
            FakeRate::Window { calls, period } => {
                let l = limiters
                    .entry(api_user.to_owned())
                    .or_insert(Limiter::Window {
                        start: now,
                        used: 0,
                    });
                let Limiter::Window { start, used } = l else {
                    *l = Limiter::Window {
                        start: now,
                        used: 0,
                    };
                    return RateVerdict::Allowed {
                        remaining: Some(calls - 1),
                    };
                };
                if now >= *start + period {
                    *start = now;
                    *used = 0;
                }
                if *used < calls {
                    *used += 1;
                    RateVerdict::Allowed {
                        remaining: Some(calls - *used),
                    }
                } else {
                    let left = (*start + period).saturating_duration_since(now);
                    RateVerdict::Throttled {
                        retry_after: Some(left.as_secs_f64().ceil().max(1.0) as u64),
                    }
                }
            }
            FakeRate::Capacity { per_second, burst } => {
                let l = limiters
                    .entry(api_user.to_owned())
                    .or_insert(Limiter::Bucket {
                        tokens: burst,
                        last: now,
                    });
                let Limiter::Bucket { tokens, last } = l else {
                    *l = Limiter::Bucket {
                        tokens: burst,
                        last: now,
                    };
                    return RateVerdict::Allowed { remaining: None };
                };
                *tokens =
                    (*tokens + now.duration_since(*last).as_secs_f64() * per_second).min(burst);
                *last = now;
                if *tokens >= 1.0 {
                    *tokens -= 1.0;
                    RateVerdict::Allowed { remaining: None }
                } else {
                    // Overload: no retry hint (the client must back off by itself).
                    RateVerdict::Throttled { retry_after: None }
                }
            }
        }
    }

    /// Processing delay of message `id`: log-normal around the median, clamped, deterministic.
    pub fn processing_delay(&self, id: &str) -> Duration {
        let p = &self.processing;
        if p.max.is_zero() {
            return Duration::ZERO;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.seed, id).hash(&mut h);
        let x = h.finish();
        let u1 = ((x >> 11) as f64 / (1u64 << 53) as f64).max(1e-12);
        let u2 = (x & 0xFFFF) as f64 / 65536.0;
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let secs = p.median.as_secs_f64() * (0.6 * z).exp();
        Duration::from_secs_f64(secs.clamp(p.min.as_secs_f64(), p.max.as_secs_f64()))
    }

    pub fn store_message(&self, id: String, msg: Msg) {
        let fc = msg.fiscal_code.clone();
        self.messages[shard_of(&id)]
            .lock()
            .expect("messages lock")
            .insert(id, msg);
        let n = {
            let mut shard = self.per_recipient[shard_of(&fc)]
                .lock()
                .expect("recipients lock");
            let n = shard.entry(fc).or_insert(0);
            *n += 1;
            *n
        };
        match n {
            1 => self.counters.recipients.fetch_add(1, Ordering::Relaxed),
            2 => self
                .counters
                .recipients_more
                .fetch_add(1, Ordering::Relaxed),
            _ => 0,
        };
        self.counters
            .max_per_recipient
            .fetch_max(u64::from(n), Ordering::Relaxed);
        self.counters.created.fetch_add(1, Ordering::Relaxed);
    }

    pub fn message(&self, id: &str) -> Option<Msg> {
        self.messages[shard_of(id)]
            .lock()
            .expect("messages lock")
            .get(id)
            .cloned()
    }

    pub fn messages_for(&self, fiscal_code: &str) -> u32 {
        self.per_recipient[shard_of(fiscal_code)]
            .lock()
            .expect("recipients lock")
            .get(fiscal_code)
            .copied()
            .unwrap_or(0)
    }

    /// The contents (JSON text) of every message created for `fiscal_code` (tests read the
    /// bodies a citizen received).
    pub fn contents_for(&self, fiscal_code: &str) -> Vec<String> {
        let mut out = Vec::new();
        for shard in &self.messages {
            for msg in shard.lock().expect("messages lock").values() {
                if msg.fiscal_code == fiscal_code {
                    out.push(msg.content.to_string());
                }
            }
        }
        out
    }

    /// Messages per recipient, keyed by the feed hash (no clear codes leave the fake).
    pub fn messages_per_hash(&self) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for shard in &self.per_recipient {
            for (fc, n) in shard.lock().expect("recipients lock").iter() {
                out.insert(super::population::hash_hex(fc), *n);
            }
        }
        out
    }

    pub fn count_request(&self, endpoint: &str, status: u16) {
        self.counters.requests_total.fetch_add(1, Ordering::Relaxed);
        if status == 429 {
            self.counters.throttled.fetch_add(1, Ordering::Relaxed);
        }
        let e = ENDPOINTS
            .iter()
            .position(|x| *x == endpoint)
            .unwrap_or(ENDPOINTS.len() - 1);
        let st = STATUSES
            .iter()
            .position(|x| *x == status)
            .unwrap_or(STATUSES.len() - 1);
        self.requests[e * STATUSES.len() + st].fetch_add(1, Ordering::Relaxed);
    }

    fn requests_map(&self) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for (e, endpoint) in ENDPOINTS.iter().enumerate() {
            for (st, status) in STATUSES.iter().enumerate() {
                let n = self.requests[e * STATUSES.len() + st].load(Ordering::Relaxed);
                if n > 0 {
                    let status = if *status == u16::MAX {
                        "other".to_owned()
                    } else {
                        status.to_string()
                    };
                    out.insert(format!("{endpoint} {status}"), n);
                }
            }
        }
        out
    }

    pub fn stats(&self) -> FakeStats {
        let c = &self.counters;
        let recipients = c.recipients.load(Ordering::Relaxed);
        let max = c.max_per_recipient.load(Ordering::Relaxed) as u32;
        let more = c.recipients_more.load(Ordering::Relaxed);
        FakeStats {
            requests: self.requests_map(),
            requests_total: c.requests_total.load(Ordering::Relaxed),
            throttled: c.throttled.load(Ordering::Relaxed),
            messages_created: c.created.load(Ordering::Relaxed),
            recipients,
            max_per_recipient: max,
            recipients_with_more_than_one: more,
            fault_5xx: c.fault_5xx.load(Ordering::Relaxed),
            fault_drop_before_create: c.drop_before.load(Ordering::Relaxed),
            fault_drop_after_create: c.drop_after.load(Ordering::Relaxed),
            fault_hang_after_create: c.hang_after.load(Ordering::Relaxed),
        }
    }

    pub fn reset_stats(&self) {
        for r in &self.requests {
            r.store(0, Ordering::Relaxed);
        }
        for shard in &self.per_recipient {
            shard.lock().expect("recipients lock").clear();
        }
        let c = &self.counters;
        for a in [
            &c.requests_total,
            &c.throttled,
            &c.created,
            &c.fault_5xx,
            &c.drop_before,
            &c.drop_after,
            &c.hang_after,
            &c.recipients,
            &c.recipients_more,
            &c.max_per_recipient,
        ] {
            a.store(0, Ordering::Relaxed);
        }
    }
}
