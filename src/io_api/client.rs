//! [`IoClient`]: one typed async method per IO operation over a pooled reqwest client; every
//! exchange is reported to an optional [`CallObserver`] (rate budget, metrics).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::time::Instant;
use tracing::debug;

use super::error::{from_response, IoError, TimeoutPhase};
use super::headers::RateHeaders;
use super::types::*;
use crate::clock::Clock;
use crate::model::{FiscalCode, NewMessage};

/// Header carrying the service (or manage) key.
pub const KEY_HEADER: &str = "Ocp-Apim-Subscription-Key";
/// Idle pooled connections to IO are closed after this long: below the keep-alive of IO's
/// gateway and of the usual proxies (60 s and more), so the pool does not write a request into
/// a connection the server is closing at that moment (an avoidable `unknown`).
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// An API key. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }
    /// The clear key, for the header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct IoClientConfig {
    /// Base URL, e.g. `https://api.io.pagopa.it/api/v1`.
    pub base_url: String,
    /// The service's key.
    pub api_key: ApiKey,
    /// The manage key (for /manage/services).
    pub manage_key: Option<ApiKey>,
    /// Whole-request timeout.
    pub request_timeout: Duration,
    /// Connect timeout.
    pub connect_timeout: Duration,
    /// Idle connections kept per host.
    pub pool_max_idle_per_host: usize,
}

impl IoClientConfig {
    /// Settings for `base_url` and `api_key` with the default timeouts.
    pub fn new(base_url: impl Into<String>, api_key: ApiKey) -> Self {
        IoClientConfig {
            base_url: base_url.into(),
            api_key,
            manage_key: None,
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(3),
            pool_max_idle_per_host: 64,
        }
    }
}

/// Which operation a call was (a metrics label: a small fixed set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Endpoint {
    /// POST /messages and POST /messages/{fc}.
    SubmitMessage,
    /// GET /messages/{fc}/{id}.
    GetMessage,
    /// POST /profiles and GET /profiles/{fc}.
    GetProfile,
    /// GET /subscriptions-feed/{date}.
    SubscriptionsFeed,
    /// PUT /organizations/{fc}/logo.
    OrganizationLogo,
    /// /manage/services…
    Manage,
}

impl Endpoint {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::SubmitMessage => "submit_message",
            Endpoint::GetMessage => "get_message",
            Endpoint::GetProfile => "get_profile",
            Endpoint::SubscriptionsFeed => "subscriptions_feed",
            Endpoint::OrganizationLogo => "organization_logo",
            Endpoint::Manage => "manage_services",
        }
    }
}

/// One HTTP exchange, as seen by a [`CallObserver`].
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// Which operation.
    pub endpoint: Endpoint,
    /// HTTP status, or None when no answer arrived.
    pub status: Option<u16>,
    /// Rate headers of the answer.
    pub rate: RateHeaders,
    /// Time from send to the end of the body.
    pub elapsed: Duration,
}

/// Sees every exchange (the rate budget and the metrics hang here).
pub trait CallObserver: Send + Sync {
    /// Called once per exchange, errors included.
    fn observe(&self, call: &CallRecord);
}

#[derive(Clone, Copy)]
enum KeyKind {
    Service,
    Manage,
}

struct Inner {
    http: reqwest::Client,
    base_url: String,
    api_key: ApiKey,
    manage_key: Option<ApiKey>,
    observer: Option<Arc<dyn CallObserver>>,
}

/// The App IO client. Cheap to clone.
#[derive(Clone)]
pub struct IoClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for IoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IoClient")
            .field("base_url", &self.inner.base_url)
            .field("api_key", &self.inner.api_key)
            .finish_non_exhaustive()
    }
}

struct Answer {
    status: StatusCode,
    headers: http::HeaderMap,
    body: bytes::Bytes,
}

