//! The campaign ledger: which job holds each citizen of a campaign ([`CampaignKey`],
//! `c/<campaign>/<fiscal code>` → line, values CRC, job), store-wide. A job that enforces it
//! needs no `d/` keys (its own entries are its dedup); a job with `--allow-repeat` uses `d/` and
//! only adds missing ledger entries.
//!
//! # Who may send
//! A job sends to a citizen only through [`Store::claim_for_send`], which reads the entry and
//! the holder's record, decides, writes the entry and registers the send as *in flight* in one
//! step under the store's ledger lock; the registration ([`SendingGuard`]) lasts until the
//! `Sending` intent is applied, so no other job ever sees that record `queued` while its send is
//! under way. A holder whose record [`RecipientState::may_have_created`] a message keeps the
//! citizen (`already_sent`); a holder that never sent it (queued and not in flight, cancelled,
//! refused, filtered out) is taken over. An ingest's claims ride in its batch, and the batch's
//! commit checks, under the same lock, that every entry it decided on is still as it read it
//! (a take-over: that the holder still sent nothing) — otherwise the batch is refused
//! ([`StoreError::LedgerConflict`]) and read again. sled holds one process per store, so a
//! process-wide lock is the whole story; a shared backend would do the same in a transaction.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{be_u64, key, sled_err, JobId, Op, Store, StoreError, WriteBatch};
use crate::model::RecipientState;

/// A campaign in the ledger: the first 16 bytes of SHA-256 of its name (the name can be any
/// text, the key has a fixed length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CampaignKey([u8; 16]);

impl CampaignKey {
    /// The key of campaign `name`.
    pub fn of(name: &str) -> CampaignKey {
        use sha2::Digest;
        let d = sha2::Sha256::digest(name.as_bytes());
        CampaignKey(d[..16].try_into().expect("32-byte digest"))
    }
}

/// How a job uses the campaign ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ledger<'a> {
    /// Not at all (dedup inside the job only).
    Off,
    /// A citizen another job of the campaign holds is not this job's to send.
    Enforce(&'a CampaignKey),
    /// `--allow-repeat`: dedup inside the job only; citizens not in the ledger yet are added.
    Record(&'a CampaignKey),
}

/// A ledger entry as a claim read it (opaque: handed back to [`Store::take_over`], whose commit
/// checks the entry is still this one).
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerEntry(Vec<u8>);

impl std::fmt::Debug for LedgerEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LedgerEntry")
    }
}

/// Result of claiming a recipient for a line of a job ([`Store::claim_recipient`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecipientClaim {
    /// This job's to send.
    New,
    /// This line claimed it before (an interrupted ingest running again).
    SameLine,
    /// An earlier line of this job has the same code.
    Duplicate {
        /// That line.
        first_line: u64,
        /// Both lines have the same values (CRC).
        same_values: bool,
    },
    /// Another job of the campaign holds this citizen ([`Ledger::Enforce`] only). The caller
    /// decides from that job's record whether to [`Store::take_over`].
    Held {
        /// That job.
        job: JobId,
        /// Its line there.
        line: u64,
        /// The entry as read.
        entry: LedgerEntry,
    },
}

/// The send path's answer ([`Store::claim_for_send`]).
#[derive(Debug)]
pub enum SendClaim {
    /// The ledger names this job and line: send. Keep the guard until the `Sending` intent is
    /// applied.
    Granted(SendingGuard),
    /// Another line of this job holds the citizen: this line is its duplicate.
    OtherLine {
        /// That line.
        line: u64,
    },
    /// Another job holds the citizen and has sent it, is sending it, or may have: its state
    /// there (None: that job was deleted after sending).
    Sent {
        /// That job.
        job: JobId,
        /// Its line there.
        line: u64,
        /// Its recipient's state.
        state: Option<RecipientState>,
    },
    /// Another job's send to this citizen is between its claim and its `Sending` intent: ask
    /// again in a moment (then it is `sending`, or back to `queued` and free).
    Busy {
        /// That job.
        job: JobId,
        /// Its line there.
        line: u64,
    },
}

/// A send registered in flight by [`Store::claim_for_send`]; dropping it ends the registration.
pub struct SendingGuard {
    state: Arc<Mutex<LedgerState>>,
    job: JobId,
    line: u64,
}

impl std::fmt::Debug for SendingGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SendingGuard({}/{})", self.job, self.line)
    }
}

impl Drop for SendingGuard {
    fn drop(&mut self) {
        // A poisoned lock still holds a valid set: removing the entry is always right.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.in_flight.remove(&(self.job.clone(), self.line));
        // The holder's record is `sending` now: decisions made before may be stale.
        state.epoch += 1;
    }
}

