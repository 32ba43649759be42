//! Running one job to completion: the scheduler loop ([`run_job`]) that hands each call of the
//! shared budget to the most useful work (a send, a profile check or a poll), the per-call tasks,
//! and crash recovery.
//!
//! The path of one call reads as a few steps: wait for work → take a budget permit
//! (`RateBudget::acquire`: in-flight slot, pause, limiter) → pick the work → spawn its task →
//! the task writes its durable intent (sends only) → calls IO → classifies → queues its outcome
//! → drops the permit → waits for the outcome to be durable. The in-flight permit is held until
//! the outcome is queued ahead of anything a later send can queue (the committer is FIFO), so
//! in every durable state at most `in_flight` recipients are in `Sending`: that bounds what a
//! crash can leave `Unknown`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::classify::{classify_send, SendDecision, MAX_UNAUTHORIZED_STREAK};
use super::committer::{Change, Committer};
use super::control::Gate;
use super::poll_queue::PollQueue;
use super::poll_schedule::{PollScheduler, INITIAL_FIRST_POLL};
use super::{DispatchError, JobContext};
use crate::io_api::IoError;
use crate::job::{FilterMode, PollPolicy};
use crate::model::FiscalCode;
use crate::rate::CallPermit;
use crate::store::{NotSubscribedReason, RecipientRecord, RecipientState};

/// Queued recipients read ahead from the store.
const SEND_READ_AHEAD: usize = 2048;
/// With `sends_first`, polls still get this share of calls while sends wait (no starvation).
const POLL_FLOOR_SHARE: f64 = 0.2;
/// With shared budgets, polls and sends alternate.
const SHARED_POLL_SHARE: f64 = 0.5;
/// How long a failed poll (5xx, timeout) waits before the next try.
const POLL_RETRY_DELAY: Duration = Duration::from_secs(5);
/// Longest idle wait before re-checking the poll queue.
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Queued recipients the feed filter may settle in one turn of the scheduler loop.
const FEED_SETTLE_PER_TURN: usize = 4096;
/// Shortest sleep while waiting with tasks in flight (a poll already taken but still due must
/// not make the loop spin).
const MIN_WAIT_WITH_TASKS: Duration = Duration::from_millis(5);

/// One unit of work: exactly one IO call.
enum Work {
    Profile(RecipientRecord),
    Send(RecipientRecord),
    Poll { line: u64, due_ms: u64 },
}

/// What a task reports back to the scheduler.
enum Done {
    ProfileAllowed(RecipientRecord),
    ProfileRetry(RecipientRecord),
    ProfileSettled(u64),
    Send {
        record: RecipientRecord,
        decision: SendDecision,
        /// When to poll the message (submitted, and the poll policy samples it).
        poll_due: Option<u64>,
    },
    Poll {
        line: u64,
        first: Option<(Duration, Duration, bool)>,
        /// When to poll again; None when the message has settled (final, expired, or gone).
        next_due: Option<u64>,
    },
    Fatal(DispatchError),
}

/// Summary of a run (what the CLI prints).
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    /// The run ended because every recipient reached a final outcome.
    pub completed: bool,
    /// The run was stopped by shutdown before completing.
    pub interrupted: bool,
    /// Sends attempted in this run.
    pub sends: u64,
    /// Polls made in this run.
    pub polls: u64,
    /// Profile checks made in this run.
    pub profile_checks: u64,
    /// Sends retried because IO could not have created the message (429, not sent).
    pub send_retries: u64,
    /// Recipients the feed filter settled as not subscribed, without a call.
    pub feed_skipped: u64,
}

/// What the start of a run finds in the store.
struct Recovered {
    /// The poll queue, rebuilt from the `Submitted` records.
    polls: PollQueue,
}

/// After a restart, polls already overdue are spread over at most this long.
const RECOVERED_POLL_SPREAD: Duration = Duration::from_secs(300);

/// When to poll a message found `Submitted` at the start of a run (submitted at `at_ms`, now
/// `now_ms`): [`INITIAL_FIRST_POLL`] after its submit if that is still ahead; otherwise spread
/// by a fixed hash of the line over the next 0.6 × its age (the back-off a live poll would
/// apply), at most [`RECOVERED_POLL_SPREAD`]: a restart with a million messages waiting does
/// not turn into a million GETs at once, and none waits more than five minutes.
fn recovered_poll_due(at_ms: u64, now_ms: u64, line: u64) -> u64 {
    let first = at_ms.saturating_add(INITIAL_FIRST_POLL.as_millis() as u64);
    if first >= now_ms {
        return first;
    }
    let window =
        (now_ms.saturating_sub(at_ms) * 6 / 10).min(RECOVERED_POLL_SPREAD.as_millis() as u64);
    let fraction = line.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32; // 0 ..= 2^32 - 1
    now_ms + window * fraction / (1u64 << 32)
}

