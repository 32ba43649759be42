//! The hardening seen from outside, through the real binary and a real socket: files are
//! private (umask 077, store 0700, reports 0600); `corriere run` exits 75 when its grace
//! period ran out with requests in flight; `corriere io profile -` reads the code from standard
//! input; the IO client follows no redirect (the key never reaches the other host, and a job
//! stops with its recipients still queued) and sends a POST that reached the server once.

use crate::common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use common::*;
use corriere::io_api::{ApiKey, IoClient, IoClientConfig, IoError};
use corriere_fake_io::Faults;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_and_a_clear_report_are_private_to_the_owner() {
    let fake = start_fake(fake_config(300)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 100, "none");
    let store = dir.path().join("store");
    let report = dir.path().join("report.csv");
    let out = send_campaign(&fake, &store, &campaign)
        .arg("--report")
        .arg(&report)
        .arg("--clear")
        .arg("--poll-deadline")
        .arg("1s")
        .env("RUST_LOG", "info")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&store), 0o700);
    let mut files = 0;
    let mut stack = vec![store.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
                stack.push(p);
            } else {
                assert_eq!(mode(&p) & 0o077, 0, "{} is open to others", p.display());
                files += 1;
            }
        }
    }
    assert!(files > 0);
    assert_eq!(mode(&report), 0o600);
    // The CLI's clear export leaves its audit line, without a code.
    let stderr = String::from_utf8_lossy(&out.stderr);
    let audit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Clear fiscal codes exported"))
        .collect();
    assert_eq!(audit.len(), 1, "{stderr}");
    assert!(audit[0].contains("local CLI"), "{}", audit[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_exits_75_and_says_how_many_when_its_grace_period_runs_out() {
    let mut cfg = fake_config(300);
    // Every POST creates its message, then the answer hangs far beyond the grace period.
    cfg.faults = Faults {
        hang_after_create_rate: 1.0,
        hang: Duration::from_secs(120),
        ..Faults::default()
    };
    let fake = start_fake(cfg).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 20, "none");
    let config = dir.path().join("corriere.toml");
    std::fs::write(
        &config,
        format!(
            "[daemon]\nfeed_sync_at = \"off\"\ngrace_period = \"1s\"\n\
             [admin]\nlisten = \"127.0.0.1:0\"\ninput_dirs = [{:?}]\n\
             [io]\nrequest_timeout = \"300s\"\n",
            dir.path().display().to_string()
        ),
    )
    .unwrap();
    let mut child = corriere(&fake, &dir.path().join("store"))
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let base = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(url) = line.strip_prefix("admin API listening on ") {
                return url.trim().to_owned();
            }
        }
        panic!("the daemon exited before listening");
    })
    .await
    .expect("the daemon listens");
    let res = reqwest::Client::new()
        .post(format!("{base}/jobs"))
        .json(&serde_json::json!({
            "template_path": campaign.template,
            "recipients_path": campaign.recipients,
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    // A message created and its answer hanging: a request in flight.
    wait_until_created(&fake, 1).await;
    sigterm(&child);
    let mut rest = String::new();
    let status = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(Some(line)) = lines.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        child.wait().await.unwrap()
    })
    .await
    .expect("the daemon exits after its grace period");
    assert_eq!(status.code(), Some(75), "{rest}");
    assert!(rest.contains("grace period ran out"), "{rest}");
    assert!(rest.contains("requests_in_flight"), "{rest}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_profile_reads_the_code_from_standard_input() {
    let fake = start_fake(fake_config(50)).await;
    let dir = tempfile::tempdir().unwrap();
    let code = fake.population().citizen(0).fiscal_code.clone();
    let mut child = corriere(&fake, &dir.path().join("store"))
        .args(["io", "profile", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().unwrap();
        stdin
            .write_all(format!("{}\n", code.to_ascii_lowercase()).as_bytes())
            .await
            .unwrap();
    }
    let out = child.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("sender_allowed"));
    assert_eq!(fake.stats().requests_total, 1, "one POST /profiles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clear_report_replaces_a_file_open_to_others_or_a_link_never_writing_through_it() {
    let fake = start_fake(fake_config(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 20, "none");
    let store = dir.path().join("store");
    // What another local user prepared: a file open to everyone, and a link to their own file.
    let open_file = dir.path().join("open.csv");
    std::fs::write(&open_file, "").unwrap();
    std::fs::set_permissions(&open_file, std::fs::Permissions::from_mode(0o666)).unwrap();
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "untouched").unwrap();
    let link = dir.path().join("link.csv");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    for report in [&open_file, &link] {
        let out = send_campaign(&fake, &store, &campaign)
            .arg("--report")
            .arg(report)
            .arg("--clear")
            .arg("--poll-deadline")
            .arg("1s")
            .output()
            .await
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let meta = std::fs::symlink_metadata(report).unwrap();
        assert!(meta.is_file(), "{} is a regular file now", report.display());
        assert_eq!(mode(report), 0o600, "{}", report.display());
        assert!(std::fs::read_to_string(report)
            .unwrap()
            .contains(&fake.population().citizen(0).fiscal_code));
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(left.is_empty(), "temporary files left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_line_survives_a_warn_only_log_filter() {
    let fake = start_fake(fake_config(100)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 10, "none");
    let out = send_campaign(&fake, &dir.path().join("store"), &campaign)
        .arg("--report")
        .arg(dir.path().join("report.csv"))
        .arg("--clear")
        .arg("--poll-deadline")
        .arg("1s")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let audit: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("Clear fiscal codes exported"))
        .collect();
    assert_eq!(audit.len(), 1, "{stderr}");
    assert!(audit[0].contains("local CLI"), "{}", audit[0]);
}

/// A server that answers every request with `status` and a `Location` on `target`, and one
/// (`target`) that counts what reaches it and whether it carried the key.
async fn redirect_pair(status: StatusCode) -> (String, Arc<AtomicU64>, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let keys = Arc::new(AtomicU64::new(0));
    let thief = {
        let (hits, keys) = (hits.clone(), keys.clone());
        axum::Router::new().fallback(move |headers: HeaderMap| {
            let (hits, keys) = (hits.clone(), keys.clone());
            async move {
                hits.fetch_add(1, Ordering::SeqCst);
                if headers.contains_key("ocp-apim-subscription-key") {
                    keys.fetch_add(1, Ordering::SeqCst);
                }
                (StatusCode::CREATED, "{\"id\":\"stolen\"}")
            }
        })
    };
    let thief_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let thief_addr = thief_listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(thief_listener, thief).await.unwrap() });
    let target = format!("http://{thief_addr}/api/v1/messages/RSSMRA85T10A562S");
    let redirector = axum::Router::new().fallback(move || {
        let target = target.clone();
        async move { (status, [("location", target)], "") }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, redirector).await.unwrap() });
    (format!("http://{addr}/api/v1"), hits, keys)
}

