//! HTTP(S) delivery: a JSON POST signed with the subscription's secret.
//!
//! Body (UTF-8 JSON): `message_id`, `notification_id`, `notification_name`,
//! `topic_urn`, `subscription_urn`, `trace` (the stored trace, whole).
//! Headers:
//! * `X-CTS-Message-Id`: the message id (the same on every retry: a
//!   receiver drops a repeat it has seen);
//! * `X-CTS-Timestamp`: Unix seconds of this attempt;
//! * `X-CTS-Signature`: `sha256=` and the lowercase hex of
//!   HMAC-SHA256(key = the subscription's secret as ASCII, message =
//!   timestamp + "." + body bytes).
//!
//! Any 2xx answer is a delivery; redirects are not followed.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;

use crate::model::Subscription;
use crate::outbox::Delivery;

pub const MESSAGE_ID_HEADER: &str = "X-CTS-Message-Id";
pub const TIMESTAMP_HEADER: &str = "X-CTS-Timestamp";
pub const SIGNATURE_HEADER: &str = "X-CTS-Signature";

#[derive(Serialize)]
struct Body<'a> {
    message_id: &'a str,
    notification_id: &'a str,
    notification_name: &'a str,
    topic_urn: &'a str,
    subscription_urn: &'a str,
    trace: &'a RawValue,
}

/// The body of `delivery` for `sub`.
pub fn body(sub: &Subscription, delivery: &Delivery) -> Result<Vec<u8>, String> {
    let trace: &RawValue =
        serde_json::from_str(&delivery.trace).map_err(|e| format!("stored trace: {e}"))?;
    serde_json::to_vec(&Body {
        message_id: &delivery.message_id,
        notification_id: &delivery.notification_id,
        notification_name: &delivery.notification_name,
        topic_urn: &delivery.topic_urn,
        subscription_urn: &sub.urn,
        trace,
    })
    .map_err(|e| e.to_string())
}

/// `sha256=` + hex(HMAC-SHA256(secret, timestamp + "." + body)).
pub fn signature(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The client of every webhook: no redirects, no proxy from the
/// environment (endpoints are named by the subscription only).
pub fn client(timeout: Duration) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .user_agent(concat!("cts-notifications/", env!("CARGO_PKG_VERSION")))
        .build()
        .expect("a client without custom TLS roots builds")
}

/// POSTs `delivery` to `sub`'s endpoint, signed at `now_secs`.
pub async fn post(
    client: &reqwest::Client,
    sub: &Subscription,
    delivery: &Delivery,
    now_secs: i64,
) -> Result<(), String> {
    let body = body(sub, delivery)?;
    let timestamp = now_secs.to_string();
    let signature = signature(&sub.secret, &timestamp, &body);
    let answer = client
        .post(&sub.endpoint)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(MESSAGE_ID_HEADER, &delivery.message_id)
        .header(TIMESTAMP_HEADER, &timestamp)
        .header(SIGNATURE_HEADER, signature)
        .body(body)
        .send()
        .await
        .map_err(|e| describe(&e))?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {status}"))
    }
}

/// The error with its causes (reqwest's own message is only the outer one).
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return "timed out".to_owned();
    }
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_over_timestamp_dot_body() {
        // Computed with Python's hmac module, as docs/notifications.md does.
        assert_eq!(
            signature("k3y", "1700000000", br#"{"a":1}"#),
            "sha256=fd5a70e965043f7df6309c2c3b5ff5a8ffa99b1f5175e9a311459e73c4634d4a"
        );
    }
}