/// One scan of the job's records at the start of a run: recipients caught in `Sending` by a
/// crash move to `Unknown` (their POST may have reached IO), and every `Submitted` message the
/// poll policy samples goes back in the poll queue ([`recovered_poll_due`]).
async fn recover(ctx: &JobContext) -> Result<Recovered, DispatchError> {
    let store = ctx.store.clone();
    let job = ctx.job.clone();
    let poll = ctx.options.poll;
    let now = ctx.settings.clock.now_ms();
    /// Lines left in `Sending`; (due ms, line) of the messages to poll.
    type Found = (Vec<u64>, Vec<(u64, u64)>);
    let (lines, polls) = tokio::task::spawn_blocking(move || -> Result<Found, DispatchError> {
        let mut lines = Vec::new();
        let mut polls = Vec::new();
        for rec in store.scan_recipients(&job, 0) {
            let rec = rec?;
            match rec.state {
                RecipientState::Sending { .. } => lines.push(rec.line),
                RecipientState::Submitted { at_ms, .. } if poll.should_poll(rec.line) => {
                    polls.push((recovered_poll_due(at_ms, now, rec.line), rec.line));
                }
                _ => {}
            }
        }
        Ok((lines, polls))
    })
    .await
    .map_err(|e| DispatchError::Internal(e.to_string()))??;
    let polls = PollQueue::from_entries(polls);
    if !polls.is_empty() {
        info!(job = %ctx.job, messages = polls.len(), "Submitted messages waiting for a final status are back in the poll queue.");
    }
    if lines.is_empty() {
        return Ok(Recovered { polls });
    }
    let mut batch = ctx.store.batch();
    for line in &lines {
        batch.set_state(
            &ctx.job,
            *line,
            RecipientState::Unknown {
                reason: "interrupted while the request may have been in flight".to_owned(),
                id: None,
            },
        );
    }
    ctx.store.commit(batch).await?;
    warn!(
        job = %ctx.job,
        recipients = lines.len(),
        "Recipients left in Sending by an interrupted run are now Unknown; `corriere resend-unknown` re-sends them."
    );
    Ok(Recovered { polls })
}

/// Runs `ctx`'s job until every recipient has a final outcome or `shutdown` fires.
pub async fn run_job(
    ctx: Arc<JobContext>,
    shutdown: CancellationToken,
) -> Result<RunSummary, DispatchError> {
    let recovered = recover(&ctx).await?;
    let (committer, committer_task) = Committer::spawn(ctx.store.clone(), ctx.job.clone());
    let result = Scheduler::new(ctx.clone(), committer, recovered.polls)
        .run(shutdown)
        .await;
    // Every task has ended and dropped its committer handle: the committer drains and flushes.
    let flushed = committer_task
        .await
        .map_err(|e| DispatchError::Internal(e.to_string()))?;
    let summary = result?;
    flushed?;
    Ok(summary)
}

struct Scheduler {
    ctx: Arc<JobContext>,
    committer: Committer,
    send_rx: Option<mpsc::Receiver<Result<RecipientRecord, DispatchError>>>,
    /// Recipients to (re)send before reading new ones: retries and profile-approved.
    ready: VecDeque<RecipientRecord>,
    /// Profile checks to retry.
    profile_retry: VecDeque<RecipientRecord>,
    /// Not before this instant (back-off after a retryable failure).
    send_not_before: Instant,
    /// Submitted messages waiting for a poll (a poll in flight has left it).
    polls: PollQueue,
    poll_credit: f64,
    scheduler: PollScheduler,
    tasks: JoinSet<Done>,
    sends_in_flight: usize,
    unauthorized_streak: u32,
    summary: RunSummary,
    poll_counts: HashMap<u64, u16>,
    /// Recipients whose profile check is in flight (still `queued` in the store).
    profile_in_flight: HashSet<u64>,
    /// The store was scanned for queued recipients after a cancel.
    cancel_scanned: bool,
    /// Recipients whose send is in flight (their `Sending` intent may not be applied yet).
    send_lines_in_flight: HashSet<u64>,
    /// Recipients already counted as cancelled (a send retried after the cancel comes back
    /// once more and is written again, not counted again).
    cancelled_lines: HashSet<u64>,
}

impl Scheduler {
    fn new(ctx: Arc<JobContext>, committer: Committer, polls: PollQueue) -> Self {
        let send_rx = Some(spawn_send_feed(&ctx));
        Scheduler {
            ctx,
            committer,
            send_rx,
            ready: VecDeque::new(),
            profile_retry: VecDeque::new(),
            send_not_before: Instant::now(),
            polls,
            poll_credit: 0.0,
            scheduler: PollScheduler::default(),
            tasks: JoinSet::new(),
            sends_in_flight: 0,
            unauthorized_streak: 0,
            summary: RunSummary::default(),
            poll_counts: HashMap::new(),
            profile_in_flight: HashSet::new(),
            cancel_scanned: false,
            send_lines_in_flight: HashSet::new(),
            cancelled_lines: HashSet::new(),
        }
    }

