//! `corriere loadtest`: the budget figures from a real job against the bundled fake IO on
//! loopback (not a simulation, not a timed test).
//!
//! - `window`: the fake enforces IO's default window (150 calls per 5 s); corriere runs in window
//!   mode. Reports the share of the window's capacity used while sends were pending, the share of
//!   calls answered 429, and IO calls per delivered message once the job is done.
//! - `capacity`: the fake has no window but a hidden capacity R that changes mid-run
//!   (R → R/2 → 1.5 R); corriere runs in adaptive mode. Reports goodput / R and the 429 share per
//!   phase (after a settling time), and calls per delivered message.
//! - `feed`: the fake holds a population of `--population` citizens (1.2 M by default: about
//!   1 M subscribers) over the whole feed history (2020-03-24 to yesterday, ~2 400 days) and
//!   a hidden capacity R; corriere syncs the whole feed in adaptive mode. Reports the time,
//!   days, 429 share, failed days (none, or the sync fails), and whether the set equals the
//!   fake's ground truth.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Args;
use tokio_util::sync::CancellationToken;

use corriere::dispatch::{prepare_job, DispatchSettings, JobContext};
use corriere::io_api::{ApiKey, IoClient, IoClientConfig};
use corriere::model::Outcome;
use corriere::observe::BudgetObserver;
use corriere::rate::{RateBudget, RateConfig, RateMode};
use corriere::runtime::{FeedAccess, Runtime, RuntimeParts};
use corriere::store::Store;
use corriere_fake_io::{FakeIo, FakeIoConfig, FakeRate, FakeStats};

/// Settling time excluded at the start of each capacity phase.
const SETTLE: Duration = Duration::from_secs(10);

/// `corriere loadtest`
#[derive(Debug, Args)]
pub struct LoadtestArgs {
    /// `window` (IO's 150 calls / 5 s) or `capacity` (hidden capacity changing mid-run).
    #[arg(long, default_value = "window")]
    pub scenario: String,
    /// Recipients in the job (default: enough to keep the budget busy for about two minutes).
    #[arg(long)]
    pub recipients: Option<u64>,
    /// Hidden capacity R for the `capacity` scenario (calls/s).
    #[arg(long, default_value_t = 600.0)]
    pub capacity: f64,
    /// Citizens on the fake IO for the `feed` scenario.
    #[arg(long, default_value_t = 1_200_000)]
    pub population: u64,
    /// Working directory (generated files, store).
    #[arg(long, default_value = "corriere-loadtest")]
    pub dir: std::path::PathBuf,
}

#[derive(Clone, Copy)]
struct Sample {
    at: Duration,
    accepted: u64,
    throttled: u64,
}

fn sample(stats: &FakeStats, at: Duration) -> Sample {
    Sample {
        at,
        accepted: stats.requests_total - stats.throttled,
        throttled: stats.throttled,
    }
}

/// Accepted calls per second and 429 share between two samples.
fn between(a: Sample, b: Sample) -> (f64, f64) {
    let secs = (b.at - a.at).as_secs_f64().max(0.001);
    let ok = (b.accepted - a.accepted) as f64;
    let thr = (b.throttled - a.throttled) as f64;
    (ok / secs, thr / (ok + thr).max(1.0))
}

