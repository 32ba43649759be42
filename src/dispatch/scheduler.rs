//! Running one job to completion: the scheduler loop ([`run_job`]) that hands each call of the
//! shared budget to the most useful work (a send, a profile check or a poll) and spawns its
//! task (`send.rs`, `profile.rs`, `poll.rs`), after the restart recovery (`recovery.rs`).
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
use tracing::{debug, info};

use super::classify::{SendDecision, MAX_UNAUTHORIZED_STREAK};
use super::committer::{Change, Committer};
use super::context::JobContext;
use super::control::Gate;
use super::error::DispatchError;
use super::poll::poll_one;
use super::poll_queue::PollQueue;
use super::poll_schedule::PollScheduler;
use super::profile::profile_one;
use super::recovery::recover;
use super::send::send_one;
use super::task::{fiscal_code_of, Done, Work};
use crate::job::FilterMode;
use crate::model::{NotSubscribedReason, RecipientRecord, RecipientState};
use crate::rate::CallPermit;

/// Queued recipients read ahead from the store.
const SEND_READ_AHEAD: usize = 2048;
/// With `sends_first`, polls still get this share of calls while sends wait (no starvation).
const POLL_FLOOR_SHARE: f64 = 0.2;
/// With shared budgets, polls and sends alternate.
const SHARED_POLL_SHARE: f64 = 0.5;
/// Longest idle wait before re-checking the poll queue.
const IDLE_RECHECK: Duration = Duration::from_secs(1);
/// Queued recipients the feed filter may settle in one turn of the scheduler loop.
const FEED_SETTLE_PER_TURN: usize = 4096;
/// Shortest sleep while waiting with tasks in flight (a poll already taken but still due must
/// not make the loop spin).
const MIN_WAIT_WITH_TASKS: Duration = Duration::from_millis(5);

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
}
