//! The subscriptions feed and the local subscriber set: [`Feed`] syncs IO's feed (one GET per
//! UTC day since 2020-03-24, [`Feed::sync`]) into a [`SubscriberSet`] that the dispatcher asks
//! through [`SharedSubscribers`] instead of calling IO once per citizen.
//!
//! # How a sync stays exact
//! - Days are fetched with bounded concurrency under the shared [`RateBudget`], and applied
//!   strictly in date order whatever order their answers arrive in (an ordered buffered
//!   stream): a later unsubscription removes, a later re-subscription adds back.
//! - A hash in *both* lists of one day (IO cancels same-day opposite events, FACTS §7, so this
//!   should not happen) is kept as **subscribed**: the order inside the day is unknown, and a
//!   false positive costs one send that IO answers REJECTED while a false negative loses a
//!   citizen. Such entries are counted ([`SyncStats::conflicts`]).
//! - 429s wait for the budget's pause and are retried; 5xx, timeouts and dropped connections are
//!   retried with jittered back-off up to [`DEFAULT_MAX_ATTEMPTS`]; then the sync stops with an
//!   error naming the day. A day is never skipped. 404 "Data not available yet" (the day is
//!   published at 00:00 UTC of the next) ends the sync there, normally.
//! - Every applied day goes to the store's journal (group commit: one flush per batch of days),
//!   so a crash resumes after the last journaled day. After a sync the set is written as a
//!   snapshot ([`snapshot`]) and the journal keeps only the days' counts.
//!
//! The feed merges IO-wide sign-ups and deletions with this service's opt-ins and opt-outs: it is
//! a strong hint, not the truth; REJECTED is still handled downstream.

pub mod set;
pub mod snapshot;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use futures::StreamExt;
use rand::Rng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::io_api::{FeedDay, IoClient, IoError};
use crate::rate::RateBudget;
use crate::store::{FeedDayRecord, Store, StoreError, FEED_KEY_LEN};

pub use set::{Key, Published, SharedSubscribers, SubscriberSet};

/// Days fetched at once.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// Attempts for one day on 5xx / timeout / connection errors before the sync stops.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 8;
/// 429s tolerated for one day (each waits for the budget's pause) before the sync stops.
pub const MAX_THROTTLED_PER_DAY: u32 = 1000;
/// First back-off after a failed day.
pub const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Longest back-off.
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Days journaled per group commit.
pub const JOURNAL_BATCH_DAYS: usize = 32;
/// Keys journaled per group commit (whichever comes first).
pub const JOURNAL_BATCH_KEYS: usize = 262_144;
/// During a long sync, a new version is published to readers (an O(n) merge) once this many
/// changes wait, or an eighth of the set, whichever is larger.
pub const PUBLISH_MIN_CHANGES: usize = 1 << 20;
/// During a long sync, a snapshot is written (and the journal pruned) once this many keys were
/// journaled since the last one.
pub const SNAPSHOT_EVERY_KEYS: usize = 16 << 20;
/// A set older than this (last day applied vs. yesterday) is not used to filter a job.
pub const DEFAULT_MAX_AGE_DAYS: u32 = 2;
/// The store's metadata entry of the feed.
const META: &str = "feed";

/// First day of the subscriptions feed.
pub fn feed_epoch() -> NaiveDate {
    NaiveDate::from_ymd_opt(2020, 3, 24).expect("valid date")
}

fn day_number(date: NaiveDate) -> u32 {
    (date - feed_epoch()).num_days().max(0) as u32
}

fn date_of(day: u32) -> NaiveDate {
    feed_epoch() + chrono::Days::new(u64::from(day))
}

/// The last complete UTC day by `clock`: yesterday.
pub fn last_complete_day(clock: &Clock) -> NaiveDate {
    clock.today() - chrono::Days::new(1)
}

