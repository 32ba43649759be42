//! The campaign ledger's rules in the engine: what another job's hold on a citizen means
//! ([`held_state`], [`already_sent`]), deleting a job ([`delete_job`]: its unsent claims
//! released, its sent ones kept), the values CRC that tells a conflicting duplicate from a copy
//! ([`values_crc`]), and the one-time backfill of jobs from releases before the ledger
//! ([`backfill_campaign_ledger`]). The ledger itself is the store's.

use tracing::{info, warn};

use super::error::DispatchError;
use crate::job::Template;
use crate::model::job::JobMeta;
use crate::model::RecipientState;
use crate::store::{CampaignKey, JobId, Store, StoreError};

/// Ledger entries per backfill commit (the size of an ingest batch, `INGEST_BATCH`: a test
/// keeps them equal without making this module import `prepare`).
const BACKFILL_BATCH: usize = 4096;

#[cfg(test)]
#[test]
fn a_backfill_commit_is_the_size_of_an_ingest_batch() {
    assert_eq!(BACKFILL_BATCH, super::prepare::INGEST_BATCH);
}

/// CRC of a row's values (length-prefixed), to tell a conflicting duplicate from a copy.
pub fn values_crc(values: &[String]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for v in values {
        h.update(&(v.len() as u32).to_be_bytes());
        h.update(v.as_bytes());
    }
    h.finalize()
}

/// The store's record that jobs of releases before the campaign ledger have been entered in it.
pub(super) const LEDGER_BACKFILLED_META: &str = "dispatch.ledger_backfilled";

/// Enters the jobs of releases before the campaign ledger in it, once per store: each citizen
/// such a job sent, is sending, may have sent (`unknown`) or still has queued, under the job's
/// campaign (its subject as written). Without it, the first re-run after an upgrade would send
/// a campaign again to everyone. Returns how many entries were made.
pub async fn backfill_campaign_ledger(store: &Store) -> Result<u64, DispatchError> {
    if store.meta_get(LEDGER_BACKFILLED_META)?.is_some() {
        return Ok(0);
    }
    let mut entered = 0u64;
    for job in store.list_jobs()? {
        let Some(meta) = JobMeta::load(store, &job)? else {
            continue;
        };
        if meta.campaign.is_some() || meta.allow_repeat {
            continue;
        }
        let template = match Template::from_toml_str(&meta.template_text, &meta.template_path) {
            Ok(t) => t,
            Err(e) => {
                warn!(job = %job, error = %e, "A job of an earlier release has a template this release refuses; it is not entered in the campaign ledger.");
                continue;
            }
        };
        let campaign = CampaignKey::of(template.campaign());
        // A send of a running job may claim one of these citizens meanwhile: the batch is then
        // refused and the job scanned again (what was entered stays entered).
        let mut of_job = 0u64;
        let mut conflicts = 0u32;
        loop {
            match backfill_job(store, &job, &campaign).await {
                Ok(n) => {
                    of_job += n;
                    break;
                }
                Err(DispatchError::Store(StoreError::LedgerConflict))
                    if conflicts < MAX_LEDGER_CONFLICTS =>
                {
                    conflicts += 1;
                }
                Err(e) => return Err(e),
            }
        }
        if of_job > 0 {
            info!(job = %job, entries = of_job, "A job of an earlier release entered in the campaign ledger.");
        }
        entered += of_job;
    }
    store.meta_put(LEDGER_BACKFILLED_META, b"1")?;
    store.flush().await?;
    Ok(entered)
}

/// Enters one job of an earlier release in the ledger; returns how many entries were made
/// (some may be made before a [`StoreError::LedgerConflict`]).
async fn backfill_job(
    store: &Store,
    job: &JobId,
    campaign: &CampaignKey,
) -> Result<u64, DispatchError> {
    let mut batch = store.batch();
    let mut in_batch = 0;
    let mut entered = 0u64;
    for rec in store.scan_recipients(job, 0) {
        let rec = rec?;
        let holds = matches!(rec.state, RecipientState::Queued) || rec.state.may_have_created();
        let Some(fc) = rec.fiscal_code.code().map(|c| *c.as_bytes()) else {
            continue;
        };
        if holds
            && store.hold_if_absent(
                &mut batch,
                campaign,
                job,
                fc,
                rec.line,
                values_crc(&rec.values),
            )?
        {
            in_batch += 1;
            if in_batch == BACKFILL_BATCH {
                store
                    .commit(std::mem::replace(&mut batch, store.batch()))
                    .await?;
                entered += in_batch as u64;
                in_batch = 0;
            }
        }
    }
    store.commit(batch).await?;
    Ok(entered + in_batch as u64)
}

/// An ingest batch refused this many times in a row because the campaign ledger changed under
/// it (sends of other jobs claiming its citizens) stops the ingest with the error; a restart
/// resumes it.
pub(super) const MAX_LEDGER_CONFLICTS: u32 = 64;

/// What the campaign ledger says about a citizen another job holds: `Some(already_sent)` when
/// that job has sent it, is sending it or may have ([`RecipientState::may_have_created`]), or
/// was deleted after sending it; None when it never sent it (queued, cancelled, refused,
/// filtered out): this job may take it over. A claim is not a message: a holder that only
/// queued the citizen does not make this row `already_sent`.
pub fn held_state(
    store: &Store,
    holder: &JobId,
    line: u64,
) -> Result<Option<RecipientState>, DispatchError> {
    let state = match store.recipient(holder, line)? {
        // Deleted: its entries that remain are the citizens it sent (delete releases the rest).
        None => None,
        Some(rec) if rec.state.may_have_created() => Some(rec.state),
        Some(_) => return Ok(None),
    };
    Ok(Some(already_sent(holder, line, state.as_ref())))
}

/// The `already_sent` state of a row whose citizen `holder` (line `line`, in `state`; None:
/// deleted) has sent.
pub(crate) fn already_sent(
    holder: &JobId,
    line: u64,
    state: Option<&RecipientState>,
) -> RecipientState {
    RecipientState::AlreadySent {
        job: holder.to_string(),
        line,
        id: state.and_then(|s| s.message_id()).map(str::to_owned),
    }
}

/// Deletes a job from the store: its records, metadata and progress, and its campaign ledger
/// claims on citizens it never sent (another job of the campaign may send them now). Its
/// entries for citizens it sent (or may have) stay: they still count, so no later job sends
/// them the campaign again. The job must not be running (refused while a send is in flight).
pub async fn delete_job(store: &Store, job: &JobId) -> Result<(), DispatchError> {
    let meta =
        JobMeta::load(store, job)?.ok_or_else(|| DispatchError::UnknownJob(job.to_string()))?;
    let campaign = match &meta.campaign {
        Some(name) => Some(CampaignKey::of(name)),
        None => match Template::from_toml_str(&meta.template_text, &meta.template_path) {
            Ok(t) => Some(CampaignKey::of(t.campaign())),
            Err(e) => {
                warn!(job = %job, error = %e, "The deleted job's template does not parse: its campaign ledger claims stay (they count as sent).");
                None
            }
        },
    };
    store.delete_job(job, campaign.as_ref()).await?;
    info!(job = %job, "Job deleted.");
    Ok(())
}
