//! Service files for `corriere service create|update`: TOML or JSON (by extension), checked
//! against the spec's `CmsServicePayload` rules (io-functions-services `index.yaml`:
//! `CmsServiceData`, `CmsOrganization`, `CmsServicePayloadMetadata`, `CIDR`, `FiscalCode`,
//! `OrganizationFiscalCode`) before anything is sent, every problem naming its field.
//!
//! Read-only fields of a service as `corriere service show --json` prints it (`id`, `status`,
//! `last_update`, `metadata.topic`) are accepted and dropped, so a shown service can be edited
//! and sent back; `metadata.topic.id` stands in for a missing `metadata.topic_id`.

use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::io_api::CmsServicePayload;
use crate::model::FiscalCode;

/// Highest `max_allowed_payment_amount` (spec: `maximum: 9999999999`, euro cents).
pub const MAX_PAYMENT_AMOUNT: u64 = 9_999_999_999;

/// One problem of a service file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldProblem {
    /// Dotted field, e.g. `metadata.scope` or `authorized_cidrs[1]`.
    pub field: String,
    /// What is wrong (never a clear fiscal code).
    pub reason: String,
}

/// A service file that cannot be sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ServiceFileError {
    /// The file.
    pub path: PathBuf,
    /// Every problem found.
    pub problems: Vec<FieldProblem>,
}

impl fmt::Display for ServiceFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "service file {}: {} problem(s)",
            self.path.display(),
            self.problems.len()
        )?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

fn problem(field: impl Into<String>, reason: impl Into<String>) -> FieldProblem {
    FieldProblem {
        field: field.into(),
        reason: reason.into(),
    }
}

/// Reads, parses and validates a service file.
pub fn load_service_file(path: &Path) -> Result<CmsServicePayload, ServiceFileError> {
    let fail = |field: &str, reason: String| ServiceFileError {
        path: path.to_owned(),
        problems: vec![problem(field, reason)],
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail("(file)", e.to_string()))?;
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let value: Value = match ext.as_deref() {
        Some("toml") => {
            let t: toml::Value =
                toml::from_str(&text).map_err(|e| fail("(file)", e.to_string()))?;
            serde_json::to_value(t).map_err(|e| fail("(file)", e.to_string()))?
        }
        Some("json") => serde_json::from_str(&text).map_err(|e| fail("(file)", e.to_string()))?,
        _ => {
            return Err(fail(
                "(file)",
                "a service file ends in .toml or .json".to_owned(),
            ))
        }
    };
    parse_payload(value).map_err(|problems| ServiceFileError {
        path: path.to_owned(),
        problems,
    })
}

/// Validates a payload and turns it into the client's type.
pub fn parse_payload(mut value: Value) -> Result<CmsServicePayload, Vec<FieldProblem>> {
    normalize(&mut value);
    let problems = validate(&value);
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(value).map_err(|e| vec![problem("(payload)", e.to_string())])
}

/// Drops read-only fields of a shown service; a topic object gives `topic_id`.
fn normalize(value: &mut Value) {
    let Some(root) = value.as_object_mut() else {
        return;
    };
    for read_only in ["id", "status", "last_update"] {
        root.remove(read_only);
    }
    if let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(topic) = meta.remove("topic") {
            if !meta.contains_key("topic_id") {
                if let Some(id) = topic.get("id") {
                    meta.insert("topic_id".to_owned(), id.clone());
                }
            }
        }
    }
}

const TOP_FIELDS: &[&str] = &[
    "name",
    "description",
    "organization",
    "metadata",
    "require_secure_channel",
    "authorized_recipients",
    "authorized_cidrs",
    "max_allowed_payment_amount",
];

const METADATA_STRINGS: &[&str] = &[
    "web_url",
    "app_ios",
    "app_android",
    "tos_url",
    "privacy_url",
    "address",
    "phone",
    "email",
    "pec",
    "cta",
    "support_url",
];