/// Errors of the feed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FeedError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The snapshot file is unusable (it is then rebuilt, never trusted).
    #[error("subscriber snapshot {path}: {reason}")]
    Snapshot {
        /// File.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A day could not be fetched: the sync stopped there (days before it are kept).
    #[error("feed day {date}: {source} (after {attempts} attempts); the sync stopped here and resumes from this day")]
    Day {
        /// The day.
        date: NaiveDate,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        source: IoError,
    },
    /// IO refuses this service the feed (401/403).
    #[error("IO refuses the subscriptions feed to this service ({0}); the feed needs the 'Subscription feed' enablement, use filter = \"profile\" otherwise")]
    NoAccess(String),
    /// A date before the feed's first day or after the last complete one.
    #[error("{0}")]
    BadRange(String),
    /// A background task failed.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Feed settings.
#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Snapshot file.
    pub snapshot_path: PathBuf,
    /// Days fetched at once.
    pub concurrency: usize,
    /// Attempts per day on 5xx / timeouts.
    pub max_attempts: u32,
    /// Oldest set (days behind yesterday) a job may filter with.
    pub max_age_days: u32,
    /// What "yesterday" is (the last day a sync fetches).
    pub clock: Clock,
}

impl FeedSettings {
    /// Defaults, with the snapshot at `snapshot_path`.
    pub fn new(snapshot_path: PathBuf) -> FeedSettings {
        FeedSettings {
            snapshot_path,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_age_days: DEFAULT_MAX_AGE_DAYS,
            clock: Clock::System,
        }
    }
}

/// What the store remembers of the snapshot, to tie the file to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct FeedMeta {
    /// Last day the snapshot includes.
    snapshot_through: Option<u32>,
    /// Its CRC.
    snapshot_crc: u32,
}

/// What [`Feed::open`] found.
#[derive(Debug, Clone, Default)]
pub struct OpenReport {
    /// Subscribers loaded.
    pub subscribers: usize,
    /// Last day applied.
    pub through: Option<NaiveDate>,
    /// Loaded from a snapshot.
    pub from_snapshot: bool,
    /// Journal days replayed on top of it.
    pub replayed_days: u32,
    /// Why a snapshot was refused (then the set is rebuilt).
    pub snapshot_refused: Option<String>,
    /// Everything had to be dropped: the next sync downloads the whole feed again.
    pub rebuilt: bool,
}

/// Progress of a sync, for a progress bar or log lines.
#[derive(Debug, Clone, Copy)]
pub struct SyncProgress {
    /// Days applied in this sync.
    pub days_done: u32,
    /// Days this sync means to apply.
    pub days_total: u32,
    /// Hashes applied in this sync.
    pub hashes: u64,
    /// Last day applied.
    pub through: Option<NaiveDate>,
}

/// What a sync did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SyncStats {
    /// First day fetched.
    pub first_day: Option<NaiveDate>,
    /// Last day applied (the set's day now).
    pub through: Option<NaiveDate>,
    /// Days fetched and applied in this sync.
    pub days_applied: u32,
    /// Days in the journal overall.
    pub days_total: u32,
    /// Subscriptions applied.
    pub subscriptions: u64,
    /// Unsubscriptions applied.
    pub unsubscriptions: u64,
    /// Hashes in both lists of one day (kept as subscribed).
    pub conflicts: u64,
    /// Entries that are not a SHA-256 hex digest (they match nobody; skipped with a warning).
    pub malformed: u64,
    /// 429 answers waited out.
    pub throttled: u64,
    /// 5xx / timeouts / dropped connections retried.
    pub retried: u64,
    /// Subscribers in the set now.
    pub subscribers: usize,
    /// Memory of the set.
    pub set_bytes: usize,
    /// Snapshot file size.
    pub snapshot_bytes: u64,
    /// Store size on disk.
    pub store_bytes: u64,
    /// Time taken.
    pub seconds: f64,
    /// IO had not published this day yet: the sync ended before it.
    pub not_published_from: Option<NaiveDate>,
    /// Stopped by shutdown; the next sync resumes.
    pub interrupted: bool,
}

/// What a sync should cover.
#[derive(Debug, Clone, Default)]
pub struct SyncOptions {
    /// Re-fetch and re-apply from this day on, on top of the current set.
    pub from: Option<NaiveDate>,
    /// Drop everything and download the whole feed again.
    pub full: bool,
    /// Last day to fetch (default: yesterday, UTC).
    pub until: Option<NaiveDate>,
}

