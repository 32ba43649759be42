//! Contract test: the client's requests and the fake IO's responses checked against the JSON
//! schemas of IO's own OpenAPI specs (`../shared/reference/io-api/`), so neither can drift from
//! IO. A clone without `../shared` skips with a printed notice.

mod common;

use common::spec::{load_specs, spec_dir, Spec};
use serde_json::json;

fn specs_or_skip() -> Option<Vec<Spec>> {
    let specs = load_specs();
    if specs.is_none() {
        println!(
            "NOTICE: contract test skipped: IO specs not found in {} (set CORRIERE_IO_SPEC_DIR)",
            spec_dir().display()
        );
    }
    specs
}

fn find<'a>(
    specs: &'a [Spec],
    method: &str,
    path: &str,
) -> (&'a Spec, String, &'a serde_json::Value) {
    // IO's gateway routes /api/v1/messages to the messages function (FACTS §0): the spec with
    // the most specific base path wins.
    let mut ordered: Vec<&Spec> = specs.iter().collect();
    ordered.sort_by_key(|s| std::cmp::Reverse(s.base_path.len()));
    ordered
        .into_iter()
        .find_map(|s| s.operation(method, path).map(|(t, op)| (s, t, op)))
        .unwrap_or_else(|| panic!("no operation in the specs for {method} {path}"))
}

/// The schema machinery itself: known-good and known-bad instances, so a validator that accepts
/// everything cannot pass this suite.
#[test]
fn spec_schemas_accept_valid_and_reject_invalid_instances() {
    let Some(specs) = specs_or_skip() else { return };
    let (spec, template, op) = find(&specs, "POST", "/api/v1/messages");
    assert_eq!(template, "/");
    let schema = spec.request_schema(op).expect("POST /messages has a body");
    let good = json!({
        "fiscal_code": "AAAAAA00A00A000A",
        "content": { "subject": "Avviso di prova per il servizio",
                     "markdown": "x".repeat(80) },
        "feature_level_type": "STANDARD",
        "time_to_live": 3600
    });
    assert!(
        spec.check(&schema, &good).is_empty(),
        "{:?}",
        spec.check(&schema, &good)
    );
    let short_subject = json!({
        "fiscal_code": "AAAAAA00A00A000A",
        "content": { "subject": "breve", "markdown": "x".repeat(80) }
    });
    assert!(!spec.check(&schema, &short_subject).is_empty());
    let created = spec.response_schema(op, 201).expect("201 schema");
    assert!(spec
        .check(&created, &json!({"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV"}))
        .is_empty());
    assert!(!spec.check(&created, &json!({"id": 3})).is_empty());

    let (spec, _, op) = find(&specs, "GET", "/api/v1/subscriptions-feed/2024-01-01");
    let feed = spec.response_schema(op, 200).expect("feed schema");
    let hash = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    let ok = json!({"dateUTC": "2024-01-01", "subscriptions": [hash], "unsubscriptions": []});
    assert!(
        spec.check(&feed, &ok).is_empty(),
        "{:?}",
        spec.check(&feed, &ok)
    );
    let bad = json!({"dateUTC": "2024-01-01", "subscriptions": ["ABC"], "unsubscriptions": []});
    assert!(!spec.check(&feed, &bad).is_empty());

    // Literal segments win over parameters.
    let (_, template, _) = find(&specs, "GET", "/api/v1/manage/services/topics");
    assert_eq!(template, "/manage/services/topics");
}
