//! Configuration: [`RawConfig`] (the TOML file, every key optional) is layered with the
//! environment ([`RawConfig::apply_env`]) and command-line flags, then validated once into
//! [`Config`]; the rest of the code never re-checks it. See `config/corriere.toml` for every key.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::job::toml_error;

/// Production base URL of the IO services API.
pub const DEFAULT_IO_BASE_URL: &str = "https://api.io.pagopa.it/api/v1";
/// Whole-request timeout of one IO call.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to open a TCP + TLS connection to IO.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Idle keep-alive connections kept per host.
pub const DEFAULT_POOL_MAX_IDLE: usize = 64;
/// IO's default window: 150 calls per 5 s per API user (FACTS §6).
pub const DEFAULT_RATE_CALLS: u32 = 150;
/// IO's default window period.
pub const DEFAULT_RATE_PERIOD: Duration = Duration::from_secs(5);
/// Requests in flight at once, across every kind of call.
pub const DEFAULT_IN_FLIGHT: usize = 64;
/// Adaptive mode: starting rate, floor and ceiling in calls per second.
pub const DEFAULT_ADAPTIVE_INITIAL: f64 = 100.0;
/// Adaptive mode floor (calls/s).
pub const DEFAULT_ADAPTIVE_FLOOR: f64 = 5.0;
/// Adaptive mode ceiling (calls/s).
pub const DEFAULT_ADAPTIVE_CEILING: f64 = 5000.0;
/// Where the sled store lives.
pub const DEFAULT_STORE_PATH: &str = "corriere-data";
/// Feed days fetched at once.
pub const DEFAULT_FEED_CONCURRENCY: usize = 8;
/// Attempts per feed day on 5xx / timeouts.
pub const DEFAULT_FEED_MAX_ATTEMPTS: u32 = 8;
/// A subscriber set more than this many days behind yesterday is synced before use.
pub const DEFAULT_FEED_MAX_AGE_DAYS: u32 = 2;
/// Time allowed after SIGTERM to drain in-flight requests and flush.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(30);
/// Daily feed sync (UTC): IO publishes a day at 00:00 UTC of the next.
pub const DEFAULT_FEED_SYNC_AT: &str = "00:30";
/// The admin HTTP API listens on loopback only unless told otherwise.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
/// Time a client has to send a whole request header (slow-header attacks are cut after it).
pub const DEFAULT_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest header timeout accepted: a longer one lets half-sent headers hold connections.
pub const MAX_ADMIN_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no byte moving for this long while no handler works on it is cut (a
/// report reader that stopped reading; a stalled upload is bounded by the request timeout).
pub const DEFAULT_ADMIN_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest time from a request's header to its answer's header (an upload and a dry run
/// included; a streamed report's body is bounded by the idle timeout instead).
pub const DEFAULT_ADMIN_REQUEST_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// Connections open at once; past it, the oldest connection with no request in progress is
/// closed, or the new one refused when every connection is busy.
pub const DEFAULT_ADMIN_MAX_CONNECTIONS: usize = 64;
/// Largest submit body (template + CSV), MiB.
pub const DEFAULT_ADMIN_UPLOAD_LIMIT_MIB: u64 = 2048;
/// Bytes of uploads being staged on disk at once, across concurrent submits, MiB.
pub const DEFAULT_ADMIN_STAGING_QUOTA_MIB: u64 = 4096;
/// How long a finished job's uploaded inputs are kept.
pub const DEFAULT_ADMIN_UPLOAD_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Errors while reading or validating configuration. Never contains a secret's value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown / mistyped key.
    #[error("config file {path}: {message}")]
    Parse {
        /// File path.
        path: PathBuf,
        /// TOML error, with line and column.
        message: String,
    },
    /// An environment variable has a value that cannot be used.
    #[error("environment variable {var}: {reason}")]
    Env {
        /// Variable name.
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A key has a value out of range or inconsistent with another.
    #[error("config key {key}: {reason}")]
    Invalid {
        /// Dotted key, e.g. `rate.calls`.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A secret (API key, admin token). `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value (trimmed: key files often end with a newline).
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().trim().to_owned())
    }
    /// The clear value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The TOML file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// `[io]`
    pub io: RawIo,
    /// `[rate]`
    pub rate: RawRate,
    /// `[store]`
    pub store: RawStore,
    /// `[admin]`
    pub admin: RawAdmin,
    /// `[log]`
    pub log: RawLog,
    /// `[feed]`
    pub feed: RawFeed,
    /// `[daemon]`
    pub daemon: RawDaemon,
}

/// `[io]`: where IO is and how to authenticate.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawIo {
    /// Base URL, e.g. `https://api.io.pagopa.it/api/v1`.
    pub base_url: Option<String>,
    /// Service API key (primary or secondary). Prefer `api_key_file` or the environment.
    pub api_key: Option<Secret>,
    /// File holding the service API key.
    pub api_key_file: Option<PathBuf>,
    /// Manage key for /manage/services (Back-office "manage" subscription).
    pub manage_key: Option<Secret>,
    /// File holding the manage key.
    pub manage_key_file: Option<PathBuf>,
    /// Service id, for the service preflight (cmsGetService).
    pub service_id: Option<String>,
    /// Our public (egress) address as IO sees it, for the preflight's `authorized_cidrs` check.
    pub source_ip: Option<String>,
    /// Whether the service has Premium (ADVANCED messages); IO's API does not say it.
    pub premium: Option<bool>,
    /// Whole-request timeout.
    #[serde(with = "humantime_serde::option")]
    pub request_timeout: Option<Duration>,
    /// Connect timeout.
    #[serde(with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: Option<usize>,
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::new)
    }
}

