//! E-mail delivery through an SMTP relay: a subject and a body a person
//! reads (who did what to which resource, when, from where, the outcome),
//! then the trace as JSON.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::Value;

use crate::error::SmnError;
use crate::outbox::Delivery;

/// How the connection to the relay is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which must succeed (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS: only for a relay on the same host or a trusted network.
    None,
}

/// A password that `Debug` (logs, config dumps) never shows.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Password(pub String);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The relay and the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// AUTH (PLAIN or LOGIN, as the relay offers) when set.
    pub user: Option<String>,
    pub password: Option<Password>,
    /// `From:` of every message, e.g. `CTS <cts@example.com>`.
    pub from: String,
}

/// A relay ready to send.
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl Mailer {
    pub fn new(config: &SmtpConfig, timeout: Duration) -> Result<Mailer, SmnError> {
        let from = config
            .from
            .parse::<Mailbox>()
            .map_err(|e| SmnError::invalid("smtp.from", format!("is not a mailbox ({e})")))?;
        let tls = || {
            TlsParameters::new(config.host.clone())
                .map_err(|e| SmnError::invalid("smtp.host", e.to_string()))
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .timeout(Some(timeout));
        builder = match config.tls {
            SmtpTls::Starttls => builder.tls(Tls::Required(tls()?)),
            SmtpTls::Tls => builder.tls(Tls::Wrapper(tls()?)),
            SmtpTls::None => builder.tls(Tls::None),
        };
        if let Some(user) = &config.user {
            let password = config.password.clone().map(|p| p.0).unwrap_or_default();
            builder = builder.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Mailer {
            transport: builder.build(),
            from,
        })
    }

    /// Sends `delivery` to `to`.
    pub async fn send(&self, to: &str, delivery: &Delivery) -> Result<(), String> {
        let to = to
            .parse::<Mailbox>()
            .map_err(|e| format!("recipient {to:?}: {e}"))?;
        let (subject, body) = compose(delivery)?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(subject)
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| e.to_string())?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The subject and the body of the mail for `delivery`.
pub fn compose(delivery: &Delivery) -> Result<(String, String), String> {
    let trace: Value =
        serde_json::from_str(&delivery.trace).map_err(|e| format!("stored trace: {e}"))?;
    let text = |key: &str| trace.get(key).and_then(Value::as_str).unwrap_or("-");
    let who = trace
        .pointer("/user/name")
        .and_then(Value::as_str)
        .or_else(|| trace.pointer("/user/id").and_then(Value::as_str))
        .unwrap_or("unknown user");
    let resource = match (text("resource_name"), text("resource_id")) {
        ("-", id) => id.to_owned(),
        (name, "-") => name.to_owned(),
        (name, id) => format!("{name} ({id})"),
    };
    let code = trace
        .get("code")
        .map(|c| c.as_str().map_or_else(|| c.to_string(), str::to_owned))
        .unwrap_or_else(|| "-".to_owned());
    let outcome = format!("{} (code {code})", text("trace_rating"));
    let when = trace
        .get("time")
        .and_then(Value::as_i64)
        .map_or_else(|| "-".to_owned(), utc);
    let subject = format!(
        "[CTS] {}: {who} {} {} {resource}: {}",
        delivery.notification_name,
        text("trace_name"),
        text("resource_type"),
        text("trace_rating"),
    );
    let pretty = serde_json::to_string_pretty(&trace).map_err(|e| e.to_string())?;
    let body = format!(
        "Key event notification {name} ({id}) matched a trace.\n\n\
         Who:       {who}\n\
         Did:       {service} {trace_name}\n\
         Resource:  {resource_type} {resource}\n\
         When:      {when}\n\
         From:      {source_ip}\n\
         Outcome:   {outcome}\n\
         Project:   {project}\n\
         Trace id:  {trace_id}\n\
         Message:   {message_id}\n\n\
         The trace:\n{pretty}\n",
        name = delivery.notification_name,
        id = delivery.notification_id,
        service = text("service_type"),
        trace_name = text("trace_name"),
        resource_type = text("resource_type"),
        source_ip = text("source_ip"),
        project = text("project_id"),
        trace_id = text("trace_id"),
        message_id = delivery.message_id,
    );
    Ok((subject, body))
}

/// `2026-12-06 07:52:43 UTC` for Unix milliseconds.
fn utc(ms: i64) -> String {
    cts_clock::utc_civil(ms.div_euclid(1000))
        .strftime("%Y-%m-%d %H:%M:%S UTC")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::DeliveryState;

    #[test]
    fn mail_says_who_did_what_to_which_resource() {
        let trace = r#"{"trace_id":"t-1","time":1765007563000,"user":{"name":"alice","id":"u1"},
            "service_type":"ECS","trace_name":"deleteServer","resource_type":"ecs",
            "resource_name":"web-1","resource_id":"r-9","source_ip":"10.0.0.7",
            "trace_rating":"warning","code":"204","project_id":"p1"}"#;
        let d = Delivery {
            seq: 1,
            message_id: "m-1".into(),
            subscription_urn: "s".into(),
            topic_urn: "t".into(),
            notification_id: "n-1".into(),
            notification_name: "deletes".into(),
            state: DeliveryState::Pending,
            attempts: 0,
            created_ms: 0,
            next_ms: 0,
            done_ms: None,
            last_error: None,
            trace: trace.into(),
        };
        let (subject, body) = compose(&d).unwrap();
        assert_eq!(
            subject,
            "[CTS] deletes: alice deleteServer ecs web-1 (r-9): warning"
        );
        for needle in [
            "Who:       alice",
            "Did:       ECS deleteServer",
            "Resource:  ecs web-1 (r-9)",
            "When:      2025-12-06 07:52:43 UTC",
            "From:      10.0.0.7",
            "Outcome:   warning (code 204)",
            "\"trace_id\": \"t-1\"",
        ] {
            assert!(body.contains(needle), "{needle} in\n{body}");
        }
    }
}
