//! The preflight's rules, one scenario each.

use super::facts::*;
use super::probes::*;
use super::report::*;
use super::rules::*;
use super::*;
use crate::io_api::CmsServicePayload;
use crate::io_api::{CmsOrganization, CmsServiceMetadata};
use crate::model::FiscalCode;
use std::collections::BTreeSet;

fn fc(s: &str) -> FiscalCode {
    FiscalCode::parse(s).unwrap()
}

fn complete() -> CmsServicePayload {
    CmsServicePayload {
        name: "TARI".into(),
        description: "Avvisi TARI".into(),
        organization: CmsOrganization {
            name: "Comune di Prova".into(),
            fiscal_code: "01234567890".into(),
            department_name: None,
        },
        metadata: CmsServiceMetadata {
            scope: Some("LOCAL".into()),
            privacy_url: Some("https://comune.example/privacy".into()),
            pec: Some("comune@pec.example".into()),
            ..Default::default()
        },
        require_secure_channel: None,
        authorized_recipients: vec!["AAAAAA00A00A000A".into()],
        authorized_cidrs: vec!["203.0.113.0/24".into()],
        max_allowed_payment_amount: Some(100_000),
    }
}

#[test]
fn a_complete_service_misses_nothing() {
    assert!(missing_mandatory(&complete()).is_empty());
}

#[test]
fn each_missing_mandatory_field_is_named() {
    type Break = Box<dyn Fn(&mut CmsServicePayload)>;
    let cases: Vec<(&str, Break)> = vec![
        ("name", Box::new(|d| d.name = " ".into())),
        ("description", Box::new(|d| d.description.clear())),
        (
            "organization.name",
            Box::new(|d| d.organization.name.clear()),
        ),
        (
            "organization.fiscal_code",
            Box::new(|d| d.organization.fiscal_code = "123".into()),
        ),
        ("authorized_cidrs", Box::new(|d| d.authorized_cidrs.clear())),
        ("metadata.scope", Box::new(|d| d.metadata.scope = None)),
        (
            "metadata.privacy_url",
            Box::new(|d| d.metadata.privacy_url = Some(String::new())),
        ),
        ("metadata.contact", Box::new(|d| d.metadata.pec = None)),
    ];
    for (field, breaks) in cases {
        let mut d = complete();
        breaks(&mut d);
        let missing: Vec<&str> = missing_mandatory(&d).iter().map(|m| m.0).collect();
        assert_eq!(missing, vec![field]);
    }
}

#[test]
fn missing_data_blocks_only_when_the_job_reaches_beyond_the_authorized() {
    let mut d = complete();
    d.metadata.privacy_url = None;
    let authorized: BTreeSet<FiscalCode> = [fc("AAAAAA00A00A000A")].into();
    let mut only_test = TargetSet::default();
    only_test.insert(fc("AAAAAA00A00A000A"));
    let mut r = PreflightReport::default();
    check_mandatory(&d, Reach::of(Some(&only_test), Some(&authorized)), &mut r);
    assert_eq!(r.findings[0].severity, Severity::Warning);
    let mut citizens = only_test.clone();
    citizens.insert(fc("RSSMRA85T10A562S"));
    let mut r = PreflightReport::default();
    check_mandatory(&d, Reach::of(Some(&citizens), Some(&authorized)), &mut r);
    assert_eq!(r.findings[0].severity, Severity::Blocking);
    assert_eq!(r.findings[0].check, "metadata.privacy_url");
    assert!(r.findings[0].detail.contains("1 of the job's targets"));
    // Masked, never in clear.
    assert!(!r.findings[0].detail.contains("RSSMRA85T10A562S"));
}