/// `[rate]`: the one call budget shared by every IO call.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawRate {
    /// `window` (IO's N calls per P seconds), `adaptive` (no fixed limit: AIMD), `unlimited`.
    pub mode: Option<String>,
    /// Window mode: calls per period.
    pub calls: Option<u32>,
    /// Window mode: the period.
    #[serde(with = "humantime_serde::option")]
    pub period: Option<Duration>,
    /// Requests in flight at once.
    pub in_flight: Option<usize>,
    /// Adaptive mode: starting rate (calls/s).
    pub initial: Option<f64>,
    /// Adaptive mode: lowest rate (calls/s).
    pub floor: Option<f64>,
    /// Adaptive mode: highest rate (calls/s).
    pub ceiling: Option<f64>,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawStore {
    /// Directory of the sled database.
    pub path: Option<PathBuf>,
    /// sled's cache in MiB (on-disk bytes; sled holds about ten times that in memory).
    pub cache_mib: Option<u64>,
    /// zstd compression of the store's writes.
    pub compression: Option<bool>,
    /// Benches: every durable sync of the store takes this much longer (a slow volume).
    pub sync_delay_ms: Option<u64>,
}

/// `[admin]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawAdmin {
    /// Listen address of the admin HTTP API and /metrics.
    pub listen: Option<String>,
    /// File holding the admin bearer token (or env `CORRIERE_ADMIN_TOKEN`).
    pub token_file: Option<PathBuf>,
    /// Directories a path submit may read from (empty: path submits are off).
    pub input_dirs: Option<Vec<PathBuf>>,
    /// Time a client has to send a whole request header.
    #[serde(with = "humantime_serde::option")]
    pub header_timeout: Option<Duration>,
    /// A request with no byte moving for this long is cut.
    #[serde(with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    /// Longest time from a request's header to its answer's header.
    #[serde(with = "humantime_serde::option")]
    pub request_timeout: Option<Duration>,
    /// Connections open at once.
    pub max_connections: Option<usize>,
    /// Largest submit body, MiB.
    pub upload_limit_mib: Option<u64>,
    /// Uploads being staged at once, MiB.
    pub staging_quota_mib: Option<u64>,
    /// How long a finished job's uploads are kept.
    #[serde(with = "humantime_serde::option")]
    pub upload_retention: Option<Duration>,
}

/// `[feed]`: the subscriptions feed and the local subscriber set.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawFeed {
    /// Snapshot file of the subscriber set (default: `<store.path>/feed/subscribers.snapshot`).
    pub snapshot_path: Option<PathBuf>,
    /// Feed days fetched at once.
    pub concurrency: Option<usize>,
    /// Attempts per day on 5xx / timeouts before a sync stops.
    pub max_attempts: Option<u32>,
    /// A set more than this many days behind yesterday is synced before a job uses it.
    pub max_age_days: Option<u32>,
}

/// `[daemon]`: `corriere run`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDaemon {
    /// Time allowed after SIGTERM/SIGINT to finish what is in flight and flush the store.
    #[serde(with = "humantime_serde::option")]
    pub grace_period: Option<Duration>,
    /// Default send window of jobs whose template names none, e.g. "mon-sat 08:00-20:00"
    /// (Europe/Rome). Absent: always.
    pub send_window: Option<String>,
    /// Daily feed sync time (UTC, "HH:MM"), or "off" when the service has no feed access.
    pub feed_sync_at: Option<String>,
    /// Give up polling a message this long after its submit.
    #[serde(with = "humantime_serde::option")]
    pub poll_deadline: Option<Duration>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLog {
    /// `human` (default) or `json`.
    pub format: Option<String>,
    /// A `tracing` filter, e.g. `info,corriere=debug` (env `RUST_LOG` wins).
    pub filter: Option<String>,
}

/// How the shared call budget is paced.
#[derive(Debug, Clone, PartialEq)]
pub enum RateSettings {
    /// IO's gateway window: `calls` per `period` per API user.
    Window {
        /// Calls per period.
        calls: u32,
        /// Period length.
        period: Duration,
        /// Requests in flight at once.
        in_flight: usize,
    },
    /// No fixed limit: an AIMD controller finds the rate IO sustains.
    Adaptive {
        /// Starting rate (calls/s).
        initial: f64,
        /// Lowest rate (calls/s).
        floor: f64,
        /// Highest rate (calls/s).
        ceiling: f64,
        /// Requests in flight at once.
        in_flight: usize,
    },
    /// No pacing at all but the in-flight cap (tests, benchmarks).
    Unlimited {
        /// Requests in flight at once.
        in_flight: usize,
    },
}

