//! What a rule looks at in a stored trace, read from its JSON without
//! copying: the strings stay in the journal document unless they had
//! escapes.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// The fields of a stored trace that notification rules test.
#[derive(Debug, Deserialize)]
pub struct TraceFacts<'a> {
    #[serde(borrow)]
    pub trace_id: Cow<'a, str>,
    #[serde(borrow)]
    pub project_id: Cow<'a, str>,
    pub time: i64,
    pub record_time: i64,
    #[serde(borrow)]
    pub service_type: Cow<'a, str>,
    #[serde(borrow)]
    pub resource_type: Cow<'a, str>,
    #[serde(borrow)]
    pub trace_name: Cow<'a, str>,
    #[serde(borrow)]
    pub trace_rating: Cow<'a, str>,
    #[serde(borrow)]
    pub trace_type: Cow<'a, str>,
    #[serde(default, borrow)]
    pub api_version: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub resource_id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub resource_name: Option<Cow<'a, str>>,
    /// A string or a number in stored traces: compared by its text.
    #[serde(default, borrow)]
    pub code: Option<&'a RawValue>,
    #[serde(default, borrow)]
    pub user: UserFacts<'a>,
}

/// Who did it: a user is named by id and by name (unique in its domain).
#[derive(Debug, Default, Deserialize)]
pub struct UserFacts<'a> {
    #[serde(default, borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    pub name: Option<Cow<'a, str>>,
}

impl<'a> TraceFacts<'a> {
    /// Reads a stored trace (a journal entry or a query result).
    pub fn read(doc: &'a [u8]) -> Result<TraceFacts<'a>, serde_json::Error> {
        serde_json::from_slice(doc)
    }

    /// `code` as text: `"200"` and `200` both read `200`.
    pub fn code_text(&self) -> Option<&str> {
        let raw = self.code?.get();
        match raw.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(inner) => Some(inner),
            None if raw == "null" => None,
            None => Some(raw),
        }
    }
}