/// The working copy a sync extends.
struct Working {
    base: Arc<SubscriberSet>,
    /// Last day in `base` + `pending`.
    through: Option<u32>,
    /// Changes not merged into `base` yet, in the order they happened.
    pending: Vec<(Key, bool)>,
    /// Keys journaled since the last snapshot.
    journaled_keys: usize,
}

/// The feed: the set readers share, the store's journal, the snapshot.
pub struct Feed {
    store: Store,
    settings: FeedSettings,
    shared: SharedSubscribers,
    working: tokio::sync::Mutex<Working>,
}

impl std::fmt::Debug for Feed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Feed").field("set", &self.shared).finish()
    }
}

/// One fetched day.
struct Fetched {
    day: u32,
    subscriptions: Vec<Key>,
    unsubscriptions: Vec<Key>,
    malformed: u64,
    throttled: u64,
    retried: u64,
}

enum FetchOutcome {
    Day(Fetched),
    NotPublished(u32),
}

impl Feed {
    /// Opens the feed: loads the snapshot when it passes every check, replays the journal days
    /// after it, and publishes the result. A refused snapshot is rebuilt from the journal, or,
    /// when the journal no longer holds the days it covered, by downloading the feed again at
    /// the next sync (everything is dropped so nothing half-trusted stays).
    pub async fn open(
        store: Store,
        settings: FeedSettings,
    ) -> Result<(Feed, OpenReport), FeedError> {
        let path = settings.snapshot_path.clone();
        let meta: Option<FeedMeta> = store
            .meta_get(META)?
            .and_then(|v| serde_json::from_slice(&v).ok());
        let mut report = OpenReport::default();
        let read = tokio::task::spawn_blocking(move || snapshot::read(&path))
            .await
            .map_err(|e| FeedError::Internal(e.to_string()))?;
        let mut base = SubscriberSet::default();
        let mut through: Option<u32> = None;
        match read {
            Ok(Some(snap)) => {
                let snap_day = snap.through.map(day_number);
                let expected = meta.and_then(|m| m.snapshot_through);
                if expected.is_some() && snap_day < expected {
                    report.snapshot_refused = Some(format!(
                        "it stops at day {:?} but the store expects day {:?}",
                        snap.through,
                        expected.map(date_of)
                    ));
                } else if expected.is_some()
                    && snap_day == expected
                    && meta.is_some_and(|m| m.snapshot_crc != snap.crc)
                {
                    // Same day, other contents: not the snapshot this store wrote (a newer one
                    // written just before a crash is accepted: its own CRC vouches for it).
                    report.snapshot_refused =
                        Some("it is not the snapshot this store recorded (CRC differs)".to_owned());
                } else {
                    base = snap.set;
                    through = snap_day;
                    report.from_snapshot = true;
                }
            }
            Ok(None) => {
                if meta.is_some_and(|m| m.snapshot_through.is_some()) {
                    report.snapshot_refused = Some("the file is missing".to_owned());
                }
            }
            Err(e) => report.snapshot_refused = Some(e.to_string()),
        }
        if let Some(reason) = &report.snapshot_refused {
            warn!(reason = %reason, "Subscriber snapshot refused; rebuilding the set.");
        }
        // Replay the journal after the snapshot.
        let mut pending = Vec::new();
        let mut needs_rebuild = false;
        let mut gap_from = None;
        let mut replayed_keys = 0usize;
        for rec in store.feed_days_from(through.map_or(0, |d| d + 1)) {
            let rec = rec?;
            let next = through.map_or(0, |d| d + 1);
            if rec.pruned {
                needs_rebuild = true;
                break;
            }
            if rec.day != next {
                gap_from = Some(next);
                break;
            }
            push_day(&mut pending, &rec);
            replayed_keys += rec.subscriptions.len() + rec.unsubscriptions.len();
            through = Some(rec.day);
            report.replayed_days += 1;
        }
        if needs_rebuild {
            warn!("The feed journal no longer holds the days the refused snapshot covered; the next sync downloads the whole feed again.");
            store.remove_feed_days_from(0).await?;
            store.meta_put(
                META,
                &serde_json::to_vec(&FeedMeta::default()).expect("serializes"),
            )?;
            store.flush().await?;
            snapshot::remove(&settings.snapshot_path);
            base = SubscriberSet::default();
            pending.clear();
            through = None;
            report.rebuilt = true;
            report.from_snapshot = false;
            report.replayed_days = 0;
            replayed_keys = 0;
        } else if let Some(from) = gap_from {
            // Days after a hole cannot be applied in order: fetch them again.
            store.remove_feed_days_from(from).await?;
        }
        let base = Arc::new(base.apply(pending));
        report.subscribers = base.len();
        report.through = through.map(date_of);
        let shared = SharedSubscribers::new(Published {
            set: base.clone(),
            through: through.map(date_of),
        });
        metrics::gauge!(crate::metrics::FEED_SUBSCRIBERS).set(base.len() as f64);
        if let Some(d) = through {
            metrics::gauge!(crate::metrics::FEED_LAST_SYNCED_DAY).set(day_timestamp(d));
        }
        let feed = Feed {
            store,
            settings,
            shared,
            working: tokio::sync::Mutex::new(Working {
                base,
                through,
                pending: Vec::new(),
                journaled_keys: replayed_keys,
            }),
        };
        Ok((feed, report))
    }

