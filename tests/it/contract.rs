//! Contract test: the client's requests and the fake IO's responses checked against the JSON
//! schemas of IO's own OpenAPI specs (`../shared/reference/io-api/`), so neither can drift from
//! IO. A clone without `../shared` skips with a printed notice.

use crate::common;

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

mod recording {
    //! A proxy on 127.0.0.1 between the client and the fake that records every exchange.
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, Method, StatusCode, Uri};
    use axum::response::{IntoResponse, Response};

    #[derive(Debug, Clone)]
    pub struct Exchange {
        pub method: String,
        pub path: String,
        pub request: Option<serde_json::Value>,
        pub status: u16,
        pub response: Option<serde_json::Value>,
    }

    #[derive(Clone)]
    struct Proxy {
        upstream: String,
        http: reqwest::Client,
        log: Arc<Mutex<Vec<Exchange>>>,
    }

    async fn forward(
        State(p): State<Proxy>,
        method: Method,
        uri: Uri,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let path = uri.path().to_owned();
        let url = format!(
            "{}{}",
            p.upstream,
            uri.path_and_query().map(|q| q.as_str()).unwrap_or("")
        );
        let mut req = p.http.request(method.clone(), url).body(body.clone());
        for (k, v) in &headers {
            if k != "host" && k != "content-length" {
                req = req.header(k, v);
            }
        }
        let resp = req.send().await.expect("fake answers");
        let status = resp.status().as_u16();
        let ctype = resp.headers().get("content-type").cloned();
        let bytes = resp.bytes().await.unwrap_or_default();
        p.log.lock().unwrap().push(Exchange {
            method: method.to_string(),
            path,
            request: serde_json::from_slice(&body).ok(),
            status,
            response: serde_json::from_slice(&bytes).ok(),
        });
        let mut r = (StatusCode::from_u16(status).unwrap(), bytes).into_response();
        if let Some(c) = ctype {
            r.headers_mut().insert("content-type", c);
        }
        r
    }

    /// Starts the proxy; returns its base URL and the log.
    pub async fn start(upstream_origin: String) -> (String, Arc<Mutex<Vec<Exchange>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let proxy = Proxy {
            upstream: upstream_origin,
            http: reqwest::Client::new(),
            log: log.clone(),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (format!("http://{addr}/api/v1"), log)
    }
}

