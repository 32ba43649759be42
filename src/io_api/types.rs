//! Request and response bodies of the IO API, after the specs (`io-functions-services` v4.1.1,
//! `io-messages` services-func). Responses ignore unknown fields; where the guide and the spec
//! spell a field differently, both are read.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::model::{FiscalCode, MessageStatus, NotificationStatus, PaymentStatus, ReadStatus};

/// 201 of POST /messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageCreated {
    /// Message id (a ULID).
    pub id: String,
}

/// The `message` part of GET /messages/{fiscal_code}/{id}.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageInfo {
    /// Message id.
    pub id: String,
    /// Recipient.
    pub fiscal_code: FiscalCode,
    /// Creation time (IO `Timestamp`).
    #[serde(default)]
    pub created_at: Option<String>,
    /// Sending service.
    #[serde(default)]
    pub sender_service_id: Option<String>,
    /// STANDARD / ADVANCED (kept as text: the enum is extensible).
    #[serde(default, alias = "feature_type")]
    pub feature_level_type: Option<String>,
    /// Seconds.
    #[serde(default)]
    pub time_to_live: Option<u64>,
    /// Content, present only once PROCESSED. Kept as JSON: it is only shown, never re-validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<serde_json::Value>,
}

/// Per-channel notification status (removed from IO's answer in 2026, still read when present).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NotificationInfo {
    /// Email channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<NotificationStatus>,
    /// Webhook (push) channel.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<NotificationStatus>,
}

/// 200 of GET /messages/{fiscal_code}/{id} (`ExternalMessageResponseWithContent`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExternalMessage {
    /// The message.
    pub message: MessageInfo,
    /// Processing status.
    pub status: MessageStatus,
    /// Notification status, when IO still sends it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notification: Option<NotificationInfo>,
    /// ADVANCED only: read status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_status: Option<ReadStatus>,
    /// ADVANCED only: payment status (the guide says `paid_status`).
    #[serde(
        default,
        alias = "paid_status",
        skip_serializing_if = "Option::is_none"
    )]
    pub payment_status: Option<PaymentStatus>,
}

impl ExternalMessage {
    /// `email=SENT webhook=SENT`, or None when IO sent no notification status.
    pub fn notification_summary(&self) -> Option<String> {
        let n = self.notification.as_ref()?;
        let parts: Vec<String> = [("email", &n.email), ("webhook", &n.webhook)]
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={v}")))
            .collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }
}

/// 200 of POST /profiles (`LimitedProfile`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitedProfile {
    /// The service may send to this citizen.
    pub sender_allowed: bool,
    /// it_IT, en_GB, …
    #[serde(default)]
    pub preferred_languages: Vec<String>,
}

/// 200 of GET /subscriptions-feed/{date}.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscriptionsFeed {
    /// The day, YYYY-MM-DD.
    #[serde(rename = "dateUTC")]
    pub date_utc: String,
    /// Hashes (lowercase hex SHA-256 of the fiscal code) that subscribed that day.
    pub subscriptions: Vec<String>,
    /// Hashes that unsubscribed that day.
    pub unsubscriptions: Vec<String>,
}

/// A day of the subscriptions feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum FeedDay {
    /// Published.
    Available(SubscriptionsFeed),
    /// Not published yet (a day is published at 00:00 UTC of the next): not an error.
    NotAvailableYet,
}

/// Organization of a service (`CmsOrganization`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmsOrganization {
    /// Name.
    pub name: String,
    /// 11 digits.
    pub fiscal_code: String,
    /// Department.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub department_name: Option<String>,
}

/// A topic (`CmsServiceTopic`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmsTopic {
    /// Topic id.
    pub id: i64,
    /// Name.
    pub name: String,
}

/// Service metadata (payload and responses).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmsServiceMetadata {
    /// LOCAL or NATIONAL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// Topic id (payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic_id: Option<i64>,
    /// Topic (responses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<CmsTopic>,
    /// Web site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
    /// iOS app link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_ios: Option<String>,
    /// Android app link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_android: Option<String>,
    /// Terms of service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tos_url: Option<String>,
    /// Privacy notice (mandatory for production).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy_url: Option<String>,
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Phone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// PEC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pec: Option<String>,
    /// Call to action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cta: Option<String>,
    /// Support page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_url: Option<String>,
}

