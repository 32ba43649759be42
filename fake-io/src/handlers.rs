//! The fake's routes. Each API call goes through [`gate`] (key → 401, the API user's rate budget
//! → 429, source address → 403) in the order IO's gateway and middlewares apply them (FACTS §5).

// Handlers return early with a ready `Response` as the error: the idiomatic axum shape, and
// these paths are not hot enough for the size of the `Err` variant to matter.
#![allow(clippy::result_large_err)]

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use base64::Engine as _;
use serde_json::{json, Value};

use super::state::{now_ms, FakeState, Msg, RateVerdict};
use super::{Conn, FakeRate, FakeService, Faults};

const FC_PATTERN: &str =
    "^[A-Z]{6}[0-9LMNPQRSTUV]{2}[ABCDEHLMPRST][0-9LMNPQRSTUV]{2}[A-Z][0-9LMNPQRSTUV]{3}[A-Z]$";

pub fn router(state: Arc<FakeState>) -> Router {
    Router::new()
        .route("/api/v1/messages", post(submit_in_body))
        .route("/api/v1/messages/{fc}", post(submit_in_path))
        .route("/api/v1/messages/{fc}/{id}", get(get_message))
        .route("/api/v1/profiles", post(profile_by_post))
        .route("/api/v1/profiles/{fc}", get(profile_by_get))
        .route("/api/v1/subscriptions-feed/{date}", get(feed))
        .route("/api/v1/organizations/{org}/logo", put(org_logo))
        .merge(super::cms::routes())
        .route("/__fake/stats", get(stats).delete(reset_stats))
        .route("/__fake/recipients", get(recipients))
        .route("/__fake/config", axum::routing::patch(patch_config))
        .fallback(not_found)
        .with_state(state)
}

/// RFC 7807 body as IO's functions send it.
pub fn problem(status: u16, title: &str, detail: &str) -> Response {
    let code = StatusCode::from_u16(status).expect("valid status");
    let mut r = (
        code,
        Json(json!({ "detail": detail, "status": status, "title": title })),
    )
        .into_response();
    r.headers_mut().insert(
        "content-type",
        HeaderValue::from_static("application/problem+json"),
    );
    r
}

/// Azure APIM body (401, 429).
fn apim(status: u16, message: &str) -> Response {
    let code = StatusCode::from_u16(status).expect("valid status");
    (
        code,
        Json(json!({ "statusCode": status, "message": message })),
    )
        .into_response()
}

/// Is `s` a fiscal code by IO's pattern?
pub fn is_fiscal_code(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 16 {
        return false;
    }
    let digitish = |c: u8| c.is_ascii_digit() || b"LMNPQRSTUV".contains(&c);
    b[..6].iter().all(u8::is_ascii_uppercase)
        && digitish(b[6])
        && digitish(b[7])
        && b"ABCDEHLMPRST".contains(&b[8])
        && digitish(b[9])
        && digitish(b[10])
        && b[11].is_ascii_uppercase()
        && b[12..15].iter().all(|&c| digitish(c))
        && b[15].is_ascii_uppercase()
}

fn invalid_fc_param(value: &str) -> Response {
    let json_value = serde_json::to_string(value).unwrap_or_default();
    problem(
        400,
        &format!("Invalid string that matches the pattern \"{FC_PATTERN}\""),
        &format!(
            "value [{json_value}] at [root] is not a valid [string that matches the pattern \"{FC_PATTERN}\"]"
        ),
    )
}

/// A call that passed the gateway.
pub struct Passed {
    pub service: FakeService,
    remaining: Option<u32>,
}