impl RateSettings {
    /// Requests in flight at once.
    pub fn in_flight(&self) -> usize {
        match self {
            RateSettings::Window { in_flight, .. }
            | RateSettings::Adaptive { in_flight, .. }
            | RateSettings::Unlimited { in_flight } => *in_flight,
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Validated IO connection settings.
#[derive(Debug, Clone)]
pub struct IoSettings {
    /// Base URL without a trailing slash.
    pub base_url: String,
    /// Service API key (absent: commands that call IO refuse to start).
    pub api_key: Option<Secret>,
    /// Manage key.
    pub manage_key: Option<Secret>,
    /// Service id for preflight.
    pub service_id: Option<String>,
    /// Our public address as IO sees it (preflight `authorized_cidrs` check).
    pub source_ip: Option<std::net::IpAddr>,
    /// The service has Premium (None: not declared).
    pub premium: Option<bool>,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle connections per host.
    pub pool_max_idle_per_host: usize,
}

/// Validated admin API settings (beyond the address and the token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Directories a path submit may read from, as resolved at start (empty: path submits off).
    pub input_dirs: Vec<PathBuf>,
    /// Time a client has to send a whole request header.
    pub header_timeout: Duration,
    /// A request with no byte moving for this long is cut.
    pub idle_timeout: Duration,
    /// Longest time from a request's header to its answer's header.
    pub request_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// Largest submit body, bytes.
    pub upload_limit: u64,
    /// Uploads being staged at once, bytes.
    pub staging_quota: u64,
    /// How long a finished job's uploads are kept.
    pub upload_retention: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            input_dirs: Vec::new(),
            header_timeout: DEFAULT_ADMIN_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_ADMIN_IDLE_TIMEOUT,
            request_timeout: DEFAULT_ADMIN_REQUEST_TIMEOUT,
            max_connections: DEFAULT_ADMIN_MAX_CONNECTIONS,
            upload_limit: DEFAULT_ADMIN_UPLOAD_LIMIT_MIB * MIB,
            staging_quota: DEFAULT_ADMIN_STAGING_QUOTA_MIB * MIB,
            upload_retention: DEFAULT_ADMIN_UPLOAD_RETENTION,
        }
    }
}

const MIB: u64 = 1024 * 1024;

/// Validated feed settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedConfig {
    /// Snapshot file.
    pub snapshot_path: PathBuf,
    /// Days fetched at once.
    pub concurrency: usize,
    /// Attempts per day.
    pub max_attempts: u32,
    /// Oldest usable set, in days behind yesterday.
    pub max_age_days: u32,
}

/// Validated daemon settings.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Time allowed to drain at shutdown.
    pub grace_period: Duration,
    /// Default send window.
    pub send_window: Option<crate::model::SendWindow>,
    /// Daily feed sync time (UTC); None: no scheduled sync.
    pub feed_sync_at: Option<chrono::NaiveTime>,
    /// Poll deadline.
    pub poll_deadline: Duration,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// IO connection.
    pub io: IoSettings,
    /// Call budget.
    pub rate: RateSettings,
    /// Store directory.
    pub store_path: PathBuf,
    /// Store tuning.
    pub store_options: crate::store::StoreOptions,
    /// Admin listen address.
    pub admin_listen: std::net::SocketAddr,
    /// Admin bearer token.
    pub admin_token: Option<Secret>,
    /// Admin API limits and path submits.
    pub admin: AdminConfig,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_filter: Option<String>,
    /// Subscriptions feed.
    pub feed: FeedConfig,
    /// The daemon.
    pub daemon: DaemonConfig,
}

/// Environment variables that override the file, with the key each one sets.
pub const ENV_VARS: &[(&str, &str)] = &[
    ("CORRIERE_IO_BASE_URL", "io.base_url"),
    ("CORRIERE_IO_API_KEY", "io.api_key"),
    ("CORRIERE_IO_API_KEY_FILE", "io.api_key_file"),
    ("CORRIERE_IO_MANAGE_KEY", "io.manage_key"),
    ("CORRIERE_IO_MANAGE_KEY_FILE", "io.manage_key_file"),
    ("CORRIERE_IO_SERVICE_ID", "io.service_id"),
    ("CORRIERE_IO_SOURCE_IP", "io.source_ip"),
    ("CORRIERE_IO_PREMIUM", "io.premium"),
    ("CORRIERE_IO_REQUEST_TIMEOUT", "io.request_timeout"),
    ("CORRIERE_RATE_MODE", "rate.mode"),
    ("CORRIERE_RATE_CALLS", "rate.calls"),
    ("CORRIERE_RATE_PERIOD", "rate.period"),
    ("CORRIERE_RATE_IN_FLIGHT", "rate.in_flight"),
    ("CORRIERE_STORE_PATH", "store.path"),
    ("CORRIERE_STORE_CACHE_MIB", "store.cache_mib"),
    ("CORRIERE_STORE_COMPRESSION", "store.compression"),
    ("CORRIERE_STORE_SYNC_DELAY_MS", "store.sync_delay_ms"),
    ("CORRIERE_ADMIN_LISTEN", "admin.listen"),
    ("CORRIERE_ADMIN_TOKEN_FILE", "admin.token_file"),
    ("CORRIERE_ADMIN_INPUT_DIRS", "admin.input_dirs"),
    ("CORRIERE_LOG_FORMAT", "log.format"),
];

