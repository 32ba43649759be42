//! The bundled fake IO server: [`FakeIo::start`] serves a faithful model of the App IO API
//! (same paths, validation, error bodies, rate-limit window and headers, asynchronous
//! processing, subscriptions feed, /manage/services lifecycle) over a seeded [`Population`], with
//! fault knobs ([`Faults`]) and inspection endpoints under `/__fake/`. It uses nothing of the
//! client side (not even `model`): it is a second, independent reading of the spec.
//!
//! Connections are served by our own hyper accept loop so a handler can *drop* its connection
//! (a fault a real network produces and a client must survive), via a per-connection kill switch.

mod cms;
mod handlers;
mod population;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use population::{
    control_char, feed_epoch, hash_hex, synthetic_code, Citizen, Population, ProfileState,
};
pub use state::FakeStats;

use state::FakeState;

/// Rate limiting per API user (FACTS §6).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum FakeRate {
    /// APIM `rate-limit-by-key`: `calls` per `period`, a window starting at the first call.
    Window {
        /// Calls per period.
        calls: u32,
        /// Period.
        #[serde(with = "humantime_serde")]
        period: Duration,
    },
    /// No fixed limit, but overload 429s above a hidden capacity (token bucket).
    Capacity {
        /// Calls per second sustained.
        per_second: f64,
        /// Bucket size.
        burst: f64,
    },
    /// Never throttles.
    Unlimited,
}

impl Default for FakeRate {
    fn default() -> Self {
        FakeRate::Window {
            calls: 150,
            period: Duration::from_secs(5),
        }
    }
}

/// How long IO takes to process a message: log-normal around `median`, clamped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Processing {
    /// Shortest delay.
    #[serde(with = "humantime_serde")]
    pub min: Duration,
    /// Median delay.
    #[serde(with = "humantime_serde")]
    pub median: Duration,
    /// Longest delay.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
}

impl Default for Processing {
    fn default() -> Self {
        Processing {
            min: Duration::from_millis(300),
            median: Duration::from_millis(1500),
            max: Duration::from_secs(8),
        }
    }
}

/// Fault injection (POST /messages only, unless `all_endpoints`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Added to every answer.
    #[serde(with = "humantime_serde")]
    pub latency: Duration,
    /// Uniform extra latency in [0, jitter].
    #[serde(with = "humantime_serde")]
    pub jitter: Duration,
    /// Share of requests answered 500/502/503 without creating anything.
    pub error_5xx_rate: f64,
    /// Share of POSTs whose connection is dropped before the message is created.
    pub drop_before_create_rate: f64,
    /// Share of POSTs whose connection is dropped after the message is created.
    pub drop_after_create_rate: f64,
    /// Share of POSTs that create the message then stall for `hang` before dropping.
    pub hang_after_create_rate: f64,
    /// How long a hang lasts.
    #[serde(with = "humantime_serde")]
    pub hang: Duration,
    /// Apply faults to every endpoint, not only POST /messages.
    pub all_endpoints: bool,
}

/// One service of the fake (what IO's back office holds).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeService {
    /// Service id (the APIM subscription id).
    pub id: String,
    /// Name.
    pub name: String,
    /// Organization fiscal code (11 digits).
    pub organization_fiscal_code: String,
    /// Primary key.
    pub primary_key: String,
    /// Secondary key.
    pub secondary_key: String,
    /// The APIM user: the rate budget is shared by every service of one user.
    pub api_user: String,
    /// Sandbox: only `authorized_recipients` may receive (403 Recipient forbidden otherwise).
    pub sandbox: bool,
    /// Recipients a sandbox service may reach.
    pub authorized_recipients: Vec<String>,
    /// May send ADVANCED messages.
    pub premium: bool,
    /// Euro cents (0 refuses every payment).
    pub max_allowed_payment_amount: u64,
    /// Allowed source addresses (empty: any).
    pub authorized_cidrs: Vec<String>,
    /// What the back office holds about the service beyond the fields above: served by
    /// /manage/services (cmsGetService) with the manage key.
    pub cms: FakeCmsData,
}

/// The back-office data of a configured service (io-services-cms `CmsServiceData` and
/// `CmsServiceBaseMetadata`, plus its lifecycle and publication state). The default is a complete,
/// approved and published service (guide §4.1).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeCmsData {
    /// Service description (markdown).
    pub description: String,
    /// Organization name.
    pub organization_name: String,
    /// Department.
    pub department_name: Option<String>,
    /// `metadata.*` strings: scope, privacy_url, phone, email, pec, support_url, web_url, …
    pub metadata: std::collections::BTreeMap<String, String>,
    /// `metadata.topic_id`.
    pub topic_id: Option<i64>,
    /// Lifecycle: draft, submitted, approved, rejected, deleted.
    pub lifecycle: String,
    /// Why (a rejection).
    pub reason: Option<String>,
    /// Publication: published, unpublished, or none (never published).
    pub publication: Option<String>,
}

