//! The parts every way of running a job stands on, built once: [`Runtime`] holds the store, the
//! IO client (wired to report every exchange to the budget), the one rate budget, the
//! subscriptions feed (opened on demand, synced one at a time), the engine settings and the
//! preflight's. `corriere send`, `resend-unknown`, the daemon, the demo and the load test all
//! build one, from configuration ([`Runtime::from_config`]) or from parts ([`Runtime::new`]),
//! and hand it to the one job runner (`runner::run`, above this module).

use std::net::IpAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::config::Config;
use crate::dispatch::DispatchSettings;
use crate::feed::{
    Feed, FeedError, FeedSettings, Freshness, OpenReport, SharedSubscribers, SyncOptions,
    SyncProgress, SyncStats,
};
use crate::io_api::{ApiKey, IoClient, IoClientConfig, IoError};
use crate::observe::BudgetObserver;
use crate::rate::{RateBudget, RateConfig};
use crate::service::PreflightSettings;
use crate::store::{Store, StoreError};

/// Why a runtime could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The configuration has no key for the calls this runtime makes.
    #[error("no IO API key: set io.api_key_file in the config or CORRIERE_IO_API_KEY")]
    NoApiKey,
    /// The IO client could not be built.
    #[error("building the IO client: {0}")]
    Client(#[source] IoError),
    /// The store directory could not be made private to the owner.
    #[error("making the store directory {path} private: {source}")]
    StoreDir {
        /// The store directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The store could not be opened.
    #[error("opening the store at {path}: {source}")]
    Store {
        /// The store directory.
        path: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// The service preflight a runtime runs before a job's first send.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// What the preflight checks against.
    pub settings: PreflightSettings,
    /// Our public address as IO sees it (checked against the service's allowed sources).
    pub source_ip: Option<IpAddr>,
}

/// How a runtime reaches the subscriptions feed.
pub enum FeedAccess {
    /// No feed: jobs with `filter = "feed"` are refused.
    Off,
    /// Opened the first time a job needs it (the commands: most jobs never do).
    OnDemand(FeedSettings),
    /// Already open (the daemon, which also syncs it on a schedule).
    Open(Arc<Feed>),
}

/// What a runtime is built from.
pub struct RuntimeParts {
    /// The store.
    pub store: Store,
    /// The IO client; [`Runtime::new`] makes it report to `budget`.
    pub client: IoClient,
    /// The one shared call budget.
    pub budget: RateBudget,
    /// Engine settings (poll deadline, default send window, clock).
    pub settings: DispatchSettings,
    /// The preflight before a job's first send (None: none).
    pub preflight: Option<Preflight>,
    /// The subscriptions feed.
    pub feed: FeedAccess,
}

/// Hears what the runtime does on a caller's behalf (feed opening and syncs), for progress
/// displays. Every method has a default that does nothing.
pub trait FeedObserver: Send + Sync {
    /// The feed was opened (from its snapshot and journal).
    fn feed_opened(&self, _report: &OpenReport) {}
    /// A sync starts because the set is not fresh.
    fn feed_sync_started(&self, _freshness: &Freshness) {}
    /// A sync made progress.
    fn feed_progress(&self, _progress: &SyncProgress) {}
    /// A sync ended.
    fn feed_synced(&self, _stats: &SyncStats) {}
}

/// A [`FeedObserver`] that hears nothing.
pub struct Quiet;

impl FeedObserver for Quiet {}

/// The parts a job runs on. Shared (`Arc`) between the runner, the daemon and its API.
pub struct Runtime {
    store: Store,
    client: IoClient,
    budget: RateBudget,
    settings: DispatchSettings,
    preflight: Option<Preflight>,
    feed: FeedAccess,
    opened: tokio::sync::OnceCell<Arc<Feed>>,
    /// Serialises syncs (a job's, the daemon's daily one).
    feed_sync: tokio::sync::Mutex<()>,
}

impl Runtime {
    /// Builds a runtime from its parts; the client reports every exchange to the budget.
    pub fn new(parts: RuntimeParts) -> Runtime {
        let client = parts
            .client
            .with_observer(Arc::new(BudgetObserver::new(parts.budget.clone())));
        Runtime {
            store: parts.store,
            client,
            budget: parts.budget,
            settings: parts.settings,
            preflight: parts.preflight,
            feed: parts.feed,
            opened: tokio::sync::OnceCell::new(),
            feed_sync: tokio::sync::Mutex::new(()),
        }
    }

    /// Builds a runtime from configuration: opens the store (its directory made private),
    /// builds the client and the budget; the feed is `feed` (see [`feed_settings`] for
    /// [`FeedAccess::OnDemand`]).
    pub async fn from_config(
        config: &Config,
        clock: Clock,
        feed: FeedAccess,
    ) -> Result<Runtime, RuntimeError> {
        let store = open_store(config).await?;
        Runtime::with_store(config, store, clock, feed)
    }

    /// [`Runtime::from_config`] on a store the caller opened already (to check a job first).
    pub fn with_store(
        config: &Config,
        store: Store,
        clock: Clock,
        feed: FeedAccess,
    ) -> Result<Runtime, RuntimeError> {
        let client = client_from(config)?;
        Ok(Runtime::new(RuntimeParts {
            store,
            client,
            budget: RateBudget::new(RateConfig::from(&config.rate)),
            settings: config.dispatch_settings(clock),
            preflight: Some(Preflight {
                settings: PreflightSettings::from(config),
                source_ip: config.io.source_ip,
            }),
            feed,
        }))
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The IO client (reporting to the budget).
    pub fn client(&self) -> &IoClient {
        &self.client
    }

    /// The one shared call budget.
    pub fn budget(&self) -> &RateBudget {
        &self.budget
    }

    /// Engine settings.
    pub fn settings(&self) -> &DispatchSettings {
        &self.settings
    }

    /// Engine settings, to change before a run (a command's `--poll-deadline`).
    pub fn settings_mut(&mut self) -> &mut DispatchSettings {
        &mut self.settings
    }

    /// The preflight before a job's first send, if any.
    pub fn preflight(&self) -> Option<&Preflight> {
        self.preflight.as_ref()
    }

    /// Replaces the preflight (a command's `--skip-preflight`, `--source-ip`).
    pub fn set_preflight(&mut self, preflight: Option<Preflight>) {
        self.preflight = preflight;
    }

    /// Whether this runtime has a feed at all.
    pub fn has_feed(&self) -> bool {
        !matches!(self.feed, FeedAccess::Off)
    }

    /// The feed, opened on first use (None: this runtime has none).
    pub async fn feed(&self, observer: &dyn FeedObserver) -> Result<Option<Arc<Feed>>, FeedError> {
        match &self.feed {
            FeedAccess::Off => Ok(None),
            FeedAccess::Open(feed) => Ok(Some(feed.clone())),
            FeedAccess::OnDemand(settings) => {
                let feed = self
                    .opened
                    .get_or_try_init(|| async {
                        open_feed(self.store.clone(), settings.clone(), observer)
                            .await
                            .map(Arc::new)
                    })
                    .await?;
                Ok(Some(feed.clone()))
            }
        }
    }

    /// Brings the feed up to date, one sync at a time: a sync that another one made needless
    /// while it waited does nothing (None). None too when this runtime has no feed. (`corriere
    /// feed sync`, which may ask for a range, calls the feed itself.)
    pub async fn sync_feed(
        &self,
        options: SyncOptions,
        observer: &dyn FeedObserver,
        stop: &CancellationToken,
    ) -> Result<Option<SyncStats>, FeedError> {
        let Some(feed) = self.feed(observer).await? else {
            return Ok(None);
        };
        let _one = self.feed_sync.lock().await;
        if matches!(feed.freshness(), Freshness::Fresh { through } if through >= feed.last_complete_day())
        {
            return Ok(None);
        }
        let progress = |p: &SyncProgress| observer.feed_progress(p);
        let stats = feed
            .sync(&self.client, &self.budget, options, &progress, stop)
            .await?;
        tracing::info!(
            days = stats.days_applied,
            subscribers = stats.subscribers,
            through = ?stats.through,
            seconds = stats.seconds,
            "Subscriptions feed synced."
        );
        observer.feed_synced(&stats);
        Ok(Some(stats))
    }

    /// The subscriber set for a job with `filter = "feed"`, synced first when it is not fresh;
    /// an error when this runtime has no feed or the set is still not fresh after the sync.
    pub async fn fresh_subscribers(
        &self,
        observer: &dyn FeedObserver,
        stop: &CancellationToken,
    ) -> Result<SharedSubscribers, FreshError> {
        let Some(feed) = self.feed(observer).await? else {
            return Err(FreshError::NoFeed);
        };
        let freshness = feed.freshness();
        if !matches!(freshness, Freshness::Fresh { .. }) {
            observer.feed_sync_started(&freshness);
            self.sync_feed(SyncOptions::default(), observer, stop)
                .await?;
        }
        match feed.freshness() {
            Freshness::Fresh { .. } => Ok(feed.subscribers()),
            _ if stop.is_cancelled() => Err(FreshError::Interrupted),
            other => Err(FreshError::NotFresh(format!("{other:?}"))),
        }
    }
}

/// Why a job's subscriber set is not available.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FreshError {
    /// The runtime has no feed.
    #[error("filter = \"feed\" but this runs without the subscriptions feed (daemon.feed_sync_at = \"off\"); use filter = \"profile\"")]
    NoFeed,
    /// The feed could not be opened or synced.
    #[error("subscriptions feed: {0}")]
    Feed(#[from] FeedError),
    /// The sync was stopped before the set was fresh.
    #[error("the subscriptions feed sync was interrupted")]
    Interrupted,
    /// Synced, but IO's feed does not reach recent enough days.
    #[error("the subscriber set is not fresh enough for filter = \"feed\" ({0})")]
    NotFresh(String),
}

/// Opens the feed (its snapshot and journal) and says what was loaded, in the log and to
/// `observer`. Needs no client: `corriere feed status` and `feed check` use it too.
pub async fn open_feed(
    store: Store,
    settings: FeedSettings,
    observer: &dyn FeedObserver,
) -> Result<Feed, FeedError> {
    let (feed, report) = Feed::open(store, settings).await?;
    if let Some(reason) = &report.snapshot_refused {
        tracing::warn!(reason = %reason, "Subscriber snapshot refused; rebuilding it.");
    }
    tracing::info!(
        subscribers = report.subscribers,
        through = ?report.through,
        from_snapshot = report.from_snapshot,
        replayed_days = report.replayed_days,
        "Subscriber set loaded."
    );
    observer.feed_opened(&report);
    Ok(feed)
}

/// Feed settings from configuration.
pub fn feed_settings(config: &Config, clock: Clock) -> FeedSettings {
    let mut s = FeedSettings::new(config.feed.snapshot_path.clone());
    s.concurrency = config.feed.concurrency;
    s.max_attempts = config.feed.max_attempts;
    s.max_age_days = config.feed.max_age_days;
    s.clock = clock;
    s
}

/// Opens the store named by the configuration, its directory private to the owner (an older
/// store made under umask 022 is closed to others here, whatever its files' modes).
pub async fn open_store(config: &Config) -> Result<Store, RuntimeError> {
    let path = config.store_path.display().to_string();
    crate::files::create_private_dir(&config.store_path).map_err(|source| {
        RuntimeError::StoreDir {
            path: path.clone(),
            source,
        }
    })?;
    Store::open_with(&config.store_path, config.store_options)
        .await
        .map_err(|source| RuntimeError::Store { path, source })
}

/// The IO client of the configuration (not yet reporting to any budget).
pub fn client_from(config: &Config) -> Result<IoClient, RuntimeError> {
    let key = config.io.api_key.as_ref().ok_or(RuntimeError::NoApiKey)?;
    IoClient::new(IoClientConfig {
        base_url: config.io.base_url.clone(),
        api_key: ApiKey::new(key.expose()),
        manage_key: config
            .io
            .manage_key
            .as_ref()
            .map(|k| ApiKey::new(k.expose())),
        request_timeout: config.io.request_timeout,
        connect_timeout: config.io.connect_timeout,
        pool_max_idle_per_host: config.io.pool_max_idle_per_host,
    })
    .map_err(RuntimeError::Client)
}