    /// The set readers share.
    pub fn subscribers(&self) -> SharedSubscribers {
        self.shared.clone()
    }

    /// The last complete UTC day by this feed's clock: the last day a sync fetches.
    pub fn last_complete_day(&self) -> NaiveDate {
        last_complete_day(&self.settings.clock)
    }

    /// Whether the set is recent enough to filter a job (its last day is at most
    /// `max_age_days` behind yesterday).
    pub fn freshness(&self) -> Freshness {
        let p = self.shared.load();
        match p.through {
            None => Freshness::NeverSynced,
            Some(d) => {
                let behind = (self.last_complete_day() - d).num_days().max(0) as u32;
                if behind <= self.settings.max_age_days {
                    Freshness::Fresh { through: d }
                } else {
                    Freshness::Stale {
                        through: d,
                        days_behind: behind,
                    }
                }
            }
        }
    }

    /// Brings the set up to date: fetches the days after the last applied one (or the range
    /// `options` asks for), applies them in date order, journals them, publishes the new set,
    /// and writes the snapshot. Stops cleanly on `shutdown` (what was applied is kept).
    pub async fn sync(
        &self,
        client: &IoClient,
        budget: &RateBudget,
        options: SyncOptions,
        progress: &(dyn Fn(&SyncProgress) + Sync),
        shutdown: &CancellationToken,
    ) -> Result<SyncStats, FeedError> {
        let started = Instant::now();
        let mut w = self.working.lock().await;
        let mut stats = SyncStats::default();
        let until = options.until.unwrap_or_else(|| self.last_complete_day());
        if until < feed_epoch() {
            return Err(FeedError::BadRange(format!(
                "--until {until} is before the feed's first day {}",
                feed_epoch()
            )));
        }
        if options.full {
            info!("Full feed sync: dropping the set, the journal and the snapshot.");
            self.store.remove_feed_days_from(0).await?;
            self.write_meta(FeedMeta::default()).await?;
            snapshot::remove(&self.settings.snapshot_path);
            w.base = Arc::new(SubscriberSet::default());
            w.pending.clear();
            w.through = None;
            w.journaled_keys = 0;
        }
        let mut start = w.through.map_or(0, |d| d + 1);
        if let Some(from) = options.from {
            if from < feed_epoch() {
                return Err(FeedError::BadRange(format!(
                    "--from {from} is before the feed's first day {}",
                    feed_epoch()
                )));
            }
            // Re-applying a suffix of days in order on top of the current set is exact for
            // every hash those days mention (the last event wins) and leaves the others alone.
            start = start.min(day_number(from));
            self.store.remove_feed_days_from(day_number(from)).await?;
        }
        let end = day_number(until);
        stats.first_day = Some(date_of(start));
        if start > end {
            stats.first_day = None;
            return self.finish(&mut w, stats, started, false).await;
        }
        let total = end - start + 1;
        info!(
            from = %date_of(start),
            until = %until,
            days = total,
            "Syncing the subscriptions feed."
        );
        let concurrency = self.settings.concurrency.max(1);
        let max_attempts = self.settings.max_attempts.max(1);
        let mut days = InOrder::new(start, end, concurrency, move |day| {
            Box::pin(fetch_day(client, budget, day, max_attempts))
        });
        let mut batch: Vec<FeedDayRecord> = Vec::new();
        let mut batch_keys = 0usize;
        let mut failure = None;
        loop {
            let next = tokio::select! {
                biased;
                () = shutdown.cancelled() => { stats.interrupted = true; break; }
                next = days.next() => next,
            };
            let fetched = match next {
                None => break,
                Some(Ok(FetchOutcome::Day(f))) => f,
                Some(Ok(FetchOutcome::NotPublished(day))) => {
                    stats.not_published_from = Some(date_of(day));
                    info!(day = %date_of(day), "IO has not published this day yet; the sync ends before it.");
                    break;
                }
                Some(Err(e)) => {
                    failure = Some(e);
                    break;
                }
            };
            let rec = to_record(&fetched, &mut stats);
            push_day(&mut w.pending, &rec);
            w.through = Some(rec.day);
            stats.days_applied += 1;
            stats.throttled += fetched.throttled;
            stats.retried += fetched.retried;
            stats.malformed += fetched.malformed;
            if fetched.malformed > 0 {
                warn!(day = %date_of(rec.day), entries = fetched.malformed, "Feed entries that are not SHA-256 hex digests were skipped (they match nobody).");
            }
            batch_keys += rec.subscriptions.len() + rec.unsubscriptions.len();
            batch.push(rec);
            if batch.len() >= JOURNAL_BATCH_DAYS || batch_keys >= JOURNAL_BATCH_KEYS {
                self.store.put_feed_days(&batch).await?;
                w.journaled_keys += batch_keys;
                batch.clear();
                batch_keys = 0;
                let threshold = PUBLISH_MIN_CHANGES.max(w.base.len() / 8);
                if w.pending.len() >= threshold {
                    self.publish(&mut w);
                }
                if w.journaled_keys >= SNAPSHOT_EVERY_KEYS {
                    self.snapshot(&mut w).await?;
                }
            }
            progress(&SyncProgress {
                days_done: stats.days_applied,
                days_total: total,
                hashes: stats.subscriptions + stats.unsubscriptions,
                through: w.through.map(date_of),
            });
        }
        drop(days);
        if !batch.is_empty() {
            self.store.put_feed_days(&batch).await?;
            w.journaled_keys += batch_keys;
        }
        let done = self.finish(&mut w, stats, started, true).await;
        match failure {
            Some(e) => Err(e),
            None => done,
        }
    }

