//! The typed client against the bundled fake IO on 127.0.0.1: every endpoint, every error class,
//! and the "may IO have created the message?" answer for each.

use crate::common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use corriere::io_api::*;
use corriere::model::{FeatureLevelType, FiscalCode, MessageStatus, Payee, PaymentData};
use corriere_fake_io::{FakeRate, FakeService, Faults};

#[derive(Default)]
struct Recorder(Mutex<Vec<CallRecord>>);
impl CallObserver for Recorder {
    fn observe(&self, call: &CallRecord) {
        self.0.lock().unwrap().push(call.clone());
    }
}

#[tokio::test]
async fn messages_profiles_and_feed_round_trip() {
    let fake = start_fake(fake_config(2000)).await;
    let rec = Arc::new(Recorder::default());
    let io = client(&fake).with_observer(rec.clone());
    let pop = fake.population();
    let subscribed = (0..pop.len())
        .find(|&i| pop.citizen(i).subscribed_now)
        .unwrap();
    let fc = FiscalCode::parse(&pop.citizen(subscribed).fiscal_code).unwrap();

    let created = io.submit_message(&message(fc.expose())).await.unwrap();
    assert_eq!(created.id.len(), 26);
    let got = io.get_message(&fc, &created.id).await.unwrap();
    assert_eq!(got.status, MessageStatus::Processed);
    assert!(got.message.content.is_some());
    let legacy = io
        .submit_message_for(&fc, &message(fc.expose()))
        .await
        .unwrap();
    assert_ne!(legacy.id, created.id);
    assert_eq!(fake.messages_for(fc.expose()), 2);

    // A citizen not on IO: POST is accepted (201), the message is REJECTED later.
    let outsider = FiscalCode::parse(&pop.non_io_fiscal_code(1)).unwrap();
    let id = io
        .submit_message(&message(outsider.expose()))
        .await
        .unwrap()
        .id;
    assert_eq!(
        io.get_message(&outsider, &id).await.unwrap().status,
        MessageStatus::Rejected
    );

    assert!(io.get_profile(&fc).await.unwrap().sender_allowed);
    assert!(io.get_profile_legacy(&fc).await.unwrap().sender_allowed);
    assert!(matches!(
        io.get_profile(&outsider).await,
        Err(IoError::NotFound { .. })
    ));

    let yesterday = corriere::clock::Clock::System.today() - chrono::Days::new(1);
    assert!(matches!(
        io.get_subscriptions_feed(yesterday).await.unwrap(),
        FeedDay::Available(_)
    ));
    let today = corriere::clock::Clock::System.today();
    assert_eq!(
        io.get_subscriptions_feed(today).await.unwrap(),
        FeedDay::NotAvailableYet
    );

    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    io.upload_organization_logo("01234567890", &png)
        .await
        .unwrap();
    assert!(matches!(
        io.upload_organization_logo("01234567890", b"GIF89a").await,
        Err(IoError::InvalidPayload { .. })
    ));

    // One observer record per exchange, with the endpoint label.
    let calls = rec.0.lock().unwrap();
    assert_eq!(calls.len(), 12);
    assert!(calls
        .iter()
        .any(|c| c.endpoint == Endpoint::SubscriptionsFeed && c.status == Some(404)));
}

#[tokio::test]
async fn advanced_messages_carry_read_and_payment_status() {
    let fake = start_fake(fake_config(500)).await;
    let io = client(&fake);
    let pop = fake.population();
    let i = (0..pop.len())
        .find(|&i| pop.citizen(i).subscribed_now)
        .unwrap();
    let fc = FiscalCode::parse(&pop.citizen(i).fiscal_code).unwrap();
    let mut msg = message(fc.expose());
    msg.feature_level_type = Some(FeatureLevelType::Advanced);
    msg.content.payment_data = Some(PaymentData {
        amount: 1250,
        notice_number: "012345678901234567".into(),
        invalid_after_due_date: false,
        payee: Some(Payee {
            fiscal_code: "01234567890".into(),
        }),
    });
    let id = io.submit_message(&msg).await.unwrap().id;
    let got = io.get_message(&fc, &id).await.unwrap();
    assert!(
        got.read_status.is_some() && got.payment_status.is_some(),
        "{got:?}"
    );
}