#[test]
fn targets_beyond_the_kept_set_are_counted_by_pigeonhole() {
    let mut t = TargetSet::default();
    let code = |i: usize| {
        fc(&format!(
            "RSSMRA{:02}A{:02}H{:03}X",
            i / 100_000 % 100,
            i / 1000 % 100,
            i % 1000
        ))
    };
    for i in 0..TARGETS_KEPT + 10 {
        t.insert(code(i));
    }
    let authorized: BTreeSet<FiscalCode> = [code(0), fc("AAAAAA00A00A000A")].into();
    let o = t.outside(&authorized);
    assert!(!o.exact);
    assert!(o.count >= TARGETS_KEPT - 1, "{o:?}");
}

#[test]
fn payments_above_the_limit_block_and_the_default_zero_is_named() {
    let p = Some(PaymentFacts {
        messages: 3,
        max_amount: 5_000,
    });
    let mut r = PreflightReport::default();
    check_payments(Some(0), p, &mut r);
    assert_eq!(r.findings[0].severity, Severity::Blocking);
    assert!(r.findings[0].detail.contains("the default"));
    let mut r = PreflightReport::default();
    check_payments(Some(5_000), p, &mut r);
    assert_eq!(r.findings[0].severity, Severity::Ok);
    let mut r = PreflightReport::default();
    check_payments(None, p, &mut r);
    assert_eq!(r.findings[0].severity, Severity::Warning);
    let mut r = PreflightReport::default();
    check_payments(Some(0), None, &mut r);
    assert!(r.findings.is_empty());
}

#[test]
fn advanced_without_premium_blocks_and_unknown_premium_warns() {
    for (premium, want) in [
        (Some(false), Some(Severity::Blocking)),
        (None, Some(Severity::Warning)),
        (Some(true), Some(Severity::Ok)),
    ] {
        let mut r = PreflightReport::default();
        check_premium(premium, true, &mut r);
        assert_eq!(r.findings.first().map(|f| f.severity), want);
    }
    let mut r = PreflightReport::default();
    check_premium(Some(false), false, &mut r);
    assert!(r.findings.is_empty());
}

#[test]
fn source_address_against_cidrs_as_io_reads_them() {
    let cidrs = vec!["203.0.113.0/24".to_owned(), "198.51.100.7".to_owned()];
    assert!(cidr_allows(&cidrs, "203.0.113.9".parse().unwrap()));
    assert!(cidr_allows(&cidrs, "198.51.100.7".parse().unwrap()));
    assert!(!cidr_allows(&cidrs, "198.51.100.8".parse().unwrap()));
    assert!(cidr_allows(&[], "192.0.2.1".parse().unwrap()));
    let mut r = PreflightReport::default();
    check_source_ip(Some(&cidrs), Some("192.0.2.1".parse().unwrap()), &mut r);
    assert_eq!(r.findings[0].severity, Severity::Blocking);
    let mut r = PreflightReport::default();
    check_source_ip(Some(&cidrs), None, &mut r);
    assert_eq!(r.findings[0].severity, Severity::Warning);
    assert!(r.findings[0].detail.contains("io.source_ip"));
}

#[test]
fn the_table_has_one_row_per_finding_and_a_summary() {
    let mut r = PreflightReport::default();
    r.push(Severity::Ok, checks::SERVICE, "read service X");
    r.push(
        Severity::Blocking,
        checks::PAYMENTS,
        "a long detail ".repeat(12),
    );
    r.push(Severity::Warning, checks::PREMIUM, "short");
    let t = r.table();
    assert!(t.starts_with("SEVERITY"));
    assert!(t.contains("BLOCKING  payments"));
    assert!(t
        .lines()
        .all(|l| l.chars().count() <= 8 + 2 + 14 + 2 + DETAIL_WIDTH));
    assert!(t.ends_with("1 blocking, 1 warning(s), 1 ok\n"), "{t}");
    assert!(r.is_blocked());
}

#[test]
fn probe_codes_are_fiscal_codes_of_nobody() {
    for s in PROBE_FISCAL_CODES {
        let f = fc(s);
        assert_eq!(f.expose(), s);
        assert_eq!(&s[11..12], "Y", "municipality letter Y does not exist");
    }
}
