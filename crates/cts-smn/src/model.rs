//! Topics, subscriptions and their rules. Every value the API or the
//! notification rules hand in is checked here, once.

use std::fmt;

use serde::Serialize;

use crate::error::SmnError;

/// At most this many topics (and registered functions) per project.
pub const MAX_TOPICS: usize = 100;
/// At most this many subscriptions per topic.
pub const MAX_SUBSCRIPTIONS: usize = 100;

/// An SMN topic, or a FunctionGraph function registered as one: both are
/// what a notification's `topic_id` names and both reach their endpoints
/// through subscriptions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topic {
    /// `urn:smn:{region}:{project_id}:{name}` or the function's `urn:fss:…`.
    pub urn: String,
    pub project_id: String,
    pub name: String,
    pub display_name: String,
    pub kind: TopicKind,
    /// Unix milliseconds.
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TopicKind {
    Smn,
    Function,
}

impl TopicKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TopicKind::Smn => "smn",
            TopicKind::Function => "function",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<TopicKind> {
        match s {
            "smn" => Some(TopicKind::Smn),
            "function" => Some(TopicKind::Function),
            _ => None,
        }
    }
}

/// How a subscription receives messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Https,
    Email,
}

impl Protocol {
    pub fn parse(s: &str) -> Result<Protocol, SmnError> {
        match s {
            "http" => Ok(Protocol::Http),
            "https" => Ok(Protocol::Https),
            "email" => Ok(Protocol::Email),
            _ => Err(SmnError::invalid(
                "protocol",
                format!("{s:?} is not one of http, https, email"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Email => "email",
        }
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A subscription of a topic. Subscriptions are confirmed when created:
/// only a project's administrators add them, so there is no confirmation
/// message to the endpoint.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Subscription {
    /// `{topic_urn}:{32 hex digits}`.
    pub urn: String,
    pub topic_urn: String,
    pub project_id: String,
    pub protocol: Protocol,
    pub endpoint: String,
    pub remark: String,
    /// The HMAC-SHA256 key of the signatures of HTTP deliveries (64 hex
    /// digits); shown to the caller once, when the subscription is created.
    #[serde(skip)]
    pub secret: String,
    /// Unix milliseconds.
    pub created_ms: i64,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("urn", &self.urn)
            .field("topic_urn", &self.topic_urn)
            .field("protocol", &self.protocol)
            .field("endpoint", &self.endpoint)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// SMN's topic name rule: 1 to 255 letters, digits, `-` and `_`, starting
/// with a letter or a digit.
pub fn check_topic_name(name: &str) -> Result<(), SmnError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || name.len() > 255 {
        return Err(SmnError::invalid("name", "must be 1 to 255 characters"));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) || !name.chars().all(ok_char) {
        return Err(SmnError::invalid(
            "name",
            "may hold only letters, digits, '-' and '_', and must start with a letter or a digit",
        ));
    }
    Ok(())
}

/// SMN's display name rule: fewer than 192 bytes, no control characters.
pub fn check_display_name(display_name: &str) -> Result<(), SmnError> {
    if display_name.len() >= 192 {
        return Err(SmnError::invalid(
            "display_name",
            "must be shorter than 192 bytes",
        ));
    }
    if display_name.chars().any(char::is_control) {
        return Err(SmnError::invalid(
            "display_name",
            "must not hold control characters",
        ));
    }
    Ok(())
}

/// The URN of topic `name` of `project_id` in `region`.
pub fn topic_urn(region: &str, project_id: &str, name: &str) -> String {
    format!("urn:smn:{region}:{project_id}:{name}")
}

/// A FunctionGraph function URN of `project_id`:
/// `urn:fss:{region}:{project_id}:function:{package}:{name}[:{version}]`.
/// Returns the function's name.
pub fn check_function_urn<'a>(project_id: &str, urn: &'a str) -> Result<&'a str, SmnError> {
    const FIELD: &str = "function_urn";
    const SHAPE: &str =
        "must be urn:fss:{region}:{project_id}:function:{package}:{name}[:{version}]";
    if urn.len() > 512 {
        return Err(SmnError::invalid(FIELD, "must be at most 512 characters"));
    }
    let parts: Vec<&str> = urn.split(':').collect();
    let ok_part = |p: &&str| {
        !p.is_empty()
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !(7..=8).contains(&parts.len())
        || parts[..2] != ["urn", "fss"]
        || parts[4] != "function"
        || !parts.iter().all(ok_part)
    {
        return Err(SmnError::invalid(FIELD, SHAPE));
    }
    if parts[3] != project_id {
        return Err(SmnError::invalid(
            FIELD,
            "must name a function of the project in the path",
        ));
    }
    Ok(parts[6])
}

/// Checks `endpoint` against what `protocol` delivers to.
pub fn check_endpoint(protocol: Protocol, endpoint: &str) -> Result<(), SmnError> {
    const FIELD: &str = "endpoint";
    if endpoint.len() > 2048 {
        return Err(SmnError::invalid(FIELD, "must be at most 2048 characters"));
    }
    match protocol {
        Protocol::Http | Protocol::Https => {
            let url = url::Url::parse(endpoint).map_err(|e| {
                SmnError::invalid(FIELD, format!("must be an {protocol}:// URL ({e})"))
            })?;
            if url.scheme() != protocol.as_str() || url.host_str().is_none_or(str::is_empty) {
                return Err(SmnError::invalid(
                    FIELD,
                    format!("must be an {protocol}:// URL with a host"),
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(SmnError::invalid(
                    FIELD,
                    "must not hold credentials: deliveries are signed instead",
                ));
            }
            Ok(())
        }
        Protocol::Email => check_email(endpoint),
    }
}

/// An address an SMTP relay accepts: `local@domain`, no spaces or brackets.
fn check_email(address: &str) -> Result<(), SmnError> {
    let bad = || SmnError::invalid("endpoint", "must be an e-mail address (local@domain)");
    let (local, domain) = address.rsplit_once('@').ok_or_else(bad)?;
    let plain = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| {
                c.is_ascii_graphic()
                    && !matches!(c, '<' | '>' | '(' | ')' | ',' | ';' | '@' | '"' | '\\')
            })
    };
    if local.len() > 64 || domain.len() > 253 || !plain(local) || !plain(domain) {
        return Err(bad());
    }
    if domain.starts_with('.') || domain.ends_with('.') || !domain.contains('.') {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(e: SmnError) -> &'static str {
        match e {
            SmnError::Invalid { field, .. } => field,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn topic_names() {
        check_topic_name("alerts").unwrap();
        check_topic_name("9-ops_alerts").unwrap();
        check_topic_name(&"a".repeat(255)).unwrap();
        for bad in ["", "-x", "_x", "a b", "a.b", "ä", &"a".repeat(256)] {
            assert_eq!(field(check_topic_name(bad).unwrap_err()), "name", "{bad:?}");
        }
        check_display_name("Ops alerts").unwrap();
        assert_eq!(
            field(check_display_name(&"x".repeat(192)).unwrap_err()),
            "display_name"
        );
        assert_eq!(
            field(check_display_name("a\nb").unwrap_err()),
            "display_name"
        );
    }

    #[test]
    fn function_urns() {
        let p = "0123456789abcdef0123456789abcdef";
        let urn = format!("urn:fss:eu-de:{p}:function:default:alert-hook:latest");
        assert_eq!(check_function_urn(p, &urn).unwrap(), "alert-hook");
        let unversioned = format!("urn:fss:eu-de:{p}:function:default:hook");
        assert_eq!(check_function_urn(p, &unversioned).unwrap(), "hook");
        let other = urn.replace(p, "ffffffffffffffffffffffffffffffff");
        assert!(check_function_urn(p, &other)
            .unwrap_err()
            .to_string()
            .contains("project in the path"));
        for bad in [
            format!("urn:smn:eu-de:{p}:function:default:hook"),
            format!("urn:fss:eu-de:{p}:fn:default:hook"),
            format!("urn:fss:eu-de:{p}:function::hook"),
            format!("urn:fss:eu-de:{p}:function:default"),
            format!("urn:fss:eu-de:{p}:function:default:ho ok"),
        ] {
            assert_eq!(
                field(check_function_urn(p, &bad).unwrap_err()),
                "function_urn"
            );
        }
    }

    #[test]
    fn endpoints_match_their_protocol() {
        check_endpoint(Protocol::Http, "http://127.0.0.1:8080/hook").unwrap();
        check_endpoint(Protocol::Https, "https://hooks.example.com/cts?x=1").unwrap();
        check_endpoint(Protocol::Email, "ops@example.com").unwrap();
        for (p, bad) in [
            (Protocol::Http, "https://example.com/"),
            (Protocol::Https, "http://example.com/"),
            (Protocol::Https, "example.com"),
            (Protocol::Https, "https://user:pw@example.com/"),
            (Protocol::Email, "ops"),
            (Protocol::Email, "ops@localhost"),
            (Protocol::Email, "Ops <ops@example.com>"),
            (Protocol::Email, "o ps@example.com"),
        ] {
            assert_eq!(
                field(check_endpoint(p, bad).unwrap_err()),
                "endpoint",
                "{bad}"
            );
        }
        assert_eq!(field(Protocol::parse("sms").unwrap_err()), "protocol");
    }
}
