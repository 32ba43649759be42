//! `corriere service …`, `corriere organization …` and the preflight gate of `corriere send`,
//! run as the real binary (assert_cmd) against the bundled fake IO on 127.0.0.1.

use crate::common;

use std::path::Path;

use assert_cmd::assert::Assert;
use common::{fake_config, local_job_id, start_fake, KEY, MANAGE_KEY};
use corriere::service::logo::blank_png;
use corriere_fake_io::{FakeIoHandle, FakeService, Faults};

const SERVICE_TOML: &str = r#"
name = "TARI 2026"
description = "Avvisi di pagamento della tassa sui rifiuti."
authorized_cidrs = ["127.0.0.1/32"]
max_allowed_payment_amount = 500000

[organization]
name = "Comune di Prova"
fiscal_code = "01234567890"
department_name = "Tributi"

[metadata]
scope = "LOCAL"
topic_id = 10
privacy_url = "https://comune.example.it/privacy"
email = "tributi@comune.example.it"
"#;

/// `corriere` against `fake`, with both keys, its store under `dir`.
fn corriere(fake: &FakeIoHandle, dir: &Path) -> assert_cmd::Command {
    let mut cmd = assert_cmd::Command::cargo_bin("corriere").unwrap();
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CORRIERE_IO_BASE_URL", fake.base_url())
        .env("CORRIERE_IO_API_KEY", KEY)
        .env("CORRIERE_IO_MANAGE_KEY", MANAGE_KEY)
        .env("CORRIERE_STORE_PATH", dir.join("store"))
        .env("CORRIERE_RATE_MODE", "unlimited")
        .env("RUST_LOG", "warn");
    cmd
}

/// Runs the command off the runtime's threads (the fake serves on them meanwhile).
async fn run(mut cmd: assert_cmd::Command, args: &[&str]) -> Assert {
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.assert())
        .await
        .unwrap()
}

/// `a` followed by `b`.
fn with<'a>(a: &[&'a str], b: &[&'a str]) -> Vec<&'a str> {
    a.iter().chain(b).copied().collect()
}

fn stdout(a: &Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stdout).into_owned()
}

fn stderr(a: &Assert) -> String {
    String::from_utf8_lossy(&a.get_output().stderr).into_owned()
}