/// Key, rate budget and source address, as APIM and IO's middlewares check them.
pub fn gate(
    state: &FakeState,
    headers: &HeaderMap,
    conn: &Conn,
    endpoint: &'static str,
) -> Result<Passed, Response> {
    let key = headers
        .get("ocp-apim-subscription-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(service) = state.service_by_key(key) else {
        state.count_request(endpoint, 401);
        return Err(apim(
            401,
            "Access denied due to invalid subscription key. Make sure to provide a valid key for an active subscription.",
        ));
    };
    let remaining = match state.check_rate(&service.api_user) {
        RateVerdict::Allowed { remaining } => remaining,
        RateVerdict::Throttled { retry_after } => {
            state.count_request(endpoint, 429);
            let secs = retry_after.unwrap_or(1);
            let mut r = apim(
                429,
                &format!("Rate limit is exceeded. Try again in {secs} seconds."),
            );
            if let Some(s) = retry_after {
                r.headers_mut()
                    .insert("x-rate-limit-retry-after", HeaderValue::from(s));
                r.headers_mut()
                    .insert("x-rate-limit-remaining", HeaderValue::from(0));
            }
            return Err(r);
        }
    };
    if !cidr_allows(&service.authorized_cidrs, conn.peer.ip()) {
        let r = problem(
            403,
            "You are not allowed here",
            "You do not have enough permission to complete the operation you requested",
        );
        return Err(finish(state, endpoint, remaining, r));
    }
    Ok(Passed { service, remaining })
}

fn cidr_allows(cidrs: &[String], ip: std::net::IpAddr) -> bool {
    if cidrs.is_empty() {
        return true;
    }
    cidrs.iter().any(|c| {
        let c = if c.contains('/') {
            c.clone()
        } else {
            format!("{c}/32")
        };
        c.parse::<ipnet::IpNet>().is_ok_and(|net| net.contains(&ip))
    })
}

/// Adds `x-rate-limit-remaining` and counts the answer.
fn finish(
    state: &FakeState,
    endpoint: &'static str,
    remaining: Option<u32>,
    mut r: Response,
) -> Response {
    if let Some(rem) = remaining {
        r.headers_mut()
            .insert("x-rate-limit-remaining", HeaderValue::from(rem));
    }
    state.count_request(endpoint, r.status().as_u16());
    r
}

impl Passed {
    pub fn answer(&self, state: &FakeState, endpoint: &'static str, r: Response) -> Response {
        finish(state, endpoint, self.remaining, r)
    }
}

async fn latency(faults: &Faults, state: &FakeState) {
    let mut d = faults.latency;
    if !faults.jitter.is_zero() {
        d += faults.jitter.mul_f64(state.roll());
    }
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}

/// Drops the connection: the client gets no answer at all.
async fn drop_connection(conn: &Conn) -> Response {
    conn.kill.notify_one();
    std::future::pending::<Response>().await
}

