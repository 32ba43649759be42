//! `/manage/services` (io-services-cms): services with their lifecycle
//! draft → submitted → approved / rejected (with the reason) → published / unpublished, and 409
//! on an incompatible action. Uses the separate *manage* key.

// Handlers return early with a ready `Response` as the error: the idiomatic axum shape, and
// these paths are not hot enough for the size of the `Err` variant to matter.
#![allow(clippy::result_large_err)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::handlers::{check_logo, is_fiscal_code, problem};
use super::state::{now_ms, FakeState};
use super::FakeService;

#[derive(Debug, Clone)]
struct Entry {
    id: String,
    data: Value,
    status: String,
    reason: Option<String>,
    publication: Option<&'static str>,
    last_update: u64,
    history: Vec<Value>,
    primary_key: String,
    secondary_key: String,
}

/// The services created through the manage API.
#[derive(Default)]
pub struct CmsStore {
    services: Mutex<BTreeMap<String, Entry>>,
}

impl CmsStore {
    /// The store holding the configured services, so cmsGetService reads what the messages API
    /// enforces (a configured service keeps its own sandbox and premium flags until a manage call
    /// changes its data).
    pub fn seeded(services: &[FakeService]) -> CmsStore {
        let entries = services
            .iter()
            .map(|s| {
                let c = &s.cms;
                let mut organization =
                    json!({"name": c.organization_name, "fiscal_code": s.organization_fiscal_code});
                if let Some(d) = &c.department_name {
                    organization["department_name"] = json!(d);
                }
                let mut metadata: serde_json::Map<String, Value> = c
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(v)))
                    .collect();
                if let Some(t) = c.topic_id {
                    metadata.insert("topic_id".to_owned(), json!(t));
                }
                let data = json!({
                    "name": s.name,
                    "description": c.description,
                    "organization": organization,
                    "metadata": metadata,
                    "authorized_recipients": s.authorized_recipients,
                    "authorized_cidrs": s.authorized_cidrs,
                    "max_allowed_payment_amount": s.max_allowed_payment_amount,
                });
                let publication = match c.publication.as_deref() {
                    Some("published") => Some("published"),
                    Some("unpublished") => Some("unpublished"),
                    _ => None,
                };
                let mut e = Entry {
                    id: s.id.clone(),
                    data,
                    status: c.lifecycle.clone(),
                    reason: c.reason.clone(),
                    publication,
                    last_update: now_ms(),
                    history: Vec::new(),
                    primary_key: s.primary_key.clone(),
                    secondary_key: s.secondary_key.clone(),
                };
                push_history(&mut e);
                (s.id.clone(), e)
            })
            .collect();
        CmsStore {
            services: Mutex::new(entries),
        }
    }
}

const INCOMPATIBLE: &str = "Service status is incompatible with update action";

pub fn routes() -> Router<Arc<FakeState>> {
    Router::new()
        .route("/api/v1/manage/services", post(create).get(list))
        .route("/api/v1/manage/services/topics", get(topics))
        .route(
            "/api/v1/manage/services/{id}",
            get(read).put(update).delete(remove),
        )
        .route("/api/v1/manage/services/{id}/logo", put(logo))
        .route("/api/v1/manage/services/{id}/keys", get(keys))
        .route("/api/v1/manage/services/{id}/keys/{kind}", put(regenerate))
        .route("/api/v1/manage/services/{id}/review", put(review))
        .route(
            "/api/v1/manage/services/{id}/release",
            post(release).get(published).delete(unpublish),
        )
        .route("/api/v1/manage/services/{id}/history", get(history))
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> Result<(), Response> {
    let key = headers
        .get("ocp-apim-subscription-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if key == state.manage_key {
        Ok(())
    } else {
        state.count_request("manage_services", 401);
        Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"statusCode": 401, "message": "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription."})),
        )
            .into_response())
    }
}

fn counted(state: &FakeState, r: Response) -> Response {
    state.count_request("manage_services", r.status().as_u16());
    r
}

fn not_found() -> Response {
    problem(
        404,
        "Service not found",
        "The service you requested was not found in the system.",
    )
}