impl Default for FakeCmsData {
    fn default() -> Self {
        let metadata = [
            ("scope", "LOCAL"),
            ("privacy_url", "https://comune.example.it/privacy"),
            ("email", "protocollo@comune.example.it"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        FakeCmsData {
            description: "Avvisi e comunicazioni del Comune ai cittadini.".to_owned(),
            organization_name: "Comune di Prova".to_owned(),
            department_name: None,
            metadata,
            topic_id: Some(12),
            lifecycle: "approved".to_owned(),
            reason: None,
            publication: Some("published".to_owned()),
        }
    }
}

impl Default for FakeService {
    fn default() -> Self {
        FakeService {
            id: "01FAKESERVICE0000000000000".to_owned(),
            name: "Servizio di prova".to_owned(),
            organization_fiscal_code: "01234567890".to_owned(),
            primary_key: "fake-primary-key".to_owned(),
            secondary_key: "fake-secondary-key".to_owned(),
            api_user: "fake-user".to_owned(),
            sandbox: false,
            authorized_recipients: vec!["AAAAAA00A00A000A".to_owned()],
            premium: true,
            max_allowed_payment_amount: 1_000_000,
            authorized_cidrs: Vec::new(),
            cms: FakeCmsData::default(),
        }
    }
}

/// Everything the fake does, from TOML or code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FakeIoConfig {
    /// Citizens on IO.
    pub population: u64,
    /// Seed of the population and of every random choice.
    pub seed: u64,
    /// "Today" (UTC); the feed is published up to the day before. Default: the real today.
    pub today: Option<NaiveDate>,
    /// Rate limiting.
    pub rate: FakeRate,
    /// Processing delays.
    pub processing: Processing,
    /// Faults.
    pub faults: Faults,
    /// Services and their keys.
    pub services: Vec<FakeService>,
    /// The manage key (for /manage/services).
    pub manage_key: String,
    /// Services submitted for review are approved when their mandatory data is complete
    /// (rejected with the reason otherwise).
    pub auto_review: bool,
}

impl Default for FakeIoConfig {
    fn default() -> Self {
        FakeIoConfig {
            population: 10_000,
            seed: 42,
            today: None,
            rate: FakeRate::default(),
            processing: Processing::default(),
            faults: Faults::default(),
            services: vec![FakeService::default()],
            manage_key: "fake-manage-key".to_owned(),
            auto_review: true,
        }
    }
}

/// Per-connection data handlers can reach: the peer, and the switch that drops the connection.
#[derive(Clone)]
pub(crate) struct Conn {
    pub peer: SocketAddr,
    pub kill: Arc<Notify>,
}

/// The fake IO server.
pub struct FakeIo;

/// A running fake: its address, state and controls.
#[derive(Clone)]
pub struct FakeIoHandle {
    addr: SocketAddr,
    state: Arc<FakeState>,
    stop: CancellationToken,
    done: Arc<tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl FakeIo {
    /// Builds the population and serves on `addr` (use `127.0.0.1:0` in tests).
    pub async fn start(config: FakeIoConfig, addr: SocketAddr) -> std::io::Result<FakeIoHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = tokio::task::spawn_blocking(move || FakeState::new(config))
            .await
            .map_err(std::io::Error::other)?;
        let state = Arc::new(state);
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, state.clone(), stop.clone()));
        Ok(FakeIoHandle {
            addr,
            state,
            stop,
            done: Arc::new(tokio::sync::Mutex::new(Some(task))),
        })
    }
}

async fn serve(listener: TcpListener, state: Arc<FakeState>, stop: CancellationToken) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tower::Service;
    let router = handlers::router(state);
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let kill = Arc::new(Notify::new());
            let conn = Conn {
                peer,
                kill: kill.clone(),
            };
            let service = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    req.extensions_mut().insert(conn.clone());
                    let mut router = router.clone();
                    async move { router.call(req).await }
                },
            );
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = connection => {}
                // Dropping the connection future closes the socket with no answer.
                () = kill.notified() => {}
                () = stop.cancelled() => {}
            }
        });
    }
}

impl FakeIoHandle {
    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of the API, as the client wants it.
    pub fn base_url(&self) -> String {
        format!("http://{}/api/v1", self.addr)
    }

    /// Counters so far.
    pub fn stats(&self) -> FakeStats {
        self.state.stats()
    }

    /// The population (ground truth for tests).
    pub fn population(&self) -> &Population {
        &self.state.population
    }

    /// Messages created for a fiscal code (proves "never twice").
    pub fn messages_for(&self, fiscal_code: &str) -> u32 {
        self.state.messages_for(fiscal_code)
    }

    /// The contents (JSON text: subject, markdown, …) of every message created for a fiscal
    /// code: ground truth for what a citizen received.
    pub fn contents_for(&self, fiscal_code: &str) -> Vec<String> {
        self.state.contents_for(fiscal_code)
    }

    /// Changes the fault knobs while running.
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// Moves IO's publication horizon: feed days from `day` on answer 404 "Data not available
    /// yet" (None: every day before today is published, as on IO).
    pub fn set_feed_horizon(&self, day: Option<NaiveDate>) {
        self.state.set_feed_horizon(day);
    }

    /// Changes the rate limiting while running.
    pub fn set_rate(&self, rate: FakeRate) {
        self.state.set_rate(rate);
    }

    /// Zeroes the counters.
    pub fn reset_stats(&self) {
        self.state.reset_stats();
    }

    /// Stops serving and waits for the accept loop to end.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        if let Some(task) = self.done.lock().await.take() {
            let _ = task.await;
        }
    }
}
