//! The campaign ledger's rules in the engine: what another job's hold on a citizen means
//! ([`held_state`]), the values CRC that tells a conflicting duplicate from a copy
//! ([`values_crc`]), and the one-time backfill of jobs from releases before the ledger
//! ([`backfill_campaign_ledger`]). The ledger itself is the store's.

use tracing::{info, warn};

use super::error::DispatchError;
use crate::job::Template;
use crate::model::job::JobMeta;
use crate::model::RecipientState;
use crate::store::{CampaignKey, JobId, Store};

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
        let mut batch = store.batch();
        let mut in_batch = 0;
        let mut of_job = 0u64;
        for rec in store.scan_recipients(&job, 0) {
            let rec = rec?;
            let holds = matches!(
                rec.state,
                RecipientState::Queued
                    | RecipientState::Sending { .. }
                    | RecipientState::Submitted { .. }
                    | RecipientState::Final { .. }
                    | RecipientState::PollExpired { .. }
                    | RecipientState::Unknown { .. }
            );
            let Some(fc) = rec.fiscal_code.code().map(|c| *c.as_bytes()) else {
                continue;
            };
            if holds
                && store.hold_if_absent(
                    &mut batch,
                    &campaign,
                    &job,
                    fc,
                    rec.line,
                    values_crc(&rec.values),
                )?
            {
                of_job += 1;
                in_batch += 1;
                if in_batch == BACKFILL_BATCH {
                    store
                        .commit(std::mem::replace(&mut batch, store.batch()))
                        .await?;
                    in_batch = 0;
                }
            }
        }
        store.commit(batch).await?;
        if of_job > 0 {
            info!(job = %job, entries = of_job, "A job of an earlier release entered in the campaign ledger.");
        }
        entered += of_job;
    }
    store.meta_put(LEDGER_BACKFILLED_META, b"1")?;
    store.flush().await?;
    Ok(entered)
}

/// What the campaign ledger says about a citizen another job holds: `Some(state)` when that
/// job has sent (or is sending, or will send) it, None when this job may take it over.
pub(crate) fn held_state(
    store: &Store,
    holder: &JobId,
    line: u64,
    is_running: &(dyn Fn(&JobId) -> bool + Sync),
) -> Result<Option<RecipientState>, DispatchError> {
    let Some(rec) = store.recipient(holder, line)? else {
        // The holder was deleted: nothing is known of it.
        return Ok(None);
    };
    let already = |id: Option<String>| {
        Some(RecipientState::AlreadySent {
            job: holder.to_string(),
            line,
            id,
        })
    };
    Ok(match rec.state {
        RecipientState::Sending { .. } => already(None),
        RecipientState::Submitted { id, .. }
        | RecipientState::Final { id, .. }
        | RecipientState::PollExpired { id, .. } => already(Some(id)),
        RecipientState::Unknown { id, .. } => already(id),
        RecipientState::Queued if is_running(holder) => already(None),
        _ => None,
    })
}
