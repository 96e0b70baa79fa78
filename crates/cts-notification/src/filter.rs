//! The advanced filter: `{"condition": "AND"|"OR", "is_support_filter":
//! bool, "rule": ["field = value", "field != value"]}`, each rule checked
//! against the rule of its field when it is read.

use serde::{Deserialize, Serialize};

use crate::error::NotificationError;
use crate::facts::TraceFacts;

/// At most this many rules per filter (the console's limit).
pub const MAX_FILTER_RULES: usize = 6;

/// The trace fields a filter rule may test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterField {
    ApiVersion,
    Code,
    TraceRating,
    TraceType,
    ResourceId,
    ResourceName,
}

impl FilterField {
    const ALL: [FilterField; 6] = [
        FilterField::ApiVersion,
        FilterField::Code,
        FilterField::TraceRating,
        FilterField::TraceType,
        FilterField::ResourceId,
        FilterField::ResourceName,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FilterField::ApiVersion => "api_version",
            FilterField::Code => "code",
            FilterField::TraceRating => "trace_rating",
            FilterField::TraceType => "trace_type",
            FilterField::ResourceId => "resource_id",
            FilterField::ResourceName => "resource_name",
        }
    }

    fn parse(s: &str) -> Option<FilterField> {
        FilterField::ALL.into_iter().find(|f| f.as_str() == s)
    }

    /// The value rule of the reference, as an error message when broken.
    fn check_value(self, v: &str) -> Result<(), String> {
        let chars = v.chars().count();
        let within = |max: usize| {
            if (1..=max).contains(&chars) {
                Ok(())
            } else {
                Err(format!(
                    "a {} value has 1 to {max} characters",
                    self.as_str()
                ))
            }
        };
        match self {
            FilterField::ApiVersion => {
                within(64)?;
                if v.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                {
                    Ok(())
                } else {
                    Err("an api_version value has only letters, digits, '_', '-' and '.'".into())
                }
            }
            FilterField::Code | FilterField::ResourceName => within(256),
            FilterField::ResourceId => within(350),
            FilterField::TraceRating => one_of(self, v, &cts_model::trace::RATINGS),
            FilterField::TraceType => {
                one_of(self, v, &["ConsoleAction", "ApiCall", "SystemAction"])
            }
        }
    }

    /// The trace's value of the field (`None`: the trace has none).
    fn of<'t>(self, t: &'t TraceFacts<'_>) -> Option<&'t str> {
        match self {
            FilterField::ApiVersion => t.api_version.as_deref(),
            FilterField::Code => t.code_text(),
            FilterField::TraceRating => Some(&t.trace_rating),
            FilterField::TraceType => Some(&t.trace_type),
            FilterField::ResourceId => t.resource_id.as_deref(),
            FilterField::ResourceName => t.resource_name.as_deref(),
        }
    }
}

fn one_of(f: FilterField, v: &str, allowed: &[&str]) -> Result<(), String> {
    if allowed.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "a {} value is one of {}",
            f.as_str(),
            allowed.join(", ")
        ))
    }
}

/// One rule: `field = value` or `field != value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FilterRule {
    pub field: FilterField,
    /// `true` for `!=`.
    pub negated: bool,
    pub value: String,
}

impl FilterRule {
    /// Reads `field = value` / `field != value` (spaces around the operator
    /// optional; the value is the rest of the text, trimmed).
    pub fn parse(text: &str) -> Result<FilterRule, String> {
        let form = "has the form \"field = value\" or \"field != value\"";
        let Some(at) = text.find('=') else {
            return Err(format!("{text:?}: a rule {form}"));
        };
        let (head, value) = (&text[..at], text[at + 1..].trim());
        let (field, negated) = match head.strip_suffix('!') {
            Some(f) => (f.trim(), true),
            None => (head.trim(), false),
        };
        if value.starts_with('=') {
            return Err(format!("{text:?}: one operator, = or != (a rule {form})"));
        }
        let field = FilterField::parse(field).ok_or_else(|| {
            format!(
                "{text:?}: the field {field:?} is not one of api_version, code, trace_rating, \
                 trace_type, resource_id, resource_name (a rule {form})"
            )
        })?;
        field
            .check_value(value)
            .map_err(|rule| format!("{text:?}: {rule}"))?;
        Ok(FilterRule {
            field,
            negated,
            value: value.to_owned(),
        })
    }