/// What the ledger lock guards besides the entries themselves.
#[derive(Debug, Default)]
pub(super) struct LedgerState {
    /// Sends between their claim and their applied `Sending` intent: (job, line).
    in_flight: HashSet<(JobId, u64)>,
    /// Moves with every change an ingest's decisions depend on (a send's claim or its end, a
    /// committed batch of claims, a delete). A batch whose ledger reads all came after the
    /// epoch it saw, committing while the epoch is the same and no send is in flight, needs
    /// no check: nothing it read can have changed.
    epoch: u64,
}

/// What an ingest batch read of the ledger, checked again when it commits.
pub(super) struct LedgerExpect {
    key: Vec<u8>,
    /// The entry the claim was decided on (None: absent).
    seen: Option<Vec<u8>>,
    /// A take-over: the job and line it took the citizen from, which must still have sent
    /// nothing.
    from: Option<(JobId, u64)>,
}

pub(super) fn ledger_key(campaign: &CampaignKey, fiscal_code: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + 16 + 1 + 16);
    k.extend_from_slice(b"c/");
    k.extend_from_slice(&campaign.0);
    k.push(b'/');
    k.extend_from_slice(fiscal_code);
    k
}

fn ledger_value(job: &JobId, line: u64, crc: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(12 + job.0.len());
    v.extend_from_slice(&line.to_be_bytes());
    v.extend_from_slice(&crc.to_be_bytes());
    v.extend_from_slice(job.0.as_bytes());
    v
}

fn decode_ledger(v: &[u8]) -> Result<(JobId, u64, u32), StoreError> {
    if v.len() < 12 {
        return Err(StoreError::Corrupt {
            key: "campaign ledger".into(),
            reason: "entry shorter than 12 bytes".into(),
        });
    }
    let line = be_u64(&v[..8]).expect("8 bytes");
    let crc = u32::from_be_bytes(v[8..12].try_into().expect("4 bytes"));
    let job = JobId(String::from_utf8_lossy(&v[12..]).into_owned());
    Ok((job, line, crc))
}

impl Store {
    pub(super) fn ledger_lock(&self) -> MutexGuard<'_, LedgerState> {
        // Nothing panics while holding it with the set half-changed: a poisoned lock is usable.
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the ledger's epoch in `batch` before its first read of the ledger.
    fn note_ledger_epoch(&self, batch: &mut WriteBatch) {
        if batch.ledger_epoch.is_none() {
            batch.ledger_epoch = Some(self.ledger_lock().epoch);
        }
    }

    /// Claims `fiscal_code` for `line` of `job` inside `batch` (written with it): dedup inside
    /// the job and, with [`Ledger::Enforce`], the campaign ledger in one read per row (the
    /// job's own ledger entries are its dedup). `values_crc` tells a true duplicate from a
    /// conflicting one. The ledger entries the claim decided on are checked again when the
    /// batch commits.
    pub fn claim_recipient(
        &self,
        batch: &mut WriteBatch,
        job: &JobId,
        ledger: Ledger<'_>,
        fiscal_code: [u8; 16],
        line: u64,
        values_crc: u32,
    ) -> Result<RecipientClaim, StoreError> {
        let earlier = |first: u64, crc: u32| {
            if first == line {
                RecipientClaim::SameLine
            } else {
                RecipientClaim::Duplicate {
                    first_line: first,
                    same_values: crc == values_crc,
                }
            }
        };
        if let Some(&(first, crc)) = batch.claims.get(&fiscal_code) {
            return Ok(earlier(first, crc));
        }
        if ledger != Ledger::Off {
            self.note_ledger_epoch(batch);
        }
        match ledger {
            Ledger::Enforce(campaign) => {
                let k = ledger_key(campaign, &fiscal_code);
                match self.tree.get(&k).map_err(sled_err("read ledger"))? {
                    None => {
                        batch.claims.insert(fiscal_code, (line, values_crc));
                        batch.put_ledger(k, None, None, ledger_value(job, line, values_crc));
                        Ok(RecipientClaim::New)
                    }
                    Some(v) => {
                        let (holder, first, crc) = decode_ledger(&v)?;
                        if &holder == job {
                            Ok(earlier(first, crc))
                        } else {
                            Ok(RecipientClaim::Held {
                                job: holder,
                                line: first,
                                entry: LedgerEntry(v.to_vec()),
                            })
                        }
                    }
                }
            }
            Ledger::Off | Ledger::Record(_) => {
                let k = key(b'd', job, &fiscal_code);
                if let Some(v) = self.tree.get(&k).map_err(sled_err("read dedup"))? {
                    let first =
                        be_u64(v.get(..8).unwrap_or(&[])).ok_or_else(|| StoreError::Corrupt {
                            key: format!("{job}/dedup"),
                            reason: "line is not 8 bytes".into(),
                        })?;
                    // Entries written before the CRC existed count as the same values.
                    let crc = v
                        .get(8..12)
                        .map_or(values_crc, |b| u32::from_be_bytes(b.try_into().expect("4")));
                    return Ok(earlier(first, crc));
                }
                batch.claims.insert(fiscal_code, (line, values_crc));
                let mut value = line.to_be_bytes().to_vec();
                value.extend_from_slice(&values_crc.to_be_bytes());
                batch.ops.push(Op::Put(k, value));
                if let Ledger::Record(campaign) = ledger {
                    let k = ledger_key(campaign, &fiscal_code);
                    if self
                        .tree
                        .get(&k)
                        .map_err(sled_err("read ledger"))?
                        .is_none()
                    {
                        batch.put_ledger(k, None, None, ledger_value(job, line, values_crc));
                    }
                }
                Ok(RecipientClaim::New)
            }
        }
    }