    async fn finish(
        &self,
        w: &mut Working,
        mut stats: SyncStats,
        started: Instant,
        changed: bool,
    ) -> Result<SyncStats, FeedError> {
        if changed {
            self.publish(w);
            self.snapshot(w).await?;
        }
        stats.through = w.through.map(date_of);
        stats.days_total = w.through.map_or(0, |d| d + 1);
        stats.subscribers = w.base.len();
        stats.set_bytes = w.base.heap_bytes();
        stats.snapshot_bytes =
            std::fs::metadata(&self.settings.snapshot_path).map_or(0, |m| m.len());
        stats.store_bytes = self.store.size_on_disk()?;
        stats.seconds = started.elapsed().as_secs_f64();
        Ok(stats)
    }

    /// Merges the pending changes and publishes the new version to readers.
    fn publish(&self, w: &mut Working) {
        let changes = std::mem::take(&mut w.pending);
        if !changes.is_empty() {
            w.base = Arc::new(w.base.apply(changes));
        }
        self.shared.publish(Published {
            set: w.base.clone(),
            through: w.through.map(date_of),
        });
        metrics::gauge!(crate::metrics::FEED_SUBSCRIBERS).set(w.base.len() as f64);
        if let Some(d) = w.through {
            metrics::gauge!(crate::metrics::FEED_LAST_SYNCED_DAY).set(day_timestamp(d));
        }
    }

