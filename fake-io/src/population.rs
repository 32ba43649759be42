//! [`Population`]: a seeded, deterministic set of citizens, each with a subscribe day and maybe an
//! unsubscribe (opt-out or account deletion) and a later re-subscribe, between 2020-03-24 and
//! yesterday. They drive the feed (same-day opposite events cancel, FACTS §7), the profiles and
//! message outcomes. Written independently of the client's `model` (a second reading of the spec).

use std::collections::HashMap;

use chrono::NaiveDate;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};

/// First day of the subscriptions feed.
pub fn feed_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2020, 3, 24).expect("valid date")
}

/// Share of citizens who unsubscribed at some point.
const UNSUBSCRIBE_SHARE: f64 = 0.15;
/// Share of unsubscriptions that are account deletions (profile 404 afterwards).
const DELETION_SHARE: f64 = 0.3;
/// Share of unsubscribed citizens who subscribed again later.
const RESUBSCRIBE_SHARE: f64 = 0.2;
/// Share of citizens whose opposite events fall on the same day (they cancel in the feed).
const SAME_DAY_SHARE: f64 = 0.01;

/// How a citizen's profile answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileState {
    /// Profile exists; `sender_allowed` as given.
    Active {
        /// The service may send.
        sender_allowed: bool,
    },
    /// The account was deleted: 404.
    Deleted,
}

/// One citizen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Citizen {
    /// Fiscal code (upper case, valid check character).
    pub fiscal_code: String,
    /// Ground truth: subscribed now.
    pub subscribed_now: bool,
    /// What POST /profiles answers.
    pub profile: ProfileState,
    /// Day offsets (from 2020-03-24) of the events, in order: (day, subscribe?).
    pub events: Vec<(u32, bool)>,
}

/// The population.
#[derive(Debug)]
pub struct Population {
    seed: u64,
    citizens: Vec<Citizen>,
    index: HashMap<[u8; 16], u32>,
    /// Per day offset: (citizen, subscribe?) events that survive same-day cancellation.
    by_day: Vec<Vec<(u32, bool)>>,
    days: u32,
}

const ODD: [u32; 26] = [
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
];
const MONTHS: &[u8] = b"ABCDEHLMPRST";

/// The control character of a 15-character prefix (standard algorithm).
pub fn control_char(prefix: &[u8]) -> u8 {
    let sum: u32 = prefix
        .iter()
        .take(15)
        .enumerate()
        .map(|(i, &c)| {
            let v = if c.is_ascii_digit() {
                c - b'0'
            } else {
                c - b'A'
            } as usize;
            if i % 2 == 0 {
                ODD[v]
            } else {
                v as u32
            }
        })
        .sum();
    b'A' + (sum % 26) as u8
}

