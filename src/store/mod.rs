//! The store, the source of truth: [`Store`] over one `sled` tree, the domain's
//! [`RecipientRecord`] / [`RecipientState`] in a compact versioned binary encoding (`codec`), and [`WriteBatch`] for group
//! commit (one atomic `sled::Batch`, then one flush). The only module that calls sled.
//!
//! # Keys (one tree, so one batch is atomic)
//! | key                               | value                              |
//! |-----------------------------------|------------------------------------|
//! | `j/<job>`                         | job metadata (`JobMeta`, JSON; `job_meta.rs`) |
//! | `i/<job>`                         | ingest progress: line u64, done u8 |
//! | `r/<job>/<line u64 BE>`           | recipient record                   |
//! | `d/<job>/<fiscal code 16 bytes>`  | first line (u64) + values CRC (u32) |
//! | `c/<campaign 16 bytes>/<fiscal code 16 bytes>` | campaign ledger: line u64, values CRC u32, job id |
//! | `m/<name>`                        | small metadata of other modules    |
//! | `f/<day u32 BE>`                  | subscriptions feed journal ([`FeedDayRecord`]) |
//!
//! The campaign ledger (`ledger.rs`: [`CampaignKey`], [`Store::claim_recipient`] at ingest,
//! [`Store::claim_for_send`] before each send) is store-wide: which job holds each citizen of a
//! campaign; every decision on it is atomic under the store's ledger lock.
//!
//! Big-endian line numbers keep sled's key order equal to line order. The poll queue is not
//! here: it is derived from the `Submitted` records (`dispatch::poll_queue`).

mod codec;
mod feed;
mod job_meta;
mod ledger;
mod sync;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;

use crate::model::{Outcome, RecipientRecord, RecipientState};

pub use feed::{FeedDayRecord, FEED_KEY_LEN};
pub use ledger::{CampaignKey, Ledger, LedgerEntry, RecipientClaim, SendClaim, SendingGuard};
pub use sync::{StoreIoStats, SyncObserver, STORE_FORMAT};

/// Errors of the store. Never contains personal data (keys are shown by job and line).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed.
    #[error("store {operation} failed: {source}")]
    Sled {
        /// What we were doing.
        operation: &'static str,
        /// sled's error.
        source: sled::Error,
    },
    /// Another process holds the store (sled's file lock).
    #[error("the store {path} is in use by another process (another corriere running?)")]
    Locked {
        /// Store directory.
        path: String,
    },
    /// The store was written in a format this release does not read (a newer release wrote it).
    #[error("the store {path} has store format {found}, written by a newer corriere; this release reads store formats 1 to {supported}: run the newer release, or point store.path at another directory")]
    Version {
        /// Store directory.
        path: String,
        /// The format found in the store.
        found: u32,
        /// The newest format this release reads (and writes).
        supported: u32,
    },
    /// The durable sync of sled's files (fdatasync) failed.
    #[error("store sync failed: {0}")]
    Sync(std::io::Error),
    /// A job's metadata does not decode ([`JobMeta::load`](crate::model::job::JobMeta::load)).
    #[error("corrupt store data: job {job} metadata: {reason}")]
    JobMeta {
        /// The job.
        job: String,
        /// What is wrong.
        reason: String,
    },
    /// A campaign ledger entry an ingest batch decided on changed before the batch committed
    /// (a send of another job claimed the citizen meanwhile): nothing was written; read the
    /// batch again.
    #[error("the campaign ledger changed while an ingest batch was prepared")]
    LedgerConflict,
    /// A send of this job is in flight: it cannot be deleted now.
    #[error("job {0} is sending: stop it before deleting it")]
    JobBusy(String),
    /// Stored bytes do not decode: never trusted.
    #[error("corrupt store entry {key}: {reason}")]
    Corrupt {
        /// Which entry (job/line, never a fiscal code).
        key: String,
        /// What is wrong.
        reason: String,
    },
}

fn sled_err(operation: &'static str) -> impl FnOnce(sled::Error) -> StoreError {
    move |source| StoreError::Sled { operation, source }
}