    fn sends_exhausted(&self) -> bool {
        self.send_rx.is_none() && self.ready.is_empty() && self.profile_retry.is_empty()
    }

    async fn run(mut self, shutdown: CancellationToken) -> Result<RunSummary, DispatchError> {
        let outcome = self.main_loop(&shutdown).await;
        // Stop taking work; let what is in flight finish and record its outcome (bounded by the
        // request timeout), so nothing is left in Sending by a clean stop.
        while let Some(done) = self.tasks.join_next().await {
            if let Ok(done) = done {
                let _ = self.on_done(done).await;
            }
        }
        outcome?;
        Ok(self.summary)
    }

    async fn main_loop(&mut self, shutdown: &CancellationToken) -> Result<(), DispatchError> {
        loop {
            if shutdown.is_cancelled() {
                self.summary.interrupted = true;
                return Ok(());
            }
            let now = self.ctx.settings.clock.now_ms();
            let has_poll = self.polls.has_due(now);
            let has_send = self.send_ready_now().await?;
            if !has_poll && !has_send {
                if self.sends_exhausted() && self.tasks.is_empty() && self.polls.is_empty() {
                    self.summary.completed = true;
                    return Ok(());
                }
                self.wait_for_work(shutdown).await?;
                continue;
            }
            let permit = tokio::select! {
                permit = self.ctx.budget.acquire() => permit,
                () = shutdown.cancelled() => { self.summary.interrupted = true; return Ok(()); }
            };
            // The wait for a permit can be long: a pause, a cancel or a closing window that
            // came meanwhile holds the send back (the permit goes to a poll, or back).
            let has_send = has_send && matches!(self.ctx.control.gate(), Gate::Open);
            if !has_send && !has_poll {
                continue;
            }
            // None cannot happen (nothing took work since `has_*` were read); the permit goes
            // back if it did.
            if let Some(work) = self.pick(has_send, has_poll, now) {
                self.spawn(work, permit);
            }
            // Handle finished tasks without blocking.
            while let Some(done) = self.tasks.try_join_next() {
                self.handle_joined(done).await?;
            }
        }
    }

    /// Whether a send (or profile check) can start now; pulls records from the feed while the
    /// in-memory queues are empty (the feed filter may settle some without a call).
    async fn send_ready_now(&mut self) -> Result<bool, DispatchError> {
        match self.ctx.control.gate() {
            Gate::Open => {}
            Gate::Cancelled => {
                self.cancel_queued().await?;
                return Ok(false);
            }
            Gate::Paused | Gate::WindowClosed { .. } => return Ok(false),
        }
        if Instant::now() < self.send_not_before {
            return Ok(false);
        }
        // Bounded, so a long run of recipients the feed filter settles cannot hold the loop
        // away from polls, finished tasks and shutdown.
        for _ in 0..FEED_SETTLE_PER_TURN {
            if !self.ready.is_empty() || !self.profile_retry.is_empty() {
                return Ok(true);
            }
            let Some(rx) = self.send_rx.as_mut() else {
                return Ok(false);
            };
            match rx.try_recv() {
                Ok(Ok(record)) => self.enqueue_new(record).await?,
                // The queued recipients after this one could not be read: the run stops with
                // the error (the job is not complete, and a restart resumes it).
                Ok(Err(e)) => return Err(e),
                Err(mpsc::error::TryRecvError::Empty) => return Ok(false),
                Err(mpsc::error::TryRecvError::Disconnected) => {
                    self.send_rx = None;
                    return Ok(false);
                }
            }
        }
        Ok(!self.ready.is_empty() || !self.profile_retry.is_empty())
    }