#[tokio::test]
async fn every_error_class_and_whether_the_message_may_exist() {
    let mut cfg = fake_config(200);
    cfg.services.push(FakeService {
        id: "01SANDBOX00000000000000000".into(),
        primary_key: "sandbox-key".into(),
        secondary_key: "sandbox-key-2".into(),
        api_user: "other-user".into(),
        sandbox: true,
        premium: false,
        max_allowed_payment_amount: 0,
        ..FakeService::default()
    });
    let fake = start_fake(cfg).await;
    let io = client(&fake);
    let fc = FiscalCode::parse(&fake.population().citizen(0).fiscal_code).unwrap();

    // 400: content out of limits (the client does not validate: IO does).
    let mut short = message(fc.expose());
    short.content.subject = "breve".into();
    let e = io.submit_message(&short).await.unwrap_err();
    assert!(
        matches!(&e, IoError::InvalidPayload { title, .. } if title == "Invalid message structure"),
        "{e:?}"
    );
    assert!(!e.may_have_created_message());

    // 401: wrong key.
    let bad = IoClient::new(IoClientConfig::new(fake.base_url(), ApiKey::new("wrong"))).unwrap();
    let e = bad.submit_message(&message(fc.expose())).await.unwrap_err();
    assert!(matches!(e, IoError::Unauthorized { .. }), "{e:?}");
    assert!(!e.may_have_created_message() && e.certainly_not_sent());

    // 403: sandbox key to a real citizen; ADVANCED without premium; payment above max (400).
    let sandbox = IoClient::new(IoClientConfig::new(
        fake.base_url(),
        ApiKey::new("sandbox-key"),
    ))
    .unwrap();
    let e = sandbox
        .submit_message(&message(fc.expose()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IoError::Forbidden {
                kind: ForbiddenKind::RecipientForbidden,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(!e.may_have_created_message());
    let mut adv = message("AAAAAA00A00A000A");
    adv.feature_level_type = Some(FeatureLevelType::Advanced);
    let e = sandbox.submit_message(&adv).await.unwrap_err();
    assert!(
        matches!(
            e,
            IoError::Forbidden {
                kind: ForbiddenKind::PremiumNotAllowed,
                ..
            }
        ),
        "{e:?}"
    );
    let mut pay = message("AAAAAA00A00A000A");
    pay.content.payment_data = Some(PaymentData {
        amount: 100,
        notice_number: "012345678901234567".into(),
        invalid_after_due_date: false,
        payee: None,
    });
    let e = sandbox.submit_message(&pay).await.unwrap_err();
    assert!(
        matches!(&e, IoError::InvalidPayload { title, .. } if title == "Error while sending payment metadata"),
        "{e:?}"
    );
    assert!(sandbox
        .submit_message(&message("AAAAAA00A00A000A"))
        .await
        .is_ok());

    // 404: unknown message.
    let e = io
        .get_message(&fc, "01ARZ3NDEKTSV4RRFFQ69G5FAV")
        .await
        .unwrap_err();
    assert!(matches!(e, IoError::NotFound { .. }));
    // 403: reading another service's message.
    let id = sandbox
        .submit_message(&message("AAAAAA00A00A000A"))
        .await
        .unwrap()
        .id;
    let e = io
        .get_message(&FiscalCode::parse("AAAAAA00A00A000A").unwrap(), &id)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IoError::Forbidden {
                kind: ForbiddenKind::NotAllowedHere,
                ..
            }
        ),
        "{e:?}"
    );

    // 5xx (injected, nothing created): may have created, as far as the client can know.
    fake.set_faults(Faults {
        error_5xx_rate: 1.0,
        ..Faults::default()
    });
    let before = fake.stats().messages_created;
    let e = io.submit_message(&message(fc.expose())).await.unwrap_err();
    assert!(matches!(e, IoError::Server { .. }), "{e:?}");
    assert!(e.may_have_created_message() && e.is_retryable());

    // Dropped connection after the request left: Transport, may have created (and here it did).
    fake.set_faults(Faults {
        drop_after_create_rate: 1.0,
        ..Faults::default()
    });
    let e = io.submit_message(&message(fc.expose())).await.unwrap_err();
    assert!(matches!(e, IoError::Transport(_)), "{e:?}");
    assert!(e.may_have_created_message());
    assert_eq!(fake.stats().messages_created, before + 1);
    // Dropped before creating: the client cannot tell the difference, so it must say "maybe".
    fake.set_faults(Faults {
        drop_before_create_rate: 1.0,
        ..Faults::default()
    });
    let e = io.submit_message(&message(fc.expose())).await.unwrap_err();
    assert!(
        matches!(e, IoError::Transport(_)) && e.may_have_created_message(),
        "{e:?}"
    );
    assert_eq!(fake.stats().messages_created, before + 1);

    // Response timeout: the message was created, the answer never came.
    fake.set_faults(Faults {
        hang_after_create_rate: 1.0,
        hang: Duration::from_secs(30),
        ..Faults::default()
    });
    let mut quick = IoClientConfig::new(fake.base_url(), ApiKey::new(KEY));
    quick.request_timeout = Duration::from_millis(300);
    let quick = IoClient::new(quick).unwrap();
    let e = quick
        .submit_message(&message(fc.expose()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IoError::Timeout {
                phase: TimeoutPhase::Response
            }
        ),
        "{e:?}"
    );
    assert!(e.may_have_created_message());
    fake.set_faults(Faults::default());

    // Connection refused: the request never left.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let refused = IoClient::new(IoClientConfig::new(
        format!("http://{closed}/api/v1"),
        ApiKey::new(KEY),
    ))
    .unwrap();
    let e = refused
        .submit_message(&message(fc.expose()))
        .await
        .unwrap_err();
    assert!(matches!(e, IoError::Connect(_)), "{e:?}");
    assert!(!e.may_have_created_message() && e.certainly_not_sent());

    // Nothing in any error's text is a clear fiscal code.
    assert!(!format!("{e} {e:?}").contains(fc.expose()));
}

