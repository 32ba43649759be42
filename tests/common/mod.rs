//! Shared set-up for the integration tests: a fake IO on 127.0.0.1 (random port) and a client.
#![allow(dead_code)]

pub mod spec;

use std::time::Duration;

use corriere::fake_io::{FakeIo, FakeIoConfig, FakeIoHandle, FakeRate, Processing};
use corriere::io_api::{ApiKey, IoClient, IoClientConfig};

/// The fake's default service key.
pub const KEY: &str = "fake-primary-key";
/// The fake's manage key.
pub const MANAGE_KEY: &str = "fake-manage-key";

/// A fake with `population` citizens, no rate limit and instant processing, unless changed.
pub fn fake_config(population: u64) -> FakeIoConfig {
    FakeIoConfig {
        population,
        rate: FakeRate::Unlimited,
        processing: Processing {
            min: Duration::ZERO,
            median: Duration::ZERO,
            max: Duration::ZERO,
        },
        ..FakeIoConfig::default()
    }
}

/// Starts a fake on 127.0.0.1, random port.
pub async fn start_fake(config: FakeIoConfig) -> FakeIoHandle {
    FakeIo::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("fake IO starts")
}

/// A client for `fake` with the default keys and a short timeout.
pub fn client(fake: &FakeIoHandle) -> IoClient {
    let mut cfg = IoClientConfig::new(fake.base_url(), ApiKey::new(KEY));
    cfg.manage_key = Some(ApiKey::new(MANAGE_KEY));
    cfg.request_timeout = Duration::from_secs(5);
    cfg.connect_timeout = Duration::from_secs(1);
    IoClient::new(cfg).expect("client builds")
}

/// A message body of valid lengths.
pub fn message(fc: &str) -> corriere::model::NewMessage {
    use corriere::model::{FiscalCode, MessageContent, NewMessage};
    NewMessage {
        fiscal_code: Some(FiscalCode::parse(fc).unwrap()),
        time_to_live: None,
        content: MessageContent {
            subject: "Avviso di prova dal comune".to_owned(),
            markdown: "Questo è un messaggio di prova inviato da corriere al fake IO: contiene almeno ottanta caratteri.".to_owned(),
            due_date: None,
            payment_data: None,
            require_secure_channels: None,
        },
        feature_level_type: None,
    }
}