/// Drives the client through the fake via a recording proxy, then checks every request body
/// and every documented response body against the specs.
#[tokio::test]
async fn client_requests_and_fake_responses_match_the_specs() {
    use crate::common::*;
    use corriere::io_api::*;
    use corriere::model::{FeatureLevelType, FiscalCode, Payee, PaymentData};

    let Some(specs) = specs_or_skip() else { return };
    let fake = start_fake(fake_config(300)).await;
    let (base, log) = recording::start(format!("http://{}", fake.addr())).await;
    let mut cfg = IoClientConfig::new(base, ApiKey::new(KEY));
    cfg.manage_key = Some(ApiKey::new(MANAGE_KEY));
    let io = IoClient::new(cfg).unwrap();
    let pop = fake.population();
    let sub = (0..pop.len())
        .find(|&i| pop.citizen(i).subscribed_now)
        .unwrap();
    let fc = FiscalCode::parse(&pop.citizen(sub).fiscal_code).unwrap();

    // Messages: plain, ADVANCED with payment, legacy path; the answers, processed and not.
    let id = io.submit_message(&message(fc.expose())).await.unwrap().id;
    io.get_message(&fc, &id).await.unwrap();
    let mut rich = message(fc.expose());
    rich.feature_level_type = Some(FeatureLevelType::Advanced);
    rich.time_to_live = Some(7200);
    rich.content.due_date = Some(corriere::clock::Clock::System.now());
    rich.content.payment_data = Some(PaymentData {
        amount: 1250,
        notice_number: "012345678901234567".into(),
        invalid_after_due_date: true,
        payee: Some(Payee {
            fiscal_code: "01234567890".into(),
        }),
    });
    let id2 = io.submit_message(&rich).await.unwrap().id;
    io.get_message(&fc, &id2).await.unwrap();
    io.submit_message_for(&fc, &message(fc.expose()))
        .await
        .unwrap();
    // Errors with bodies the spec documents.
    let mut bad = message(fc.expose());
    bad.content.subject = "corto".into();
    let _ = io.submit_message(&bad).await;
    let _ = io.get_message(&fc, "01ARZ3NDEKTSV4RRFFQ69G5FAV").await;
    // Profiles and feed.
    io.get_profile(&fc).await.unwrap();
    io.get_profile_legacy(&fc).await.unwrap();
    let _ = io
        .get_profile(&FiscalCode::parse(&pop.non_io_fiscal_code(0)).unwrap())
        .await;
    let yesterday = corriere::clock::Clock::System.today() - chrono::Days::new(1);
    io.get_subscriptions_feed(yesterday).await.unwrap();
    io.get_subscriptions_feed(corriere::clock::Clock::System.today())
        .await
        .unwrap();
    io.upload_organization_logo("01234567890", b"\x89PNG\r\n\x1a\nrest")
        .await
        .unwrap();
    // Service management.
    let payload = CmsServicePayload {
        name: "TARI".into(),
        description: "Avvisi TARI".into(),
        organization: CmsOrganization {
            name: "Comune".into(),
            fiscal_code: "01234567890".into(),
            department_name: Some("Tributi".into()),
        },
        metadata: CmsServiceMetadata {
            scope: Some("LOCAL".into()),
            topic_id: Some(4),
            privacy_url: Some("https://c.example/p".into()),
            email: Some("t@c.example".into()),
            ..Default::default()
        },
        require_secure_channel: Some(false),
        authorized_recipients: vec!["AAAAAA00A00A000A".into()],
        authorized_cidrs: vec!["127.0.0.1/32".into()],
        max_allowed_payment_amount: Some(100_000),
    };
    let sid = io.cms_create_service(&payload).await.unwrap().id;
    io.cms_get_services(20, 0).await.unwrap();
    io.cms_get_service(&sid).await.unwrap();
    io.cms_update_service(&sid, &payload).await.unwrap();
    io.cms_get_service_keys(&sid).await.unwrap();
    io.cms_regenerate_service_key(&sid, KeyType::Secondary)
        .await
        .unwrap();
    io.cms_review_service(&sid, true).await.unwrap();
    io.cms_get_published_service(&sid).await.unwrap();
    io.cms_get_service_history(&sid, true, 10, None)
        .await
        .unwrap();
    io.get_service_topics().await.unwrap();

    let exchanges = log.lock().unwrap().clone();
    assert_eq!(exchanges.len(), 23, "one recorded exchange per call");
    let mut checked = (0, 0);
    let mut problems = Vec::new();
    for ex in &exchanges {
        let (spec, template, op) = find(&specs, &ex.method, &ex.path);
        // Requests IO refused with 400 were sent invalid on purpose (to record the error body).
        if let (Some(schema), Some(body), true) =
            (spec.request_schema(op), &ex.request, ex.status != 400)
        {
            checked.0 += 1;
            for v in spec.check(&schema, body) {
                problems.push(format!("request {} {template}: {v}", ex.method));
            }
        }
        assert!(
            spec.documents_status(op, ex.status) || ex.status == 429,
            "{} {template} answered {}, which the spec does not document",
            ex.method,
            ex.status
        );
        if let (Some(schema), Some(body)) = (spec.response_schema(op, ex.status), &ex.response) {
            checked.1 += 1;
            for v in spec.check(&schema, body) {
                problems.push(format!(
                    "response {} {template} {}: {v}",
                    ex.method, ex.status
                ));
            }
        }
    }
    println!(
        "checked {} requests and {} responses against the specs",
        checked.0, checked.1
    );
    assert!(
        problems.is_empty(),
        "contract violations:\n{}",
        problems.join("\n")
    );
    assert!(checked.0 >= 8 && checked.1 >= 15, "{checked:?}");
}