/// Environment variable holding the admin token itself.
pub const ENV_ADMIN_TOKEN: &str = "CORRIERE_ADMIN_TOKEN";

impl RawConfig {
    /// Reads and parses a TOML file (unknown keys are errors: they are usually typos).
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses TOML text. The error names the line and column but never quotes the line: it
    /// may hold a secret (`api_keyy = "..."`).
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| toml_error(&e, text))
    }

    /// Applies environment overrides, read through `lookup` (so tests need not touch the
    /// process environment). The environment wins over the file.
    pub fn apply_env(
        &mut self,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(), ConfigError> {
        fn dur(var: &'static str, v: &str) -> Result<Duration, ConfigError> {
            humantime::parse_duration(v).map_err(|e| ConfigError::Env {
                var,
                reason: format!("not a duration like \"5s\": {e}"),
            })
        }
        fn num<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T, ConfigError> {
            v.trim().parse().map_err(|_| ConfigError::Env {
                var,
                reason: "not a number".to_owned(),
            })
        }
        fn boolean(var: &'static str, v: &str) -> Result<bool, ConfigError> {
            match v.trim() {
                "true" | "1" => Ok(true),
                "false" | "0" => Ok(false),
                _ => Err(ConfigError::Env {
                    var,
                    reason: "expected true or false".to_owned(),
                }),
            }
        }
        for (var, _) in ENV_VARS {
            let Some(v) = lookup(var) else { continue };
            match *var {
                "CORRIERE_IO_BASE_URL" => self.io.base_url = Some(v),
                "CORRIERE_IO_API_KEY" => self.io.api_key = Some(Secret::new(v)),
                "CORRIERE_IO_API_KEY_FILE" => self.io.api_key_file = Some(v.into()),
                "CORRIERE_IO_MANAGE_KEY" => self.io.manage_key = Some(Secret::new(v)),
                "CORRIERE_IO_MANAGE_KEY_FILE" => self.io.manage_key_file = Some(v.into()),
                "CORRIERE_IO_SERVICE_ID" => self.io.service_id = Some(v),
                "CORRIERE_IO_SOURCE_IP" => self.io.source_ip = Some(v),
                "CORRIERE_IO_PREMIUM" => self.io.premium = Some(boolean(var, &v)?),
                "CORRIERE_IO_REQUEST_TIMEOUT" => self.io.request_timeout = Some(dur(var, &v)?),
                "CORRIERE_RATE_MODE" => self.rate.mode = Some(v),
                "CORRIERE_RATE_CALLS" => self.rate.calls = Some(num(var, &v)?),
                "CORRIERE_RATE_PERIOD" => self.rate.period = Some(dur(var, &v)?),
                "CORRIERE_RATE_IN_FLIGHT" => self.rate.in_flight = Some(num(var, &v)?),
                "CORRIERE_STORE_PATH" => self.store.path = Some(v.into()),
                "CORRIERE_STORE_CACHE_MIB" => self.store.cache_mib = Some(num(var, &v)?),
                "CORRIERE_STORE_COMPRESSION" => self.store.compression = Some(boolean(var, &v)?),
                "CORRIERE_STORE_SYNC_DELAY_MS" => self.store.sync_delay_ms = Some(num(var, &v)?),
                "CORRIERE_ADMIN_LISTEN" => self.admin.listen = Some(v),
                "CORRIERE_ADMIN_TOKEN_FILE" => self.admin.token_file = Some(v.into()),
                // Separated like PATH; empty: path submits off.
                "CORRIERE_ADMIN_INPUT_DIRS" => {
                    self.admin.input_dirs = Some(std::env::split_paths(&v).collect())
                }
                "CORRIERE_LOG_FORMAT" => self.log.format = Some(v),
                other => unreachable!("ENV_VARS lists {other} without a setter"),
            }
        }
        Ok(())
    }

    /// Validates every key and reads secret files. `admin_token_env` is the value of
    /// `CORRIERE_ADMIN_TOKEN`, if set.
    pub fn validate(self, admin_token_env: Option<String>) -> Result<Config, ConfigError> {
        // One conversion per section (raw → validated); only the defaults that depend on
        // another section are set here.
        let pool_given = self.io.pool_max_idle_per_host.is_some();
        let mut io = IoSettings::try_from(self.io)?;
        let rate = RateSettings::try_from(self.rate)?;
        // Fewer idle connections than calls in flight makes every call past the pool open a new
        // TCP (and TLS) connection and close it after: measured as a tenth of the CPU at 256 in
        // flight. The default keeps one per call in flight.
        if !pool_given {
            io.pool_max_idle_per_host = rate.in_flight().max(DEFAULT_POOL_MAX_IDLE);
        }
        let admin = AdminConfig::try_from(&self.admin)?;
        let admin_listen_text = self
            .admin
            .listen
            .unwrap_or_else(|| DEFAULT_ADMIN_LISTEN.to_owned());
        let admin_listen = admin_listen_text
            .parse()
            .map_err(|_| ConfigError::Invalid {
                key: "admin.listen",
                reason: format!("{admin_listen_text:?} is not an address like 127.0.0.1:9464"),
            })?;
        let admin_token = secret_from(
            admin_token_env.map(Secret::new),
            self.admin.token_file,
            "admin.token",
        )?;
        let log = LogSettings::try_from(self.log)?;
        let store = StoreSettings::try_from(self.store)?;
        let feed = FeedConfig::try_from((self.feed, store.path.as_path()))?;
        let daemon = DaemonConfig::try_from(self.daemon)?;
        Ok(Config {
            io,
            rate,
            feed,
            daemon,
            store_path: store.path,
            store_options: store.options,
            admin_listen,
            admin_token,
            admin,
            log_format: log.format,
            log_filter: log.filter,
        })
    }
}

