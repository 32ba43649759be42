//! `corriere figures`: every performance figure README.md quotes, from one command, on loopback
//! against the bundled fake IO.
//!
//! 1. **Budget** (`--only budget`): a real job under IO's default window (150 calls / 5 s, the
//!    fake enforcing it): share of the window used, 429 share, IO calls per delivered message,
//!    time to finish versus the ideal. It is [`corriere::loadtest`]'s `window` scenario at
//!    `--budget-recipients` (100 000 by default: about two hours, as the window allows).
//! 2. **Raw throughput** (`--only raw`), an account with no limit:
//!    - the fake's own ceiling on POST /api/v1/messages, measured by a plain load generator
//!      (`wrk`, Debian's package; `benches/figures.sh` installs it), the fake in its own process;
//!    - a real job of `--raw-recipients` (1 000 000 by default) through `corriere send`, as a
//!      child process against a fresh fake in another process: messages per second end to end
//!      (CSV ingest, sends, polls until every message is final), CPU seconds per million
//!      messages and peak RSS of the corriere process alone (`wait4`), store bytes per
//!      recipient, and corriere's request rate over the fake's ceiling;
//!    - what the job did to the disk: bytes written per recipient (the process's `write_bytes`,
//!      which `getrusage` reports as `ru_oublock` blocks of 512 bytes) and durable syncs per
//!      recipient (counted by the store layer, kept in the store: [`corriere::store::Store::io_stats`]);
//!    - the same job again with every durable sync 2 ms slower (`[store] sync_delay_ms`, a
//!      500-IOPS cloud volume): the share of its request rate it keeps (`--slow-sync-ms 0` skips it).
//!
//! The targets of the performance issue are printed beside each figure.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use tokio_util::sync::CancellationToken;

use corriere_fake_io::{synthetic_code, FakeStats};

/// Seed of the fake population (the CSV uses the same codes).
const SEED: u64 = 7;

/// `corriere figures`
#[derive(Debug, Args)]
pub struct FiguresArgs {
    /// Which figures: `all`, `budget` or `raw`.
    #[arg(long, default_value = "all")]
    pub only: String,
    /// Recipients of the budget job (IO's window: 100 000 take about two hours).
    #[arg(long, default_value_t = 100_000)]
    pub budget_recipients: u64,
    /// Recipients of the raw-throughput job.
    #[arg(long, default_value_t = 1_000_000)]
    pub raw_recipients: u64,
    /// Requests in flight for the raw job (`rate.in_flight`).
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// zstd compression of the raw job's store (`[store] compression`): off trades disk for CPU.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub store_compression: bool,
    /// The load generator for the fake's ceiling.
    #[arg(long, default_value = "wrk")]
    pub wrk: PathBuf,
    /// How long the load generator runs.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub ceiling_duration: Duration,
    /// Connections the load generator keeps open.
    #[arg(long, default_value_t = 64)]
    pub ceiling_connections: u32,
    /// The slow-volume run: every durable sync this many ms longer (0: no such run).
    #[arg(long, default_value_t = 2)]
    pub slow_sync_ms: u64,
    /// Working directory (generated files, stores); emptied first.
    #[arg(long, default_value = "corriere-figures")]
    pub dir: PathBuf,
}

/// Runs the figures and prints them.
pub async fn run(args: FiguresArgs, shutdown: CancellationToken) -> Result<()> {
    let (budget, raw) = match args.only.as_str() {
        "all" => (true, true),
        "budget" => (true, false),
        "raw" => (false, true),
        other => bail!("--only {other:?}: expected all, budget or raw"),
    };
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    println!("machine: {}", machine());
    if raw {
        raw_throughput(&args, &shutdown).await?;
    }
    if budget {
        println!();
        println!(
            "## Budget: a job of {} recipients under IO's window (150 calls / 5 s)",
            args.budget_recipients
        );
        println!("targets: window share >= 0.97 with <= 0.5 % 429s; <= 2.3 IO calls per delivered message");
        crate::cli::loadtest::run(
            crate::cli::loadtest::LoadtestArgs {
                scenario: "window".to_owned(),
                recipients: Some(args.budget_recipients),
                capacity: 0.0,
                population: 0,
                dir: args.dir.join("budget"),
            },
            shutdown,
        )
        .await?;
    }
    Ok(())
}

/// CPU model, cores and memory, from /proc.
fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!("{cpu}, {cores} cores, {mem_gib:.0} GiB")
}