/// The guide's (legacy `ServicePayload`) names and where the CMS payload keeps them.
fn legacy_hint(field: &str) -> Option<&'static str> {
    Some(match field {
        "service_name" => "it is `name` in the CMS payload",
        "organization_name" => "it is `organization.name` in the CMS payload",
        "organization_fiscal_code" => "it is `organization.fiscal_code` in the CMS payload",
        "department_name" => "it is `organization.department_name` in the CMS payload",
        "service_metadata" => "it is `metadata` in the CMS payload",
        "require_secure_channels" => "it is `require_secure_channel` in the CMS payload",
        "is_visible" => "visibility is the publication: `corriere service publish` / `unpublish`",
        "version" | "service_id" => "read-only, set by IO: remove it",
        "primary_key" | "secondary_key" => "keys are not service data: remove them",
        _ => return None,
    })
}

fn nonempty_string(obj: &Map<String, Value>, key: &str, field: &str, out: &mut Vec<FieldProblem>) {
    match obj.get(key) {
        None => out.push(problem(field, "required: a non-empty string")),
        Some(v) => check_string(v, field, out),
    }
}

fn check_string(v: &Value, field: &str, out: &mut Vec<FieldProblem>) {
    match v.as_str() {
        Some(s) if !s.is_empty() => {}
        Some(_) => out.push(problem(field, "must not be empty (minLength 1)")),
        None => out.push(problem(field, format!("must be a string, not {}", kind(v)))),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "a table/object",
    }
}

/// `^[0-9]{11}$` (`OrganizationFiscalCode`).
pub fn is_organization_fiscal_code(s: &str) -> bool {
    s.len() == 11 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The spec's `CIDR` pattern `^([0-9]{1,3}[.]){3}[0-9]{1,3}(/([0-9]|[1-2][0-9]|3[0-2]))?$`, with
/// octets ≤ 255 (IO parses them as addresses).
pub fn is_cidr(s: &str) -> bool {
    let (addr, prefix) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let octets: Vec<&str> = addr.split('.').collect();
    let octets_ok = octets.len() == 4
        && octets.iter().all(|o| {
            (1..=3).contains(&o.len())
                && o.bytes().all(|b| b.is_ascii_digit())
                && o.parse::<u16>().is_ok_and(|n| n <= 255)
        });
    let prefix_ok = match prefix {
        None => true,
        Some(p) => {
            let digits = !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
            let no_leading_zero = p.len() == 1 || !p.starts_with('0');
            digits && no_leading_zero && p.parse::<u8>().is_ok_and(|n| n <= 32)
        }
    };
    octets_ok && prefix_ok
}

/// Every rule of `CmsServicePayload`; empty when the payload is valid.
pub fn validate(value: &Value) -> Vec<FieldProblem> {
    let mut out = Vec::new();
    let Some(root) = value.as_object() else {
        out.push(problem("(root)", "a service is a table/object of fields"));
        return out;
    };
    for key in root.keys() {
        if !TOP_FIELDS.contains(&key.as_str()) {
            let reason = match legacy_hint(key) {
                Some(h) => format!("unknown field: {h}"),
                None => format!("unknown field (expected one of {})", TOP_FIELDS.join(", ")),
            };
            out.push(problem(key.as_str(), reason));
        }
    }
    nonempty_string(root, "name", "name", &mut out);
    nonempty_string(root, "description", "description", &mut out);
    match root.get("organization") {
        None => out.push(problem(
            "organization",
            "required: a table with name and fiscal_code",
        )),
        Some(Value::Object(org)) => {
            nonempty_string(org, "name", "organization.name", &mut out);
            match org.get("fiscal_code") {
                None => out.push(problem(
                    "organization.fiscal_code",
                    "required: the organization's 11-digit fiscal code",
                )),
                Some(Value::String(s)) if is_organization_fiscal_code(s) => {}
                Some(_) => out.push(problem(
                    "organization.fiscal_code",
                    "must be 11 digits (OrganizationFiscalCode, e.g. \"00907501001\")",
                )),
            }
            if let Some(d) = org.get("department_name") {
                check_string(d, "organization.department_name", &mut out);
            }
            for key in org.keys() {
                if !["name", "fiscal_code", "department_name"].contains(&key.as_str()) {
                    out.push(problem(
                        format!("organization.{key}"),
                        "unknown field (expected name, fiscal_code, department_name)",
                    ));
                }
            }
        }
        Some(v) => out.push(problem(
            "organization",
            format!("must be a table/object, not {}", kind(v)),
        )),
    }
    if let Some(v) = root.get("require_secure_channel") {
        if !v.is_boolean() {
            out.push(problem(
                "require_secure_channel",
                format!("must be true or false, not {}", kind(v)),
            ));
        }
    }
    if let Some(v) = root.get("authorized_recipients") {
        match v.as_array() {
            None => out.push(problem(
                "authorized_recipients",
                "must be an array of fiscal codes",
            )),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    // IO's pattern is upper case and exact: no trimming, no lower case.
                    let ok = item
                        .as_str()
                        .is_some_and(|s| FiscalCode::parse(s).is_ok_and(|fc| fc.expose() == s));
                    if !ok {
                        out.push(problem(
                            format!("authorized_recipients[{i}]"),
                            "not a fiscal code (16 upper-case characters, IO's pattern)",
                        ));
                    }
                }
            }
        }
    }
    if let Some(v) = root.get("authorized_cidrs") {
        match v.as_array() {
            None => out.push(problem(
                "authorized_cidrs",
                "must be an array of IPv4 addresses or CIDRs",
            )),
            Some(items) => {
                for (i, item) in items.iter().enumerate() {
                    if !item.as_str().is_some_and(is_cidr) {
                        out.push(problem(
                            format!("authorized_cidrs[{i}]"),
                            format!(
                                "{} is not an IPv4 address or CIDR like \"203.0.113.0/24\"",
                                item
                            ),
                        ));
                    }
                }
            }
        }
    }
    if let Some(v) = root.get("max_allowed_payment_amount") {
        if v.as_u64().is_none_or(|n| n > MAX_PAYMENT_AMOUNT) {
            out.push(problem(
                "max_allowed_payment_amount",
                format!("must be a whole number of euro cents from 0 to {MAX_PAYMENT_AMOUNT}"),
            ));
        }
    }
    match root.get("metadata") {
        None => out.push(problem(
            "metadata",
            "required: a table with at least scope and topic_id",
        )),
        Some(Value::Object(meta)) => validate_metadata(meta, &mut out),
        Some(v) => out.push(problem(
            "metadata",
            format!("must be a table/object, not {}", kind(v)),
        )),
    }
    out
}