/// Runs the load test and prints the figures.
pub async fn run(args: LoadtestArgs, shutdown: CancellationToken) -> Result<()> {
    let window = match args.scenario.as_str() {
        "window" => true,
        "capacity" => false,
        "feed" => return run_feed(args, shutdown).await,
        other => anyhow::bail!("unknown scenario {other:?}: use window, capacity or feed"),
    };
    let recipients = args.recipients.unwrap_or(if window {
        1600
    } else {
        (args.capacity * 100.0) as u64
    });
    let dir = &args.dir;
    let store_dir = dir.join("store");
    if store_dir.exists() {
        std::fs::remove_dir_all(&store_dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let rate = if window {
        FakeRate::Window {
            calls: 150,
            period: Duration::from_secs(5),
        }
    } else {
        FakeRate::Capacity {
            per_second: args.capacity,
            burst: (args.capacity / 20.0).max(5.0),
        }
    };
    let fake = FakeIo::start(
        FakeIoConfig {
            population: recipients + 1000,
            seed: 7,
            rate,
            ..FakeIoConfig::default()
        },
        "127.0.0.1:0".parse().expect("literal address"),
    )
    .await?;
    let template = dir.join("template.toml");
    let csv = dir.join("recipients.csv");
    std::fs::write(
        &template,
        "subject = \"Avviso per {{nome}}\"\nmarkdown = \"Gentile {{nome}}, questo è un messaggio della prova di carico di corriere, abbastanza lungo.\"\nfilter = \"none\"\nsends_first = false\n",
    )?;
    {
        use std::io::Write;
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(out, "fiscal_code,nome")?;
        for i in 0..recipients as usize {
            writeln!(out, "{},Nome {i}", fake.population().citizen(i).fiscal_code)?;
        }
        out.flush()?;
    }
    let mode = if window {
        RateMode::Window {
            calls: 150,
            period: Duration::from_secs(5),
        }
    } else {
        RateMode::Adaptive {
            initial: args.capacity / 4.0,
            floor: 5.0,
            ceiling: args.capacity * 4.0,
        }
    };
    let budget = RateBudget::new(RateConfig {
        mode,
        in_flight: if window { 32 } else { 256 },
    });
    let client = IoClient::new(IoClientConfig::new(
        fake.base_url(),
        ApiKey::new("fake-primary-key"),
    ))?;
    let store = Store::open(&store_dir).await?;
    let prepared = prepare_job(&store, &template, &csv, &|_| {}).await?;
    let rt = Arc::new(Runtime::new(RuntimeParts {
        store,
        client,
        budget,
        settings: DispatchSettings::default(),
        preflight: None,
        feed: FeedAccess::Off,
    }));
    eprintln!(
        "scenario {}: {recipients} recipients, job {}",
        args.scenario, prepared.job
    );
    let started = tokio::time::Instant::now();
    let view = Arc::new(Watch::default());
    let job = {
        let (rt, view, id, stop) = (
            rt.clone(),
            view.clone(),
            prepared.job.clone(),
            shutdown.clone(),
        );
        tokio::spawn(async move { corriere::runner::run(&rt, &id, &*view, &stop).await })
    };
    let mut samples = vec![sample(&fake.stats(), Duration::ZERO)];
    let mut sends_done_at = None;
    let mut phase_starts = vec![Duration::ZERO];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !job.is_finished() {
        tick.tick().await;
        let at = started.elapsed();
        samples.push(sample(&fake.stats(), at));
        let sends_left = view
            .0
            .get()
            .map(|ctx| ctx.counters.get(Outcome::Queued) + ctx.counters.get(Outcome::Sending));
        if sends_done_at.is_none() && sends_left == Some(0) {
            sends_done_at = Some(samples.len() - 1);
        }
        if !window && sends_done_at.is_none() {
            // R → R/2 at 40 s, → 1.5 R at 80 s.
            let change = match (phase_starts.len(), at.as_secs()) {
                (1, 40..) => Some(args.capacity / 2.0),
                (2, 80..) => Some(args.capacity * 1.5),
                _ => None,
            };
            if let Some(r) = change {
                fake.set_rate(FakeRate::Capacity {
                    per_second: r,
                    burst: (r / 20.0).max(5.0),
                });
                phase_starts.push(at);
            }
        }
    }
    job.await??;
    let elapsed = started.elapsed();
    let stats = fake.stats();
    let summary = corriere::dispatch::report::write_report(
        rt.store(),
        &prepared.job,
        None,
        corriere::dispatch::report::FiscalCodes::Masked,
    )?;
    let delivered = summary.get("processed") + summary.get("rejected");
    print_figures(
        window,
        &args,
        &samples,
        sends_done_at,
        &phase_starts,
        &stats,
        delivered,
        elapsed,
    );
    fake.shutdown().await;
    Ok(())
}

/// Keeps the running job's context, for its live counts.
#[derive(Default)]
struct Watch(std::sync::OnceLock<Arc<JobContext>>);

impl corriere::runtime::FeedObserver for Watch {}

impl corriere::runner::RunObserver for Watch {
    fn started(&self, ctx: &Arc<JobContext>) -> Result<(), corriere::dispatch::DispatchError> {
        let _ = self.0.set(ctx.clone());
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn print_figures(
    window: bool,
    args: &LoadtestArgs,
    samples: &[Sample],
    sends_done_at: Option<usize>,
    phase_starts: &[Duration],
    stats: &FakeStats,
    delivered: u64,
    elapsed: Duration,
) {
    let end = sends_done_at.unwrap_or(samples.len() - 1);
    let calls_per = stats.requests_total as f64 / delivered.max(1) as f64;
    let polls = stats.requests.get("get_message 200").copied().unwrap_or(0) as f64
        / delivered.max(1) as f64;
    if window {
        let (ok_rate, share429) = between(samples[0], samples[end]);
        println!("| scenario | measured over | share of window used | 429 share | IO calls per delivered message | polls per message |");
        println!("|---|---|---|---|---|---|");
        println!(
            "| IO window 150 calls / 5 s | {:.0} s while sends were pending | {:.3} | {:.2} % | {calls_per:.2} | {polls:.2} |",
            samples[end].at.as_secs_f64(),
            ok_rate / 30.0,
            share429 * 100.0
        );
        // The ideal: every call of the window useful, at the calls per message this job needed.
        let ideal = delivered as f64 * calls_per / 30.0;
        println!(
            "time to finish {delivered} recipients: {:.0} s; ideal (recipients × calls per message ÷ 30 calls/s) {ideal:.0} s; ratio {:.3}",
            elapsed.as_secs_f64(),
            elapsed.as_secs_f64() / ideal.max(1e-9)
        );
    } else {
        println!("| phase | hidden capacity R | goodput / R | 429 share |");
        println!("|---|---|---|---|");
        let caps = [args.capacity, args.capacity / 2.0, args.capacity * 1.5];
        for (i, start) in phase_starts.iter().enumerate() {
            let from = samples.iter().position(|s| s.at >= *start + SETTLE);
            let to_at = phase_starts.get(i + 1).copied().unwrap_or(samples[end].at);
            let to = samples.iter().rposition(|s| s.at <= to_at);
            if let (Some(a), Some(b)) = (from, to) {
                if b > a {
                    let (ok_rate, share429) = between(samples[a], samples[b]);
                    println!(
                        "| {} ({:.0}–{:.0} s) | {:.0} | {:.3} | {:.2} % |",
                        i + 1,
                        samples[a].at.as_secs_f64(),
                        samples[b].at.as_secs_f64(),
                        caps[i],
                        ok_rate / caps[i],
                        share429 * 100.0
                    );
                }
            }
        }
        println!("IO calls per delivered message: {calls_per:.2} (polls {polls:.2})");
    }
    println!(
        "job: {delivered} messages delivered to a final status in {:.0} s; nobody twice: {}",
        elapsed.as_secs_f64(),
        stats.recipients_with_more_than_one == 0
    );
}

/// The `feed` scenario: a whole feed sync under a hidden capacity.
async fn run_feed(args: LoadtestArgs, shutdown: CancellationToken) -> Result<()> {
    use corriere::feed::{Feed, FeedSettings, Key, SyncOptions};
    let dir = &args.dir;
    let store_dir = dir.join("store");
    if store_dir.exists() {
        std::fs::remove_dir_all(&store_dir)?;
    }
    std::fs::create_dir_all(dir)?;
    eprintln!(
        "scenario feed: building a population of {} citizens",
        args.population
    );
    let fake = FakeIo::start(
        FakeIoConfig {
            population: args.population,
            seed: 7,
            rate: FakeRate::Capacity {
                per_second: args.capacity,
                burst: (args.capacity / 20.0).max(5.0),
            },
            ..FakeIoConfig::default()
        },
        "127.0.0.1:0".parse().expect("literal address"),
    )
    .await?;
    let store = Store::open(&store_dir).await?;
    let budget = RateBudget::new(RateConfig {
        mode: RateMode::Adaptive {
            initial: args.capacity / 4.0,
            floor: 5.0,
            ceiling: args.capacity * 4.0,
        },
        in_flight: 64,
    });
    let mut io = IoClientConfig::new(fake.base_url(), ApiKey::new("fake-primary-key"));
    io.request_timeout = Duration::from_secs(10);
    let client = IoClient::new(io)?.with_observer(Arc::new(BudgetObserver::new(budget.clone())));
    let mut settings = FeedSettings::new(store_dir.join("feed").join("subscribers.snapshot"));
    settings.concurrency = 32;
    let (feed, _) = Feed::open(store, settings).await?;
    let stats =
        crate::cli::sync_with_progress(&feed, &client, &budget, SyncOptions::default(), &shutdown)
            .await?;
    let fake_stats = fake.stats();
    let truth: std::collections::HashSet<Key> = fake
        .population()
        .subscribers_now()
        .filter_map(|h| Key::from_hex(&h))
        .collect();
    let set = feed.subscribers().load();
    let equal = set.set.len() == truth.len() && truth.iter().all(|k| set.set.contains_key(*k));
    println!("| figure | value |");
    println!("|---|---|");
    println!(
        "| days synced | {} (2020-03-24 to {}) |",
        stats.days_applied,
        stats.through.map_or_else(|| "-".into(), |d| d.to_string())
    );
    println!(
        "| subscribers | {} of {} citizens |",
        stats.subscribers, args.population
    );
    println!(
        "| hashes applied | {} subscriptions, {} unsubscriptions |",
        stats.subscriptions, stats.unsubscriptions
    );
    println!(
        "| time | {:.1} s ({:.0} days/s) |",
        stats.seconds,
        f64::from(stats.days_applied) / stats.seconds.max(0.001)
    );
    println!("| hidden capacity R | {:.0} calls/s |", args.capacity);
    println!(
        "| IO calls | {} ({} answered 429: {:.2} %) |",
        fake_stats.requests_total,
        fake_stats.throttled,
        100.0 * fake_stats.throttled as f64 / fake_stats.requests_total.max(1) as f64
    );
    println!("| failed days | 0 (a day that cannot be fetched stops the sync with an error) |");
    println!("| retried (5xx/timeouts) | {} |", stats.retried);
    println!(
        "| set in memory | {:.1} MiB, {:.2} bytes per subscriber |",
        stats.set_bytes as f64 / 1_048_576.0,
        stats.set_bytes as f64 / stats.subscribers.max(1) as f64
    );
    println!(
        "| snapshot on disk | {:.1} MiB |",
        stats.snapshot_bytes as f64 / 1_048_576.0
    );
    println!("| set equals the fake's ground truth | {equal} |");
    fake.shutdown().await;
    anyhow::ensure!(equal, "the synced set differs from the fake's ground truth");
    Ok(())
}