fn manage_calls(fake: &FakeIoHandle) -> u64 {
    fake.stats()
        .requests
        .iter()
        .filter(|(k, _)| k.starts_with("manage_services"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_round_trip_from_the_cli() {
    let fake = start_fake(fake_config(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tari.toml");
    std::fs::write(&file, SERVICE_TOML).unwrap();

    let created = run(
        corriere(&fake, dir.path()),
        &["service", "create", file.to_str().unwrap()],
    )
    .await
    .success();
    let id = stdout(&created).trim().to_owned();
    assert_eq!(id.len(), 26, "a ULID on stdout: {id:?}");
    assert!(stderr(&created).contains("draft"));

    let sid = ["--service-id", id.as_str()];
    let review = run(
        corriere(&fake, dir.path()),
        &with(&["service", "review"], &sid),
    )
    .await
    .success();
    assert_eq!(
        stdout(&review).trim(),
        "approved",
        "the fake approves a complete service"
    );

    run(
        corriere(&fake, dir.path()),
        &with(&["service", "publish"], &sid),
    )
    .await
    .success();
    let show = run(
        corriere(&fake, dir.path()),
        &with(&["service", "show"], &sid),
    )
    .await
    .success();
    let shown = stdout(&show);
    assert!(
        shown.contains("publication                 published"),
        "{shown}"
    );
    assert!(shown.contains("Comune di Prova (01234567890)"), "{shown}");

    run(
        corriere(&fake, dir.path()),
        &with(&["service", "unpublish"], &sid),
    )
    .await
    .success();
    let show = run(
        corriere(&fake, dir.path()),
        &with(&["service", "show"], &sid),
    )
    .await
    .success();
    assert!(stdout(&show).contains("publication                 unpublished"));

    let history = run(
        corriere(&fake, dir.path()),
        &with(&["service", "history", "--asc"], &sid),
    )
    .await
    .success();
    let values: Vec<String> = stdout(&history)
        .lines()
        .map(|l| l.split_whitespace().nth(2).unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        values,
        ["draft", "submitted", "approved", "published", "unpublished"],
        "{}",
        stdout(&history)
    );

    let list = run(corriere(&fake, dir.path()), &["service", "list"])
        .await
        .success();
    assert!(stdout(&list).contains(&id));

    // `show --json` is accepted back by `update`.
    let json = run(
        corriere(&fake, dir.path()),
        &with(&["service", "show", "--json"], &sid),
    )
    .await
    .success();
    let json_file = dir.path().join("shown.json");
    std::fs::write(&json_file, stdout(&json)).unwrap();
    let updated = run(
        corriere(&fake, dir.path()),
        &with(&["service", "update", json_file.to_str().unwrap()], &sid),
    )
    .await
    .success();
    assert!(stderr(&updated).contains("draft"), "{}", stderr(&updated));

    // Keys: printed by `keys show` only; `rotate` changes one and prints none.
    let keys = run(
        corriere(&fake, dir.path()),
        &with(&["service", "keys", "show"], &sid),
    )
    .await
    .success();
    let before = stdout(&keys);
    let primary = before
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_owned();
    let rotate = run(
        corriere(&fake, dir.path()),
        &with(&["service", "keys", "rotate", "primary"], &sid),
    )
    .await
    .success();
    assert!(!stdout(&rotate).contains(&primary) && !stderr(&rotate).contains(&primary));
    let after = run(
        corriere(&fake, dir.path()),
        &with(&["service", "keys", "show"], &sid),
    )
    .await
    .success();
    assert!(!stdout(&after).contains(&primary));

    // Delete needs --yes.
    run(
        corriere(&fake, dir.path()),
        &with(&["service", "delete"], &sid),
    )
    .await
    .code(64);
    run(
        corriere(&fake, dir.path()),
        &with(&["service", "delete", "--yes"], &sid),
    )
    .await
    .success();
    run(
        corriere(&fake, dir.path()),
        &with(&["service", "show"], &sid),
    )
    .await
    .failure();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_service_is_rejected_with_its_reason_and_a_submitted_one_is_frozen() {
    let fake = start_fake(fake_config(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("incomplete.toml");
    std::fs::write(
        &file,
        SERVICE_TOML.replace("privacy_url = \"https://comune.example.it/privacy\"\n", ""),
    )
    .unwrap();
    let created = run(
        corriere(&fake, dir.path()),
        &["service", "create", file.to_str().unwrap()],
    )
    .await
    .success();
    assert!(
        stderr(&created).contains("metadata.privacy_url"),
        "{}",
        stderr(&created)
    );
    let id = stdout(&created).trim().to_owned();
    let review = run(
        corriere(&fake, dir.path()),
        &["service", "review", "--service-id", &id],
    )
    .await
    .success();
    let line = stdout(&review);
    assert!(line.starts_with("rejected"), "{line}");
    assert!(
        line.to_lowercase().contains("dati incompleti o incorretti"),
        "{line}"
    );
    assert!(line.contains("privacy_url"), "{line}");

    // Without automatic review the service stays submitted ("in review"): updates get 409.
    let mut cfg = fake_config(20);
    cfg.auto_review = false;
    let frozen = start_fake(cfg).await;
    let created = run(
        corriere(&frozen, dir.path()),
        &["service", "create", file.to_str().unwrap()],
    )
    .await
    .success();
    let id = stdout(&created).trim().to_owned();
    let review = run(
        corriere(&frozen, dir.path()),
        &["service", "review", "--service-id", &id],
    )
    .await
    .success();
    assert_eq!(stdout(&review).trim(), "submitted (in review)");
    let update = run(
        corriere(&frozen, dir.path()),
        &[
            "service",
            "update",
            file.to_str().unwrap(),
            "--service-id",
            &id,
        ],
    )
    .await
    .failure();
    assert!(stderr(&update).contains("409"), "{}", stderr(&update));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_service_file_is_refused_before_any_call() {
    let fake = start_fake(fake_config(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("legacy.toml");
    std::fs::write(
        &file,
        SERVICE_TOML.replace("name = \"TARI 2026\"", "service_name = \"TARI 2026\""),
    )
    .unwrap();
    let a = run(
        corriere(&fake, dir.path()),
        &["service", "create", file.to_str().unwrap()],
    )
    .await
    .code(65);
    let err = stderr(&a);
    assert!(err.contains("legacy.toml"), "{err}");
    assert!(
        err.contains("service_name: unknown field: it is `name`"),
        "{err}"
    );
    assert!(err.contains("name: required"), "{err}");
    assert_eq!(manage_calls(&fake), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_logo_is_refused_locally_with_a_clear_message() {
    let fake = start_fake(fake_config(20)).await;
    let dir = tempfile::tempdir().unwrap();
    let sid = "01FAKESERVICE0000000000000";

    let small = dir.path().join("small.png");
    std::fs::write(&small, blank_png(120, 80)).unwrap();
    let a = run(
        corriere(&fake, dir.path()),
        &[
            "service",
            "logo",
            "upload",
            small.to_str().unwrap(),
            "--service-id",
            sid,
        ],
    )
    .await
    .code(65);
    let err = stderr(&a);
    assert!(
        err.contains("small.png") && err.contains("120×80") && err.contains("300×300"),
        "{err}"
    );

    let jpeg = dir.path().join("logo.png");
    std::fs::write(&jpeg, b"\xFF\xD8\xFF\xE0\x00\x10JFIF").unwrap();
    let a = run(
        corriere(&fake, dir.path()),
        &[
            "organization",
            "logo",
            "upload",
            jpeg.to_str().unwrap(),
            "--fiscal-code",
            "01234567890",
        ],
    )
    .await
    .code(65);
    let err = stderr(&a);
    assert!(
        err.contains("logo.png") && err.contains("not a PNG") && err.contains("JPEG"),
        "{err}"
    );
    assert_eq!(fake.stats().requests_total, 0, "nothing reached IO");

    // A 300×300 PNG goes through, for the service and the organization.
    let good = dir.path().join("good.png");
    std::fs::write(&good, blank_png(300, 300)).unwrap();
    run(
        corriere(&fake, dir.path()),
        &[
            "service",
            "logo",
            "upload",
            good.to_str().unwrap(),
            "--service-id",
            sid,
        ],
    )
    .await
    .success();
    run(
        corriere(&fake, dir.path()),
        &[
            "organization",
            "logo",
            "upload",
            good.to_str().unwrap(),
            "--fiscal-code",
            "01234567890",
        ],
    )
    .await
    .success();
    let stats = fake.stats();
    assert_eq!(stats.requests.get("manage_services 204"), Some(&1));
    assert_eq!(stats.requests.get("organization_logo 202"), Some(&1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_check_prints_the_table_and_its_exit_code_says_blocked() {
    let mut cfg = fake_config(20);
    cfg.services[0].authorized_cidrs = vec!["127.0.0.1/32".into()];
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let ok = run(
        corriere(&fake, dir.path()),
        &[
            "service",
            "check",
            "--service-id",
            "01FAKESERVICE0000000000000",
            "--source-ip",
            "127.0.0.1",
        ],
    )
    .await
    .success();
    let table = stdout(&ok);
    assert!(table.starts_with("SEVERITY"), "{table}");
    assert!(table.contains("0 blocking, 0 warning(s)"), "{table}");

    let blocked = run(
        corriere(&fake, dir.path()),
        &[
            "service",
            "check",
            "--service-id",
            "01FAKESERVICE0000000000000",
            "--source-ip",
            "192.0.2.1",
        ],
    )
    .await
    .code(65);
    assert!(
        stdout(&blocked).contains("BLOCKING  source address"),
        "{}",
        stdout(&blocked)
    );
    assert!(
        stderr(&blocked).contains("1 blocking problem"),
        "{}",
        stderr(&blocked)
    );

    // With a job: its payments and targets are checked too.
    let (template, csv) = payment_campaign(&fake, dir.path(), 10, 12_050);
    let job = run(
        corriere(&fake, dir.path()),
        &[
            "service",
            "check",
            "--service-id",
            "01FAKESERVICE0000000000000",
            "--source-ip",
            "127.0.0.1",
            "-t",
            &template,
            "-r",
            &csv,
        ],
    )
    .await
    .success();
    assert!(
        stdout(&job).contains("10 payment message(s), largest amount 12050 cents"),
        "{}",
        stdout(&job)
    );
}

/// A campaign of `n` citizens with a payment of `amount` cents each.
fn payment_campaign(fake: &FakeIoHandle, dir: &Path, n: usize, amount: u64) -> (String, String) {
    let template = dir.join("tari.toml");
    std::fs::write(
        &template,
        "subject = \"TARI 2026: avviso di pagamento\"\n\
         markdown = \"Gentile {{nome}}, è disponibile l'avviso di pagamento della TARI 2026 del Comune di Prova.\"\n\
         fiscal_code_column = \"codice_fiscale\"\nfilter = \"none\"\npoll = \"none\"\n\
         [payment_data]\namount = \"{{importo}}\"\nnotice_number = \"{{avviso}}\"\n",
    )
    .unwrap();
    let csv = dir.join("recipients.csv");
    let mut text = String::from("codice_fiscale;nome;importo;avviso\n");
    for i in 0..n {
        text.push_str(&format!(
            "{};Nome {i};{amount};3020000000000000{i:02}\n",
            fake.population().citizen(i).fiscal_code
        ));
    }
    std::fs::write(&csv, text).unwrap();
    (
        template.to_str().unwrap().to_owned(),
        csv.to_str().unwrap().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blocking_preflight_refuses_the_job_before_any_message_is_sent() {
    let mut cfg = fake_config(50);
    // Complete and published, but with IO's default payment limit: 0.
    cfg.services = vec![FakeService {
        max_allowed_payment_amount: 0,
        ..FakeService::default()
    }];
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let (template, csv) = payment_campaign(&fake, dir.path(), 10, 12_050);
    let mut cmd = corriere(&fake, dir.path());
    cmd.env("CORRIERE_IO_SERVICE_ID", "01FAKESERVICE0000000000000");
    let a = run(cmd, &["send", "-t", &template, "-r", &csv])
        .await
        .code(65);
    let err = stderr(&a);
    assert!(err.contains("BLOCKING  payments"), "{err}");
    assert!(err.contains("the default"), "{err}");
    assert!(
        err.contains("the job is refused before any message is sent"),
        "{err}"
    );
    let stats = fake.stats();
    assert_eq!(stats.messages_created, 0);
    assert!(
        !stats
            .requests
            .keys()
            .any(|k| k.starts_with("submit_message")),
        "{:?}",
        stats.requests
    );
    // Fiscal codes never in clear on the terminal.
    assert!(!err.contains(&fake.population().citizen(0).fiscal_code));

    // Once the limit allows it, the same command sends the job.
    let mut cfg = fake_config(50);
    cfg.services[0].authorized_cidrs = vec!["127.0.0.1/32".into()];
    let fine = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let (template, csv) = payment_campaign(&fine, dir.path(), 10, 12_050);
    let mut cmd = corriere(&fine, dir.path());
    cmd.env("CORRIERE_IO_SERVICE_ID", "01FAKESERVICE0000000000000")
        .env("CORRIERE_IO_SOURCE_IP", "127.0.0.1");
    let a = run(cmd, &["send", "-t", &template, "-r", &csv])
        .await
        .success();
    assert!(
        stderr(&a).contains("0 blocking, 0 warning(s)"),
        "{}",
        stderr(&a)
    );
    assert_eq!(fine.stats().messages_created, 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resend_unknown_runs_the_same_preflight_and_a_blocking_one_resends_nothing() {
    // The service accepts our calls (the fake sees 127.0.0.1), but the configured source
    // address is outside its `authorized_cidrs`: the preflight blocks.
    let mut cfg = fake_config(50);
    cfg.services[0].authorized_cidrs = vec!["127.0.0.1/32".into()];
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let (template, csv) = payment_campaign(&fake, dir.path(), 10, 12_050);
    // Every POST is dropped after IO created the message: all ten end `unknown`.
    fake.set_faults(Faults {
        drop_after_create_rate: 1.0,
        ..Faults::default()
    });
    let mut cmd = corriere(&fake, dir.path());
    cmd.env("CORRIERE_IO_SERVICE_ID", "01FAKESERVICE0000000000000")
        .env("CORRIERE_IO_SOURCE_IP", "203.0.113.7");
    run(
        cmd,
        &["send", "-t", &template, "-r", &csv, "--skip-preflight"],
    )
    .await;
    assert_eq!(fake.stats().messages_created, 10);
    fake.set_faults(Faults::default());
    let job = local_job_id(&fake, &dir.path().join("store")).await;

    // The operator asks to re-send them: the preflight refuses first, nothing is re-sent.
    let mut cmd = corriere(&fake, dir.path());
    cmd.env("CORRIERE_IO_SERVICE_ID", "01FAKESERVICE0000000000000")
        .env("CORRIERE_IO_SOURCE_IP", "203.0.113.7");
    let a = run(cmd, &["resend-unknown", &job, "--yes"]).await.code(65);
    let err = stderr(&a);
    assert!(err.contains("BLOCKING"), "{err}");
    assert_eq!(
        fake.stats().messages_created,
        10,
        "a refused resend sends nothing"
    );

    // From an authorized address, the same command re-sends the ten.
    let mut cmd = corriere(&fake, dir.path());
    cmd.env("CORRIERE_IO_SERVICE_ID", "01FAKESERVICE0000000000000")
        .env("CORRIERE_IO_SOURCE_IP", "127.0.0.1");
    run(cmd, &["resend-unknown", &job, "--yes"]).await.success();
    assert_eq!(fake.stats().messages_created, 20);
}