    /// After a cancel: every recipient not sent yet ends `cancelled` (in memory, read ahead,
    /// or still in the store); what is in flight finishes, and sent messages keep being polled.
    async fn cancel_queued(&mut self) -> Result<(), DispatchError> {
        let mut changes = Vec::new();
        let cancelled = RecipientState::Cancelled;
        let mut drained: Vec<RecipientRecord> = self.ready.drain(..).collect();
        drained.extend(self.profile_retry.drain(..));
        for record in drained {
            // Written again even if counted before: a retry's lazy `queued` may have landed
            // after the first `cancelled`.
            if self.cancelled_lines.insert(record.line) {
                self.ctx.counters.transition(&record.state, &cancelled);
            }
            changes.push(Change::State {
                line: record.line,
                state: RecipientState::Cancelled,
            });
        }
        if !self.cancel_scanned {
            self.cancel_scanned = true;
            // The reader thread stops at its next record; what it read ahead is still
            // `queued` in the store and is found by the scan below.
            self.send_rx = None;
            // Everything handed to the committer so far (intents, lazy results) is applied
            // before the scan reads the store, so the scan sees current states.
            self.committer
                .applied(Vec::new())
                .await
                .map_err(|e| DispatchError::Commit(e.to_string()))?;
            let store = self.ctx.store.clone();
            let job = self.ctx.job.clone();
            let queued = tokio::task::spawn_blocking(move || {
                store
                    .scan_recipients(&job, 0)
                    .filter_map(|r| match r {
                        Ok(r) if matches!(r.state, RecipientState::Queued) => Some(Ok(r.line)),
                        Ok(_) => None,
                        Err(e) => Some(Err(e)),
                    })
                    .collect::<Result<Vec<u64>, _>>()
            })
            .await
            .map_err(|e| DispatchError::Internal(e.to_string()))??;
            for line in queued {
                // In-flight sends and profile checks settle by themselves (a retried send or an
                // allowed profile comes back through `ready` and is cancelled then).
                if self.profile_in_flight.contains(&line)
                    || self.send_lines_in_flight.contains(&line)
                {
                    continue;
                }
                if self.cancelled_lines.insert(line) {
                    self.ctx
                        .counters
                        .transition(&RecipientState::Queued, &cancelled);
                    changes.push(Change::State {
                        line,
                        state: RecipientState::Cancelled,
                    });
                }
            }
            info!(job = %self.ctx.job, cancelled = self.cancelled_lines.len(), "Job cancelled: queued recipients will not be sent.");
        }
        while !changes.is_empty() {
            let rest = changes.split_off(changes.len().min(super::committer::MAX_BATCH));
            self.committer
                .lazy(std::mem::replace(&mut changes, rest))
                .await
                .map_err(|e| DispatchError::Commit(e.to_string()))?;
        }
        Ok(())
    }

    /// Routes a queued recipient: a profile check first, straight to sending, or, with the
    /// feed filter, settled as `not_subscribed` without any call when the set lacks it.
    async fn enqueue_new(&mut self, record: RecipientRecord) -> Result<(), DispatchError> {
        match self.ctx.options.filter {
            FilterMode::Profile => self.profile_retry.push_back(record),
            FilterMode::None => self.ready.push_back(record),
            FilterMode::Feed => {
                let subscribed = match &self.ctx.subscribers {
                    Some(set) => set.contains_digest(&fiscal_code_of(&record)?.feed_hash_bytes()),
                    None => {
                        return Err(DispatchError::Unsupported(
                            "filter = \"feed\" without a subscriber set".to_owned(),
                        ))
                    }
                };
                if subscribed {
                    self.ready.push_back(record);
                } else {
                    let state = RecipientState::NotSubscribed {
                        reason: NotSubscribedReason::Feed,
                    };
                    self.ctx.counters.transition(&record.state, &state);
                    self.summary.feed_skipped += 1;
                    self.committer
                        .lazy(vec![Change::State {
                            line: record.line,
                            state,
                        }])
                        .await
                        .map_err(|e| DispatchError::Commit(e.to_string()))?;
                }
            }
        }
        Ok(())
    }

    /// Sleeps until something may have changed: a task finished, a new queued record, the next
    /// poll due time, the end of a send back-off, or shutdown.
    async fn wait_for_work(&mut self, shutdown: &CancellationToken) -> Result<(), DispatchError> {
        let next_due = self.polls.next_due();
        let mut wake = Instant::now() + IDLE_RECHECK;
        if let Some(due) = next_due {
            let now = self.ctx.settings.clock.now_ms();
            let wait = Duration::from_millis(due.saturating_sub(now));
            wake = wake.min(Instant::now() + wait);
        }
        if self.send_not_before > Instant::now() {
            wake = wake.min(self.send_not_before);
        }
        if let Some(wait) = self.ctx.control.until_open() {
            wake = wake.min(Instant::now() + wait);
        }
        let may_send = matches!(self.ctx.control.gate(), Gate::Open);
        let tasks_running = !self.tasks.is_empty();
        if tasks_running {
            wake = wake.max(Instant::now() + MIN_WAIT_WITH_TASKS);
        }
        tokio::select! {
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep_until(wake) => {}
            Some(done) = self.tasks.join_next(), if tasks_running => {
                self.handle_joined(done).await?;
            }
            () = self.ctx.control.changed() => {}
            msg = recv_opt(&mut self.send_rx), if may_send && self.send_rx.is_some() && Instant::now() >= self.send_not_before => {
                match msg {
                    Some(Ok(record)) => self.enqueue_new(record).await?,
                    Some(Err(e)) => return Err(e),
                    None => self.send_rx = None,
                }
            }
        }
        Ok(())
    }

