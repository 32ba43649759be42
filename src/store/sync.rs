//! Durable syncs and the store's format marker.
//!
//! sled 0.34 ends a flush with `sync_file_range`, which writes the log's pages but neither
//! flushes the drive's cache nor the file's metadata (its size when the log grew): after a power
//! cut a "flushed" `Sending` intent can vanish. [`StoreIo::sync_files`] follows every flush of
//! [`super::Store::flush`] with `fdatasync` of sled's log file (fsync(2) acts on the file, from
//! any descriptor), so a flush that returns is durable against power loss, not just `kill -9`.
//! The directories sled created are synced once at open.
//!
//! Every sync is counted here ([`StoreIoStats`]), and the counts are kept in the store itself
//! (`m/store/io`, written with the sync they count) so `corriere figures` can read what a job
//! process did. [`super::StoreOptions::sync_delay`] makes each sync take longer (a slow cloud
//! volume, for benches); a [`SyncObserver`] sees which `Sending` intents each sync made durable
//! (tests).

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::JobId;

/// The store's format, kept in `m/store/format`. 1: every store written before the marker
/// existed (same layout: read as is, the marker is added at open); 2: this release. A store
/// whose marker is newer is refused ([`super::StoreError::Version`]), never misread.
pub const STORE_FORMAT: u32 = 2;

pub(super) const FORMAT_KEY: &[u8] = b"m/store/format";
pub(super) const IO_KEY: &[u8] = b"m/store/io";

/// What the store did to the disk: counted in the store layer, kept across processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreIoStats {
    /// Durable syncs: each a sled flush followed by `fdatasync` of its log file.
    pub syncs: u64,
    /// Batches applied (group commits, with or without a sync).
    pub commits: u64,
}

impl StoreIoStats {
    pub(super) fn encode(&self) -> [u8; 16] {
        let mut v = [0u8; 16];
        v[..8].copy_from_slice(&self.syncs.to_be_bytes());
        v[8..].copy_from_slice(&self.commits.to_be_bytes());
        v
    }

    pub(super) fn decode(v: &[u8]) -> Option<StoreIoStats> {
        Some(StoreIoStats {
            syncs: u64::from_be_bytes(v.get(..8)?.try_into().ok()?),
            commits: u64::from_be_bytes(v.get(8..16)?.try_into().ok()?),
        })
    }
}

/// Called after each durable sync returns, with the (job, line) of every `Sending` intent that
/// sync made durable (tests: a POST must never reach IO before its line was reported here).
pub type SyncObserver = Arc<dyn Fn(&[(JobId, u64)]) + Send + Sync>;

/// The store's side of durability: sled's files, the counters, the test and bench knobs.
pub(super) struct StoreIo {
    /// sled's log file (`<store>/db`); None for a temporary store (sled does not sync those).
    log: Option<File>,
    /// Added to every sync (a slow volume; 0 normally).
    delay: Duration,
    /// Counts of earlier processes, read at open.
    base: StoreIoStats,
    syncs: AtomicU64,
    commits: AtomicU64,
    observing: AtomicBool,
    observer: Mutex<Option<SyncObserver>>,
    /// `Sending` intents applied since the last sync began (only while observed).
    sending: Mutex<Vec<(JobId, u64)>>,
}

impl StoreIo {
    /// Opens sled's log file under `dir` and syncs the directories sled created there.
    pub(super) fn open(dir: Option<&Path>, delay: Duration) -> std::io::Result<StoreIo> {
        let log = match dir {
            None => None,
            Some(dir) => {
                let log = File::open(dir.join("db"))?;
                log.sync_all()?;
                for d in [dir.join("blobs"), dir.to_path_buf()] {
                    if d.is_dir() {
                        File::open(&d)?.sync_all()?;
                    }
                }
                if let Some(parent) = dir.parent().filter(|p| p.is_dir()) {
                    File::open(parent)?.sync_all()?;
                }
                Some(log)
            }
        };
        Ok(StoreIo {
            log,
            delay,
            base: StoreIoStats::default(),
            syncs: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            observing: AtomicBool::new(false),
            observer: Mutex::new(None),
            sending: Mutex::new(Vec::new()),
        })
    }

    pub(super) fn with_base(mut self, base: StoreIoStats) -> StoreIo {
        self.base = base;
        self
    }

    /// Totals, this process's counts added to the stored ones.
    pub(super) fn stats(&self) -> StoreIoStats {
        StoreIoStats {
            syncs: self.base.syncs + self.syncs.load(Ordering::Relaxed),
            commits: self.base.commits + self.commits.load(Ordering::Relaxed),
        }
    }

    pub(super) fn count_commit(&self) {
        self.commits.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a sync about to start; returns the totals including it.
    pub(super) fn count_sync(&self) -> StoreIoStats {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.stats()
    }

    pub(super) fn observing(&self) -> bool {
        self.observing.load(Ordering::Acquire)
    }

    pub(super) fn note_sending(&self, lines: impl Iterator<Item = (JobId, u64)>) {
        self.sending.lock().expect("sending lines").extend(lines);
    }

    /// The `Sending` intents applied so far (taken before a flush starts: that flush covers them).
    pub(super) fn take_sending(&self) -> Vec<(JobId, u64)> {
        if !self.observing() {
            return Vec::new();
        }
        std::mem::take(&mut *self.sending.lock().expect("sending lines"))
    }

    pub(super) fn set_observer(&self, observer: Option<SyncObserver>) {
        self.observing.store(observer.is_some(), Ordering::Release);
        *self.observer.lock().expect("observer") = observer;
    }

    /// The durable part of a sync, after sled's flush: `fdatasync` of the log file. Blocking.
    pub(super) fn sync_files(&self) -> std::io::Result<()> {
        if let Some(log) = &self.log {
            log.sync_data()?;
        }
        Ok(())
    }

    /// What every sync takes on top (the slow-volume knob).
    pub(super) fn delay(&self) -> Duration {
        self.delay
    }

    /// Tells the observer which intents the sync that just returned made durable.
    pub(super) fn synced(&self, lines: &[(JobId, u64)]) {
        if !self.observing() {
            return;
        }
        let observer = self.observer.lock().expect("observer").clone();
        if let Some(observer) = observer {
            observer(lines);
        }
    }
}