/// The `n`-th synthetic fiscal code for `seed`: the six letters encode `n` (unique up to 26⁶),
/// the rest is drawn from a seeded generator; the check character is right.
pub fn synthetic_code(seed: u64, n: u64) -> String {
    let mut rng = SmallRng::seed_from_u64(seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let mut b = [0u8; 16];
    let mut x = n;
    for slot in b.iter_mut().take(6).rev() {
        *slot = b'A' + (x % 26) as u8;
        x /= 26;
    }
    let year = rng.gen_range(30..=99u8);
    b[6] = b'0' + year / 10;
    b[7] = b'0' + year % 10;
    b[8] = MONTHS[rng.gen_range(0..MONTHS.len())];
    let day = rng.gen_range(1..=28u8) + if rng.gen_bool(0.5) { 40 } else { 0 };
    b[9] = b'0' + day / 10;
    b[10] = b'0' + day % 10;
    b[11] = b"ABCDEFGHILM"[rng.gen_range(0..11)];
    for slot in b.iter_mut().take(15).skip(12) {
        *slot = b'0' + rng.gen_range(0..10u8);
    }
    b[15] = control_char(&b);
    String::from_utf8(b.to_vec()).expect("ASCII")
}

/// Lowercase hex SHA-256 (the feed's hash of an upper-case fiscal code).
pub fn hash_hex(fiscal_code: &str) -> String {
    hex::encode(Sha256::digest(fiscal_code.as_bytes()))
}

impl Population {
    /// Builds `n` citizens for `seed`, with history up to the day before `today`.
    pub fn generate(n: u64, seed: u64, today: NaiveDate) -> Population {
        let days = (today - feed_epoch()).num_days().max(1) as u32;
        let mut citizens = Vec::with_capacity(n as usize);
        let mut index = HashMap::with_capacity(n as usize);
        let mut by_day: Vec<Vec<(u32, bool)>> = vec![Vec::new(); days as usize];
        for i in 0..n {
            let fiscal_code = synthetic_code(seed, i);
            let mut rng =
                SmallRng::seed_from_u64(seed.wrapping_add(i).wrapping_mul(0xA24B_AED4_963E_E407));
            // Days are offsets in [0, days): the last complete day is days-1 (yesterday).
            let s = rng.gen_range(0..days);
            let mut events = vec![(s, true)];
            let mut profile = ProfileState::Active {
                sender_allowed: true,
            };
            if rng.gen_bool(SAME_DAY_SHARE) {
                // Signed up and switched to manual opt-in the same day: cancel in the feed.
                events.push((s, false));
                profile = ProfileState::Active {
                    sender_allowed: false,
                };
            } else if rng.gen_bool(UNSUBSCRIBE_SHARE) && s + 1 < days {
                let u = rng.gen_range(s + 1..days);
                events.push((u, false));
                profile = if rng.gen_bool(DELETION_SHARE) {
                    ProfileState::Deleted
                } else {
                    ProfileState::Active {
                        sender_allowed: false,
                    }
                };
                if rng.gen_bool(RESUBSCRIBE_SHARE) {
                    // Same day as the unsubscription (cancels) or later.
                    let r = if rng.gen_bool(0.2) || u + 1 >= days {
                        u
                    } else {
                        rng.gen_range(u + 1..days)
                    };
                    events.push((r, true));
                    profile = ProfileState::Active {
                        sender_allowed: true,
                    };
                }
            }
            let subscribed_now = events.last().is_some_and(|e| e.1);
            for (day, sub) in feed_events(&events) {
                by_day[day as usize].push((i as u32, sub));
            }
            let key: [u8; 16] = fiscal_code.as_bytes().try_into().expect("16 bytes");
            index.insert(key, i as u32);
            citizens.push(Citizen {
                fiscal_code,
                subscribed_now,
                profile,
                events,
            });
        }
        Population {
            seed,
            citizens,
            index,
            by_day,
            days,
        }
    }

    /// Number of citizens on IO.
    pub fn len(&self) -> usize {
        self.citizens.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.citizens.is_empty()
    }

    /// Citizen `i`.
    pub fn citizen(&self, i: usize) -> &Citizen {
        &self.citizens[i]
    }

    /// Looks a fiscal code up.
    pub fn find(&self, fiscal_code: &str) -> Option<&Citizen> {
        let key: [u8; 16] = fiscal_code.as_bytes().try_into().ok()?;
        self.index.get(&key).map(|&i| &self.citizens[i as usize])
    }

    /// A valid fiscal code of someone who is NOT on IO (profile 404, messages REJECTED).
    pub fn non_io_fiscal_code(&self, i: u64) -> String {
        synthetic_code(self.seed, self.citizens.len() as u64 + i)
    }

    /// Ground truth: hashes of everyone subscribed now.
    pub fn subscribers_now(&self) -> impl Iterator<Item = String> + '_ {
        self.citizens
            .iter()
            .filter(|c| c.subscribed_now)
            .map(|c| hash_hex(&c.fiscal_code))
    }

    /// Ground truth from the citizens' own events (not from the feed): the hashes of everyone
    /// subscribed at the end of day offset `last_day`.
    pub fn subscribers_through(&self, last_day: u32) -> impl Iterator<Item = String> + '_ {
        self.citizens
            .iter()
            .filter(move |c| {
                c.events
                    .iter()
                    .rev()
                    .find(|e| e.0 <= last_day)
                    .is_some_and(|e| e.1)
            })
            .map(|c| hash_hex(&c.fiscal_code))
    }

    /// Days with history (offsets 0..days() are complete).
    pub fn days(&self) -> u32 {
        self.days
    }

    /// The feed of day offset `d`: (subscriptions, unsubscriptions) as hashes.
    pub fn feed_day(&self, d: u32) -> (Vec<String>, Vec<String>) {
        let mut subs = Vec::new();
        let mut unsubs = Vec::new();
        if let Some(events) = self.by_day.get(d as usize) {
            for &(i, sub) in events {
                let h = hash_hex(&self.citizens[i as usize].fiscal_code);
                if sub {
                    subs.push(h);
                } else {
                    unsubs.push(h);
                }
            }
        }
        (subs, unsubs)
    }
}

/// A citizen's events as the feed shows them: opposite events on the same day cancel.
fn feed_events(events: &[(u32, bool)]) -> Vec<(u32, bool)> {
    let mut out: Vec<(u32, bool)> = Vec::new();
    for &(day, sub) in events {
        match out.last() {
            Some(&(d, s)) if d == day && s != sub => {
                out.pop();
            }
            _ => out.push((day, sub)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_population_and_valid_distinct_codes() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let a = Population::generate(5000, 7, today);
        let b = Population::generate(5000, 7, today);
        assert_eq!(a.citizen(1234), b.citizen(1234));
        assert_eq!(a.index.len(), 5000, "codes are unique");
        for i in 0..5000 {
            let fc = &a.citizen(i).fiscal_code;
            assert_eq!(control_char(fc.as_bytes()), fc.as_bytes()[15]);
        }
        assert!(a.find(&a.non_io_fiscal_code(3)).is_none());
        assert_eq!(control_char(b"RSSMRA85T10A562"), b'S');
    }

    #[test]
    fn replaying_the_feed_gives_the_ground_truth() {
        let today = NaiveDate::from_ymd_opt(2026, 11, 24).unwrap();
        let p = Population::generate(20_000, 3, today);
        let mut set = std::collections::HashSet::new();
        for d in 0..p.days() {
            let (subs, unsubs) = p.feed_day(d);
            for h in unsubs {
                set.remove(&h);
            }
            for h in subs {
                set.insert(h);
            }
        }
        let truth: std::collections::HashSet<String> = p.subscribers_now().collect();
        assert_eq!(set, truth);
        // The mix the tests rely on is there.
        let unsubscribed = (0..p.len())
            .filter(|&i| !p.citizen(i).subscribed_now)
            .count();
        let resubscribed = (0..p.len())
            .filter(|&i| p.citizen(i).events.len() == 3)
            .count();
        assert!(
            unsubscribed > 1000 && resubscribed > 100,
            "{unsubscribed} {resubscribed}"
        );
    }

    #[test]
    fn same_day_opposite_events_cancel() {
        assert_eq!(feed_events(&[(5, true), (5, false)]), vec![]);
        assert_eq!(
            feed_events(&[(1, true), (5, false), (5, true)]),
            vec![(1, true)]
        );
        assert_eq!(
            feed_events(&[(1, true), (5, false), (9, true)]),
            vec![(1, true), (5, false), (9, true)]
        );
    }
}