/// A `corriere fake-io` child process.
struct FakeProcess {
    child: Child,
    base_url: String,
}

impl FakeProcess {
    fn start(exe: &Path, config: &Path) -> Result<FakeProcess> {
        let mut child = Command::new(exe)
            .args(["fake-io", "--listen", "127.0.0.1:0", "--fake-config"])
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting the fake IO")?;
        let stderr = child.stderr.take().expect("piped");
        let mut lines = BufReader::new(stderr).lines();
        let mut base_url = None;
        for line in lines.by_ref() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("fake IO listening on ") {
                base_url = rest.split_whitespace().next().map(str::to_owned);
                break;
            }
        }
        let Some(base_url) = base_url else {
            let _ = child.kill();
            bail!("the fake IO exited before listening");
        };
        // Keep draining its stderr so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(FakeProcess { child, base_url })
    }

    fn stop(mut self) {
        // SIGTERM: the fake shuts down cleanly.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_err() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

async fn fake_stats(http: &reqwest::Client, base_url: &str) -> Result<FakeStats> {
    let origin = base_url.trim_end_matches("/api/v1");
    Ok(http
        .get(format!("{origin}/__fake/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

const SUBJECT: &str = "Avviso di prova di carico";
const MARKDOWN: &str = "Gentile cittadino, questo è un messaggio della prova di carico di corriere: abbastanza lungo per IO.";

/// The fake's ceiling on POST /api/v1/messages, in requests per second, by `wrk`.
fn ceiling(args: &FiguresArgs, base_url: &str, dir: &Path) -> Result<f64> {
    let script = dir.join("post.lua");
    let body = serde_json::json!({
        "fiscal_code": synthetic_code(SEED, 0),
        "content": { "subject": SUBJECT, "markdown": MARKDOWN },
    });
    std::fs::write(
        &script,
        format!(
            "wrk.method = \"POST\"\nwrk.body = [[{body}]]\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.headers[\"Ocp-Apim-Subscription-Key\"] = \"fake-primary-key\"\n"
        ),
    )?;
    let out = Command::new(&args.wrk)
        .arg("-t2")
        .arg(format!("-c{}", args.ceiling_connections))
        .arg(format!("-d{}s", args.ceiling_duration.as_secs().max(1)))
        .arg("-s")
        .arg(&script)
        .arg(format!("{base_url}/messages"))
        .output()
        .with_context(|| {
            format!(
                "running {} (install it: `apt-get install wrk`, or run benches/figures.sh)",
                args.wrk.display()
            )
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!("wrk failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    if let Some(line) = text.lines().find(|l| l.contains("Non-2xx")) {
        bail!("the fake refused requests during the ceiling run: {line}");
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output:\n{text}"))
}

/// What the kernel tells of the finished job process.
struct ChildUsage {
    success: bool,
    cpu: Duration,
    max_rss_bytes: u64,
    /// Bytes the process wrote to storage (`write_bytes`: `ru_oublock` × 512).
    written_bytes: u64,
}

/// Waits for `child` and returns its resource usage. `RUSAGE_CHILDREN` covers every child
/// reaped so far: CPU time and bytes written are the differences across this wait (only the
/// job is reaped during it); the peak RSS is a maximum over every reaped child, so it is the
/// job's only for the first job (`first`: nothing reaped before).
fn wait_with_usage(mut child: Child, first: bool) -> Result<ChildUsage> {
    use nix::sys::resource::{getrusage, UsageWho};
    let before = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    if first && (before.user_time().tv_sec() != 0 || before.max_rss() != 0) {
        bail!("a child process was reaped before the job: its usage would mix with the job's");
    }
    let status = child.wait()?;
    let usage = getrusage(UsageWho::RUSAGE_CHILDREN)?;
    let tv =
        |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    let cpu = |u: &nix::sys::resource::Usage| tv(u.user_time()) + tv(u.system_time());
    Ok(ChildUsage {
        success: status.success(),
        cpu: cpu(&usage).saturating_sub(cpu(&before)),
        max_rss_bytes: usage.max_rss() as u64 * 1024,
        written_bytes: (usage.block_writes() - before.block_writes()).max(0) as u64 * 512,
    })
}

fn dir_size(path: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(path)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

/// One raw job, from a fresh store and a fresh fake in its own process.
struct RawRun {
    usage: ChildUsage,
    wall: Duration,
    /// The fake's counters at the end.
    stats: FakeStats,
    delivered: u64,
    /// Request rate while corriere was calling, and its peak second.
    rate: f64,
    peak: f64,
    store_bytes: u64,
    io: corriere::store::StoreIoStats,
}

async fn raw_throughput(args: &FiguresArgs, shutdown: &CancellationToken) -> Result<()> {
    let dir = args.dir.join("raw");
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let n = args.raw_recipients;
    println!();
    println!(
        "## Raw throughput: an account with no limit, {n} recipients, {} in flight, store compression {}",
        args.in_flight,
        if args.store_compression { "on" } else { "off" }
    );
    let fake_config = dir.join("fake.toml");
    std::fs::write(
        &fake_config,
        format!("population = {n}\nseed = {SEED}\n\n[rate]\nmode = \"unlimited\"\n"),
    )?;
    let csv = dir.join("recipients.csv");
    let template = dir.join("template.toml");
    {
        let mut out = std::io::BufWriter::new(std::fs::File::create(&csv)?);
        writeln!(out, "fiscal_code,nome")?;
        for i in 0..n {
            writeln!(out, "{},Nome {i}", synthetic_code(SEED, i))?;
        }
        out.flush()?;
    }
    std::fs::write(
        &template,
        format!("subject = \"{SUBJECT}\"\nmarkdown = \"{MARKDOWN}\"\nfilter = \"none\"\npoll = \"all\"\nsends_first = false\n"),
    )?;
    let exe = std::env::current_exe().context("locating the corriere binary")?;
    let run = raw_job(
        args,
        &exe,
        &dir,
        &fake_config,
        &csv,
        &template,
        0,
        true,
        shutdown,
    )
    .await?;
    // The slow volume: the same job, every durable sync `slow_sync_ms` longer.
    let slow = if args.slow_sync_ms > 0 {
        let slow_dir = dir.join("slow");
        std::fs::create_dir_all(&slow_dir)?;
        let slow = raw_job(
            args,
            &exe,
            &slow_dir,
            &fake_config,
            &csv,
            &template,
            args.slow_sync_ms,
            false,
            shutdown,
        )
        .await?;
        Some(slow)
    } else {
        None
    };

    // The fake's own ceiling, alone with the load generator (after the job: the job must be
    // the first child reaped, see `wait_with_usage`).
    let fake = FakeProcess::start(&exe, &fake_config)?;
    let ceiling = ceiling(args, &fake.base_url, &dir);
    fake.stop();
    let ceiling = ceiling?;
    println!(
        "fake IO ceiling: {ceiling:.0} POST /api/v1/messages per s (wrk -t2 -c{} -d{}s, fake and wrk sharing this machine)",
        args.ceiling_connections,
        args.ceiling_duration.as_secs()
    );

    let RawRun {
        usage,
        wall,
        stats,
        delivered,
        rate,
        peak,
        store_bytes,
        io,
    } = &run;
    let delivered = *delivered;
    let msg_rate = delivered as f64 / wall.as_secs_f64();
    let cpu_per_million = usage.cpu.as_secs_f64() / delivered.max(1) as f64 * 1e6;
    let calls_per = stats.requests_total as f64 / delivered.max(1) as f64;
    println!("| figure | value | target |");
    println!("|---|---|---|");
    println!(
        "| messages delivered to a final status | {delivered} of {n} (nobody twice: {}) | all, nobody twice |",
        stats.recipients_with_more_than_one == 0
    );
    println!(
        "| end to end (ingest, sends, polls to a final status) | {:.1} s, {msg_rate:.0} messages/s | |",
        wall.as_secs_f64()
    );
    println!("| IO calls per delivered message | {calls_per:.2} | <= 2.3 |");
    println!(
        "| corriere's request rate while calling (peak second) | {rate:.0} per s ({peak:.0}) | |"
    );
    println!(
        "| request rate / the fake's ceiling | {:.3} | >= 0.5 |",
        rate / ceiling
    );
    println!(
        "| CPU seconds per million messages (corriere process) | {cpu_per_million:.1} s ({:.1} s in all) | |",
        usage.cpu.as_secs_f64()
    );
    println!(
        "| peak RSS (corriere process) | {:.1} MiB | <= 256 MiB at 10 M |",
        usage.max_rss_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "| store bytes per recipient | {:.0} B ({:.1} MiB in all) | <= 300 B |",
        *store_bytes as f64 / n.max(1) as f64,
        *store_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "| bytes written to disk per recipient (write_bytes of the corriere process) | {:.0} B ({:.1} MiB in all) | <= 4 096 B |",
        usage.written_bytes as f64 / n.max(1) as f64,
        usage.written_bytes as f64 / (1024.0 * 1024.0)
    );
    println!(
        "| durable syncs per recipient (store layer: flush + fdatasync) | {:.4} ({} syncs, {} commits) | <= 0.1 |",
        io.syncs as f64 / n.max(1) as f64,
        io.syncs,
        io.commits
    );
    if let Some(slow) = &slow {
        println!(
            "| raw job with every sync {} ms slower: request rate kept | {:.3} ({:.0} per s; {:.1} s end to end; {:.4} syncs per recipient) | >= 0.8 |",
            args.slow_sync_ms,
            slow.rate / rate.max(1.0),
            slow.rate,
            slow.wall.as_secs_f64(),
            slow.io.syncs as f64 / n.max(1) as f64
        );
    }
    Ok(())
}

/// Runs `corriere send` for the raw job in `dir` (a fresh store), against a fresh fake.
#[allow(clippy::too_many_arguments)]
async fn raw_job(
    args: &FiguresArgs,
    exe: &Path,
    dir: &Path,
    fake_config: &Path,
    csv: &Path,
    template: &Path,
    sync_delay_ms: u64,
    first: bool,
    shutdown: &CancellationToken,
) -> Result<RawRun> {
    let config = dir.join("corriere.toml");
    let store = dir.join("store");
    let fake = FakeProcess::start(exe, fake_config)?;
    std::fs::write(
        &config,
        format!(
            "[io]\nbase_url = \"{}\"\napi_key = \"fake-primary-key\"\n\n[rate]\nmode = \"unlimited\"\nin_flight = {}\n\n[store]\npath = \"{}\"\ncompression = {}\nsync_delay_ms = {sync_delay_ms}\n",
            fake.base_url,
            args.in_flight,
            store.display(),
            args.store_compression
        ),
    )?;

    // The job, as its own process; the fake's counters sampled every second.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let child = Command::new(exe)
        .arg("--config")
        .arg(&config)
        .args(["send", "--skip-preflight", "--template"])
        .arg(template)
        .arg("--recipients")
        .arg(csv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting corriere send")?;
    let waiter = tokio::task::spawn_blocking(move || wait_with_usage(child, first));
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    while !waiter.is_finished() {
        tokio::select! {
            _ = tick.tick() => {}
            () = shutdown.cancelled() => bail!("interrupted"),
        }
        if let Ok(stats) = fake_stats(&http, &fake.base_url).await {
            samples.push((started.elapsed(), stats.requests_total));
        }
    }
    let usage = waiter.await??;
    let wall = started.elapsed();
    let stats = fake_stats(&http, &fake.base_url).await?;
    fake.stop();
    if !usage.success {
        bail!("corriere send failed (its store is in {})", store.display());
    }

    // What the store says (read before this process writes to it).
    let options = corriere::store::StoreOptions {
        compression: args.store_compression,
        ..corriere::store::StoreOptions::default()
    };
    let st = corriere::store::Store::open_with(&store, options).await?;
    let io = st.io_stats();
    let jobs = st.list_jobs()?;
    let job = jobs.first().context("no job in the store")?;
    let summary = corriere::dispatch::report::write_report(
        &st,
        job,
        None,
        corriere::dispatch::report::FiscalCodes::Masked,
    )?;
    drop(st);
    let delivered = summary.get("processed") + summary.get("rejected");
    let store_bytes = dir_size(&store)?;

    // The request rate while corriere was calling: from the first to the last second with calls.
    let first = samples.iter().position(|s| s.1 > 0);
    let last = samples
        .windows(2)
        .rposition(|w| w[1].1 > w[0].1)
        .map(|i| i + 1);
    let (rate, peak) = match (first, last) {
        (Some(a), Some(b)) if b > a => {
            let secs = (samples[b].0 - samples[a].0).as_secs_f64();
            let peak = samples[a..=b]
                .windows(2)
                .map(|w| (w[1].1 - w[0].1) as f64 / (w[1].0 - w[0].0).as_secs_f64())
                .fold(0.0, f64::max);
            ((samples[b].1 - samples[a].1) as f64 / secs, peak)
        }
        _ => (0.0, 0.0),
    };
    Ok(RawRun {
        usage,
        wall,
        stats,
        delivered,
        rate,
        peak,
        store_bytes,
        io,
    })
}
