//! Shared set-up for the integration tests: a fake IO on 127.0.0.1 (random port) and a client.
#![allow(dead_code)]

pub mod spec;

use std::time::Duration;

use corriere::io_api::{ApiKey, IoClient, IoClientConfig};
use corriere_fake_io::{FakeIo, FakeIoConfig, FakeIoHandle, FakeRate, Processing};

/// The fake's default service key.
pub const KEY: &str = "fake-primary-key";
/// The fake's manage key.
pub const MANAGE_KEY: &str = "fake-manage-key";

/// A fake with `population` citizens, no rate limit and instant processing, unless changed.
pub fn fake_config(population: u64) -> FakeIoConfig {
    FakeIoConfig {
        population,
        rate: FakeRate::Unlimited,
        processing: Processing {
            min: Duration::ZERO,
            median: Duration::ZERO,
            max: Duration::ZERO,
        },
        ..FakeIoConfig::default()
    }
}

/// Starts a fake on 127.0.0.1, random port.
pub async fn start_fake(config: FakeIoConfig) -> FakeIoHandle {
    FakeIo::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("fake IO starts")
}

/// A client for `fake` with the default keys and a short timeout.
pub fn client(fake: &FakeIoHandle) -> IoClient {
    let mut cfg = IoClientConfig::new(fake.base_url(), ApiKey::new(KEY));
    cfg.manage_key = Some(ApiKey::new(MANAGE_KEY));
    cfg.request_timeout = Duration::from_secs(5);
    cfg.connect_timeout = Duration::from_secs(1);
    IoClient::new(cfg).expect("client builds")
}

/// A message body of valid lengths.
pub fn message(fc: &str) -> corriere::model::NewMessage {
    use corriere::model::{FiscalCode, MessageContent, NewMessage};
    NewMessage {
        fiscal_code: Some(FiscalCode::parse(fc).unwrap()),
        time_to_live: None,
        content: MessageContent {
            subject: "Avviso di prova dal comune".to_owned(),
            markdown: "Questo è un messaggio di prova inviato da corriere al fake IO: contiene almeno ottanta caratteri.".to_owned(),
            due_date: None,
            payment_data: None,
            require_secure_channels: None,
        },
        feature_level_type: None,
    }
}

/// What each CSV line of a generated campaign should end as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// On IO and subscribed: processed.
    Subscribed,
    /// On IO but not subscribed, or not on IO: rejected (filter none) / not_subscribed.
    NotSubscribed,
    /// Malformed fiscal code.
    Invalid,
    /// Same code as an earlier line.
    Duplicate,
}

/// A generated campaign: files and per-line expectations (index 0 = line 2).
pub struct Campaign {
    pub template: std::path::PathBuf,
    pub recipients: std::path::PathBuf,
    pub expect: Vec<Expect>,
}

/// Writes a campaign of `n` rows over `fake`'s population with invalid rows, duplicates and
/// citizens not on IO. `filter` goes into the template.
pub fn write_campaign(
    dir: &std::path::Path,
    fake: &FakeIoHandle,
    n: usize,
    filter: &str,
) -> Campaign {
    use std::io::Write;
    let template = dir.join("template.toml");
    std::fs::write(
        &template,
        format!(
            "subject = \"Avviso {{{{anno}}}} per {{{{nome}}}}\"\n\
             markdown = \"Gentile {{{{nome}}}}, questo è un avviso di prova generato dai test di corriere con testo sufficiente.\"\n\
             fiscal_code_column = \"codice_fiscale\"\nfilter = \"{filter}\"\n\
             campaign = {:?}\n",
            // Each generated campaign is its own (tests share the fake's citizens).
            dir.display().to_string()
        ),
    )
    .unwrap();
    let recipients = dir.join("recipients.csv");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&recipients).unwrap());
    writeln!(out, "codice_fiscale;nome;anno").unwrap();
    let pop = fake.population();
    let mut expect = Vec::with_capacity(n);
    // The last valid row: a duplicate repeats it whole (same values: `duplicate`, sent once).
    let mut last_valid: Option<(String, usize)> = None;
    for i in 0..n {
        let (fc, e, name) = if i % 101 == 100 {
            ("NOTAVALIDCODE".to_owned(), Expect::Invalid, i)
        } else if i % 151 == 150 && last_valid.is_some() {
            let (fc, name) = last_valid.clone().unwrap();
            (fc, Expect::Duplicate, name)
        } else if i % 37 == 36 {
            (pop.non_io_fiscal_code(i as u64), Expect::NotSubscribed, i)
        } else {
            assert!(
                i < pop.len(),
                "the population must be larger than the campaign"
            );
            let c = pop.citizen(i);
            let e = if c.subscribed_now {
                Expect::Subscribed
            } else {
                Expect::NotSubscribed
            };
            (c.fiscal_code.clone(), e, i)
        };
        if e != Expect::Invalid && e != Expect::Duplicate {
            last_valid = Some((fc.clone(), name));
        }
        writeln!(out, "{fc};Nome {name};2026").unwrap();
        expect.push(e);
    }
    out.flush().unwrap();
    Campaign {
        template,
        recipients,
        expect,
    }
}