#[tokio::test]
async fn throttling_says_when_to_come_back() {
    let mut cfg = fake_config(100);
    cfg.rate = FakeRate::Window {
        calls: 3,
        period: Duration::from_secs(60),
    };
    let fake = start_fake(cfg).await;
    let rec = Arc::new(Recorder::default());
    let io = client(&fake).with_observer(rec.clone());
    let fc = FiscalCode::parse(&fake.population().citizen(0).fiscal_code).unwrap();
    for _ in 0..3 {
        io.get_profile(&fc).await.unwrap();
    }
    let e = io.submit_message(&message(fc.expose())).await.unwrap_err();
    assert!(e.is_back_pressure() && !e.may_have_created_message() && e.certainly_not_sent());
    let wait = e.retry_after().expect("x-rate-limit-retry-after");
    assert!(
        wait > Duration::from_secs(50) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    let calls = rec.0.lock().unwrap();
    let remaining: Vec<Option<u32>> = calls.iter().map(|c| c.rate.remaining).collect();
    assert_eq!(remaining, vec![Some(2), Some(1), Some(0), Some(0)]);
    assert_eq!(fake.stats().messages_created, 0);
}

#[tokio::test]
async fn manage_services_lifecycle() {
    let fake = start_fake(fake_config(10)).await;
    let io = client(&fake);
    let topics = io.get_service_topics().await.unwrap();
    assert!(!topics.topics.is_empty());
    let mut payload = CmsServicePayload {
        name: "TARI".into(),
        description: "Avvisi TARI del comune".into(),
        organization: CmsOrganization {
            name: "Comune di Prova".into(),
            fiscal_code: "01234567890".into(),
            department_name: None,
        },
        metadata: CmsServiceMetadata {
            scope: Some("LOCAL".into()),
            topic_id: Some(4),
            ..Default::default()
        },
        require_secure_channel: None,
        authorized_recipients: vec![],
        authorized_cidrs: vec![],
        max_allowed_payment_amount: None,
    };
    let created = io.cms_create_service(&payload).await.unwrap();
    assert_eq!(created.status.value, "draft");
    let id = created.id.clone();
    // Incomplete data: review rejects with the reason.
    io.cms_review_service(&id, false).await.unwrap();
    let s = io.cms_get_service(&id).await.unwrap();
    assert_eq!(s.status.value, "rejected");
    assert!(s.status.reason.unwrap().contains("privacy_url"));
    payload.metadata.privacy_url = Some("https://comune.example/privacy".into());
    payload.metadata.email = Some("tributi@comune.example".into());
    payload.authorized_cidrs = vec!["127.0.0.1/32".into()];
    assert_eq!(
        io.cms_update_service(&id, &payload)
            .await
            .unwrap()
            .status
            .value,
        "draft"
    );
    io.cms_review_service(&id, false).await.unwrap();
    assert_eq!(
        io.cms_get_service(&id).await.unwrap().status.value,
        "approved"
    );
    // Review of an approved service is incompatible: 409.
    assert!(matches!(
        io.cms_review_service(&id, false).await,
        Err(IoError::Conflict { .. })
    ));
    io.cms_release_service(&id).await.unwrap();
    assert_eq!(
        io.cms_get_published_service(&id).await.unwrap().status,
        "published"
    );
    io.cms_unpublish_service(&id).await.unwrap();
    assert_eq!(
        io.cms_get_published_service(&id).await.unwrap().status,
        "unpublished"
    );
    let keys = io.cms_get_service_keys(&id).await.unwrap();
    let rotated = io
        .cms_regenerate_service_key(&id, KeyType::Primary)
        .await
        .unwrap();
    assert_ne!(keys.primary_key, rotated.primary_key);
    assert_eq!(keys.secondary_key, rotated.secondary_key);
    io.cms_update_service_logo(&id, b"\x89PNG\r\n\x1a\nrest")
        .await
        .unwrap();
    let history = io
        .cms_get_service_history(&id, true, 100, None)
        .await
        .unwrap();
    assert!(history.items.len() >= 5);
    // The configured service is in the back office too: two services.
    let listed = io.cms_get_services(10, 0).await.unwrap().value;
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|s| s.id == id));
    io.cms_delete_service(&id).await.unwrap();
    assert!(matches!(
        io.cms_get_service(&id).await,
        Err(IoError::NotFound { .. })
    ));
    // Without the manage key: 401.
    let plain = IoClient::new(IoClientConfig {
        manage_key: Some(ApiKey::new("nope")),
        ..IoClientConfig::new(fake.base_url(), ApiKey::new(KEY))
    })
    .unwrap();
    assert!(matches!(
        plain.get_service_topics().await,
        Err(IoError::Unauthorized { .. })
    ));
}

#[tokio::test]
async fn authorized_cidrs_are_checked_against_the_peer() {
    let mut cfg = fake_config(10);
    cfg.services[0].authorized_cidrs = vec!["10.0.0.0/8".into()];
    let fake = start_fake(cfg).await;
    let io = client(&fake);
    let e = io
        .submit_message(&message("AAAAAA00A00A000A"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            IoError::Forbidden {
                kind: ForbiddenKind::NotAllowedHere,
                ..
            }
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn ios_test_citizen_has_an_active_profile_and_gets_messages() {
    let fake = start_fake(fake_config(10)).await;
    let io = client(&fake);
    let fc = FiscalCode::parse("AAAAAA00A00A000A").unwrap();
    assert!(io.get_profile(&fc).await.unwrap().sender_allowed);
    let id = io.submit_message(&message(fc.expose())).await.unwrap().id;
    assert_eq!(
        io.get_message(&fc, &id).await.unwrap().status,
        MessageStatus::Processed
    );
}