impl TryFrom<RawIo> for IoSettings {
    type Error = ConfigError;

    /// `io.*` (the idle pool's default, one per call in flight, is the rate section's).
    fn try_from(raw: RawIo) -> Result<Self, ConfigError> {
        let base_url = raw
            .base_url
            .unwrap_or_else(|| DEFAULT_IO_BASE_URL.to_owned())
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                key: "io.base_url",
                reason: "must start with https:// (or http:// for the local fake IO)".to_owned(),
            });
        }
        let api_key = secret_from(raw.api_key, raw.api_key_file, "io.api_key")?;
        let manage_key = secret_from(raw.manage_key, raw.manage_key_file, "io.manage_key")?;
        let request_timeout = raw.request_timeout.unwrap_or(DEFAULT_REQUEST_TIMEOUT);
        let connect_timeout = raw.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        if request_timeout.is_zero() || connect_timeout.is_zero() {
            return Err(ConfigError::Invalid {
                key: "io.request_timeout",
                reason: "timeouts must be greater than zero".to_owned(),
            });
        }
        let source_ip = match raw.source_ip.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(text) => Some(text.parse().map_err(|_| ConfigError::Invalid {
                key: "io.source_ip",
                reason: format!("{text:?} is not an IP address like 203.0.113.7"),
            })?),
        };
        Ok(IoSettings {
            base_url,
            api_key,
            manage_key,
            service_id: raw.service_id,
            source_ip,
            premium: raw.premium,
            request_timeout,
            connect_timeout,
            pool_max_idle_per_host: raw.pool_max_idle_per_host.unwrap_or(DEFAULT_POOL_MAX_IDLE),
        })
    }
}

/// `log.*`, checked.
struct LogSettings {
    format: LogFormat,
    filter: Option<String>,
}

impl TryFrom<RawLog> for LogSettings {
    type Error = ConfigError;

    fn try_from(raw: RawLog) -> Result<Self, ConfigError> {
        let format = match raw.format.as_deref().unwrap_or("human") {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => {
                return Err(ConfigError::Invalid {
                    key: "log.format",
                    reason: format!("{other:?}: expected \"human\" or \"json\""),
                })
            }
        };
        Ok(LogSettings {
            format,
            filter: raw.filter,
        })
    }
}

/// `store.*`, checked.
struct StoreSettings {
    path: PathBuf,
    options: crate::store::StoreOptions,
}

impl TryFrom<RawStore> for StoreSettings {
    type Error = ConfigError;