    /// Writes the snapshot of the published set, records it in the store, then prunes the
    /// journal days it covers. Each step is durable before the next.
    async fn snapshot(&self, w: &mut Working) -> Result<(), FeedError> {
        self.publish(w);
        let set = w.base.clone();
        let through = w.through;
        let path = self.settings.snapshot_path.clone();
        let crc =
            tokio::task::spawn_blocking(move || snapshot::write(&path, &set, through.map(date_of)))
                .await
                .map_err(|e| FeedError::Internal(e.to_string()))??;
        self.write_meta(FeedMeta {
            snapshot_through: through,
            snapshot_crc: crc,
        })
        .await?;
        if let Some(d) = through {
            self.store.prune_feed_days(d).await?;
        }
        w.journaled_keys = 0;
        Ok(())
    }

    async fn write_meta(&self, meta: FeedMeta) -> Result<(), FeedError> {
        self.store.meta_put(
            META,
            &serde_json::to_vec(&meta).expect("FeedMeta serializes"),
        )?;
        self.store.flush().await?;
        Ok(())
    }
}

/// How recent the set is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Nothing synced yet.
    NeverSynced,
    /// Recent enough.
    Fresh {
        /// Last day applied.
        through: NaiveDate,
    },
    /// Too old to filter a job.
    Stale {
        /// Last day applied.
        through: NaiveDate,
        /// Days behind yesterday.
        days_behind: u32,
    },
}

fn day_timestamp(day: u32) -> f64 {
    date_of(day)
        .and_hms_opt(0, 0, 0)
        .expect("midnight")
        .and_utc()
        .timestamp() as f64
}

/// A day's changes in application order: unsubscriptions first, then subscriptions, so a
/// hash in both lists ends subscribed (see the module doc).
fn push_day(pending: &mut Vec<(Key, bool)>, rec: &FeedDayRecord) {
    pending.reserve(rec.subscriptions.len() + rec.unsubscriptions.len());
    for k in &rec.unsubscriptions {
        pending.push((Key::from_bytes(*k), false));
    }
    for k in &rec.subscriptions {
        pending.push((Key::from_bytes(*k), true));
    }
}

fn to_record(f: &Fetched, stats: &mut SyncStats) -> FeedDayRecord {
    let subs: std::collections::HashSet<Key> = f.subscriptions.iter().copied().collect();
    stats.conflicts += f
        .unsubscriptions
        .iter()
        .filter(|k| subs.contains(k))
        .count() as u64;
    stats.subscriptions += f.subscriptions.len() as u64;
    stats.unsubscriptions += f.unsubscriptions.len() as u64;
    let bytes =
        |keys: &[Key]| -> Vec<[u8; FEED_KEY_LEN]> { keys.iter().map(|k| k.to_bytes()).collect() };
    FeedDayRecord::new(f.day, bytes(&f.subscriptions), bytes(&f.unsubscriptions))
}

/// Days ahead of the next one to apply that may be fetched (or held) at once: a day in back-off
/// does not hold the others up, and memory stays bounded.
pub const REORDER_WINDOW: u32 = 256;

type DayFuture<'a> = futures::future::BoxFuture<'a, Result<FetchOutcome, FeedError>>;

/// Fetches days `start..=end` with bounded concurrency and hands them back strictly in date
/// order. After a day that is not published or failed, no later day is started.
struct InOrder<'a> {
    next_issue: u32,
    next_yield: u32,
    end: u32,
    concurrency: usize,
    /// No day after this one is started.
    last_to_issue: u32,
    in_flight: futures::stream::FuturesUnordered<
        futures::future::BoxFuture<'a, (u32, Result<FetchOutcome, FeedError>)>,
    >,
    done: std::collections::BTreeMap<u32, Result<FetchOutcome, FeedError>>,
    make: Box<dyn Fn(u32) -> DayFuture<'a> + Send + 'a>,
}

