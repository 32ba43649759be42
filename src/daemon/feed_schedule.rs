//! The daemon's feed schedule: a sync at start when the set is stale, then one a day.

use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::feed::{FeedError, SyncOptions};
use crate::runtime::Quiet;

use super::*;

impl Daemon {
    /// One sync (the runtime logs what it did).
    pub(super) async fn sync_feed(&self, stop: &CancellationToken) -> Result<(), FeedError> {
        self.runtime()
            .sync_feed(SyncOptions::default(), &Quiet, stop)
            .await?;
        Ok(())
    }

    /// Syncs at start when the set is stale, then every day at `feed_sync_at` (UTC).
    pub(super) async fn feed_schedule(&self) {
        let shutdown = self.inner.shutdown.clone();
        let mut first = true;
        loop {
            if !first {
                let Some(at) = self.inner.parts.feed_sync_at else {
                    return;
                };
                let now = self.runtime().settings().clock.now();
                let mut next = now.date_naive().and_time(at).and_utc();
                if next <= now {
                    next += chrono::Duration::days(1);
                }
                let wait = (next - now).to_std().unwrap_or_default();
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {}
                }
            }
            first = false;
            if shutdown.is_cancelled() {
                return;
            }
            if let Err(e) = self.sync_feed(&shutdown).await {
                warn!(error = %e, "Scheduled feed sync failed; the next one retries.");
            }
        }
    }
}
