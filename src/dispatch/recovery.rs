//! Restart recovery: what a run finds in the store when it starts. Recipients caught in
//! `Sending` by a crash become `Unknown` (their POST may have reached IO), and the poll queue is
//! rebuilt from the `Submitted` records, overdue polls spread out. And the operator's way back:
//! [`requeue_unknown`] (`corriere resend-unknown`) queues the `unknown` ones again.

use std::time::Duration;

use tracing::{info, warn};

use super::context::JobContext;
use super::error::DispatchError;
use super::meta::update_meta;
use super::poll_queue::PollQueue;
use super::poll_schedule::INITIAL_FIRST_POLL;
use crate::model::job::JobPhase;
use crate::model::RecipientState;
use crate::store::{JobId, Store};

/// What the start of a run finds in the store.
pub(super) struct Recovered {
    /// The poll queue, rebuilt from the `Submitted` records.
    pub(super) polls: PollQueue,
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
pub(super) async fn recover(ctx: &JobContext) -> Result<Recovered, DispatchError> {
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

/// What [`requeue_unknown`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Recipients found in `sending` (an interrupted run) and made `unknown` first.
    pub recovered: u64,
    /// Recipients queued again.
    pub requeued: u64,
    /// `unknown` recipients left alone because IO answered with a message id: their message
    /// exists, a re-send would be a certain duplicate.
    pub kept_with_id: u64,
}

/// Puts every `Unknown` recipient of `job` back in `Queued` (the operator decided to re-send
/// them, accepting that IO may already have created some). Recipients still `Sending` after a
/// crash are made `Unknown` first (what a run's recovery does), so they are counted and
/// re-sent too; an `Unknown` with a message id is kept (IO certainly created it). The job's
/// phase only moves from Done back to Running: an interrupted ingest stays one, so the rest of
/// the file is still read.
pub async fn requeue_unknown(store: &Store, job: &JobId) -> Result<Requeued, DispatchError> {
    let mut batch = store.batch();
    let mut done = Requeued::default();
    for rec in store.scan_recipients(job, 0) {
        let rec = rec?;
        match rec.state {
            RecipientState::Sending { .. } => {
                done.recovered += 1;
                done.requeued += 1;
                batch.set_state(job, rec.line, RecipientState::Queued);
            }
            RecipientState::Unknown { id: Some(_), .. } => done.kept_with_id += 1,
            RecipientState::Unknown { id: None, .. } => {
                batch.set_state(job, rec.line, RecipientState::Queued);
                done.requeued += 1;
            }
            _ => {}
        }
    }
    update_meta(store, job, |m| {
        if m.phase == JobPhase::Done {
            m.phase = JobPhase::Running;
        }
    })?;
    store.commit(batch).await?;
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

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
