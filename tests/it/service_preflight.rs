//! The service preflight against the bundled fake IO (in process, 127.0.0.1): a complete service
//! passes; each missing mandatory field, a sandbox mismatch, an over-limit payment, ADVANCED
//! without Premium and our address outside authorized_cidrs are each reported as blocking.

use crate::common;

use std::time::Duration;

use common::{fake_config, start_fake, MANAGE_KEY};
use corriere::io_api::{ApiKey, IoClient, IoClientConfig};
use corriere::model::FiscalCode;
use corriere::service::preflight::{
    check, checks, JobFacts, PaymentFacts, PreflightReport, PreflightSettings, Severity, TargetSet,
};
use corriere_fake_io::{FakeCmsData, FakeIoHandle, FakeService};

const LOOPBACK: &str = "127.0.0.1";

/// A complete, approved, published, premium service reachable from loopback only.
fn complete(id: &str, key: &str) -> FakeService {
    FakeService {
        id: id.to_owned(),
        primary_key: key.to_owned(),
        secondary_key: format!("{key}-2"),
        authorized_cidrs: vec!["127.0.0.1/32".to_owned()],
        ..FakeService::default()
    }
}

fn client_for(fake: &FakeIoHandle, key: &str, manage: bool) -> IoClient {
    let mut cfg = IoClientConfig::new(fake.base_url(), ApiKey::new(key));
    if manage {
        cfg.manage_key = Some(ApiKey::new(MANAGE_KEY));
    }
    cfg.request_timeout = Duration::from_secs(5);
    IoClient::new(cfg).unwrap()
}

fn settings(service_id: &str, premium: Option<bool>) -> PreflightSettings {
    PreflightSettings {
        service_id: Some(service_id.to_owned()),
        manage: true,
        premium,
        probe: true,
        api_key: None,
    }
}

/// A job to the first `n` citizens of the fake's population.
fn job_to_citizens(fake: &FakeIoHandle, n: usize) -> JobFacts {
    let mut targets = TargetSet::default();
    for i in 0..n {
        targets.insert(FiscalCode::parse(&fake.population().citizen(i).fiscal_code).unwrap());
    }
    JobFacts {
        targets: Some(targets),
        payments: None,
        advanced: false,
        source_ip: Some(LOOPBACK.parse().unwrap()),
    }
}

fn blocking_checks(r: &PreflightReport) -> Vec<&str> {
    r.blocking().map(|f| f.check).collect()
}

fn severity_of(r: &PreflightReport, check: &str) -> Vec<Severity> {
    r.of(check).map(|f| f.severity).collect()
}

#[tokio::test]
async fn a_complete_service_passes_preflight() {
    let mut cfg = fake_config(50);
    cfg.services = vec![complete("01COMPLETE0000000000000000", "complete-key")];
    let fake = start_fake(cfg).await;
    let io = client_for(&fake, "complete-key", true);
    let mut job = job_to_citizens(&fake, 5);
    job.payments = Some(PaymentFacts {
        messages: 5,
        max_amount: 50_000,
    });
    job.advanced = true;
    let mut s = settings("01COMPLETE0000000000000000", Some(true));
    s.api_key = Some(ApiKey::new("complete-key"));
    let report = check(&io, &s, &job).await;
    println!("{report}");
    assert!(!report.is_blocked(), "{report}");
    assert_eq!(report.warnings().count(), 0, "{report}");
    for c in [
        checks::SERVICE,
        checks::KEY,
        "mandatory data",
        checks::LIFECYCLE,
        checks::PUBLICATION,
        checks::SANDBOX,
        checks::PAYMENTS,
        checks::PREMIUM,
        checks::SOURCE_IP,
    ] {
        assert_eq!(severity_of(&report, c), vec![Severity::Ok], "{c}: {report}");
    }
    // A key of another service: the report would describe the wrong service.
    s.api_key = Some(ApiKey::new("fake-primary-key"));
    let report = check(&io, &s, &job).await;
    assert_eq!(blocking_checks(&report), vec![checks::KEY], "{report}");
    assert!(
        !report.table().contains("fake-primary-key"),
        "keys never printed"
    );
    // Nothing was sent: the preflight only reads.
    assert_eq!(fake.stats().messages_created, 0);
}