/// A job's id (hex, derived from its inputs by the job module).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct JobId(String);

impl JobId {
    /// Wraps an id. Ids are short ASCII strings without `/`.
    pub fn new(id: &str) -> JobId {
        JobId(id.replace('/', "_"))
    }
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Result of claiming a fiscal code for a line of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// First time this code is seen in the job.
    New,
    /// This line claimed it before (an interrupted ingest running again).
    SameLine,
    /// An earlier line has the same code.
    Duplicate {
        /// That line.
        first_line: u64,
    },
}

/// The sled database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    tree: sled::Tree,
    /// Durable syncs: sled's files, the counters, the slow-volume knob.
    io: std::sync::Arc<sync::StoreIo>,
    /// Ingests take turns ([`Store::ingest_turn`]).
    ingest: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// The campaign ledger's lock and the sends in flight (`ledger.rs`).
    ledger: std::sync::Arc<std::sync::Mutex<ledger::LedgerState>>,
    /// Tests: fail the next commit that records a `Submitted` id.
    #[cfg(test)]
    fail_next_submitted: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Tests: the n-th next commit with ledger claims is refused as a conflict (0: none).
    #[cfg(test)]
    ledger_conflict_in: std::sync::Arc<std::sync::atomic::AtomicU32>,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Store")
    }
}

fn key(prefix: u8, job: &JobId, rest: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(3 + job.0.len() + rest.len());
    k.push(prefix);
    k.push(b'/');
    k.extend_from_slice(job.0.as_bytes());
    k.push(b'/');
    k.extend_from_slice(rest);
    k
}

fn record_key(job: &JobId, line: u64) -> Vec<u8> {
    key(b'r', job, &line.to_be_bytes())
}

fn be_u64(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(u64::from_be_bytes)
}

/// A key and its new value.
type KeyValue = (Vec<u8>, Vec<u8>);

enum Op {
    Put(Vec<u8>, Vec<u8>),
    SetState {
        job: JobId,
        line: u64,
        state: RecipientState,
    },
}

/// Transitions collected for one commit (group commit).
#[derive(Default)]
pub struct WriteBatch {
    ops: Vec<Op>,
    /// Fiscal codes claimed in this batch (not in the store until it commits): line, CRC.
    claims: HashMap<[u8; 16], (u64, u32)>,
    /// Campaign ledger entries this batch decided on, checked again at commit.
    ledger: Vec<ledger::LedgerExpect>,
    /// The ledger's epoch before this batch first read it.
    ledger_epoch: Option<u64>,
}

impl WriteBatch {
    /// Writes a whole record (ingest).
    pub fn put_recipient(&mut self, job: &JobId, record: &RecipientRecord) {
        self.ops
            .push(Op::Put(record_key(job, record.line), record.encode()));
    }

    /// Sets a recipient's state; its fiscal code and values stay.
    pub fn set_state(&mut self, job: &JobId, line: u64, state: RecipientState) {
        self.ops.push(Op::SetState {
            job: job.clone(),
            line,
            state,
        });
    }

