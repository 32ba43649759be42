//! The Grafana dashboard (`config/grafana/corriere.json`) queries only metrics corriere exports:
//! every `corriere_*` name in every query (panel `expr`s and template variables), less the
//! histogram suffixes, is one of `corriere::metrics::ALL`.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::Value;

const HISTOGRAM_SUFFIXES: &[&str] = &["_bucket", "_sum", "_count"];

fn dashboard() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/grafana/corriere.json");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every query string: `expr` members anywhere, and the template variables' queries.
fn queries(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "definition", Value::String(s)) => out.push(s.clone()),
                    ("query", Value::String(s)) => out.push(s.clone()),
                    _ => queries(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| queries(i, out)),
        _ => {}
    }
}

/// `corriere_[a-z_]+` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = expr;
    while let Some(at) = rest.find("corriere_") {
        let tail = &rest[at..];
        let len = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..len].to_owned());
        rest = &tail[len..];
    }
    names
}

fn exported_name(name: &str) -> &str {
    HISTOGRAM_SUFFIXES
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .filter(|base| corriere::metrics::ALL.contains(base))
        .unwrap_or(name)
}

#[test]
fn every_metric_the_dashboard_queries_is_exported() {
    let mut all = Vec::new();
    queries(&dashboard(), &mut all);
    let used: BTreeSet<String> = all
        .iter()
        .flat_map(|q| metric_names(q))
        .map(|n| exported_name(&n).to_owned())
        .collect();
    assert!(!used.is_empty(), "the dashboard queries no corriere metric");
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !corriere::metrics::ALL.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics corriere does not export: {unknown:?}"
    );
}

#[test]
fn the_dashboard_covers_the_issue_panels() {
    let mut all = Vec::new();
    queries(&dashboard(), &mut all);
    let joined = all.join("\n");
    for needed in [
        "corriere_recipients_total",
        "corriere_throttled_total",
        "corriere_rate_limit_per_second",
        "histogram_quantile",
        "corriere_io_request_duration_seconds_bucket",
        "corriere_poll_queue_depth",
        "endpoint=\"submit_message\"",
    ] {
        assert!(joined.contains(needed), "no query uses {needed}");
    }
}

#[test]
fn the_dashboard_is_importable() {
    let d = dashboard();
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 36);
    let panels = d["panels"].as_array().unwrap();
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "panel ids are unique"
        );
        if p["type"] != "row" {
            assert_eq!(p["datasource"]["uid"], "${DS_PROMETHEUS}", "{}", p["title"]);
        }
    }
}

#[test]
fn names_are_found_in_expressions() {
    assert_eq!(
        metric_names("sum(rate(corriere_io_requests_total{status=~\"2..\"}[5m])) / corriere_rate_limit_per_second"),
        ["corriere_io_requests_total", "corriere_rate_limit_per_second"]
    );
    assert_eq!(
        exported_name("corriere_io_request_duration_seconds_bucket"),
        "corriere_io_request_duration_seconds"
    );
    // `_count` is only stripped from histograms: a counter named `…_total` stays whole.
    assert_eq!(
        exported_name("corriere_recipients_total"),
        "corriere_recipients_total"
    );
}