#[tokio::test]
async fn each_missing_mandatory_field_is_reported_and_blocks_a_campaign_to_citizens() {
    type Break = fn(&mut FakeService);
    let cases: Vec<(&str, Break)> = vec![
        ("name", |s| s.name.clear()),
        ("description", |s| s.cms.description.clear()),
        ("organization.name", |s| s.cms.organization_name.clear()),
        ("organization.fiscal_code", |s| {
            s.organization_fiscal_code = "123".into()
        }),
        ("authorized_cidrs", |s| s.authorized_cidrs.clear()),
        ("metadata.scope", |s| {
            s.cms.metadata.remove("scope");
        }),
        ("metadata.privacy_url", |s| {
            s.cms.metadata.remove("privacy_url");
        }),
        ("metadata.contact", |s| {
            s.cms.metadata.remove("email");
        }),
    ];
    let mut cfg = fake_config(50);
    cfg.services = cases
        .iter()
        .enumerate()
        .map(|(i, (_, breaks))| {
            let mut s = complete(&format!("01MISSING{i:017}"), &format!("key-{i}"));
            breaks(&mut s);
            s
        })
        .collect();
    let fake = start_fake(cfg).await;
    let io = client_for(&fake, "key-0", true);
    let job = job_to_citizens(&fake, 3);
    for (i, (field, _)) in cases.iter().enumerate() {
        let mut s = settings(&format!("01MISSING{i:017}"), None);
        s.probe = false;
        let report = check(&io, &s, &job).await;
        assert_eq!(blocking_checks(&report), vec![*field], "{field}: {report}");
        let detail = &report.of(field).next().unwrap().detail;
        assert!(detail.contains("missing"), "{detail}");
    }
}

#[tokio::test]
async fn missing_data_only_warns_when_every_target_is_an_authorized_recipient() {
    let mut cfg = fake_config(50);
    let mut s = complete("01INCOMPLETE00000000000000", "k");
    s.cms.metadata.remove("privacy_url");
    cfg.services = vec![s];
    let fake = start_fake(cfg).await;
    let io = client_for(&fake, "k", true);
    let mut targets = TargetSet::default();
    targets.insert(FiscalCode::parse("AAAAAA00A00A000A").unwrap());
    let job = JobFacts {
        targets: Some(targets),
        ..JobFacts::default()
    };
    let report = check(&io, &settings("01INCOMPLETE00000000000000", None), &job).await;
    assert!(!report.is_blocked(), "{report}");
    assert_eq!(
        severity_of(&report, "metadata.privacy_url"),
        vec![Severity::Warning]
    );
}

#[tokio::test]
async fn a_sandbox_service_with_a_job_to_others_is_blocked() {
    let mut cfg = fake_config(50);
    // Fiscal codes depend on the seed and the index only: citizen 0 of the fake to come.
    let fake_pop_first =
        corriere_fake_io::Population::generate(1, cfg.seed, corriere::clock::Clock::System.today())
            .citizen(0)
            .fiscal_code
            .clone();
    cfg.services = vec![FakeService {
        sandbox: true,
        authorized_recipients: vec!["AAAAAA00A00A000A".into(), fake_pop_first.clone()],
        ..complete("01SANDBOX00000000000000000", "sandbox-key")
    }];
    let fake = start_fake(cfg).await;
    assert_eq!(fake.population().citizen(0).fiscal_code, fake_pop_first);

    // With the manage key: the authorized list is known, the mismatch is counted.
    let io = client_for(&fake, "sandbox-key", true);
    let job = job_to_citizens(&fake, 3);
    let report = check(&io, &settings("01SANDBOX00000000000000000", None), &job).await;
    assert_eq!(blocking_checks(&report), vec![checks::SANDBOX], "{report}");
    let detail = &report.of(checks::SANDBOX).next().unwrap().detail;
    assert!(detail.contains("2 of the job's targets"), "{detail}");
    assert!(
        !detail.contains(&fake.population().citizen(1).fiscal_code),
        "fiscal codes are masked: {detail}"
    );

    // The same key with a job to its authorized recipients only: fine.
    let report = check(
        &io,
        &settings("01SANDBOX00000000000000000", None),
        &job_to_citizens(&fake, 1),
    )
    .await;
    assert!(!report.is_blocked(), "{report}");

    // Without the manage key: the probe tells a sandbox key, a second probe the first target.
    let io = client_for(&fake, "sandbox-key", false);
    let mut job = JobFacts::default();
    let mut targets = TargetSet::default();
    targets.insert(FiscalCode::parse(&fake.population().citizen(7).fiscal_code).unwrap());
    job.targets = Some(targets);
    let no_manage = PreflightSettings {
        probe: true,
        ..PreflightSettings::default()
    };
    let report = check(&io, &no_manage, &job).await;
    assert_eq!(blocking_checks(&report), vec![checks::SANDBOX], "{report}");
    assert_eq!(
        severity_of(&report, checks::SERVICE),
        vec![Severity::Warning]
    );
    assert_eq!(fake.stats().messages_created, 0);
}

#[tokio::test]
async fn a_production_key_without_manage_key_passes_with_warnings() {
    let fake = start_fake(fake_config(50)).await;
    let io = client_for(&fake, common::KEY, false);
    let mut job = job_to_citizens(&fake, 3);
    job.payments = Some(PaymentFacts {
        messages: 3,
        max_amount: 100,
    });
    let no_manage = PreflightSettings {
        probe: true,
        ..PreflightSettings::default()
    };
    let report = check(&io, &no_manage, &job).await;
    assert!(!report.is_blocked(), "{report}");
    assert_eq!(severity_of(&report, checks::SANDBOX), vec![Severity::Ok]);
    // Unknown limits are warnings that say what to set, never blocking.
    for c in [checks::SERVICE, checks::PAYMENTS, checks::SOURCE_IP] {
        assert_eq!(severity_of(&report, c), vec![Severity::Warning], "{c}");
    }
}