    /// Records ingest progress in the same atomic batch as the rows it covers: the last line
    /// read, whether the file is complete, and the rows stored so far.
    pub fn set_ingest_progress(&mut self, job: &JobId, lines_done: u64, complete: bool, rows: u64) {
        let mut v = lines_done.to_be_bytes().to_vec();
        v.push(u8::from(complete));
        v.extend_from_slice(&rows.to_be_bytes());
        self.ops.push(Op::Put(key(b'i', job, b""), v));
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

impl Store {
    /// Opens (or creates) the store at `path`. sled holds an exclusive file lock; a process that
    /// just ended (or a handle just dropped, whose last flush still runs on sled's threads) may
    /// hold it a moment longer, so the lock is waited for up to [`LOCK_WAIT`].
    pub async fn open(path: &Path) -> Result<Store, StoreError> {
        Self::open_with(path, StoreOptions::default()).await
    }

    /// [`Store::open`] with tuning options.
    pub async fn open_with(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let deadline = tokio::time::Instant::now() + LOCK_WAIT;
        loop {
            match Self::open_once(path, options) {
                Err(StoreError::Sled { source, .. }) if is_lock_error(&source) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked {
                            path: path.display().to_string(),
                        });
                    }
                    tokio::time::sleep(LOCK_RETRY).await;
                }
                other => return other,
            }
        }
    }

    fn open_once(path: &Path, options: StoreOptions) -> Result<Store, StoreError> {
        let c = sled::Config::new()
            .path(path)
            // The dispatcher flushes explicitly at each group commit; background flushes
            // still bound what a crash of the OS could lose for metadata writes.
            .flush_every_ms(Some(1000))
            // sled counts its cache in on-disk (compressed) bytes and holds about ten times
            // that in memory; its default (1 GiB) grew a 1 M-recipient job to 550 MiB of RSS.
            .cache_capacity(options.cache_capacity)
            // (sled's `Mode` is a no-op in 0.34.) Compression: sled compresses every log write
            // with a new zstd context: ~40 % of the dispatcher's CPU, for ~2.6× less disk
            // (README, Performance).
            .use_compression(options.compression)
            .compression_factor(3);
        let db = c.open().map_err(sled_err("open"))?;
        let io = sync::StoreIo::open(Some(path), options.sync_delay).map_err(StoreError::Sync)?;
        Self::from_db(db, io, path)
    }

    /// A store in a temporary directory, deleted on drop (tests).
    pub fn temporary() -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .temporary(true)
            .use_compression(true)
            .open()
            .map_err(sled_err("open"))?;
        let io = sync::StoreIo::open(None, std::time::Duration::ZERO).map_err(StoreError::Sync)?;
        Self::from_db(db, io, Path::new("(temporary)"))
    }

    fn from_db(db: sled::Db, io: sync::StoreIo, path: &Path) -> Result<Store, StoreError> {
        let tree = db.open_tree("corriere").map_err(sled_err("open tree"))?;
        check_format(&tree, path)?;
        let base = tree
            .get(sync::IO_KEY)
            .map_err(sled_err("read store counters"))?
            .and_then(|v| StoreIoStats::decode(&v))
            .unwrap_or_default();
        Ok(Store {
            db,
            tree,
            io: std::sync::Arc::new(io.with_base(base)),
            ingest: Default::default(),
            ledger: Default::default(),
            #[cfg(test)]
            fail_next_submitted: Default::default(),
            #[cfg(test)]
            ledger_conflict_in: Default::default(),
        })
    }

    /// The store's syncs and commits so far (this process's and, from the store, earlier ones').
    pub fn io_stats(&self) -> StoreIoStats {
        self.io.stats()
    }

    /// Tests: `observer` is told, after each durable sync returns, which `Sending` intents it
    /// made durable (None removes it).
    pub fn set_sync_observer(&self, observer: Option<SyncObserver>) {
        self.io.set_observer(observer);
    }

    /// Waits for this process's turn to ingest: two ingests of one campaign must not both
    /// find a citizen unclaimed in the ledger (sled holds one process per store; a shared
    /// backend would take a lock of its own here).
    pub async fn ingest_turn(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.ingest.lock().await
    }

    /// An empty batch.
    pub fn batch(&self) -> WriteBatch {
        WriteBatch::default()
    }

    fn to_sled_batch(&self, batch: WriteBatch) -> Result<sled::Batch, StoreError> {
        let mut out = sled::Batch::default();
        for (k, v) in self.to_writes(batch)? {
            out.insert(k, v);
        }
        Ok(out)
    }

    /// The batch's operations as key-value writes, in order (states resolved against the
    /// records they change).
    fn to_writes(&self, batch: WriteBatch) -> Result<Vec<KeyValue>, StoreError> {
        let mut out = Vec::with_capacity(batch.ops.len());
        // States set twice in one batch: the last wins; records written in this batch are
        // the base for states set after them.
        let mut pending: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
        for op in batch.ops {
            match op {
                Op::Put(k, v) => {
                    if k.first() == Some(&b'r') {
                        pending.insert(k.clone(), v.clone());
                    }
                    out.push((k, v));
                }
                Op::SetState { job, line, state } => {
                    let k = record_key(&job, line);
                    let current = match pending.get(&k) {
                        Some(v) => v.clone(),
                        None => self
                            .tree
                            .get(&k)
                            .map_err(sled_err("read record"))?
                            .map(|v| v.to_vec())
                            .ok_or_else(|| StoreError::Corrupt {
                                key: format!("{job}/{line}"),
                                reason: "state change for a recipient that is not stored".into(),
                            })?,
                    };
                    let bytes = codec::replace_state(&current, &state).map_err(|reason| {
                        StoreError::Corrupt {
                            key: format!("{job}/{line}"),
                            reason,
                        }
                    })?;
                    pending.insert(k.clone(), bytes.clone());
                    out.push((k, bytes));
                }
            }
        }
        Ok(out)
    }

    /// Applies `batch` atomically, then flushes: durable when this returns.
    pub async fn commit(&self, batch: WriteBatch) -> Result<(), StoreError> {
        self.commit_no_flush(batch)?;
        self.flush().await
    }

    /// Applies `batch` atomically without waiting for the disk (redoable transitions).
    /// A batch with campaign ledger claims is checked and applied under the ledger lock: it is
    /// refused ([`StoreError::LedgerConflict`], nothing written) when an entry it decided on
    /// changed meanwhile.
    pub fn commit_no_flush(&self, mut batch: WriteBatch) -> Result<(), StoreError> {
        if !self.before_apply(&batch)? {
            return Ok(());
        }
        let expects = std::mem::take(&mut batch.ledger);
        let mut ledger = if expects.is_empty() {
            None
        } else {
            let state = self.ledger_lock();
            #[cfg(test)]
            if self.ledger_conflict_in.fetch_update(
                std::sync::atomic::Ordering::SeqCst,
                std::sync::atomic::Ordering::SeqCst,
                |n| n.checked_sub(1),
            ) == Ok(1)
            {
                return Err(StoreError::LedgerConflict);
            }
            self.check_ledger_expectations(&expects, batch.ledger_epoch, &state)?;
            Some(state)
        };
        let b = self.to_sled_batch(batch)?;
        self.tree.apply_batch(b).map_err(sled_err("apply batch"))?;
        if let Some(state) = ledger.as_mut() {
            Self::ledger_changed(state);
        }
        drop(ledger);
        self.io.count_commit();
        Ok(())
    }

    /// Applies `batch` write by write, in order, without sled's atomic batch and without
    /// waiting for the disk: for changes each of which stands alone (the dispatcher's state
    /// transitions). sled's log keeps them in order, so a crash keeps a prefix of them, and a
    /// [`Store::flush`] after this returns makes them all durable. What it saves: sled rolls its
    /// write buffer to disk twice for every atomic batch (a `pwrite` and a `sync_file_range`
    /// each), so small atomic batches cost more writes than their data (README, Performance).
    pub fn apply_in_order(&self, batch: WriteBatch) -> Result<(), StoreError> {
        if !batch.ledger.is_empty() {
            // Ledger claims need the checked, atomic path.
            return self.commit_no_flush(batch);
        }
        if !self.before_apply(&batch)? {
            return Ok(());
        }
        for (k, v) in self.to_writes(batch)? {
            self.tree.insert(k, v).map_err(sled_err("write"))?;
        }
        self.io.count_commit();
        Ok(())
    }

    /// What every apply does first: false for an empty batch; tests' injected failure; the
    /// intents a sync observer will hear of.
    fn before_apply(&self, batch: &WriteBatch) -> Result<bool, StoreError> {
        if batch.is_empty() {
            return Ok(false);
        }
        #[cfg(test)]
        if batch.ops.iter().any(|op| {
            matches!(
                op,
                Op::SetState {
                    state: RecipientState::Submitted { .. },
                    ..
                }
            )
        }) && self
            .fail_next_submitted
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return Err(StoreError::Corrupt {
                key: "test".into(),
                reason: "injected commit failure".into(),
            });
        }
        if self.io.observing() {
            self.io
                .note_sending(batch.ops.iter().filter_map(|op| match op {
                    Op::SetState {
                        job,
                        line,
                        state: RecipientState::Sending { .. },
                    } => Some((job.clone(), *line)),
                    _ => None,
                }));
        }
        Ok(true)
    }

    /// Makes everything written so far durable, against power loss too: sled's flush, then
    /// `fdatasync` of its log file (one durable sync, counted in [`Store::io_stats`]).
    pub async fn flush(&self) -> Result<(), StoreError> {
        let intents = self.io.take_sending();
        let totals = self.io.count_sync();
        self.tree
            .insert(sync::IO_KEY, &totals.encode())
            .map_err(sled_err("write store counters"))?;
        let db = self.db.clone();
        let io = self.io.clone();
        tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
            db.flush().map_err(sled_err("flush"))?;
            io.sync_files().map_err(StoreError::Sync)
        })
        .await
        .map_err(|e| StoreError::Sync(std::io::Error::other(e.to_string())))??;
        let delay = self.io.delay();
        if !delay.is_zero() {
            // The slow-volume knob: this sync takes `delay` longer.
            tokio::time::sleep(delay).await;
        }
        self.io.synced(&intents);
        Ok(())
    }

    /// Stores a job's metadata (durable on the next flush).
    pub fn put_job_meta(&self, job: &JobId, meta: &[u8]) -> Result<(), StoreError> {
        self.tree
            .insert(key(b'j', job, b""), meta)
            .map_err(sled_err("write job"))?;
        Ok(())
    }

    /// Changes a job's metadata atomically (compare-and-swap: `f` may run more than once and
    /// sees the latest value each time; None from `f` leaves it unchanged). Returns the value
    /// written, or None when there was nothing to change. Durable on the next flush.
    pub fn update_job_meta(
        &self,
        job: &JobId,
        mut f: impl FnMut(&[u8]) -> Option<Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let k = key(b'j', job, b"");
        let mut written = None;
        self.tree
            .fetch_and_update(&k, |old| {
                let old = old?;
                match f(old) {
                    Some(new) => {
                        written = Some(new.clone());
                        Some(new)
                    }
                    None => {
                        written = None;
                        Some(old.to_vec())
                    }
                }
            })
            .map_err(sled_err("update job"))?;
        Ok(written)
    }

    /// A job's metadata.
    pub fn job_meta(&self, job: &JobId) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(key(b'j', job, b""))
            .map_err(sled_err("read job"))?
            .map(|v| v.to_vec()))
    }

    /// Every job id.
    pub fn list_jobs(&self) -> Result<Vec<JobId>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.scan_prefix(b"j/") {
            let (k, _) = item.map_err(sled_err("list jobs"))?;
            let id = &k[2..k.len() - 1];
            out.push(JobId(String::from_utf8_lossy(id).into_owned()));
        }
        Ok(out)
    }

    /// Deletes a job and everything under it. With its `campaign`, the job's ledger claims on
    /// citizens it never sent are released (another job of the campaign may send them); its
    /// entries for citizens it sent, is sending or may have sent stay, so they still count
    /// (later jobs report them `already_sent`, naming this job, without a message id).
    /// Refused while a send of the job is in flight.
    pub async fn delete_job(
        &self,
        job: &JobId,
        campaign: Option<&CampaignKey>,
    ) -> Result<(), StoreError> {
        {
            let mut state = self.ledger_lock();
            let mut b = sled::Batch::default();
            if let Some(campaign) = campaign {
                for (k, kept) in self.claims_to_release(job, campaign, &state)? {
                    match kept {
                        Some(tombstone) => b.insert(k, tombstone),
                        None => b.remove(k),
                    }
                }
            }
            // `p`: poll-queue entries of stores written before the queue moved to memory.
            for prefix in [b'r', b'd', b'p'] {
                for item in self.tree.scan_prefix(key(prefix, job, b"")) {
                    let (k, _) = item.map_err(sled_err("delete job"))?;
                    b.remove(k);
                }
            }
            b.remove(key(b'j', job, b""));
            b.remove(key(b'i', job, b""));
            self.tree.apply_batch(b).map_err(sled_err("delete job"))?;
            Self::ledger_changed(&mut state);
        }
        self.flush().await
    }

    /// Claims `fiscal_code` for `line` in `job` (dedup). Written at once; durable with the
    /// next commit of the batch holding the line's record.
    pub fn claim_fiscal_code(
        &self,
        job: &JobId,
        fiscal_code: [u8; 16],
        line: u64,
    ) -> Result<Claim, StoreError> {
        let mut batch = self.batch();
        let claim = self.claim_in_batch(&mut batch, job, fiscal_code, line)?;
        self.commit_no_flush(batch)?;
        Ok(claim)
    }

    /// [`Store::claim_fiscal_code`] inside `batch`: the claim is written with the batch (one
    /// atomic commit with the rows, no write of its own), and codes claimed earlier in the same
    /// batch count. The ingest's path: a write per row cost more than the rest of the row.
    pub fn claim_in_batch(
        &self,
        batch: &mut WriteBatch,
        job: &JobId,
        fiscal_code: [u8; 16],
        line: u64,
    ) -> Result<Claim, StoreError> {
        Ok(
            match self.claim_recipient(batch, job, Ledger::Off, fiscal_code, line, 0)? {
                RecipientClaim::New | RecipientClaim::Held { .. } => Claim::New,
                RecipientClaim::SameLine => Claim::SameLine,
                RecipientClaim::Duplicate { first_line, .. } => Claim::Duplicate { first_line },
            },
        )
    }

    /// (last line ingested, ingest complete).
    pub fn ingest_progress(&self, job: &JobId) -> Result<(u64, bool), StoreError> {
        self.ingest_progress_rows(job).map(|(l, c, _)| (l, c))
    }

    /// (last line ingested, ingest complete, rows stored so far; None for stores written
    /// before the count existed).
    pub fn ingest_progress_rows(
        &self,
        job: &JobId,
    ) -> Result<(u64, bool, Option<u64>), StoreError> {
        match self
            .tree
            .get(key(b'i', job, b""))
            .map_err(sled_err("read ingest progress"))?
        {
            None => Ok((0, false, Some(0))),
            Some(v) if v.len() == 9 => Ok((be_u64(&v[..8]).unwrap_or(0), v[8] == 1, None)),
            Some(v) if v.len() == 17 => {
                Ok((be_u64(&v[..8]).unwrap_or(0), v[8] == 1, be_u64(&v[9..])))
            }
            Some(_) => Err(StoreError::Corrupt {
                key: format!("{job}/ingest"),
                reason: "progress is not 9 or 17 bytes".into(),
            }),
        }
    }

    /// One recipient.
    pub fn recipient(&self, job: &JobId, line: u64) -> Result<Option<RecipientRecord>, StoreError> {
        match self
            .tree
            .get(record_key(job, line))
            .map_err(sled_err("read record"))?
        {
            None => Ok(None),
            Some(v) => RecipientRecord::decode(line, &v)
                .map(Some)
                .map_err(|reason| StoreError::Corrupt {
                    key: format!("{job}/{line}"),
                    reason,
                }),
        }
    }

    /// The job's recipients from `from_line` on, in line order. Streams (never collects).
    pub fn scan_recipients(
        &self,
        job: &JobId,
        from_line: u64,
    ) -> impl Iterator<Item = Result<RecipientRecord, StoreError>> + Send + 'static {
        let start = record_key(job, from_line);
        let end = key(b'r', job, &[0xff; 9]);
        let job = job.clone();
        self.tree.range(start..end).map(move |item| {
            let (k, v) = item.map_err(sled_err("scan records"))?;
            let line = be_u64(&k[k.len() - 8..]).unwrap_or(0);
            RecipientRecord::decode(line, &v).map_err(|reason| StoreError::Corrupt {
                key: format!("{job}/{line}"),
                reason,
            })
        })
    }

    /// Recipients per outcome ([`RecipientState::outcome`]); outcomes nobody has are absent.
    pub fn count_states(&self, job: &JobId) -> Result<BTreeMap<Outcome, u64>, StoreError> {
        let mut counts = BTreeMap::new();
        for rec in self.scan_recipients(job, 0) {
            *counts.entry(rec?.state.outcome()).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// Small metadata for other modules.
    pub fn meta_get(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .tree
            .get(meta_key(name))
            .map_err(sled_err("read meta"))?
            .map(|v| v.to_vec()))
    }

    /// Writes small metadata (durable on the next flush).
    pub fn meta_put(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.tree
            .insert(meta_key(name), value)
            .map_err(sled_err("write meta"))?;
        Ok(())
    }

    /// Bytes sled uses on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.db.size_on_disk().map_err(sled_err("size"))
    }
}