    /// Records `job` as the holder of `fiscal_code` in `campaign` (in `batch`) unless the
    /// campaign has a holder for it already; true when recorded. The ledger's backfill from jobs
    /// of releases before it.
    pub fn hold_if_absent(
        &self,
        batch: &mut WriteBatch,
        campaign: &CampaignKey,
        job: &JobId,
        fiscal_code: [u8; 16],
        line: u64,
        values_crc: u32,
    ) -> Result<bool, StoreError> {
        self.note_ledger_epoch(batch);
        let k = ledger_key(campaign, &fiscal_code);
        if self
            .tree
            .get(&k)
            .map_err(sled_err("read ledger"))?
            .is_some()
        {
            return Ok(false);
        }
        batch.put_ledger(k, None, None, ledger_value(job, line, values_crc));
        Ok(true)
    }

    /// Makes `job` the holder of `fiscal_code` in `campaign` (in `batch`), after
    /// [`RecipientClaim::Held`] by `from` (job, line), whose record shows it never sent it. The
    /// commit refuses the batch ([`StoreError::LedgerConflict`]) if meanwhile the entry changed
    /// or `from` started sending.
    #[allow(clippy::too_many_arguments)]
    pub fn take_over(
        &self,
        batch: &mut WriteBatch,
        campaign: &CampaignKey,
        job: &JobId,
        fiscal_code: [u8; 16],
        line: u64,
        values_crc: u32,
        entry: &LedgerEntry,
        from: (JobId, u64),
    ) {
        batch.claims.insert(fiscal_code, (line, values_crc));
        batch.put_ledger(
            ledger_key(campaign, &fiscal_code),
            Some(entry.0.clone()),
            Some(from),
            ledger_value(job, line, values_crc),
        );
    }

    /// The send path's claim, in one step under the ledger lock: `job` may send `line` to
    /// `fiscal_code` unless another line of it, or another job that has (or may have) sent it,
    /// holds the citizen, or another job's send to it is in flight. A holder that never sent
    /// it is taken over; an absent entry is created. Granted means the entry names `job` and
    /// `line` and the send is registered in flight until the guard drops.
    pub fn claim_for_send(
        &self,
        campaign: &CampaignKey,
        fiscal_code: &[u8; 16],
        job: &JobId,
        line: u64,
        values_crc: u32,
    ) -> Result<SendClaim, StoreError> {
        let mut state = self.ledger_lock();
        let k = ledger_key(campaign, fiscal_code);
        let current = self.tree.get(&k).map_err(sled_err("read ledger"))?;
        let write = match current {
            None => true,
            Some(v) => {
                let (holder, held_line, _) = decode_ledger(&v)?;
                if &holder == job {
                    if held_line != line {
                        return Ok(SendClaim::OtherLine { line: held_line });
                    }
                    false
                } else {
                    if state.in_flight.contains(&(holder.clone(), held_line)) {
                        return Ok(SendClaim::Busy {
                            job: holder,
                            line: held_line,
                        });
                    }
                    match self.recipient(&holder, held_line)? {
                        None => {
                            return Ok(SendClaim::Sent {
                                job: holder,
                                line: held_line,
                                state: None,
                            })
                        }
                        Some(rec) if rec.state.may_have_created() => {
                            return Ok(SendClaim::Sent {
                                job: holder,
                                line: held_line,
                                state: Some(rec.state),
                            })
                        }
                        Some(_) => true,
                    }
                }
            }
        };
        if write {
            self.tree
                .insert(k, ledger_value(job, line, values_crc))
                .map_err(sled_err("write ledger"))?;
        }
        state.in_flight.insert((job.clone(), line));
        state.epoch += 1;
        Ok(SendClaim::Granted(SendingGuard {
            state: self.ledger.clone(),
            job: job.clone(),
            line,
        }))
    }