#[tokio::test]
async fn a_redirect_is_an_error_naming_its_host_and_the_key_never_follows_it() {
    for status in [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ] {
        let (base, hits, keys) = redirect_pair(status).await;
        let client = IoClient::new(IoClientConfig::new(base, ApiKey::new(KEY))).unwrap();
        let err = client
            .submit_message(&message("RSSMRA85T10A562S"))
            .await
            .unwrap_err();
        assert!(matches!(err, IoError::Redirect { .. }), "{status}: {err:?}");
        assert!(!err.may_have_created_message(), "{err}");
        assert!(err.is_misconfiguration());
        let text = err.to_string();
        assert!(
            text.contains("check io.base_url") && text.contains("127.0.0.1"),
            "{text}"
        );
        assert!(
            !text.contains("RSSMRA85T10A562S"),
            "the Location's path stays out: {text}"
        );
        assert_eq!(
            hits.load(Ordering::SeqCst),
            0,
            "{status}: the redirect was followed"
        );
        assert_eq!(keys.load(Ordering::SeqCst), 0);
    }
}

#[tokio::test]
async fn a_redirect_whose_body_is_cut_is_still_a_redirect_that_created_nothing() {
    use tokio::io::AsyncWriteExt;
    // A 302 that promises a body and closes the connection after a few bytes of it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut c, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut seen = Vec::new();
                // Read the request head (and whatever body came with it) before answering.
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = c
                    .write_all(
                        b"HTTP/1.1 302 Found\r\nlocation: http://elsewhere.example:8080/x\r\n\
                          content-length: 1000\r\n\r\nabc",
                    )
                    .await;
                let _ = c.shutdown().await;
            });
        }
    });
    let client = IoClient::new(IoClientConfig::new(
        format!("http://{addr}/api/v1"),
        ApiKey::new(KEY),
    ))
    .unwrap();
    let err = client
        .submit_message(&message("RSSMRA85T10A562S"))
        .await
        .unwrap_err();
    assert!(matches!(err, IoError::Redirect { .. }), "{err:?}");
    assert!(!err.may_have_created_message(), "{err}");
    assert!(err.to_string().contains("elsewhere.example"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_against_a_redirect_stops_with_its_recipients_still_queued() {
    let (base, hits, _) = redirect_pair(StatusCode::TEMPORARY_REDIRECT).await;
    let fake = start_fake(fake_config(200)).await;
    let dir = tempfile::tempdir().unwrap();
    let campaign = write_campaign(dir.path(), &fake, 30, "none");
    let store = dir.path().join("store");
    let out = send_campaign(&fake, &store, &campaign)
        .env("CORRIERE_IO_BASE_URL", &base)
        .arg("--skip-preflight")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "a configuration error: {stderr}"
    );
    assert!(stderr.contains("check io.base_url"), "{stderr}");
    assert_eq!(hits.load(Ordering::SeqCst), 0);
    let report = dir.path().join("report.csv");
    let out = corriere(&fake, &store)
        .args(["report", &local_job_id(&fake, &store).await, "--out"])
        .arg(&report)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = read_report(&report);
    assert_eq!(rows.len(), 30);
    for r in &rows {
        assert!(
            r.outcome == "queued" || r.outcome == "invalid",
            "line {}: {} (nothing may be failed or unknown after a redirect)",
            r.line,
            r.outcome
        );
    }
}

#[tokio::test]
async fn a_post_that_reached_the_server_is_sent_once_whatever_happens_to_the_answer() {
    // A server that reads the request and closes without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                drop(s);
            });
        }
    });
    let client = IoClient::new(IoClientConfig::new(
        format!("http://{addr}/api/v1"),
        ApiKey::new(KEY),
    ))
    .unwrap();
    let err = client
        .submit_message(&message("RSSMRA85T10A562S"))
        .await
        .unwrap_err();
    assert!(err.may_have_created_message(), "{err:?}");
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "the HTTP stack re-sent the POST"
    );
}