#[cfg(test)]
impl Store {
    /// Tests: forgets every campaign ledger entry (a store written before the ledger existed).
    pub(crate) fn forget_campaign_ledger(&self) {
        for k in self.tree.scan_prefix(b"c/").keys() {
            self.tree.remove(k.expect("scan")).expect("remove");
        }
    }

    /// Tests: removes a small metadata entry.
    pub(crate) fn meta_remove_for_tests(&self, name: &str) {
        self.tree.remove(meta_key(name)).expect("remove");
    }

    /// Tests: the `n`-th next commit with campaign ledger claims is refused as if the ledger
    /// had changed under it (once).
    pub(crate) fn ledger_conflict_at_commit(&self, n: u32) {
        self.ledger_conflict_in
            .store(n, std::sync::atomic::Ordering::SeqCst);
    }

    /// Tests: the next commit holding a `Submitted` state fails (once).
    pub(crate) fn fail_next_submitted_commit(&self) {
        self.fail_next_submitted
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How long [`Store::open`] waits for sled's file lock.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);
/// sled's page cache, in on-disk bytes (its default, 1 GiB, would fill with a big job's pages).
pub const CACHE_CAPACITY: u64 = 8 * 1024 * 1024;

/// How the store is opened (`[store]` in the configuration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's cache, in on-disk bytes (sled holds about ten times that in memory).
    pub cache_capacity: u64,
    /// zstd compression of what sled writes: less disk, much more CPU.
    pub compression: bool,
    /// Added to every durable sync: a slow volume for benches (`[store] sync_delay_ms`; 0).
    pub sync_delay: std::time::Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_capacity: CACHE_CAPACITY,
            compression: true,
            sync_delay: std::time::Duration::ZERO,
        }
    }
}