    /// Chooses between a send and a poll when both are available. Neither starves: with
    /// `sends_first` polls keep a floor share, otherwise they alternate. `has_poll` was read at
    /// `now_ms` and the queue has not changed since (only this loop touches it).
    fn pick(&mut self, has_send: bool, has_poll: bool, now_ms: u64) -> Option<Work> {
        let take_poll = if has_poll && has_send {
            let share = if self.ctx.options.sends_first {
                POLL_FLOOR_SHARE
            } else {
                SHARED_POLL_SHARE
            };
            self.poll_credit += share;
            if self.poll_credit >= 1.0 {
                self.poll_credit -= 1.0;
                true
            } else {
                false
            }
        } else {
            has_poll
        };
        if take_poll {
            if let Some((due_ms, line)) = self.polls.pop_due(now_ms) {
                return Some(Work::Poll { line, due_ms });
            }
        }
        if let Some(record) = self.ready.pop_front() {
            return Some(Work::Send(record));
        }
        self.profile_retry.pop_front().map(Work::Profile)
    }

    fn spawn(&mut self, work: Work, permit: CallPermit) {
        let ctx = self.ctx.clone();
        let committer = self.committer.clone();
        match work {
            Work::Send(record) => {
                self.sends_in_flight += 1;
                self.send_lines_in_flight.insert(record.line);
                self.summary.sends += 1;
                let first_poll = self.scheduler.first_poll_delay();
                self.tasks
                    .spawn(send_one(ctx, committer, record, permit, first_poll));
            }
            Work::Profile(record) => {
                self.summary.profile_checks += 1;
                self.profile_in_flight.insert(record.line);
                self.tasks
                    .spawn(profile_one(ctx, committer, record, permit));
            }
            Work::Poll { line, due_ms } => {
                self.summary.polls += 1;
                let polls = self.poll_counts.get(&line).copied().unwrap_or(0);
                let scheduler = self.scheduler.clone();
                self.tasks.spawn(poll_one(
                    ctx, committer, line, due_ms, polls, scheduler, permit,
                ));
            }
        }
    }

    async fn handle_joined(
        &mut self,
        joined: Result<Done, tokio::task::JoinError>,
    ) -> Result<(), DispatchError> {
        match joined {
            Ok(done) => self.on_done(done).await,
            Err(e) => Err(DispatchError::Internal(format!(
                "a dispatch task failed: {e}"
            ))),
        }
    }

    async fn on_done(&mut self, done: Done) -> Result<(), DispatchError> {
        match done {
            Done::ProfileAllowed(record) => {
                self.profile_in_flight.remove(&record.line);
                self.ready.push_back(record);
            }
            Done::ProfileRetry(record) => {
                self.profile_in_flight.remove(&record.line);
                self.profile_retry.push_back(record);
            }
            Done::ProfileSettled(line) => {
                self.profile_in_flight.remove(&line);
            }
            Done::Send {
                record,
                decision,
                poll_due,
            } => {
                self.sends_in_flight -= 1;
                self.send_lines_in_flight.remove(&record.line);
                if let Some(due) = poll_due {
                    self.polls.push(due, record.line);
                }
                match decision {
                    SendDecision::Retry {
                        after,
                        unauthorized,
                        reason,
                    } => {
                        self.summary.send_retries += 1;
                        if unauthorized {
                            self.unauthorized_streak += 1;
                            if self.unauthorized_streak >= MAX_UNAUTHORIZED_STREAK {
                                return Err(DispatchError::Unauthorized);
                            }
                        }
                        debug!(line = record.line, reason, "Send will be retried.");
                        self.send_not_before = self.send_not_before.max(Instant::now() + after);
                        self.ready.push_front(record);
                    }
                    _ => self.unauthorized_streak = 0,
                }
            }
            Done::Poll {
                line,
                first,
                next_due,
            } => {
                // Only messages still being polled keep a count: the map stays as small as the
                // poll queue, not as big as the job.
                match next_due {
                    Some(due) => {
                        self.polls.push(due, line);
                        *self.poll_counts.entry(line).or_insert(0) += 1;
                    }
                    None => {
                        self.poll_counts.remove(&line);
                    }
                }
                if let Some((planned, elapsed, final_status)) = first {
                    self.scheduler
                        .observe_first_poll(planned, elapsed, final_status);
                }
            }
            Done::Fatal(e) => return Err(e),
        }
        Ok(())
    }
}

async fn recv_opt<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Streams the job's `Queued` recipients, in line order, from a blocking reader thread.
fn spawn_send_feed(ctx: &JobContext) -> mpsc::Receiver<Result<RecipientRecord, DispatchError>> {
    let (tx, rx) = mpsc::channel(SEND_READ_AHEAD);
    let store = ctx.store.clone();
    let job = ctx.job.clone();
    tokio::task::spawn_blocking(move || {
        for rec in store.scan_recipients(&job, 0) {
            let item = match rec {
                Ok(r) if matches!(r.state, RecipientState::Queued) => Ok(r),
                Ok(_) => continue,
                Err(e) => Err(DispatchError::from(e)),
            };
            let stop = item.is_err();
            if tx.blocking_send(item).is_err() || stop {
                return;
            }
        }
    });
    rx
}

