//! The IO OpenAPI (swagger 2.0) specs of `../shared/reference/io-api/` as JSON Schema validators,
//! for the contract test. Every `$ref` in the bundled specs is internal (`#/definitions/…`), so a
//! schema is validated with the spec's own `definitions` beside it. The `x-` extensions are
//! mapped by hand:
//! - `x-one-of: true` on an `allOf` means a union in IO's generator (io-ts): `allOf` → `anyOf`;
//! - `x-extensible-enum` lists known values of an open string: nothing to check;
//! - `FiscalCodeHash` has `minLength: 16, maxLength: 16` next to a 64-hex pattern (a spec bug,
//!   FACTS §2): the lengths are dropped and the pattern anchored.
//! - custom `format`s (`FiscalCode`, `Ulid`, …) are unknown to JSON Schema and ignored.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// One spec file.
pub struct Spec {
    /// File name, for messages.
    pub name: String,
    /// `basePath` (e.g. `/api/v1/messages`).
    pub base_path: String,
    doc: Value,
    definitions: Value,
}

/// Where the specs are: `CORRIERE_IO_SPEC_DIR`, or `../shared/reference/io-api` beside the repo.
pub fn spec_dir() -> PathBuf {
    std::env::var_os("CORRIERE_IO_SPEC_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/io-api"))
}

/// Loads the two specs IO serves today (services v4.1.1 and messages), or `None` when the
/// reference folder is absent (a clone without `../shared`).
pub fn load_specs() -> Option<Vec<Spec>> {
    let dir = spec_dir();
    let files = [
        "io-functions-services/index.yaml",
        "io-messages-services-func/index.yaml",
    ];
    if !files.iter().all(|f| dir.join(f).is_file()) {
        return None;
    }
    Some(
        files
            .iter()
            .map(|f| Spec::load(&dir.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect(),
    )
}

impl Spec {
    /// Parses a swagger 2.0 YAML file.
    pub fn load(path: &Path) -> Result<Spec, String> {
        let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| e.to_string())?;
        let mut doc: Value = serde_json::to_value(yaml).map_err(|e| e.to_string())?;
        map_extensions(&mut doc);
        let mut definitions = doc.get("definitions").cloned().unwrap_or(json!({}));
        if let Some(hash) = definitions
            .get_mut("FiscalCodeHash")
            .and_then(Value::as_object_mut)
        {
            hash.remove("minLength");
            hash.remove("maxLength");
            hash.insert("pattern".into(), json!("^[0-9a-f]{64}$"));
        }
        Ok(Spec {
            name: path.display().to_string(),
            base_path: doc["basePath"]
                .as_str()
                .unwrap_or("")
                .trim_end_matches('/')
                .to_owned(),
            doc,
            definitions,
        })
    }

    /// The operation serving `method` on the absolute `path` (e.g. `/api/v1/messages/X/Y`).
    pub fn operation(&self, method: &str, path: &str) -> Option<(String, &Value)> {
        let rest = path.strip_prefix(&self.base_path)?;
        let rest = if rest.is_empty() { "/" } else { rest };
        let paths = self.doc["paths"].as_object()?;
        let method = method.to_ascii_lowercase();
        // Prefer literal segments over parameters (`/manage/services/topics` vs `/{serviceId}`).
        let mut best: Option<(usize, String, &Value)> = None;
        for (template, item) in paths {
            let Some(op) = item.get(&method) else {
                continue;
            };
            if let Some(literals) = matches_template(template, rest) {
                if best.as_ref().is_none_or(|(l, _, _)| literals > *l) {
                    best = Some((literals, template.clone(), op));
                }
            }
        }
        best.map(|(_, t, op)| (t, op))
    }

    /// The body schema of an operation's request, if it takes a body.
    pub fn request_schema(&self, op: &Value) -> Option<Value> {
        op["parameters"].as_array()?.iter().find_map(|p| {
            let p = self.resolve(p);
            (p["in"] == "body").then(|| p["schema"].clone())
        })
    }

    /// The schema of an operation's response for `status`, if the spec gives one.
    pub fn response_schema(&self, op: &Value, status: u16) -> Option<Value> {
        let responses = op["responses"].as_object()?;
        let response = responses
            .get(&status.to_string())
            .or_else(|| responses.get("default"))?;
        let response = self.resolve(response);
        response.get("schema").cloned()
    }

    /// Whether the spec documents `status` for this operation.
    pub fn documents_status(&self, op: &Value, status: u16) -> bool {
        op["responses"]
            .as_object()
            .is_some_and(|r| r.contains_key(&status.to_string()))
    }

    fn resolve<'a>(&'a self, v: &'a Value) -> &'a Value {
        match v.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let pointer = r.trim_start_matches('#');
                self.doc.pointer(pointer).unwrap_or(v)
            }
            None => v,
        }
    }

    /// Validates `instance` against `schema` (with this spec's definitions). Returns the list of
    /// violations, empty when valid.
    pub fn check(&self, schema: &Value, instance: &Value) -> Vec<String> {
        let mut root = match schema {
            Value::Object(m) => m.clone(),
            other => {
                let mut m = Map::new();
                m.insert("allOf".into(), json!([other]));
                m
            }
        };
        root.insert("definitions".into(), self.definitions.clone());
        let validator = jsonschema::draft4::options()
            .should_validate_formats(false)
            .build(&Value::Object(root))
            .unwrap_or_else(|e| panic!("{}: schema does not compile: {e}", self.name));
        validator
            .iter_errors(instance)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect()
    }

    /// A schema referring to a named definition.
    pub fn definition(&self, name: &str) -> Value {
        assert!(
            self.definitions.get(name).is_some(),
            "{}: no definition {name}",
            self.name
        );
        json!({ "$ref": format!("#/definitions/{name}") })
    }
}

/// Number of literal segments matched, or None when the path does not fit the template.
fn matches_template(template: &str, path: &str) -> Option<usize> {
    let t: Vec<&str> = template.trim_matches('/').split('/').collect();
    let p: Vec<&str> = path.trim_matches('/').split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut literals = 0;
    for (a, b) in t.iter().zip(&p) {
        if a.starts_with('{') && a.ends_with('}') {
            if b.is_empty() {
                return None;
            }
        } else if a == b {
            literals += 1;
        } else {
            return None;
        }
    }
    Some(literals)
}

fn map_extensions(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.get("x-one-of") == Some(&Value::Bool(true)) {
                if let Some(all) = m.remove("allOf") {
                    m.insert("anyOf".into(), all);
                }
            }
            for (_, child) in m.iter_mut() {
                map_extensions(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(map_extensions),
        _ => {}
    }
}