/// Checks the store's format marker: a store of an older format is brought to this one (format
/// 1 has the same layout: only the marker is written), a newer one is refused.
fn check_format(tree: &sled::Tree, path: &Path) -> Result<(), StoreError> {
    let found = match tree
        .get(sync::FORMAT_KEY)
        .map_err(sled_err("read store format"))?
    {
        Some(v) => {
            let bytes: [u8; 4] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                key: "store format".into(),
                reason: "not 4 bytes".into(),
            })?;
            u32::from_be_bytes(bytes)
        }
        // A new store, or one written before the marker existed (format 1).
        None if tree.is_empty() => 0,
        None => 1,
    };
    if found > STORE_FORMAT {
        return Err(StoreError::Version {
            path: path.display().to_string(),
            found,
            supported: STORE_FORMAT,
        });
    }
    if found < STORE_FORMAT {
        if found != 0 {
            tracing::info!(
                from = found,
                to = STORE_FORMAT,
                "Store format upgraded (same layout: the format marker is added)."
            );
        }
        tree.insert(sync::FORMAT_KEY, &STORE_FORMAT.to_be_bytes())
            .map_err(sled_err("write store format"))?;
    }
    Ok(())
}
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(50);

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.to_string().contains("could not acquire lock"))
}

fn meta_key(name: &str) -> Vec<u8> {
    let mut k = b"m/".to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests;