/// One row of a report CSV.
#[derive(Debug, Clone)]
pub struct ReportRow {
    pub line: u64,
    pub outcome: String,
    pub message_id: String,
    pub status: String,
}

/// Reads a report CSV (UTF-8 BOM and the input's delimiter, `,` or `;`).
pub fn read_report(path: &std::path::Path) -> Vec<ReportRow> {
    let bytes = std::fs::read(path).unwrap();
    let text = bytes
        .strip_prefix(b"\xEF\xBB\xBF".as_slice())
        .unwrap_or(&bytes);
    let header = text.split(|b| *b == b'\n').next().unwrap_or(&[]);
    let delimiter = if header.contains(&b';') { b';' } else { b',' };
    let mut r = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .from_reader(text);
    r.records()
        .map(|rec| {
            let rec = rec.unwrap();
            ReportRow {
                line: rec[0].parse().unwrap(),
                outcome: rec[2].to_owned(),
                message_id: rec[3].to_owned(),
                status: rec[4].to_owned(),
            }
        })
        .collect()
}

/// Every CSV line appears exactly once, and each outcome is one its line allows. Returns the
/// count per outcome.
pub fn check_report(
    rows: &[ReportRow],
    expect: &[Expect],
    allowed_extra: &[&str],
) -> std::collections::BTreeMap<String, usize> {
    let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
    let wanted: Vec<u64> = (2..2 + expect.len() as u64).collect();
    assert_eq!(lines, wanted, "every CSV line exactly once, in order");
    let mut counts = std::collections::BTreeMap::new();
    for (row, e) in rows.iter().zip(expect) {
        let ok = allowed_extra.contains(&row.outcome.as_str())
            || match e {
                Expect::Subscribed => row.outcome == "processed",
                Expect::NotSubscribed => {
                    row.outcome == "rejected" || row.outcome == "not_subscribed"
                }
                Expect::Invalid => row.outcome == "invalid",
                Expect::Duplicate => row.outcome == "duplicate",
            };
        assert!(ok, "line {}: expected {e:?}, got {}", row.line, row.outcome);
        *counts.entry(row.outcome.clone()).or_insert(0) += 1;
    }
    counts
}

/// `corriere` as a child process against `fake`, with its store in `store`.
pub fn corriere(fake: &FakeIoHandle, store: &std::path::Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_corriere"));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CORRIERE_IO_BASE_URL", fake.base_url())
        .env("CORRIERE_IO_API_KEY", KEY)
        .env("CORRIERE_STORE_PATH", store)
        .env("CORRIERE_RATE_MODE", "unlimited")
        .env("CORRIERE_RATE_IN_FLIGHT", "64")
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    cmd
}

/// `corriere send` for `campaign`, with its store in `store`.
pub fn send_campaign(
    fake: &FakeIoHandle,
    store: &std::path::Path,
    campaign: &Campaign,
) -> tokio::process::Command {
    let mut cmd = corriere(fake, store);
    cmd.args(["send", "--template"])
        .arg(&campaign.template)
        .arg("--recipients")
        .arg(&campaign.recipients);
    cmd
}

/// The id of the (only) job in `store`, as `corriere jobs --local` lists it.
pub async fn local_job_id(fake: &FakeIoHandle, store: &std::path::Path) -> String {
    let out = corriere(fake, store)
        .args(["jobs", "--local"])
        .output()
        .await
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("a job in the store")
        .to_owned()
}

/// Sends SIGTERM (a clean stop) to `child`.
pub fn sigterm(child: &tokio::process::Child) {
    let pid = child.id().expect("running").to_string();
    let ok = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// Waits (at most a minute) until the fake has created `n` messages.
pub async fn wait_until_created(fake: &FakeIoHandle, n: u64) {
    tokio::time::timeout(Duration::from_secs(60), async {
        while fake.stats().messages_created < n {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the fake never saw {n} messages created"));
}