    fn try_from(raw: RawStore) -> Result<Self, ConfigError> {
        if raw.cache_mib == Some(0) {
            return Err(ConfigError::Invalid {
                key: "store.cache_mib",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(StoreSettings {
            path: raw.path.unwrap_or_else(|| DEFAULT_STORE_PATH.into()),
            options: crate::store::StoreOptions {
                cache_capacity: raw
                    .cache_mib
                    .map(|m| m * 1024 * 1024)
                    .unwrap_or(crate::store::CACHE_CAPACITY),
                compression: raw.compression.unwrap_or(true),
                sync_delay: std::time::Duration::from_millis(raw.sync_delay_ms.unwrap_or(0)),
            },
        })
    }
}

impl TryFrom<(RawFeed, &Path)> for FeedConfig {
    type Error = ConfigError;

    /// `feed.*` (the snapshot's default place is in the store directory).
    fn try_from((raw, store_path): (RawFeed, &Path)) -> Result<Self, ConfigError> {
        let concurrency = raw.concurrency.unwrap_or(DEFAULT_FEED_CONCURRENCY);
        if !(1..=64).contains(&concurrency) {
            return Err(ConfigError::Invalid {
                key: "feed.concurrency",
                reason: format!("{concurrency}: expected 1 to 64"),
            });
        }
        let max_attempts = raw.max_attempts.unwrap_or(DEFAULT_FEED_MAX_ATTEMPTS);
        if max_attempts == 0 {
            return Err(ConfigError::Invalid {
                key: "feed.max_attempts",
                reason: "must be at least 1".to_owned(),
            });
        }
        Ok(FeedConfig {
            snapshot_path: raw
                .snapshot_path
                .unwrap_or_else(|| store_path.join("feed").join("subscribers.snapshot")),
            concurrency,
            max_attempts,
            max_age_days: raw.max_age_days.unwrap_or(DEFAULT_FEED_MAX_AGE_DAYS),
        })
    }
}

impl TryFrom<RawDaemon> for DaemonConfig {
    type Error = ConfigError;

    /// `daemon.*`.
    fn try_from(raw: RawDaemon) -> Result<Self, ConfigError> {
        let send_window = match &raw.send_window {
            None => None,
            Some(spec) => Some(
                crate::model::SendWindow::parse(spec, crate::model::send_window::DEFAULT_TIMEZONE)
                    .map_err(|e| ConfigError::Invalid {
                        key: "daemon.send_window",
                        reason: e.to_string(),
                    })?,
            ),
        };
        let feed_sync_at = match raw.feed_sync_at.as_deref().unwrap_or(DEFAULT_FEED_SYNC_AT) {
            "off" => None,
            t => Some(chrono::NaiveTime::parse_from_str(t, "%H:%M").map_err(|_| {
                ConfigError::Invalid {
                    key: "daemon.feed_sync_at",
                    reason: format!("{t:?}: expected a UTC time like \"00:30\" or \"off\""),
                }
            })?),
        };
        Ok(DaemonConfig {
            grace_period: raw.grace_period.unwrap_or(DEFAULT_GRACE_PERIOD),
            send_window,
            feed_sync_at,
            poll_deadline: raw
                .poll_deadline
                .unwrap_or(crate::dispatch::DEFAULT_POLL_DEADLINE),
        })
    }
}

impl Config {
    /// File (optional) < environment. Flags are applied by the caller on the result.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let mut raw = match path {
            Some(p) => RawConfig::from_file(p)?,
            None => RawConfig::default(),
        };
        raw.apply_env(|k| std::env::var(k).ok())?;
        raw.validate(std::env::var(ENV_ADMIN_TOKEN).ok())
    }
}

impl TryFrom<&RawAdmin> for AdminConfig {
    type Error = ConfigError;

    /// The admin API's limits and input directories, checked.
    fn try_from(raw: &RawAdmin) -> Result<Self, ConfigError> {
        validate_admin(raw)
    }
}

fn validate_admin(raw: &RawAdmin) -> Result<AdminConfig, ConfigError> {
    let d = AdminConfig::default();
    let header_timeout = raw.header_timeout.unwrap_or(d.header_timeout);
    if header_timeout.is_zero() || header_timeout > MAX_ADMIN_HEADER_TIMEOUT {
        return Err(ConfigError::Invalid {
            key: "admin.header_timeout",
            reason: format!(
                "{}: expected more than 0 and at most {}",
                humantime::format_duration(header_timeout),
                humantime::format_duration(MAX_ADMIN_HEADER_TIMEOUT)
            ),
        });
    }
    let positive = |key: &'static str, v: Option<Duration>, default: Duration| {
        let v = v.unwrap_or(default);
        if v.is_zero() {
            Err(ConfigError::Invalid {
                key,
                reason: "must be greater than zero".to_owned(),
            })
        } else {
            Ok(v)
        }
    };
    let idle_timeout = positive("admin.idle_timeout", raw.idle_timeout, d.idle_timeout)?;
    let request_timeout = positive(
        "admin.request_timeout",
        raw.request_timeout,
        d.request_timeout,
    )?;
    let upload_retention = positive(
        "admin.upload_retention",
        raw.upload_retention,
        d.upload_retention,
    )?;
    let max_connections = raw.max_connections.unwrap_or(d.max_connections);
    if max_connections < 2 {
        return Err(ConfigError::Invalid {
            key: "admin.max_connections",
            reason: format!("{max_connections}: expected at least 2"),
        });
    }
    let mib = |key: &'static str, v: Option<u64>, default: u64| match v {
        None => Ok(default),
        Some(0) => Err(ConfigError::Invalid {
            key,
            reason: "must be at least 1".to_owned(),
        }),
        Some(m) => m.checked_mul(MIB).ok_or(ConfigError::Invalid {
            key,
            reason: format!("{m} MiB is too large"),
        }),
    };
    let upload_limit = mib(
        "admin.upload_limit_mib",
        raw.upload_limit_mib,
        d.upload_limit,
    )?;
    let staging_quota = mib(
        "admin.staging_quota_mib",
        raw.staging_quota_mib,
        d.staging_quota,
    )?;
    if staging_quota < upload_limit {
        return Err(ConfigError::Invalid {
            key: "admin.staging_quota_mib",
            reason: "must be at least admin.upload_limit_mib (one upload must fit)".to_owned(),
        });
    }
    // Resolved once: a path submit is checked against where the directories really are.
    let mut input_dirs = Vec::new();
    for dir in raw.input_dirs.iter().flatten() {
        if dir.as_os_str().is_empty() {
            continue;
        }
        if !dir.is_absolute() {
            return Err(ConfigError::Invalid {
                key: "admin.input_dirs",
                reason: format!("{} must be an absolute path", dir.display()),
            });
        }
        let resolved = std::fs::canonicalize(dir).map_err(|e| ConfigError::Invalid {
            key: "admin.input_dirs",
            reason: format!("{}: {e}", dir.display()),
        })?;
        if !resolved.is_dir() {
            return Err(ConfigError::Invalid {
                key: "admin.input_dirs",
                reason: format!("{} is not a directory", dir.display()),
            });
        }
        input_dirs.push(resolved);
    }
    Ok(AdminConfig {
        input_dirs,
        header_timeout,
        idle_timeout,
        request_timeout,
        max_connections,
        upload_limit,
        staging_quota,
        upload_retention,
    })
}