fn injected_5xx(state: &FakeState) -> Response {
    state.counters.fault_5xx.fetch_add(1, Ordering::Relaxed);
    match (state.roll() * 3.0) as u32 {
        0 => problem(
            500,
            "Internal server error",
            "Unable to store processing message",
        ),
        1 => {
            let mut r = (
                StatusCode::BAD_GATEWAY,
                "<html><head><title>502 Bad Gateway</title></head><body><center><h1>502 Bad Gateway</h1></center></body></html>",
            )
                .into_response();
            r.headers_mut()
                .insert("content-type", HeaderValue::from_static("text/html"));
            r
        }
        _ => (StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable").into_response(),
    }
}

/// Validation of the NewMessage payload: the first problem, as IO's io-ts report says it.
fn validate_new_message(body: &Value) -> Result<(), String> {
    let bad =
        |path: &str, what: &str| Err(format!("value at [root.{path}] is not a valid [{what}]"));
    let Some(obj) = body.as_object() else {
        return bad("", "NewMessage");
    };
    if let Some(ttl) = obj.get("time_to_live") {
        match ttl.as_u64() {
            Some(t) if (3600..=604_800).contains(&t) => {}
            _ => return bad("time_to_live", "integer >= 3600 and <= 604800"),
        }
    }
    if let Some(f) = obj.get("feature_level_type") {
        if !matches!(f.as_str(), Some("STANDARD" | "ADVANCED")) {
            return bad("feature_level_type", "\"STANDARD\" | \"ADVANCED\"");
        }
    }
    let Some(content) = obj.get("content").and_then(Value::as_object) else {
        return bad("content", "MessageContent");
    };
    let chars = |v: Option<&Value>| v.and_then(Value::as_str).map(|s| s.chars().count());
    match chars(content.get("subject")) {
        Some(n) if (10..=120).contains(&n) => {}
        _ => return bad("content.subject", "string of 10 to 120 characters"),
    }
    match chars(content.get("markdown")) {
        Some(n) if (80..=10_000).contains(&n) => {}
        _ => return bad("content.markdown", "string of 80 to 10000 characters"),
    }
    if let Some(d) = content.get("due_date") {
        let ok = d
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok());
        if !ok {
            return bad("content.due_date", "UTCISODateFromString");
        }
    }
    if let Some(p) = content.get("payment_data") {
        let Some(p) = p.as_object() else {
            return bad("content.payment_data", "PaymentData");
        };
        match p.get("amount").and_then(Value::as_u64) {
            Some(a) if (1..=9_999_999_999).contains(&a) => {}
            _ => {
                return bad(
                    "content.payment_data.amount",
                    "integer >= 1 and <= 9999999999",
                )
            }
        }
        let notice_ok = p
            .get("notice_number")
            .and_then(Value::as_str)
            .is_some_and(|n| {
                n.len() == 18
                    && (b'0'..=b'3').contains(&n.as_bytes()[0])
                    && n.bytes().all(|b| b.is_ascii_digit())
            });
        if !notice_ok {
            return bad(
                "content.payment_data.notice_number",
                "string that matches the pattern \"^[0123][0-9]{17}$\"",
            );
        }
        if let Some(payee) = p.get("payee") {
            let ok = payee
                .get("fiscal_code")
                .and_then(Value::as_str)
                .is_some_and(|f| f.len() == 11 && f.bytes().all(|b| b.is_ascii_digit()));
            if !ok {
                return bad(
                    "content.payment_data.payee.fiscal_code",
                    "OrganizationFiscalCode",
                );
            }
        }
    }
    Ok(())
}

async fn submit_in_body(
    State(state): State<Arc<FakeState>>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    submit(state, conn, headers, None, body).await
}

async fn submit_in_path(
    State(state): State<Arc<FakeState>>,
    Extension(conn): Extension<Conn>,
    Path(fc): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    submit(state, conn, headers, Some(fc), body).await
}

async fn submit(
    state: Arc<FakeState>,
    conn: Conn,
    headers: HeaderMap,
    path_fc: Option<String>,
    body: Bytes,
) -> Response {
    const EP: &str = "submit_message";
    let passed = match gate(&state, &headers, &conn, EP) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let faults = state.faults();
    latency(&faults, &state).await;
    let roll = state.roll();
    if roll < faults.error_5xx_rate {
        return passed.answer(&state, EP, injected_5xx(&state));
    }
    if roll < faults.error_5xx_rate + faults.drop_before_create_rate {
        state.counters.drop_before.fetch_add(1, Ordering::Relaxed);
        state.count_request(EP, 0);
        return drop_connection(&conn).await;
    }
    let created = match create_message(&state, &passed.service, path_fc, &body) {
        Ok(c) => c,
        Err(r) => return passed.answer(&state, EP, r),
    };
    let roll = state.roll();
    if roll < faults.drop_after_create_rate {
        state.counters.drop_after.fetch_add(1, Ordering::Relaxed);
        state.count_request(EP, 0);
        return drop_connection(&conn).await;
    }
    if roll < faults.drop_after_create_rate + faults.hang_after_create_rate {
        state.counters.hang_after.fetch_add(1, Ordering::Relaxed);
        state.count_request(EP, 0);
        tokio::time::sleep(faults.hang).await;
        return drop_connection(&conn).await;
    }
    passed.answer(&state, EP, created)
}