impl IoClient {
    /// Builds a client (pooled connections, rustls).
    pub fn new(config: IoClientConfig) -> Result<IoClient, IoError> {
        if !(config.base_url.starts_with("http://") || config.base_url.starts_with("https://")) {
            return Err(IoError::Config(
                "base URL must start with https:// or http://".to_owned(),
            ));
        }
        let http = reqwest::Client::builder()
            // A redirect is an error naming its target (see `IoError::Redirect`): following one
            // turns a POST into a GET (301/302), re-posts a message (307/308) and hands the key
            // to whatever host the answer names.
            .redirect(reqwest::redirect::Policy::none())
            // `dispatch::classify` is the only retry authority: a copy sent by the HTTP stack
            // would be invisible to the no-duplicate rule.
            .retry(reqwest::retry::never())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .timeout(config.request_timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_max_idle_per_host)
            .tcp_nodelay(true)
            .user_agent(concat!("corriere/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| IoError::Config(e.to_string()))?;
        Ok(IoClient {
            inner: Arc::new(Inner {
                http,
                base_url: config.base_url.trim_end_matches('/').to_owned(),
                api_key: config.api_key,
                manage_key: config.manage_key,
                observer: None,
            }),
        })
    }

    /// The same client reporting every exchange to `observer`.
    pub fn with_observer(self, observer: Arc<dyn CallObserver>) -> IoClient {
        let inner = &self.inner;
        IoClient {
            inner: Arc::new(Inner {
                http: inner.http.clone(),
                base_url: inner.base_url.clone(),
                api_key: inner.api_key.clone(),
                manage_key: inner.manage_key.clone(),
                observer: Some(observer),
            }),
        }
    }

    /// Base URL in use.
    pub fn base_url(&self) -> &str {
        &self.inner.base_url
    }

    async fn exchange(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        key: KeyKind,
        body: Option<serde_json::Value>,
    ) -> Result<Answer, IoError> {
        let key = match key {
            KeyKind::Service => &self.inner.api_key,
            KeyKind::Manage => self.inner.manage_key.as_ref().ok_or_else(|| {
                IoError::Config("no manage key configured (io.manage_key)".to_owned())
            })?,
        };
        let url = format!("{}{}", self.inner.base_url, path);
        let mut request = self
            .inner
            .http
            .request(method, url)
            .header(KEY_HEADER, key.expose());
        if let Some(body) = body {
            request = request.json(&body);
        }
        let started = Instant::now();
        let result: Result<Answer, Result<IoError, (StatusCode, http::HeaderMap, reqwest::Error)>> =
            async {
                // Err(Ok(_)): no answer at all; Err(Err(_)): the status arrived, the body did not.
                let response = request.send().await.map_err(|e| Ok(map_send_error(e)))?;
                let status = response.status();
                let headers = response.headers().clone();
                match response.bytes().await {
                    Ok(body) => Ok(Answer {
                        status,
                        headers,
                        body,
                    }),
                    Err(e) => Err(Err((status, headers, e))),
                }
            }
            .await;
        let elapsed = started.elapsed();
        let (record_status, rate, outcome) = match result {
            Ok(answer) => {
                let rate = RateHeaders::from_headers(&answer.headers, Clock::System.system_time());
                (Some(answer.status.as_u16()), rate, Ok(answer))
            }
            Err(Ok(err)) => (None, RateHeaders::default(), Err(err)),
            Err(Err((status, headers, e))) => {
                let rate = RateHeaders::from_headers(&headers, Clock::System.system_time());
                let err = if status.is_success() {
                    IoError::Decode {
                        status: status.as_u16(),
                        reason: format!("body lost: {e}"),
                    }
                } else if status.is_redirection() {
                    // Still a redirect, body or not: it created nothing.
                    IoError::Redirect {
                        status: status.as_u16(),
                        location: redirect_target(&headers),
                    }
                } else {
                    from_response(status.as_u16(), b"", rate.retry_after, rate.remaining)
                };
                (Some(status.as_u16()), rate, Err(err))
            }
        };
        debug!(
            endpoint = endpoint.as_str(),
            status = record_status,
            elapsed_ms = elapsed.as_millis() as u64,
            "IO call."
        );
        if let Some(observer) = &self.inner.observer {
            observer.observe(&CallRecord {
                endpoint,
                status: record_status,
                rate,
                elapsed,
            });
        }
        outcome
    }

    /// Sends and decodes: `ok` lists the success statuses; anything else becomes an `IoError`.
    async fn call<T: DeserializeOwned>(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        key: KeyKind,
        body: Option<serde_json::Value>,
        ok: &[u16],
    ) -> Result<T, IoError> {
        let answer = self.exchange(endpoint, method, path, key, body).await?;
        let status = answer.status.as_u16();
        if !ok.contains(&status) {
            return Err(error_of(&answer));
        }
        // No body in the error: a 2xx body may carry secrets (service keys) or personal data.
        serde_json::from_slice(&answer.body).map_err(|e| IoError::Decode {
            status,
            reason: format!("{e} ({} bytes of body)", answer.body.len()),
        })
    }

    /// Like [`IoClient::call`] for answers without a body.
    async fn call_empty(
        &self,
        endpoint: Endpoint,
        method: Method,
        path: &str,
        key: KeyKind,
        body: Option<serde_json::Value>,
        ok: &[u16],
    ) -> Result<(), IoError> {
        let answer = self.exchange(endpoint, method, path, key, body).await?;
        if ok.contains(&answer.status.as_u16()) {
            Ok(())
        } else {
            Err(error_of(&answer))
        }
    }

    /// submitMessageforUserWithFiscalCodeInBody: POST /messages with the fiscal code in the
    /// body. **Not idempotent**: on error, see [`IoError::may_have_created_message`].
    pub async fn submit_message(&self, message: &NewMessage) -> Result<MessageCreated, IoError> {
        if message.fiscal_code.is_none() {
            return Err(IoError::Config(
                "POST /messages needs the fiscal code in the body".to_owned(),
            ));
        }
        self.call(
            Endpoint::SubmitMessage,
            Method::POST,
            "/messages",
            KeyKind::Service,
            Some(to_json(message)),
            &[201],
        )
        .await
    }

    /// submitMessageforUser (legacy): POST /messages/{fiscal_code}, the code in the path.
    pub async fn submit_message_for(
        &self,
        fiscal_code: &FiscalCode,
        message: &NewMessage,
    ) -> Result<MessageCreated, IoError> {
        let mut body = message.clone();
        body.fiscal_code = None;
        self.call(
            Endpoint::SubmitMessage,
            Method::POST,
            &format!("/messages/{}", fiscal_code.expose()),
            KeyKind::Service,
            Some(to_json(&body)),
            &[201],
        )
        .await
    }

    /// getMessage: GET /messages/{fiscal_code}/{id}.
    pub async fn get_message(
        &self,
        fiscal_code: &FiscalCode,
        id: &str,
    ) -> Result<ExternalMessage, IoError> {
        self.call(
            Endpoint::GetMessage,
            Method::GET,
            &format!("/messages/{}/{}", fiscal_code.expose(), encode_segment(id)),
            KeyKind::Service,
            None,
            &[200],
        )
        .await
    }

    /// getProfileByPOST: POST /profiles.
    pub async fn get_profile(&self, fiscal_code: &FiscalCode) -> Result<LimitedProfile, IoError> {
        self.call(
            Endpoint::GetProfile,
            Method::POST,
            "/profiles",
            KeyKind::Service,
            Some(serde_json::json!({ "fiscal_code": fiscal_code })),
            &[200],
        )
        .await
    }

    /// getProfile (legacy): GET /profiles/{fiscal_code}.
    pub async fn get_profile_legacy(
        &self,
        fiscal_code: &FiscalCode,
    ) -> Result<LimitedProfile, IoError> {
        self.call(
            Endpoint::GetProfile,
            Method::GET,
            &format!("/profiles/{}", fiscal_code.expose()),
            KeyKind::Service,
            None,
            &[200],
        )
        .await
    }

    /// getSubscriptionsFeedForDate: GET /subscriptions-feed/{date}. A day not published yet
    /// (404 "Data not available yet") is [`FeedDay::NotAvailableYet`], not an error.
    pub async fn get_subscriptions_feed(
        &self,
        date: chrono::NaiveDate,
    ) -> Result<FeedDay, IoError> {
        let path = format!("/subscriptions-feed/{}", date.format("%Y-%m-%d"));
        match self
            .call::<SubscriptionsFeed>(
                Endpoint::SubscriptionsFeed,
                Method::GET,
                &path,
                KeyKind::Service,
                None,
                &[200],
            )
            .await
        {
            Ok(feed) => Ok(FeedDay::Available(feed)),
            Err(IoError::NotFound { title, .. }) if title == "Data not available yet" => {
                Ok(FeedDay::NotAvailableYet)
            }
            Err(e) => Err(e),
        }
    }

    /// uploadOrganizationLogo: PUT /organizations/{organization_fiscal_code}/logo (PNG bytes).
    pub async fn upload_organization_logo(
        &self,
        organization_fiscal_code: &str,
        png: &[u8],
    ) -> Result<(), IoError> {
        let logo = base64::engine::general_purpose::STANDARD.encode(png);
        self.call_empty(
            Endpoint::OrganizationLogo,
            Method::PUT,
            &format!(
                "/organizations/{}/logo",
                encode_segment(organization_fiscal_code)
            ),
            KeyKind::Service,
            Some(serde_json::json!({ "logo": logo })),
            &[200, 201, 202, 204],
        )
        .await
    }

    /// cmsCreateService: POST /manage/services.
    pub async fn cms_create_service(
        &self,
        payload: &CmsServicePayload,
    ) -> Result<CmsServiceLifecycle, IoError> {
        self.manage(
            Method::POST,
            "/manage/services",
            Some(to_json(payload)),
            &[200, 201],
        )
        .await
    }

    /// cmsGetServices: GET /manage/services?limit&offset.
    pub async fn cms_get_services(
        &self,
        limit: u32,
        offset: u32,
    ) -> Result<CmsServicePage, IoError> {
        self.manage(
            Method::GET,
            &format!("/manage/services?limit={limit}&offset={offset}"),
            None,
            &[200],
        )
        .await
    }

    /// cmsGetService: GET /manage/services/{serviceId}.
    pub async fn cms_get_service(&self, service_id: &str) -> Result<CmsServiceLifecycle, IoError> {
        self.manage(Method::GET, &service_path(service_id, ""), None, &[200])
            .await
    }

    /// cmsUpdateService: PUT /manage/services/{serviceId} (409 when the lifecycle forbids it).
    pub async fn cms_update_service(
        &self,
        service_id: &str,
        payload: &CmsServicePayload,
    ) -> Result<CmsServiceLifecycle, IoError> {
        self.manage(
            Method::PUT,
            &service_path(service_id, ""),
            Some(to_json(payload)),
            &[200],
        )
        .await
    }

    /// cmsDeleteService: DELETE /manage/services/{serviceId}.
    pub async fn cms_delete_service(&self, service_id: &str) -> Result<(), IoError> {
        self.manage_empty(
            Method::DELETE,
            &service_path(service_id, ""),
            None,
            &[200, 204],
        )
        .await
    }

    /// cmsUpdateServiceLogo: PUT /manage/services/{serviceId}/logo (PNG bytes).
    pub async fn cms_update_service_logo(
        &self,
        service_id: &str,
        png: &[u8],
    ) -> Result<(), IoError> {
        let logo = base64::engine::general_purpose::STANDARD.encode(png);
        self.manage_empty(
            Method::PUT,
            &service_path(service_id, "/logo"),
            Some(serde_json::json!({ "logo": logo })),
            &[200, 201, 204],
        )
        .await
    }

    /// cmsGetServiceKeys: GET /manage/services/{serviceId}/keys.
    pub async fn cms_get_service_keys(&self, service_id: &str) -> Result<ServiceKeys, IoError> {
        self.manage(
            Method::GET,
            &service_path(service_id, "/keys"),
            None,
            &[200],
        )
        .await
    }

    /// cmsRegenerateServiceKey: PUT /manage/services/{serviceId}/keys/{keyType}.
    pub async fn cms_regenerate_service_key(
        &self,
        service_id: &str,
        key: KeyType,
    ) -> Result<ServiceKeys, IoError> {
        self.manage(
            Method::PUT,
            &service_path(service_id, &format!("/keys/{}", key.as_str())),
            None,
            &[200],
        )
        .await
    }

    /// cmsReviewService: PUT /manage/services/{serviceId}/review.
    pub async fn cms_review_service(
        &self,
        service_id: &str,
        auto_publish: bool,
    ) -> Result<(), IoError> {
        self.manage_empty(
            Method::PUT,
            &service_path(service_id, "/review"),
            Some(serde_json::json!({ "auto_publish": auto_publish })),
            &[200, 204],
        )
        .await
    }

    /// cmsReleaseService: POST /manage/services/{serviceId}/release (publish).
    pub async fn cms_release_service(&self, service_id: &str) -> Result<(), IoError> {
        self.manage_empty(
            Method::POST,
            &service_path(service_id, "/release"),
            None,
            &[200, 204],
        )
        .await
    }

    /// cmsGetPublishedService: GET /manage/services/{serviceId}/release.
    pub async fn cms_get_published_service(
        &self,
        service_id: &str,
    ) -> Result<CmsServicePublication, IoError> {
        self.manage(
            Method::GET,
            &service_path(service_id, "/release"),
            None,
            &[200],
        )
        .await
    }

    /// cmsUnpublishService: DELETE /manage/services/{serviceId}/release.
    pub async fn cms_unpublish_service(&self, service_id: &str) -> Result<(), IoError> {
        self.manage_empty(
            Method::DELETE,
            &service_path(service_id, "/release"),
            None,
            &[200, 204],
        )
        .await
    }

    /// cmsGetServiceHistory: GET /manage/services/{serviceId}/history.
    pub async fn cms_get_service_history(
        &self,
        service_id: &str,
        descending: bool,
        limit: u32,
        continuation_token: Option<&str>,
    ) -> Result<CmsServiceHistory, IoError> {
        let mut path = service_path(service_id, "/history");
        path.push_str(&format!(
            "?order={}&limit={limit}",
            if descending { "DESC" } else { "ASC" }
        ));
        if let Some(token) = continuation_token {
            path.push_str(&format!("&continuationToken={}", encode_segment(token)));
        }
        self.manage(Method::GET, &path, None, &[200]).await
    }

    /// getServiceTopics: GET /manage/services/topics.
    pub async fn get_service_topics(&self) -> Result<CmsTopics, IoError> {
        self.manage(Method::GET, "/manage/services/topics", None, &[200])
            .await
    }

    async fn manage<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        ok: &[u16],
    ) -> Result<T, IoError> {
        self.call(Endpoint::Manage, method, path, KeyKind::Manage, body, ok)
            .await
    }

    async fn manage_empty(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
        ok: &[u16],
    ) -> Result<(), IoError> {
        self.call_empty(Endpoint::Manage, method, path, KeyKind::Manage, body, ok)
            .await
    }
}

fn error_of(answer: &Answer) -> IoError {
    if answer.status.is_redirection() {
        return IoError::Redirect {
            status: answer.status.as_u16(),
            location: redirect_target(&answer.headers),
        };
    }
    let rate = RateHeaders::from_headers(&answer.headers, Clock::System.system_time());
    from_response(
        answer.status.as_u16(),
        &answer.body,
        rate.retry_after,
        rate.remaining,
    )
}

/// Where a 3xx points, for the error: scheme, host and port only (the path and query can hold
/// a fiscal code).
fn redirect_target(headers: &http::HeaderMap) -> String {
    let Some(location) = headers
        .get(http::header::LOCATION)
        .and_then(|v| v.to_str().ok())
    else {
        return "(no Location header)".to_owned();
    };
    match reqwest::Url::parse(location) {
        Ok(url) => {
            let host = url.host_str().unwrap_or("");
            match url.port() {
                Some(port) => format!("{}://{host}:{port}", url.scheme()),
                None => format!("{}://{host}", url.scheme()),
            }
        }
        // A relative Location: the same host, another path.
        Err(_) => "a path on the same host".to_owned(),
    }
}

fn to_json<T: Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).expect("request bodies serialize")
}