fn secret_from(
    value: Option<Secret>,
    file: Option<PathBuf>,
    key: &'static str,
) -> Result<Option<Secret>, ConfigError> {
    match (value, file) {
        (Some(v), _) if !v.expose().is_empty() => Ok(Some(v)),
        (_, Some(path)) => {
            let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
                path: path.clone(),
                source,
            })?;
            let secret = Secret::new(text);
            if secret.expose().is_empty() {
                return Err(ConfigError::Invalid {
                    key,
                    reason: format!("file {} is empty", path.display()),
                });
            }
            Ok(Some(secret))
        }
        _ => Ok(None),
    }
}

impl TryFrom<RawRate> for RateSettings {
    type Error = ConfigError;

    /// `rate.*`: the window, adaptive or unlimited budget.
    fn try_from(raw: RawRate) -> Result<Self, ConfigError> {
        validate_rate(raw)
    }
}

fn validate_rate(raw: RawRate) -> Result<RateSettings, ConfigError> {
    let in_flight = raw.in_flight.unwrap_or(DEFAULT_IN_FLIGHT);
    if in_flight == 0 {
        return Err(ConfigError::Invalid {
            key: "rate.in_flight",
            reason: "must be at least 1".to_owned(),
        });
    }
    match raw.mode.as_deref().unwrap_or("window") {
        "window" => {
            let calls = raw.calls.unwrap_or(DEFAULT_RATE_CALLS);
            let period = raw.period.unwrap_or(DEFAULT_RATE_PERIOD);
            if calls == 0 || period.is_zero() {
                return Err(ConfigError::Invalid {
                    key: "rate.calls",
                    reason: "a window needs calls ≥ 1 and a period > 0".to_owned(),
                });
            }
            Ok(RateSettings::Window {
                calls,
                period,
                in_flight,
            })
        }
        "adaptive" => {
            let initial = raw.initial.unwrap_or(DEFAULT_ADAPTIVE_INITIAL);
            let floor = raw.floor.unwrap_or(DEFAULT_ADAPTIVE_FLOOR);
            let ceiling = raw.ceiling.unwrap_or(DEFAULT_ADAPTIVE_CEILING);
            if !(floor > 0.0 && floor <= initial && initial <= ceiling) {
                return Err(ConfigError::Invalid {
                    key: "rate.initial",
                    reason: format!(
                        "need 0 < floor ≤ initial ≤ ceiling, got {floor} / {initial} / {ceiling}"
                    ),
                });
            }
            Ok(RateSettings::Adaptive {
                initial,
                floor,
                ceiling,
                in_flight,
            })
        }
        "unlimited" => Ok(RateSettings::Unlimited { in_flight }),
        other => Err(ConfigError::Invalid {
            key: "rate.mode",
            reason: format!("{other:?}: expected \"window\", \"adaptive\" or \"unlimited\""),
        }),
    }
}

impl From<&Config> for crate::service::PreflightSettings {
    /// The preflight of the configured service (probe on).
    fn from(config: &Config) -> Self {
        crate::service::PreflightSettings {
            service_id: config.io.service_id.clone(),
            manage: config.io.manage_key.is_some(),
            premium: config.io.premium,
            probe: true,
            api_key: config
                .io
                .api_key
                .as_ref()
                .map(|k| crate::io_api::ApiKey::new(k.expose())),
        }
    }
}

impl From<&RateSettings> for crate::rate::RateConfig {
    /// The budget of the configured account.
    fn from(rate: &RateSettings) -> Self {
        use crate::rate::RateMode;
        let mode = match *rate {
            RateSettings::Window { calls, period, .. } => RateMode::Window { calls, period },
            RateSettings::Adaptive {
                initial,
                floor,
                ceiling,
                ..
            } => RateMode::Adaptive {
                initial,
                floor,
                ceiling,
            },
            RateSettings::Unlimited { .. } => RateMode::Unlimited,
        };
        crate::rate::RateConfig {
            mode,
            in_flight: rate.in_flight(),
        }
    }
}