impl<'a> InOrder<'a> {
    fn new(
        start: u32,
        end: u32,
        concurrency: usize,
        make: impl Fn(u32) -> DayFuture<'a> + Send + 'a,
    ) -> InOrder<'a> {
        InOrder {
            next_issue: start,
            next_yield: start,
            end,
            concurrency,
            last_to_issue: end,
            in_flight: futures::stream::FuturesUnordered::new(),
            done: std::collections::BTreeMap::new(),
            make: Box::new(make),
        }
    }

    /// The next day in date order (cancel-safe: the state lives in `self`).
    async fn next(&mut self) -> Option<Result<FetchOutcome, FeedError>> {
        loop {
            if let Some(r) = self.done.remove(&self.next_yield) {
                self.next_yield += 1;
                return Some(r);
            }
            if self.next_yield > self.end {
                return None;
            }
            while self.in_flight.len() < self.concurrency
                && self.next_issue <= self.last_to_issue
                && self.next_issue < self.next_yield.saturating_add(REORDER_WINDOW)
            {
                let day = self.next_issue;
                let fut = (self.make)(day);
                self.in_flight
                    .push(Box::pin(async move { (day, fut.await) }));
                self.next_issue += 1;
            }
            let (day, result) = self.in_flight.next().await?;
            if !matches!(result, Ok(FetchOutcome::Day(_))) {
                self.last_to_issue = self.last_to_issue.min(day);
            }
            self.done.insert(day, result);
        }
    }
}

/// Fetches one day under the budget, retrying what is worth retrying.
async fn fetch_day(
    client: &IoClient,
    budget: &RateBudget,
    day: u32,
    max_attempts: u32,
) -> Result<FetchOutcome, FeedError> {
    let date = date_of(day);
    let mut failures = 0u32;
    let mut throttled = 0u32;
    loop {
        let permit = budget.acquire().await;
        let result = client.get_subscriptions_feed(date).await;
        drop(permit);
        match result {
            Ok(FeedDay::Available(feed)) => {
                let mut malformed = 0u64;
                let mut parse = |hashes: &[String]| -> Vec<Key> {
                    hashes
                        .iter()
                        .filter_map(|h| {
                            let k = Key::from_hex(h);
                            malformed += u64::from(k.is_none());
                            k
                        })
                        .collect()
                };
                let subscriptions = parse(&feed.subscriptions);
                let unsubscriptions = parse(&feed.unsubscriptions);
                return Ok(FetchOutcome::Day(Fetched {
                    day,
                    subscriptions,
                    unsubscriptions,
                    malformed,
                    throttled: u64::from(throttled),
                    retried: u64::from(failures),
                }));
            }
            Ok(FeedDay::NotAvailableYet) => return Ok(FetchOutcome::NotPublished(day)),
            // The budget already pauses everyone for the retry hint.
            Err(e) if e.is_back_pressure() && throttled < MAX_THROTTLED_PER_DAY => {
                throttled += 1;
            }
            Err(e) if e.is_retryable() => {
                failures += 1;
                if failures >= max_attempts {
                    return Err(FeedError::Day {
                        date,
                        attempts: failures,
                        source: e,
                    });
                }
                let wait = backoff(failures);
                warn!(day = %date, attempt = failures, error = %e, wait_ms = wait.as_millis() as u64, "Feed day failed; retrying.");
                tokio::time::sleep(wait).await;
            }
            Err(e @ (IoError::Unauthorized { .. } | IoError::Forbidden { .. })) => {
                return Err(FeedError::NoAccess(e.to_string()));
            }
            Err(e) => {
                return Err(FeedError::Day {
                    date,
                    attempts: failures + 1,
                    source: e,
                })
            }
        }
    }
}

/// Exponential back-off with full jitter.
fn backoff(attempt: u32) -> Duration {
    let cap = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_MAX);
    let ms = rand::thread_rng().gen_range(cap.as_millis() as u64 / 2..=cap.as_millis() as u64);
    Duration::from_millis(ms.max(1))
}

#[cfg(test)]
mod tests;