/// CmsServicePayload rules: the first violation.
fn validate_payload(v: &Value) -> Result<(), String> {
    let nonempty = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    for p in ["/name", "/description", "/organization/name"] {
        if !nonempty(p) {
            return Err(format!(
                "value at [root{}] is not a valid [NonEmptyString]",
                p.replace('/', ".")
            ));
        }
    }
    let org_fc = v
        .pointer("/organization/fiscal_code")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !(org_fc.len() == 11 && org_fc.bytes().all(|b| b.is_ascii_digit())) {
        return Err(
            "value at [root.organization.fiscal_code] is not a valid [OrganizationFiscalCode]"
                .into(),
        );
    }
    match v.pointer("/metadata/scope").and_then(Value::as_str) {
        Some("LOCAL" | "NATIONAL") => {}
        _ => {
            return Err(
                "value at [root.metadata.scope] is not a valid [\"LOCAL\" | \"NATIONAL\"]".into(),
            )
        }
    }
    if !v
        .pointer("/metadata/topic_id")
        .is_some_and(Value::is_number)
    {
        return Err("value at [root.metadata.topic_id] is not a valid [number]".into());
    }
    if let Some(cidrs) = v.get("authorized_cidrs") {
        let ok = cidrs.as_array().is_some_and(|a| {
            a.iter().all(|c| {
                c.as_str().is_some_and(|c| {
                    let c = if c.contains('/') {
                        c.to_owned()
                    } else {
                        format!("{c}/32")
                    };
                    c.parse::<ipnet::Ipv4Net>().is_ok()
                })
            })
        });
        if !ok {
            return Err("value at [root.authorized_cidrs] is not a valid [array of CIDR]".into());
        }
    }
    if let Some(r) = v.get("authorized_recipients") {
        let ok = r
            .as_array()
            .is_some_and(|a| a.iter().all(|f| f.as_str().is_some_and(is_fiscal_code)));
        if !ok {
            return Err(
                "value at [root.authorized_recipients] is not a valid [array of FiscalCode]".into(),
            );
        }
    }
    if let Some(m) = v.get("max_allowed_payment_amount") {
        if m.as_u64().is_none_or(|m| m > 9_999_999_999) {
            return Err("value at [root.max_allowed_payment_amount] is not a valid [integer >= 0 and <= 9999999999]".into());
        }
    }
    Ok(())
}

/// What the guide (§4.1) requires before a service can be approved.
fn missing_mandatory(v: &Value) -> Vec<&'static str> {
    let has = |p: &str| {
        v.pointer(p)
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty())
    };
    let mut missing = Vec::new();
    if !has("/metadata/privacy_url") {
        missing.push("metadata.privacy_url");
    }
    if ![
        "/metadata/phone",
        "/metadata/email",
        "/metadata/pec",
        "/metadata/support_url",
    ]
    .iter()
    .any(|p| has(p))
    {
        missing.push("a contact (metadata.phone, email, pec or support_url)");
    }
    if v.get("authorized_cidrs")
        .and_then(Value::as_array)
        .is_none_or(Vec::is_empty)
    {
        missing.push("authorized_cidrs");
    }
    missing
}

fn lifecycle_json(e: &Entry) -> Value {
    let mut out = e.data.clone();
    out["id"] = json!(e.id);
    out["status"] = match &e.reason {
        Some(r) => json!({"value": e.status, "reason": r}),
        None => json!({"value": e.status}),
    };
    out["last_update"] = json!(iso(e.last_update));
    if let Some(topic_id) = e.data.pointer("/metadata/topic_id").cloned() {
        out["metadata"]["topic"] =
            json!({"id": topic_id, "name": topic_name(topic_id.as_i64().unwrap_or(0))});
    }
    out
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

const TOPICS: &[(i64, &str)] = &[
    (0, "Altro"),
    (1, "Ambiente e animali"),
    (2, "Attività produttive e commercio"),
    (3, "Benessere sociale"),
    (4, "Casa e utenze"),
    (5, "Cultura, tempo libero e sport"),
    (6, "Educazione e formazione"),
    (7, "Giustizia e legge"),
    (8, "Lavoro"),
    (9, "Mobilità e trasporti"),
    (10, "Redditi, patrimoni e fisco"),
    (11, "Salute"),
    (12, "Servizi anagrafici e civici"),
];

fn topic_name(id: i64) -> &'static str {
    TOPICS.iter().find(|t| t.0 == id).map_or("Altro", |t| t.1)
}

fn new_key() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

fn push_history(e: &mut Entry) {
    e.last_update = now_ms();
    let mut item = lifecycle_json(e);
    item["status"] = json!({"kind": "lifecycle", "value": e.status});
    e.history.push(item);
}