fn fiscal_code_of(record: &RecipientRecord) -> Result<FiscalCode, DispatchError> {
    let text = std::str::from_utf8(record.fiscal_code.as_bytes())
        .map_err(|_| DispatchError::Corrupt(format!("line {}: fiscal code bytes", record.line)))?;
    FiscalCode::parse(text)
        .map_err(|_| DispatchError::Corrupt(format!("line {}: stored fiscal code", record.line)))
}

async fn send_one(
    ctx: Arc<JobContext>,
    committer: Committer,
    record: RecipientRecord,
    permit: CallPermit,
    first_poll: Duration,
) -> Done {
    let line = record.line;
    let fc = match fiscal_code_of(&record) {
        Ok(fc) => fc,
        Err(e) => return Done::Fatal(e),
    };
    let message = match ctx.template.render(&fc, &record.values) {
        Ok(m) => m,
        Err(e) => {
            // Validated at ingest; a template changed under a running job would land here.
            let state = RecipientState::Invalid {
                field: e.field().to_owned(),
                reason: e.to_string(),
            };
            ctx.counters.transition(&record.state, &state);
            let _ = committer.lazy(vec![Change::State { line, state }]).await;
            return Done::Send {
                record,
                decision: SendDecision::Failed {
                    status: 0,
                    title: String::new(),
                    detail: String::new(),
                },
                poll_due: None,
            };
        }
    };
    // 0. The campaign ledger: claim the citizen (atomic); another job may hold it.
    let claim = match super::claim::before_send(&ctx, &committer, &record).await {
        super::claim::Claimed::Send(guard) => guard,
        super::claim::Claimed::Skip { record, decision } => {
            return Done::Send {
                record,
                decision,
                poll_due: None,
            }
        }
        super::claim::Claimed::Fatal(e) => return Done::Fatal(e),
    };
    // 1. The intent is durable before the request leaves.
    let sending = RecipientState::Sending {
        at_ms: ctx.settings.clock.now_ms(),
    };
    if let Err(e) = committer
        .durable(vec![Change::State {
            line,
            state: sending.clone(),
        }])
        .await
    {
        return Done::Fatal(DispatchError::Commit(e.to_string()));
    }
    // The intent is applied: other jobs now see this citizen `sending`.
    drop(claim);
    ctx.counters.transition(&record.state, &sending);
    // 2. The call.
    let result = ctx.client.submit_message(&message).await;
    if let Err(e) = &result {
        if e.is_misconfiguration() {
            // Nothing was created (a redirect): the recipient is queued again, durably, and
            // the job stops until the configuration is fixed.
            let queued = RecipientState::Queued;
            let back = committer
                .durable(vec![Change::State {
                    line,
                    state: queued.clone(),
                }])
                .await;
            ctx.counters.transition(&sending, &queued);
            return Done::Fatal(match back {
                Ok(()) => DispatchError::IoMisconfigured(e.to_string()),
                Err(c) => DispatchError::Commit(c.to_string()),
            });
        }
    }
    let decision = classify_send(result);
    // 3. The outcome, durable before the permit (and so the in-flight slot) is released.
    let submitted_at = ctx.settings.clock.now_ms();
    let (state, poll_due) = match &decision {
        SendDecision::Submitted { id } => {
            let poll_due = ctx
                .options
                .poll
                .should_poll(line)
                .then(|| submitted_at + first_poll.as_millis() as u64);
            (
                RecipientState::Submitted {
                    id: id.clone(),
                    at_ms: submitted_at,
                },
                poll_due,
            )
        }
        SendDecision::Retry { .. } => (RecipientState::Queued, None),
        SendDecision::Failed {
            status,
            title,
            detail,
        } => (
            RecipientState::Failed {
                status: *status,
                title: title.clone(),
                detail: detail.clone(),
            },
            None,
        ),
        SendDecision::Unknown { reason } => {
            warn!(line, recipient = %fc, reason = %reason, "IO may have created this message; recipient is Unknown and will not be re-sent.");
            (
                RecipientState::Unknown {
                    reason: reason.clone(),
                    id: None,
                },
                None,
            )
        }
    };
    let changes = vec![Change::State {
        line,
        state: state.clone(),
    }];
    // The poll queue (the scheduler's, in memory) gets the message only after its `Submitted`
    // record is durable: a restart rebuilds the queue from those records.
    let queued = match decision {
        // The id must be durable before the recipient counts as submitted.
        SendDecision::Submitted { .. } => committer.queue_durable(changes).await.map(Some),
        _ => committer.lazy(changes).await.map(|()| None),
    };
    // The outcome is queued: the intent a later send queues with this in-flight slot comes
    // after it (the committer is FIFO) and is never durable before it, so at most `in_flight`
    // intents are ever durable without their outcome (what a crash can leave `unknown`), and
    // the next intent shares this outcome's sync instead of waiting for a sync of its own.
    drop(permit);
    let committed = match queued {
        Ok(Some(pending)) => pending.wait().await,
        Ok(None) => Ok(()),
        Err(e) => Err(e),
    };
    if let Err(e) = committed {
        if let SendDecision::Submitted { id } = &decision {
            keep_created_id(&ctx, line, id, &state).await;
        }
        return Done::Fatal(DispatchError::Commit(e.to_string()));
    }
    ctx.counters.transition(&sending, &state);
    let record = RecipientRecord { state, ..record };
    Done::Send {
        record,
        decision,
        poll_due,
    }
}