fn create_message(
    state: &FakeState,
    service: &FakeService,
    path_fc: Option<String>,
    body: &Bytes,
) -> Result<Response, Response> {
    let payload: Value = serde_json::from_slice(body).map_err(|e| {
        problem(
            400,
            "Invalid message structure",
            &format!("value is not valid JSON: {e}"),
        )
    })?;
    validate_new_message(&payload)
        .map_err(|detail| problem(400, "Invalid message structure", &detail))?;
    let body_fc = payload
        .get("fiscal_code")
        .map(|v| v.as_str().unwrap_or("").to_owned());
    let fc = match (path_fc, body_fc) {
        (Some(_), Some(_)) => {
            return Err(problem(
                400,
                "Bad parameters",
                "The fiscalcode parameter must be specified in the path or in the payload but not in both",
            ))
        }
        (None, None) => {
            return Err(problem(
                400,
                "Bad parameters",
                "The fiscalcode parameter must be specified in the path or in the payload",
            ))
        }
        (Some(fc), None) => {
            if !is_fiscal_code(&fc) {
                return Err(invalid_fc_param(&fc));
            }
            fc
        }
        (None, Some(fc)) => {
            if !is_fiscal_code(&fc) {
                return Err(problem(
                    400,
                    "Invalid message structure",
                    &format!("value at [root.fiscal_code] is not a valid [string that matches the pattern \"{FC_PATTERN}\"]"),
                ));
            }
            fc
        }
    };
    let advanced = payload.get("feature_level_type").and_then(Value::as_str) == Some("ADVANCED");
    if advanced && !service.premium {
        return Err(problem(
            403,
            "You are not allowed here",
            "You do not have enough permissions to send a Premium message",
        ));
    }
    if service.sandbox && !service.authorized_recipients.iter().any(|r| r == &fc) {
        return Err(problem(
            403,
            "Recipient forbidden",
            "You are not allowed to issue requests for the recipient.",
        ));
    }
    let content = payload["content"].clone();
    if let Some(amount) = content
        .get("payment_data")
        .and_then(|p| p.get("amount"))
        .and_then(Value::as_u64)
    {
        if amount > service.max_allowed_payment_amount {
            return Err(problem(
                400,
                "Error while sending payment metadata",
                &format!(
                    "The requested amount ({amount} cents) exceeds the maximum allowed for this service ({} cents)",
                    service.max_allowed_payment_amount
                ),
            ));
        }
    }
    let id = ulid::Ulid::new().to_string();
    let created_ms = now_ms();
    let has_payee = content
        .get("payment_data")
        .and_then(|p| p.get("payee"))
        .is_some();
    let msg = Msg {
        fiscal_code: fc.clone(),
        service_id: Arc::from(service.id.as_str()),
        created_ms,
        ready_ms: created_ms + state.processing_delay(&id).as_millis() as u64,
        advanced,
        time_to_live: payload
            .get("time_to_live")
            .and_then(Value::as_u64)
            .unwrap_or(3600),
        content: content.to_string().into_boxed_str(),
        has_payee,
    };
    state.store_message(id.clone(), msg);
    let mut r = (StatusCode::CREATED, Json(json!({ "id": id }))).into_response();
    r.headers_mut().insert(
        "location",
        HeaderValue::from_str(&format!("/api/v1/messages/{fc}/{id}")).expect("ASCII"),
    );
    Ok(r)
}