fn push_publication(e: &mut Entry, value: &str) {
    e.last_update = now_ms();
    let mut item = lifecycle_json(e);
    item["status"] = json!({"kind": "publication", "value": value});
    e.history.push(item);
}

/// Keeps the messages API in step: a service's keys work, in sandbox until it is published.
fn register(state: &FakeState, e: &Entry) {
    let d = &e.data;
    let strings = |p: &str| -> Vec<String> {
        d.get(p)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut recipients = strings("authorized_recipients");
    if recipients.is_empty() {
        recipients.push("AAAAAA00A00A000A".to_owned());
    }
    // Premium and the API user are APIM groups and accounts, not service data: a manage call
    // keeps what the service had.
    let known = state.service_by_id(&e.id);
    state.upsert_service(FakeService {
        id: e.id.clone(),
        name: d["name"].as_str().unwrap_or_default().to_owned(),
        organization_fiscal_code: d
            .pointer("/organization/fiscal_code")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        primary_key: e.primary_key.clone(),
        secondary_key: e.secondary_key.clone(),
        api_user: known
            .as_ref()
            .map_or_else(|| "fake-user".to_owned(), |k| k.api_user.clone()),
        sandbox: e.publication != Some("published"),
        authorized_recipients: recipients,
        premium: known.as_ref().is_some_and(|k| k.premium),
        max_allowed_payment_amount: d["max_allowed_payment_amount"].as_u64().unwrap_or(0),
        authorized_cidrs: strings("authorized_cidrs"),
        cms: known.map(|k| k.cms).unwrap_or_default(),
    });
}

async fn create(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return counted(
                &state,
                problem(400, "Invalid CmsServicePayload", &e.to_string()),
            )
        }
    };
    if let Err(detail) = validate_payload(&payload) {
        return counted(&state, problem(400, "Invalid CmsServicePayload", &detail));
    }
    let mut e = Entry {
        id: ulid::Ulid::new().to_string(),
        data: payload,
        status: "draft".to_owned(),
        reason: None,
        publication: None,
        last_update: now_ms(),
        history: Vec::new(),
        primary_key: new_key(),
        secondary_key: new_key(),
    };
    push_history(&mut e);
    register(&state, &e);
    let body = lifecycle_json(&e);
    state
        .cms
        .services
        .lock()
        .expect("cms lock")
        .insert(e.id.clone(), e);
    counted(&state, (StatusCode::CREATED, Json(body)).into_response())
}

#[derive(serde::Deserialize)]
struct Page {
    limit: Option<usize>,
    offset: Option<usize>,
}

async fn list(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Query(page): Query<Page>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let limit = page.limit.unwrap_or(20);
    let offset = page.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) {
        return counted(
            &state,
            problem(400, "Invalid limit", "limit must be between 1 and 100"),
        );
    }
    let services = state.cms.services.lock().expect("cms lock");
    let live: Vec<&Entry> = services
        .values()
        .filter(|e| e.status != "deleted")
        .collect();
    let value: Vec<Value> = live
        .iter()
        .skip(offset)
        .take(limit)
        .map(|e| lifecycle_json(e))
        .collect();
    counted(
        &state,
        Json(json!({"value": value, "pagination": {"count": live.len(), "limit": limit, "offset": offset}})).into_response(),
    )
}

async fn topics(State(state): State<Arc<FakeState>>, headers: HeaderMap) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let topics: Vec<Value> = TOPICS
        .iter()
        .map(|(id, name)| json!({"id": id, "name": name}))
        .collect();
    counted(&state, Json(json!({ "topics": topics })).into_response())
}

/// Runs `f` on a live service, answering 404 for unknown or deleted ones.
fn with_entry(state: &FakeState, id: &str, f: impl FnOnce(&mut Entry) -> Response) -> Response {
    let mut services = state.cms.services.lock().expect("cms lock");
    let r = match services.get_mut(id) {
        Some(e) if e.status != "deleted" => f(e),
        _ => not_found(),
    };
    drop(services);
    counted(state, r)
}

async fn read(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    with_entry(&state, &id, |e| Json(lifecycle_json(e)).into_response())
}