/// IO created a message (201) but the group commit of its id failed: the committer has stopped,
/// so the id is written straight to the store; if that fails too, it is logged (job, line,
/// id: no personal data) for the operator. Without this the recipient would end `unknown`
/// without an id after the restart, and `resend-unknown` would send it a second message.
async fn keep_created_id(ctx: &JobContext, line: u64, id: &str, state: &RecipientState) {
    let mut batch = ctx.store.batch();
    batch.set_state(&ctx.job, line, state.clone());
    match ctx.store.commit(batch).await {
        Ok(()) => {
            warn!(job = %ctx.job, line, message_id = id, "The group commit failed after IO created a message; its id was written directly.");
        }
        Err(e) => {
            tracing::error!(job = %ctx.job, line, message_id = id, error = %e, "IO created this message but the store could not record its id: do not re-send this line.");
        }
    }
}

async fn profile_one(
    ctx: Arc<JobContext>,
    committer: Committer,
    record: RecipientRecord,
    permit: CallPermit,
) -> Done {
    let line = record.line;
    let fc = match fiscal_code_of(&record) {
        Ok(fc) => fc,
        Err(e) => return Done::Fatal(e),
    };
    let result = ctx.client.get_profile(&fc).await;
    drop(permit);
    let state = match result {
        Ok(profile) if profile.sender_allowed => return Done::ProfileAllowed(record),
        Ok(_) => RecipientState::NotSubscribed {
            reason: NotSubscribedReason::SenderNotAllowed,
        },
        Err(IoError::NotFound { .. }) => RecipientState::NotSubscribed {
            reason: NotSubscribedReason::ProfileNotFound,
        },
        Err(e) if e.is_retryable() => return Done::ProfileRetry(record),
        Err(IoError::Unauthorized { .. }) => return Done::Fatal(DispatchError::Unauthorized),
        Err(e) if e.is_misconfiguration() => {
            return Done::Fatal(DispatchError::IoMisconfigured(e.to_string()))
        }
        Err(e) => {
            let (status, title, detail) = e.problem();
            RecipientState::Failed {
                status,
                title,
                detail,
            }
        }
    };
    ctx.counters.transition(&record.state, &state);
    if let Err(e) = committer.lazy(vec![Change::State { line, state }]).await {
        return Done::Fatal(DispatchError::Commit(e.to_string()));
    }
    Done::ProfileSettled(line)
}