fn service_path(service_id: &str, rest: &str) -> String {
    format!("/manage/services/{}{rest}", encode_segment(service_id))
}

/// Percent-encodes a path segment (ids come from users and from IO).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Maps a failure to get any answer: before the request left (connect) or after.
fn map_send_error(e: reqwest::Error) -> IoError {
    if e.is_connect() {
        if e.is_timeout() {
            IoError::Timeout {
                phase: TimeoutPhase::Connect,
            }
        } else {
            IoError::Connect(error_chain(&e))
        }
    } else if e.is_timeout() {
        IoError::Timeout {
            phase: TimeoutPhase::Response,
        }
    } else {
        IoError::Transport(error_chain(&e))
    }
}

/// The error and its sources on one line, without the URL (it can carry a fiscal code).
fn error_chain(e: &reqwest::Error) -> String {
    use std::error::Error as _;
    let mut text = e.without_url_ref().to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    super::error::mask_fiscal_codes(&text)
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}

impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let kind = if self.is_connect() {
            "connection failed"
        } else if self.is_timeout() {
            "timed out"
        } else if self.is_request() {
            "request failed"
        } else if self.is_body() || self.is_decode() {
            "body failed"
        } else {
            "transport error"
        };
        kind.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_keys() {
        let mut cfg = IoClientConfig::new("http://127.0.0.1:1/api/v1", ApiKey::new("very-secret"));
        cfg.manage_key = Some(ApiKey::new("manage-secret"));
        let shown = format!("{cfg:?} {:?}", IoClient::new(cfg.clone()).unwrap());
        assert!(!shown.contains("secret"), "{shown}");
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_segment("01ARZ3ND"), "01ARZ3ND");
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }
}