async fn update(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let payload: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return counted(
                &state,
                problem(400, "Invalid CmsServicePayload", &e.to_string()),
            )
        }
    };
    if let Err(detail) = validate_payload(&payload) {
        return counted(&state, problem(400, "Invalid CmsServicePayload", &detail));
    }
    let st = state.clone();
    with_entry(&state, &id, move |e| {
        if e.status == "submitted" {
            return problem(409, "Conflict", INCOMPATIBLE);
        }
        e.data = payload;
        e.status = "draft".to_owned();
        e.reason = None;
        push_history(e);
        register(&st, e);
        Json(lifecycle_json(e)).into_response()
    })
}

async fn remove(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    with_entry(&state, &id, |e| {
        e.status = "deleted".to_owned();
        push_history(e);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn logo(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let check = check_logo(&body);
    with_entry(&state, &id, move |_| match check {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(detail) => problem(400, "Invalid logo", &detail),
    })
}

fn keys_json(e: &Entry) -> Response {
    Json(json!({"primary_key": e.primary_key, "secondary_key": e.secondary_key})).into_response()
}

async fn keys(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    with_entry(&state, &id, |e| keys_json(e))
}

async fn regenerate(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path((id, kind)): Path<(String, String)>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let st = state.clone();
    with_entry(&state, &id, move |e| {
        match kind.as_str() {
            "primary" => e.primary_key = new_key(),
            "secondary" => e.secondary_key = new_key(),
            _ => {
                return problem(
                    400,
                    "Invalid keyType",
                    "keyType must be primary or secondary",
                )
            }
        }
        register(&st, e);
        keys_json(e)
    })
}

async fn review(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let Some(auto_publish) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("auto_publish").and_then(Value::as_bool))
    else {
        return counted(
            &state,
            problem(
                400,
                "Invalid ReviewRequest",
                "value at [root.auto_publish] is not a valid [boolean]",
            ),
        );
    };
    let st = state.clone();
    with_entry(&state, &id, move |e| {
        if e.status != "draft" {
            return problem(409, "Conflict", INCOMPATIBLE);
        }
        e.status = "submitted".to_owned();
        push_history(e);
        if st.auto_review {
            let missing = missing_mandatory(&e.data);
            if missing.is_empty() {
                e.status = "approved".to_owned();
                push_history(e);
                if auto_publish {
                    e.publication = Some("published");
                    push_publication(e, "published");
                    register(&st, e);
                }
            } else {
                e.status = "rejected".to_owned();
                e.reason = Some(format!(
                    "Dati incompleti o incorretti: {}",
                    missing.join(", ")
                ));
                push_history(e);
            }
        }
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn release(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let st = state.clone();
    with_entry(&state, &id, move |e| {
        if e.status != "approved" {
            return problem(409, "Conflict", INCOMPATIBLE);
        }
        e.publication = Some("published");
        push_publication(e, "published");
        register(&st, e);
        StatusCode::NO_CONTENT.into_response()
    })
}

async fn published(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    with_entry(&state, &id, |e| match e.publication {
        Some(p) => {
            let mut body = lifecycle_json(e);
            body["status"] = json!(p);
            Json(body).into_response()
        }
        None => not_found(),
    })
}

async fn unpublish(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    let st = state.clone();
    with_entry(&state, &id, move |e| match e.publication {
        Some("published") => {
            e.publication = Some("unpublished");
            push_publication(e, "unpublished");
            register(&st, e);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => not_found(),
    })
}

#[derive(serde::Deserialize)]
struct HistoryQuery {
    order: Option<String>,
    limit: Option<usize>,
    #[serde(rename = "continuationToken")]
    continuation_token: Option<String>,
}

async fn history(
    State(state): State<Arc<FakeState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(q): Query<HistoryQuery>,
) -> Response {
    if let Err(r) = authorized(&state, &headers) {
        return r;
    }
    with_entry(&state, &id, move |e| {
        let mut items = e.history.clone();
        if q.order.as_deref() != Some("ASC") {
            items.reverse();
        }
        let start: usize = q
            .continuation_token
            .and_then(|t| t.parse().ok())
            .unwrap_or(0);
        let limit = q.limit.unwrap_or(10).clamp(1, 100);
        let page: Vec<Value> = items.iter().skip(start).take(limit).cloned().collect();
        let mut body = json!({ "items": page });
        if start.saturating_add(limit) < items.len() {
            body["continuationToken"] = json!((start + limit).to_string());
        }
        Json(body).into_response()
    })
}