    /// The job and line holding `fiscal_code` in `campaign`, if any.
    pub fn ledger_holder(
        &self,
        campaign: &CampaignKey,
        fiscal_code: &[u8; 16],
    ) -> Result<Option<(JobId, u64)>, StoreError> {
        match self
            .tree
            .get(ledger_key(campaign, fiscal_code))
            .map_err(sled_err("read ledger"))?
        {
            None => Ok(None),
            Some(v) => decode_ledger(&v).map(|(job, line, _)| Some((job, line))),
        }
    }

    /// Checks, under the ledger lock (`state`), that every entry an ingest batch decided on is
    /// still as it was read, and that every job it took a citizen from still sent nothing
    /// (nothing to check when the epoch the batch saw has not moved and no send is in flight).
    /// The caller applies the batch under the same lock, then calls [`Store::ledger_changed`].
    pub(super) fn check_ledger_expectations(
        &self,
        expects: &[LedgerExpect],
        seen_epoch: Option<u64>,
        state: &LedgerState,
    ) -> Result<(), StoreError> {
        if seen_epoch == Some(state.epoch) && state.in_flight.is_empty() {
            return Ok(());
        }
        for e in expects {
            let current = self.tree.get(&e.key).map_err(sled_err("read ledger"))?;
            if current.as_deref() != e.seen.as_deref() {
                return Err(StoreError::LedgerConflict);
            }
            if let Some((job, line)) = &e.from {
                if state.in_flight.contains(&(job.clone(), *line)) {
                    return Err(StoreError::LedgerConflict);
                }
                if self
                    .recipient(job, *line)?
                    .is_some_and(|r| r.state.may_have_created())
                {
                    return Err(StoreError::LedgerConflict);
                }
            }
        }
        Ok(())
    }

    /// Moves the epoch after a change of the ledger (under its lock, `state`).
    pub(super) fn ledger_changed(state: &mut LedgerState) {
        state.epoch += 1;
    }

    /// What deleting `job` does to its entries in `campaign`: the claims on citizens it never
    /// sent are released (`None`: removed); the entries of citizens it sent, is sending or may
    /// have sent are kept under a tombstone holder (`Some(value)`), `<job>~deleted`, which no
    /// live job id can equal: the same inputs submitted again make a job with the same id, and
    /// that job must find those citizens `already_sent`, not its own earlier claims.
    pub(super) fn claims_to_release(
        &self,
        job: &JobId,
        campaign: &CampaignKey,
        state: &LedgerState,
    ) -> Result<Vec<DeletedClaim>, StoreError> {
        if state.in_flight.iter().any(|(j, _)| j == job) {
            return Err(StoreError::JobBusy(job.to_string()));
        }
        let tombstone = JobId(format!("{}~deleted", job.0));
        let mut out = Vec::new();
        for rec in self.scan_recipients(job, 0) {
            let rec = rec?;
            let Ok(fc) = <[u8; 16]>::try_from(rec.fiscal_code.as_bytes()) else {
                continue;
            };
            let k = ledger_key(campaign, &fc);
            if let Some(v) = self.tree.get(&k).map_err(sled_err("read ledger"))? {
                let (holder, line, crc) = decode_ledger(&v)?;
                if &holder == job && line == rec.line {
                    let kept = rec
                        .state
                        .may_have_created()
                        .then(|| ledger_value(&tombstone, line, crc));
                    out.push((k, kept));
                }
            }
        }
        Ok(out)
    }
}

/// A ledger key of a deleted job, and its tombstone entry when the citizen was (or may have
/// been) sent (None: the claim is released).
pub(super) type DeletedClaim = (Vec<u8>, Option<Vec<u8>>);

impl WriteBatch {
    fn put_ledger(
        &mut self,
        key: Vec<u8>,
        seen: Option<Vec<u8>>,
        from: Option<(JobId, u64)>,
        value: Vec<u8>,
    ) {
        self.ledger.push(LedgerExpect {
            key: key.clone(),
            seen,
            from,
        });
        self.ops.push(Op::Put(key, value));
    }
}

#[cfg(test)]
impl Store {
    /// Tests: makes `job` the holder of `fiscal_code` in `campaign` now, whatever was there.
    pub(crate) fn set_ledger_holder(
        &self,
        campaign: &CampaignKey,
        fiscal_code: &[u8; 16],
        job: &JobId,
        line: u64,
    ) -> Result<(), StoreError> {
        self.tree
            .insert(
                ledger_key(campaign, fiscal_code),
                ledger_value(job, line, 0),
            )
            .map_err(sled_err("write ledger"))?;
        Ok(())
    }
}