    /// The text form the API shows: `field = value` / `field != value`.
    pub fn text(&self) -> String {
        let op = if self.negated { "!=" } else { "=" };
        format!("{} {op} {}", self.field.as_str(), self.value)
    }

    /// A trace without the field differs from every value.
    fn holds(&self, t: &TraceFacts<'_>) -> bool {
        (self.field.of(t) == Some(self.value.as_str())) != self.negated
    }
}

/// `condition`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Condition {
    #[serde(rename = "AND")]
    And,
    #[serde(rename = "OR")]
    Or,
}

impl Condition {
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::And => "AND",
            Condition::Or => "OR",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Condition> {
        match s {
            "AND" => Some(Condition::And),
            "OR" => Some(Condition::Or),
            _ => None,
        }
    }
}

/// The advanced filter of a notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    pub condition: Condition,
    pub is_support_filter: bool,
    pub rules: Vec<FilterRule>,
}

impl Filter {
    /// Whether the trace passes: always, when the filter is switched off or
    /// has no rules.
    pub fn passes(&self, t: &TraceFacts<'_>) -> bool {
        if !self.is_support_filter || self.rules.is_empty() {
            return true;
        }
        match self.condition {
            Condition::And => self.rules.iter().all(|r| r.holds(t)),
            Condition::Or => self.rules.iter().any(|r| r.holds(t)),
        }
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "condition": self.condition.as_str(),
            "is_support_filter": self.is_support_filter,
            "rule": self.rules.iter().map(FilterRule::text).collect::<Vec<_>>(),
        })
    }
}

/// Reads each rule of `filter.rule`, naming the one at fault.
pub(crate) fn parse_rules(texts: &[String]) -> Result<Vec<FilterRule>, NotificationError> {
    if texts.len() > MAX_FILTER_RULES {
        return Err(NotificationError::field(
            "filter.rule",
            format!("filter.rule: at most {MAX_FILTER_RULES} rules"),
        ));
    }
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let field = format!("filter.rule[{i}]");
            FilterRule::parse(t)
                .map_err(|rule| NotificationError::field(&field, format!("{field}: {rule}")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_read_with_or_without_spaces() {
        let r = FilterRule::parse("code != 200").unwrap();
        assert_eq!(
            (r.field, r.negated, r.value.as_str()),
            (FilterField::Code, true, "200")
        );
        let r = FilterRule::parse("resource_name=my server").unwrap();
        assert_eq!(
            (r.field, r.negated, r.value.as_str()),
            (FilterField::ResourceName, false, "my server")
        );
        assert_eq!(r.text(), "resource_name = my server");
    }

    #[test]
    fn each_field_has_its_value_rule() {
        for bad in [
            "code",
            "size = 3",
            "code = ",
            "trace_rating = fatal",
            "trace_type = ObsSDK",
            "api_version = v1/2",
            "api_version != a b",
        ] {
            assert!(FilterRule::parse(bad).is_err(), "{bad}");
        }
        assert!(FilterRule::parse(&format!("resource_id = {}", "x".repeat(350))).is_ok());
        assert!(FilterRule::parse(&format!("resource_id = {}", "x".repeat(351))).is_err());
        assert!(FilterRule::parse(&format!("resource_name = {}", "x".repeat(257))).is_err());
        for good in [
            "trace_rating = incident",
            "trace_type != ApiCall",
            "api_version = v1.0-beta_2",
        ] {
            assert!(FilterRule::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn the_error_names_the_rule_at_fault() {
        let texts = vec!["code = 200".to_string(), "color = red".to_string()];
        let e = parse_rules(&texts).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("filter.rule[1]"));
        assert!(e.message.contains("color"), "{}", e.message);
        let many = vec!["code = 1".to_string(); 7];
        assert!(parse_rules(&many).is_err());
    }
}