fn iso(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn pick(state: &FakeState, id: &str, salt: u64) -> bool {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (state.seed, salt, id).hash(&mut h);
    h.finish() % 2 == 0
}

async fn get_message(
    State(state): State<Arc<FakeState>>,
    Extension(conn): Extension<Conn>,
    Path((fc, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    const EP: &str = "get_message";
    let passed = match gate(&state, &headers, &conn, EP) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let faults = state.faults();
    latency(&faults, &state).await;
    if faults.all_endpoints && state.roll() < faults.error_5xx_rate {
        return passed.answer(&state, EP, injected_5xx(&state));
    }
    if !is_fiscal_code(&fc) {
        return passed.answer(&state, EP, invalid_fc_param(&fc));
    }
    let not_found = || {
        problem(
            404,
            "Message not found",
            "The message that you requested was not found in the system.",
        )
    };
    let Some(msg) = state.message(&id).filter(|m| m.fiscal_code == fc) else {
        return passed.answer(&state, EP, not_found());
    };
    if *msg.service_id != *passed.service.id {
        return passed.answer(
            &state,
            EP,
            problem(
                403,
                "You are not allowed here",
                "You are not allowed to read this message, you can only read messages that you have sent",
            ),
        );
    }
    let now = now_ms();
    let processed = now >= msg.ready_ms;
    let subscribed =
        fc == TEST_CITIZEN || state.population.find(&fc).is_some_and(|c| c.subscribed_now);
    let status = match (processed, subscribed) {
        (false, _) => "ACCEPTED",
        (true, true) => "PROCESSED",
        (true, false) => "REJECTED",
    };
    let mut message = json!({
        "id": id,
        "fiscal_code": fc,
        "created_at": iso(msg.created_ms),
        "sender_service_id": &*msg.service_id,
        "feature_level_type": if msg.advanced { "ADVANCED" } else { "STANDARD" },
        "time_to_live": msg.time_to_live,
    });
    if status == "PROCESSED" {
        message["content"] = serde_json::from_str(&msg.content).unwrap_or(Value::Null);
    }
    let mut body = json!({ "message": message, "status": status });
    if status == "PROCESSED" && msg.advanced {
        body["read_status"] = json!(if pick(&state, &id, 1) {
            "READ"
        } else {
            "UNREAD"
        });
        if msg.has_payee {
            body["payment_status"] = json!(if pick(&state, &id, 2) {
                "PAID"
            } else {
                "NOT_PAID"
            });
        }
    }
    passed.answer(&state, EP, (StatusCode::OK, Json(body)).into_response())
}

/// IO's own test citizen: always an active, subscribed profile (sandbox keys may reach it).
pub const TEST_CITIZEN: &str = "AAAAAA00A00A000A";

fn profile_of(state: &FakeState, service: &FakeService, fc: &str) -> Response {
    if service.sandbox && !service.authorized_recipients.iter().any(|r| r == fc) {
        return problem(
            403,
            "Recipient forbidden",
            "You are not allowed to issue requests for the recipient.",
        );
    }
    if fc == TEST_CITIZEN {
        return (
            StatusCode::OK,
            Json(json!({ "sender_allowed": true, "preferred_languages": ["it_IT"] })),
        )
            .into_response();
    }
    match state.population.find(fc) {
        Some(c) => match c.profile {
            super::ProfileState::Active { sender_allowed } => (
                StatusCode::OK,
                Json(json!({ "sender_allowed": sender_allowed, "preferred_languages": ["it_IT"] })),
            )
                .into_response(),
            super::ProfileState::Deleted => profile_not_found(),
        },
        None => profile_not_found(),
    }
}

fn profile_not_found() -> Response {
    problem(
        404,
        "Profile not found",
        "The profile you requested was not found in the system.",
    )
}

async fn profile_by_post(
    State(state): State<Arc<FakeState>>,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const EP: &str = "get_profile";
    let passed = match gate(&state, &headers, &conn, EP) {
        Ok(p) => p,
        Err(r) => return r,
    };
    latency(&state.faults(), &state).await;
    let fc = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
        v.get("fiscal_code")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    let r = match fc {
        Some(fc) if is_fiscal_code(&fc) => profile_of(&state, &passed.service, &fc),
        _ => problem(
            400,
            "Invalid FiscalCodePayload",
            &format!("value at [root.fiscal_code] is not a valid [string that matches the pattern \"{FC_PATTERN}\"]"),
        ),
    };
    passed.answer(&state, EP, r)
}

async fn profile_by_get(
    State(state): State<Arc<FakeState>>,
    Extension(conn): Extension<Conn>,
    Path(fc): Path<String>,
    headers: HeaderMap,
) -> Response {
    const EP: &str = "get_profile";
    let passed = match gate(&state, &headers, &conn, EP) {
        Ok(p) => p,
        Err(r) => return r,
    };
    latency(&state.faults(), &state).await;
    let r = if is_fiscal_code(&fc) {
        profile_of(&state, &passed.service, &fc)
    } else {
        invalid_fc_param(&fc)
    };
    passed.answer(&state, EP, r)
}

async fn feed(
    State(state): State<Arc<FakeState>>,
    Extension(conn): Extension<Conn>,
    Path(date): Path<String>,
    headers: HeaderMap,
) -> Response {
    const EP: &str = "subscriptions_feed";
    let passed = match gate(&state, &headers, &conn, EP) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let faults = state.faults();
    latency(&faults, &state).await;
    if faults.all_endpoints && state.roll() < faults.error_5xx_rate {
        return passed.answer(&state, EP, injected_5xx(&state));
    }
    let shaped = date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-';
    let Some(day) = chrono::NaiveDate::parse_from_str(&date, "%Y-%m-%d")
        .ok()
        .filter(|_| shaped)
    else {
        return passed.answer(
            &state,
            EP,
            problem(
                400,
                "Invalid ShortDateString",
                &format!("value [{date:?}] at [root] is not a valid [ShortDateString]"),
            ),
        );
    };
    if !state.feed_published(day) {
        let from = (day + chrono::Days::new(1))
            .and_hms_opt(0, 0, 0)
            .expect("midnight")
            .and_utc();
        return passed.answer(
            &state,
            EP,
            problem(
                404,
                "Data not available yet",
                &format!(
                    "Subscription data for {date} will be available from {}",
                    from.format("%a, %d %b %Y %H:%M:%S GMT")
                ),
            ),
        );
    }
    let offset = (day - super::feed_epoch()).num_days();
    let (subs, unsubs) = if offset < 0 {
        (Vec::new(), Vec::new())
    } else {
        state.population.feed_day(offset as u32)
    };
    passed.answer(
        &state,
        EP,
        (
            StatusCode::OK,
            Json(json!({ "dateUTC": date, "subscriptions": subs, "unsubscriptions": unsubs })),
        )
            .into_response(),
    )
}

/// A base64 PNG, as the logo endpoints take it: `Ok` or the 400 detail.
pub fn check_logo(body: &Bytes) -> Result<(), String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let b64 = v
        .get("logo")
        .and_then(Value::as_str)
        .ok_or("missing logo")?;
    let png = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "logo is not base64".to_owned())?;
    if !png.starts_with(b"\x89PNG\r\n\x1a\n") {
        return Err("logo is not a PNG image".to_owned());
    }
    Ok(())
}

async fn org_logo(
    State(state): State<Arc<FakeState>>,
    Extension(conn): Extension<Conn>,
    Path(org): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    const EP: &str = "organization_logo";
    let passed = match gate(&state, &headers, &conn, EP) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let r = if !(org.len() == 11 && org.bytes().all(|b| b.is_ascii_digit())) {
        problem(
            400,
            "Invalid OrganizationFiscalCode",
            "value at [root] is not a valid [OrganizationFiscalCode]",
        )
    } else {
        match check_logo(&body) {
            Ok(()) => StatusCode::ACCEPTED.into_response(),
            Err(detail) => problem(400, "Invalid logo", &detail),
        }
    };
    passed.answer(&state, EP, r)
}

async fn stats(State(state): State<Arc<FakeState>>) -> Response {
    Json(state.stats()).into_response()
}

async fn reset_stats(State(state): State<Arc<FakeState>>) -> Response {
    state.reset_stats();
    StatusCode::NO_CONTENT.into_response()
}

async fn recipients(State(state): State<Arc<FakeState>>) -> Response {
    Json(state.messages_per_hash()).into_response()
}

/// PATCH /__fake/config: `{"faults": {...}}` and/or `{"rate": {...}}`.
async fn patch_config(State(state): State<Arc<FakeState>>, body: Bytes) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Patch {
        #[serde(default)]
        faults: Option<Faults>,
        #[serde(default)]
        rate: Option<FakeRate>,
    }
    match serde_json::from_slice::<Patch>(&body) {
        Ok(p) => {
            if let Some(f) = p.faults {
                state.set_faults(f);
            }
            if let Some(r) = p.rate {
                state.set_rate(r);
            }
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => problem(400, "Invalid fake configuration", &e.to_string()),
    }
}

async fn not_found() -> Response {
    apim(404, "Resource not found")
}