#[tokio::test]
async fn payments_above_the_services_limit_are_blocked() {
    let mut cfg = fake_config(50);
    cfg.services = vec![
        FakeService {
            max_allowed_payment_amount: 1_000,
            ..complete("01LIMIT1000000000000000000", "limit-key")
        },
        FakeService {
            max_allowed_payment_amount: 0,
            ..complete("01LIMITZERO000000000000000", "zero-key")
        },
    ];
    let fake = start_fake(cfg).await;
    let io = client_for(&fake, "limit-key", true);
    let mut job = job_to_citizens(&fake, 3);
    job.payments = Some(PaymentFacts {
        messages: 3,
        max_amount: 5_000,
    });
    let report = check(&io, &settings("01LIMIT1000000000000000000", None), &job).await;
    assert_eq!(blocking_checks(&report), vec![checks::PAYMENTS], "{report}");
    let report = check(&io, &settings("01LIMITZERO000000000000000", None), &job).await;
    let detail = &report.of(checks::PAYMENTS).next().unwrap().detail;
    assert!(detail.contains("the default"), "{detail}");
    job.payments = Some(PaymentFacts {
        messages: 3,
        max_amount: 1_000,
    });
    let report = check(&io, &settings("01LIMIT1000000000000000000", None), &job).await;
    assert!(!report.is_blocked(), "{report}");
}

#[tokio::test]
async fn advanced_messages_from_a_service_without_premium_are_blocked() {
    let mut cfg = fake_config(50);
    cfg.services = vec![FakeService {
        premium: false,
        ..complete("01STANDARD0000000000000000", "std-key")
    }];
    let fake = start_fake(cfg).await;
    let io = client_for(&fake, "std-key", true);
    let mut job = job_to_citizens(&fake, 2);
    job.advanced = true;
    let report = check(
        &io,
        &settings("01STANDARD0000000000000000", Some(false)),
        &job,
    )
    .await;
    assert_eq!(blocking_checks(&report), vec![checks::PREMIUM], "{report}");
    // IO's API does not say whether a service has Premium: undeclared is a warning.
    let report = check(&io, &settings("01STANDARD0000000000000000", None), &job).await;
    assert!(!report.is_blocked(), "{report}");
    assert_eq!(
        severity_of(&report, checks::PREMIUM),
        vec![Severity::Warning]
    );
}

#[tokio::test]
async fn our_address_outside_authorized_cidrs_is_blocked_and_unknown_warns() {
    let mut cfg = fake_config(50);
    cfg.services = vec![FakeService {
        authorized_cidrs: vec!["10.0.0.0/8".to_owned()],
        ..complete("01CIDR00000000000000000000", "cidr-key")
    }];
    let fake = start_fake(cfg).await;
    let io = client_for(&fake, "cidr-key", true);
    let mut s = settings("01CIDR00000000000000000000", None);
    s.probe = false;
    let mut job = job_to_citizens(&fake, 2);
    let report = check(&io, &s, &job).await;
    assert_eq!(
        blocking_checks(&report),
        vec![checks::SOURCE_IP],
        "{report}"
    );
    job.source_ip = None;
    let report = check(&io, &s, &job).await;
    assert!(!report.is_blocked(), "{report}");
    let f = report.of(checks::SOURCE_IP).next().unwrap();
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.detail.contains("io.source_ip"), "{}", f.detail);
    // The fake refuses our loopback calls as IO would: the probe reports it, without blocking.
    s.probe = true;
    let report = check(&io, &s, &job).await;
    assert_eq!(
        severity_of(&report, checks::SANDBOX),
        vec![Severity::Warning]
    );
}

#[tokio::test]
async fn lifecycle_and_publication_are_reported() {
    let mut cfg = fake_config(50);
    cfg.services = vec![FakeService {
        cms: FakeCmsData {
            lifecycle: "rejected".into(),
            reason: Some("Dati incompleti o incorretti: logo mancante".into()),
            publication: None,
            ..FakeCmsData::default()
        },
        ..complete("01REJECTED0000000000000000", "rej-key")
    }];
    let fake = start_fake(cfg).await;
    let io = client_for(&fake, "rej-key", true);
    let mut s = settings("01REJECTED0000000000000000", None);
    s.probe = false;
    let report = check(&io, &s, &job_to_citizens(&fake, 1)).await;
    let lifecycle = report.of(checks::LIFECYCLE).next().unwrap();
    assert_eq!(lifecycle.severity, Severity::Warning);
    assert!(lifecycle.detail.contains("logo mancante"), "{report}");
    let publication = report.of(checks::PUBLICATION).next().unwrap();
    assert!(publication.detail.contains("never published"), "{report}");
    // A wrong service id is a warning, not a block.
    let report = check(
        &io,
        &settings("01NOSUCHSERVICE00000000000", None),
        &JobFacts::default(),
    )
    .await;
    let f = report.of(checks::SERVICE).next().unwrap();
    assert_eq!(f.severity, Severity::Warning);
    assert!(f.detail.contains("not found"), "{}", f.detail);
}