fn validate_metadata(meta: &Map<String, Value>, out: &mut Vec<FieldProblem>) {
    match meta.get("scope").and_then(Value::as_str) {
        Some("LOCAL" | "NATIONAL") => {}
        Some(_) => out.push(problem(
            "metadata.scope",
            "must be \"LOCAL\" or \"NATIONAL\"",
        )),
        None => out.push(problem(
            "metadata.scope",
            "required: \"LOCAL\" or \"NATIONAL\"",
        )),
    }
    match meta.get("topic_id") {
        Some(v) if v.as_i64().is_some() => {}
        Some(_) => out.push(problem(
            "metadata.topic_id",
            "must be a topic id number (`corriere service topics`)",
        )),
        None => out.push(problem(
            "metadata.topic_id",
            "required: a topic id (`corriere service topics` lists them)",
        )),
    }
    for key in meta.keys() {
        let field = format!("metadata.{key}");
        match key.as_str() {
            "scope" | "topic_id" => {}
            "token_name" => out.push(problem(
                field,
                "deprecated by IO and being removed: leave it out",
            )),
            "description" => out.push(problem(
                field,
                "unknown field: the description is top-level in the CMS payload",
            )),
            k if METADATA_STRINGS.contains(&k) => check_string(&meta[k], &field, out),
            _ => out.push(problem(
                field,
                format!(
                    "unknown field (expected scope, topic_id, {})",
                    METADATA_STRINGS.join(", ")
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn good() -> Value {
        json!({
            "name": "TARI",
            "description": "Avvisi TARI del Comune",
            "organization": {"name": "Comune di Prova", "fiscal_code": "01234567890"},
            "metadata": {"scope": "LOCAL", "topic_id": 4, "privacy_url": "https://c.example/p",
                         "email": "tributi@c.example"},
            "authorized_cidrs": ["203.0.113.0/24", "198.51.100.7"],
            "authorized_recipients": ["AAAAAA00A00A000A"],
            "max_allowed_payment_amount": 150000
        })
    }

    fn fields(v: Value) -> Vec<String> {
        validate(&v).into_iter().map(|p| p.field).collect()
    }

    #[test]
    fn a_good_payload_parses() {
        let p = parse_payload(good()).unwrap();
        assert_eq!(p.organization.fiscal_code, "01234567890");
        assert_eq!(p.metadata.topic_id, Some(4));
        assert_eq!(p.max_allowed_payment_amount, Some(150_000));
    }

    #[test]
    fn required_fields_are_named() {
        let mut v = good();
        let o = v.as_object_mut().unwrap();
        o.remove("name");
        o.remove("organization");
        o["metadata"].as_object_mut().unwrap().remove("scope");
        o["metadata"].as_object_mut().unwrap().remove("topic_id");
        assert_eq!(
            fields(v),
            vec![
                "name",
                "organization",
                "metadata.scope",
                "metadata.topic_id"
            ]
        );
    }

    #[test]
    fn formats_follow_the_spec() {
        let mut v = good();
        v["organization"]["fiscal_code"] = json!("0123456789");
        v["authorized_cidrs"] = json!(["10.0.0.0/33", "1.2.3", "300.1.1.1", "10.0.0.0/08"]);
        v["authorized_recipients"] = json!(["aaaaaa00a00a000a", "AAAAAA00A00A000A"]);
        v["max_allowed_payment_amount"] = json!(-1);
        v["metadata"]["scope"] = json!("REGIONAL");
        v["metadata"]["phone"] = json!("");
        assert_eq!(
            fields(v),
            vec![
                "organization.fiscal_code",
                "authorized_recipients[0]",
                "authorized_cidrs[0]",
                "authorized_cidrs[1]",
                "authorized_cidrs[2]",
                "authorized_cidrs[3]",
                "max_allowed_payment_amount",
                "metadata.scope",
                "metadata.phone",
            ]
        );
    }

    #[test]
    fn the_guides_legacy_names_get_a_hint() {
        let mut v = good();
        v["service_name"] = json!("x");
        v["is_visible"] = json!(true);
        let problems = validate(&v);
        assert!(problems
            .iter()
            .any(|p| p.field == "service_name" && p.reason.contains("`name`")));
        assert!(problems
            .iter()
            .any(|p| p.field == "is_visible" && p.reason.contains("publish")));
    }

    #[test]
    fn a_shown_service_can_be_sent_back() {
        let mut v = good();
        v["id"] = json!("01ABC");
        v["status"] = json!({"value": "approved"});
        v["last_update"] = json!("2026-01-01T00:00:00.000Z");
        v["metadata"].as_object_mut().unwrap().remove("topic_id");
        v["metadata"]["topic"] = json!({"id": 7, "name": "Lavoro"});
        let p = parse_payload(v).unwrap();
        assert_eq!(p.metadata.topic_id, Some(7));
    }

    #[test]
    fn toml_and_json_files_by_extension() {
        let dir = tempfile::tempdir().unwrap();
        let toml_path = dir.path().join("s.toml");
        std::fs::write(
            &toml_path,
            "name = \"TARI\"\ndescription = \"Avvisi\"\nauthorized_cidrs = [\"203.0.113.7\"]\n\
             [organization]\nname = \"Comune\"\nfiscal_code = \"01234567890\"\n\
             [metadata]\nscope = \"LOCAL\"\ntopic_id = 3\n",
        )
        .unwrap();
        assert_eq!(load_service_file(&toml_path).unwrap().name, "TARI");
        let json_path = dir.path().join("s.json");
        std::fs::write(&json_path, good().to_string()).unwrap();
        assert_eq!(load_service_file(&json_path).unwrap().name, "TARI");
        let bad = dir.path().join("s.yaml");
        std::fs::write(&bad, "name: x").unwrap();
        let e = load_service_file(&bad).unwrap_err().to_string();
        assert!(e.contains("s.yaml") && e.contains(".toml or .json"), "{e}");
    }

    #[test]
    fn cidr_pattern() {
        for ok in ["1.2.3.4", "1.2.3.4/0", "10.0.0.0/8", "255.255.255.255/32"] {
            assert!(is_cidr(ok), "{ok}");
        }
        for bad in [
            "",
            "1.2.3.4/",
            "1.2.3.4/33",
            "1.2.3.4/08",
            "::1",
            "1.2.3.4.5",
            "a.b.c.d",
        ] {
            assert!(!is_cidr(bad), "{bad}");
        }
    }
}