async fn poll_one(
    ctx: Arc<JobContext>,
    committer: Committer,
    line: u64,
    due_ms: u64,
    polls_before: u16,
    scheduler: PollScheduler,
    permit: CallPermit,
) -> Done {
    let settled = Done::Poll {
        line,
        first: None,
        next_due: None,
    };
    let record = match ctx.store.recipient(&ctx.job, line) {
        Ok(Some(r)) => r,
        Ok(None) => return settled,
        Err(e) => return Done::Fatal(e.into()),
    };
    let (id, submitted_ms) = match &record.state {
        RecipientState::Submitted { id, at_ms } => (id.clone(), *at_ms),
        // No longer waiting for a status (settled by another path): nothing to poll.
        _ => return settled,
    };
    let fc = match fiscal_code_of(&record) {
        Ok(fc) => fc,
        Err(e) => return Done::Fatal(e),
    };
    let result = ctx.client.get_message(&fc, &id).await;
    drop(permit);
    if let Err(e) = &result {
        if e.is_misconfiguration() {
            // The message stays `Submitted`: polled again once the job is resumed.
            return Done::Fatal(DispatchError::IoMisconfigured(e.to_string()));
        }
    }
    let now = ctx.settings.clock.now_ms();
    let elapsed = Duration::from_millis(now.saturating_sub(submitted_ms));
    let polls = polls_before.saturating_add(1);
    let mut next_due = None;
    let mut final_status = false;
    let new_state = match result {
        Ok(message) if message.status.is_final() => {
            final_status = true;
            Some(RecipientState::Final {
                id: id.clone(),
                status: message.status.as_str().to_owned(),
                read_status: message.read_status.as_ref().map(|s| s.as_str().to_owned()),
                payment_status: message
                    .payment_status
                    .as_ref()
                    .map(|s| s.as_str().to_owned()),
                notification: message.notification_summary(),
                at_ms: now,
                polls,
            })
        }
        Ok(_) | Err(_) if elapsed >= ctx.settings.poll_deadline => {
            Some(RecipientState::PollExpired {
                id: id.clone(),
                at_ms: now,
                polls,
            })
        }
        Ok(_) => {
            let next = scheduler.next_poll_delay(polls as u32, elapsed);
            next_due = Some(submitted_ms + next.as_millis() as u64);
            None
        }
        Err(e) if e.is_retryable() => {
            next_due = Some(now + POLL_RETRY_DELAY.as_millis() as u64);
            None
        }
        Err(e) => {
            // 403/404 on our own message id: IO will not tell us more. Keep the id.
            info!(line, error = %e, "Poll refused; the message's status stays unknown.");
            Some(RecipientState::PollExpired {
                id: id.clone(),
                at_ms: now,
                polls,
            })
        }
    };
    if let Some(state) = new_state {
        ctx.counters.transition(&record.state, &state);
        // Redoable: a crash before the flush leaves the message `Submitted`, polled again
        // after the restart.
        if let Err(e) = committer.lazy(vec![Change::State { line, state }]).await {
            return Done::Fatal(DispatchError::Commit(e.to_string()));
        }
    }
    let first = (polls_before == 0).then(|| {
        let planned = Duration::from_millis(due_ms.saturating_sub(submitted_ms));
        (planned, elapsed, final_status)
    });
    Done::Poll {
        line,
        first,
        next_due,
    }
}

impl PollPolicy {
    /// Whether the message of `line` is polled: all, none, or a deterministic sample.
    pub fn should_poll(&self, line: u64) -> bool {
        match self {
            PollPolicy::All => true,
            PollPolicy::None => false,
            PollPolicy::Fraction(f) => {
                // A fixed hash of the line: the same recipients are sampled after a restart.
                let h = line.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
                (h as f64 / (1u64 << 53) as f64) < *f
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_store_read_error_in_the_send_feed_fails_the_run_instead_of_completing_it() {
        let f = super::super::tests::fake(100).await;
        let dir = tempfile::tempdir().unwrap();
        let (t, r) = super::super::tests::files(dir.path(), &f, 3, "Nome");
        let store = crate::store::Store::temporary().unwrap();
        let prepared = super::super::prepare_job(&store, &t, &r, &|_| {})
            .await
            .unwrap();
        let ctx = super::super::tests::context(&store, &prepared.job, &f).await;
        let (committer, task) = Committer::spawn(store.clone(), ctx.job.clone());
        let mut scheduler = Scheduler::new(ctx.clone(), committer, PollQueue::from_entries(vec![]));
        // The reader thread meets a store error: what it sends is the error.
        let (tx, rx) = mpsc::channel(4);
        tx.send(Err(DispatchError::Store(
            crate::store::StoreError::Corrupt {
                key: "j/5".into(),
                reason: "injected".into(),
            },
        )))
        .await
        .unwrap();
        scheduler.send_rx = Some(rx);
        let result = scheduler.run(CancellationToken::new()).await;
        // Before the fix: Ok with `completed`, and the queued recipients after it stranded.
        assert!(result.is_err(), "{result:?}");
        drop(tx);
        let _ = task.await;
        f.shutdown().await;
    }

    #[test]
    fn recovered_polls_keep_their_first_poll_or_spread_without_a_burst() {
        let now = 1_700_000_000_000;
        // Submitted a second ago: its first poll is still ahead and stays where it was.
        assert_eq!(recovered_poll_due(now - 1_000, now, 5), now + 1_000);
        // Submitted 10 s ago: due within the next 6 s, never in the past.
        let dues: Vec<u64> = (0..1000)
            .map(|l| recovered_poll_due(now - 10_000, now, l))
            .collect();
        assert!(dues.iter().all(|&d| d >= now && d < now + 6_000));
        // Submitted a day ago: spread over at most five minutes, and really spread.
        let dues: Vec<u64> = (0..1000)
            .map(|l| recovered_poll_due(now - 86_400_000, now, l))
            .collect();
        assert!(dues.iter().all(|&d| d >= now && d < now + 300_000));
        let first_minute = dues.iter().filter(|&&d| d < now + 60_000).count();
        assert!(
            (100..300).contains(&first_minute),
            "about a fifth in the first minute: {first_minute}"
        );
        // The same line gets the same time (a deterministic spread).
        assert_eq!(
            recovered_poll_due(now - 86_400_000, now, 42),
            recovered_poll_due(now - 86_400_000, now, 42)
        );
    }
}