/// The data of a service (`CmsServiceData` + metadata): the payload of create/update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmsServicePayload {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Organization.
    pub organization: CmsOrganization,
    /// Metadata.
    pub metadata: CmsServiceMetadata,
    /// Only push, never email.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_secure_channel: Option<bool>,
    /// Sandbox recipients.
    #[serde(default)]
    pub authorized_recipients: Vec<String>,
    /// Allowed source addresses (empty: any).
    #[serde(default)]
    pub authorized_cidrs: Vec<String>,
    /// Euro cents; 0 (the default) refuses every payment message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_allowed_payment_amount: Option<u64>,
}

/// Lifecycle status (`CmsServiceLifecycleStatus`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CmsLifecycleStatus {
    /// draft, submitted, approved, rejected, deleted.
    pub value: String,
    /// Why (rejections).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A service in its lifecycle (`CmsServiceLifecycle`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CmsServiceLifecycle {
    /// Service id.
    pub id: String,
    /// Lifecycle status.
    pub status: CmsLifecycleStatus,
    /// Last change.
    #[serde(default)]
    pub last_update: Option<String>,
    /// The data.
    #[serde(flatten)]
    pub data: CmsServicePayload,
}

/// A published service (`CmsServicePublication`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CmsServicePublication {
    /// Service id.
    pub id: String,
    /// published / unpublished.
    pub status: String,
    /// Last change.
    #[serde(default)]
    pub last_update: Option<String>,
    /// The data.
    #[serde(flatten)]
    pub data: CmsServicePayload,
}

/// A page of services (`CmsServicePagination`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CmsServicePage {
    /// Services.
    #[serde(default)]
    pub value: Vec<CmsServiceLifecycle>,
    /// count / limit / offset.
    #[serde(default)]
    pub pagination: Option<serde_json::Value>,
}

/// A page of a service's history (`CmsServiceHistory`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CmsServiceHistory {
    /// History items (kept as JSON: shown, not interpreted).
    #[serde(default)]
    pub items: Vec<serde_json::Value>,
    /// Next page.
    #[serde(
        default,
        rename = "continuationToken",
        skip_serializing_if = "Option::is_none"
    )]
    pub continuation_token: Option<String>,
}

/// Topics (`getServiceTopics`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CmsTopics {
    /// Topics.
    #[serde(default)]
    pub topics: Vec<CmsTopic>,
}

/// A service's keys (`SubscriptionKeys`). `Debug` hides them.
#[derive(Clone, Serialize, Deserialize)]
pub struct ServiceKeys {
    /// Primary key.
    pub primary_key: String,
    /// Secondary key.
    pub secondary_key: String,
}

impl fmt::Debug for ServiceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ServiceKeys { primary_key: ***, secondary_key: *** }")
    }
}

/// Which key to regenerate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    /// Primary.
    Primary,
    /// Secondary.
    Secondary,
}

impl KeyType {
    /// Path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::Primary => "primary",
            KeyType::Secondary => "secondary",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_response_reads_both_spellings_and_ignores_unknown_fields() {
        let m: ExternalMessage = serde_json::from_value(serde_json::json!({
            "message": {"id": "01ARZ3NDEKTSV4RRFFQ69G5FAV", "fiscal_code": "RSSMRA85T10A562S",
                        "created_at": "2026-01-01T00:00:00.000Z", "sender_service_id": "s",
                        "feature_type": "ADVANCED", "brand_new_field": 1},
            "status": "PROCESSED",
            "read_status": "NOT_READ",
            "paid_status": "NOT_PAID",
            "notification": {"email": "SENT", "webhook": "QUEUED"},
            "another_new_field": {"x": 1}
        }))
        .unwrap();
        assert_eq!(m.read_status, Some(ReadStatus::Unread));
        assert_eq!(m.payment_status, Some(PaymentStatus::NotPaid));
        assert_eq!(m.message.feature_level_type.as_deref(), Some("ADVANCED"));
        assert_eq!(
            m.notification_summary().as_deref(),
            Some("email=SENT webhook=QUEUED")
        );
        assert!(!format!("{m:?}").contains("RSSMRA85T10A562S"));
    }

    #[test]
    fn keys_never_print() {
        let k = ServiceKeys {
            primary_key: "pk-secret".into(),
            secondary_key: "sk-secret".into(),
        };
        assert!(!format!("{k:?}").contains("secret"));
    }
}