impl Config {
    /// The engine settings of the configuration (poll deadline, default send window), with
    /// time read from `clock`.
    pub fn dispatch_settings(
        &self,
        clock: crate::clock::Clock,
    ) -> crate::dispatch::DispatchSettings {
        crate::dispatch::DispatchSettings {
            poll_deadline: self.daemon.poll_deadline,
            send_window: self.daemon.send_window.clone(),
            clock,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn a_toml_error_never_quotes_the_line_it_is_on() {
        let text = "[io]\napi_keyy = \"SUPERSECRET123\"\n";
        let e = RawConfig::from_toml(text).unwrap_err();
        assert!(!e.contains("SUPERSECRET123"), "{e}");
        assert!(e.contains("line 2"), "{e}");
        let e = RawConfig::from_toml("[io]\napi_key = \"SECRET\n").unwrap_err();
        assert!(!e.contains("SECRET"), "{e}");
    }

    #[test]
    fn defaults_are_ios_window_and_production_url() {
        let cfg = RawConfig::default().validate(None).unwrap();
        assert_eq!(cfg.io.base_url, DEFAULT_IO_BASE_URL);
        assert_eq!(
            cfg.rate,
            RateSettings::Window {
                calls: 150,
                period: Duration::from_secs(5),
                in_flight: DEFAULT_IN_FLIGHT
            }
        );
        assert!(cfg.io.api_key.is_none());
        assert_eq!(cfg.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    }

    #[test]
    fn environment_overrides_file() {
        let mut raw = RawConfig::from_toml(
            "[io]\nbase_url = \"http://127.0.0.1:1/api/v1\"\napi_key = \"from-file\"\n[rate]\ncalls = 10\n",
        )
        .unwrap();
        raw.apply_env(env(&[
            ("CORRIERE_IO_API_KEY", "from-env"),
            ("CORRIERE_RATE_PERIOD", "2s"),
        ]))
        .unwrap();
        let cfg = raw.validate(None).unwrap();
        assert_eq!(cfg.io.api_key.unwrap().expose(), "from-env");
        assert_eq!(
            cfg.rate,
            RateSettings::Window {
                calls: 10,
                period: Duration::from_secs(2),
                in_flight: DEFAULT_IN_FLIGHT
            }
        );
    }

    #[test]
    fn api_key_from_file_is_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "  secret-key\n").unwrap();
        let mut raw = RawConfig::default();
        raw.apply_env(env(&[("CORRIERE_IO_API_KEY_FILE", path.to_str().unwrap())]))
            .unwrap();
        let cfg = raw.validate(None).unwrap();
        assert_eq!(cfg.io.api_key.unwrap().expose(), "secret-key");
    }

    #[test]
    fn unknown_key_is_refused_with_its_name() {
        let err = RawConfig::from_toml("[rate]\ncals = 10\n").unwrap_err();
        assert!(err.contains("cals"), "{err}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let raw = RawConfig::from_toml("[rate]\nmode = \"fast\"\n").unwrap();
        let err = raw.validate(None).unwrap_err().to_string();
        assert!(err.contains("rate.mode"), "{err}");
        let mut raw = RawConfig::default();
        let err = raw
            .apply_env(env(&[("CORRIERE_RATE_CALLS", "many")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CORRIERE_RATE_CALLS"), "{err}");
    }

    #[test]
    fn secrets_never_print() {
        let mut raw = RawConfig::default();
        raw.apply_env(env(&[("CORRIERE_IO_API_KEY", "topsecret")]))
            .unwrap();
        let cfg = raw.validate(Some("admintoken".into())).unwrap();
        let shown = format!("{cfg:?}");
        assert!(
            !shown.contains("topsecret") && !shown.contains("admintoken"),
            "{shown}"
        );
    }

    #[test]
    fn source_ip_and_premium_for_the_preflight() {
        let mut raw = RawConfig::from_toml("[io]\nsource_ip = \"203.0.113.7\"\n").unwrap();
        raw.apply_env(env(&[("CORRIERE_IO_PREMIUM", "true")]))
            .unwrap();
        let cfg = raw.validate(None).unwrap();
        assert_eq!(cfg.io.source_ip, Some("203.0.113.7".parse().unwrap()));
        assert_eq!(cfg.io.premium, Some(true));
        let raw = RawConfig::from_toml("[io]\nsource_ip = \"not-an-ip\"\n").unwrap();
        let err = raw.validate(None).unwrap_err().to_string();
        assert!(err.contains("io.source_ip"), "{err}");
    }

    #[test]
    fn store_options_from_the_environment_override_the_file() {
        let mut raw =
            RawConfig::from_toml("[store]\ncache_mib = 32\ncompression = true\n").unwrap();
        raw.apply_env(env(&[
            ("CORRIERE_STORE_CACHE_MIB", "2"),
            ("CORRIERE_STORE_COMPRESSION", "false"),
        ]))
        .unwrap();
        let cfg = raw.validate(None).unwrap();
        assert_eq!(cfg.store_options.cache_capacity, 2 * 1024 * 1024);
        assert!(!cfg.store_options.compression);
        let mut raw = RawConfig::default();
        let err = raw
            .apply_env(env(&[("CORRIERE_STORE_COMPRESSION", "maybe")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("CORRIERE_STORE_COMPRESSION"), "{err}");
        let mut raw = RawConfig::default();
        raw.apply_env(env(&[("CORRIERE_STORE_CACHE_MIB", "0")]))
            .unwrap();
        let err = raw.validate(None).unwrap_err().to_string();
        assert!(err.contains("store.cache_mib"), "{err}");
    }

    #[test]
    fn example_config_file_parses_and_validates() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/corriere.toml");
        let raw = RawConfig::from_file(&path).unwrap();
        raw.validate(None).unwrap();
    }
}
