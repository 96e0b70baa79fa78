//! The indexed fields of a trace: its identity (project, time, id) and the
//! value of each query filter [`Field`]. The one place that says which
//! trace field a filter matches.
//!
//! Read straight from a stored trace's JSON, only these fields are decoded
//! (borrowed from the document); `request`, `response` and every other
//! field are skipped without being copied. A query checks every trace it
//! fetches this way, so the skip is what keeps that check cheap.

use serde::Deserialize;

use crate::{Field, Text, Trace, TraceKind};

/// Why a document is not a trace.
#[derive(Debug, thiserror::Error)]
pub enum IndexedError {
    #[error("not UTF-8: {0}")]
    Utf8(#[from] std::str::Utf8Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
}

#[derive(Debug, Deserialize)]
pub struct IndexedFields<'a> {
    #[serde(borrow)]
    pub trace_id: Text<'a>,
    pub time: i64,
    #[serde(borrow)]
    pub project_id: Text<'a>,
    #[serde(borrow)]
    user: IndexedUser<'a>,
    #[serde(borrow)]
    service_type: Text<'a>,
    #[serde(borrow)]
    resource_type: Text<'a>,
    #[serde(borrow, default)]
    resource_id: Option<Text<'a>>,
    #[serde(borrow, default)]
    resource_name: Option<Text<'a>>,
    #[serde(borrow)]
    trace_name: Text<'a>,
    #[serde(borrow)]
    trace_rating: Text<'a>,
    #[serde(borrow)]
    trace_type: Text<'a>,
    #[serde(borrow)]
    enterprise_project_id: Text<'a>,
    #[serde(borrow)]
    tracker_name: Text<'a>,
}

#[derive(Debug, Deserialize)]
struct IndexedUser<'a> {
    #[serde(borrow, default)]
    name: Option<Text<'a>>,
    #[serde(borrow, default)]
    access_key_id: Option<Text<'a>>,
}

impl<'a> IndexedFields<'a> {
    /// The indexed fields of a stored trace's JSON.
    pub fn from_json(doc: &'a [u8]) -> Result<Self, IndexedError> {
        // UTF-8 checked once for the whole document: reading from a `str`
        // is then ~20% faster than from bytes, which checks every string.
        Ok(serde_json::from_str(std::str::from_utf8(doc)?)?)
    }

    /// The indexed fields of a trace of any text type (borrowed from it).
    pub fn of<S: AsRef<str>>(t: &'a Trace<S>) -> Self {
        let text = |s: &'a S| Text::from(s.as_ref());
        let opt = |s: &'a Option<S>| s.as_ref().map(text);
        IndexedFields {
            trace_id: text(&t.trace_id),
            time: t.time,
            project_id: text(&t.project_id),
            user: IndexedUser {
                name: opt(&t.user.name),
                access_key_id: opt(&t.user.access_key_id),
            },
            service_type: text(&t.service_type),
            resource_type: text(&t.resource_type),
            resource_id: opt(&t.resource_id),
            resource_name: opt(&t.resource_name),
            trace_name: text(&t.trace_name),
            trace_rating: text(&t.trace_rating),
            trace_type: text(&t.trace_type),
            enterprise_project_id: text(&t.enterprise_project_id),
            tracker_name: text(&t.tracker_name),
        }
    }

    /// The value a filter on `field` matches; `None` when the trace has no
    /// such value.
    pub fn value(&self, field: Field) -> Option<&str> {
        match field {
            Field::ServiceType => Some(&self.service_type),
            Field::User => self.user.name.as_deref(),
            Field::ResourceId => self.resource_id.as_deref(),
            Field::ResourceName => self.resource_name.as_deref(),
            Field::ResourceType => Some(&self.resource_type),
            Field::TraceName => Some(&self.trace_name),
            Field::TraceRating => Some(&self.trace_rating),
            Field::AccessKeyId => self.user.access_key_id.as_deref(),
            Field::EnterpriseProjectId => Some(&self.enterprise_project_id),
            Field::TrackerName => Some(&self.tracker_name),
            Field::Kind => Some(TraceKind::of_stored(&self.trace_type).as_query_value()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trace(extra: serde_json::Value) -> Trace {
        let mut v = serde_json::json!({
            "trace_id": "0b6c9f0e-7c3e-4f7a-9d1e-3f2a1b0c9d8e", "time": 1700000000000i64,
            "record_time": 1700000000001i64,
            "user": {"name": "b\"öb", "access_key_id": "AK", "domain": {"id": "d"}},
            "request": {"big": [1, 2, {"x": "y"}]}, "response": "ok", "code": "200",
            "service_type": "ECS", "event_type": "system", "project_id": "p",
            "resource_type": "vm", "tracker_name": "system", "operation_id": "o",
            "source_ip": "1.2.3.4", "domain_id": "d", "trace_name": "deleteServer",
            "trace_rating": "normal", "trace_type": "ObsAPI", "enterprise_project_id": "0",
        });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn read_from_json_equals_read_from_the_whole_trace() {
        for extra in [
            serde_json::json!({}),
            serde_json::json!({"resource_id": "r\\\"1", "resource_name": "n", "message": [1]}),
        ] {
            let t = trace(extra);
            let doc = t.to_json();
            let fast = IndexedFields::from_json(&doc).unwrap();
            let whole = IndexedFields::of(&t);
            assert_eq!(fast.trace_id, whole.trace_id);
            assert_eq!(
                (fast.time, &fast.project_id),
                (whole.time, &whole.project_id)
            );
            for f in Field::ALL {
                assert_eq!(fast.value(f), whole.value(f), "{f:?}");
            }
        }
        let t = trace(serde_json::json!({}));
        let v = IndexedFields::of(&t);
        assert_eq!(v.value(Field::User), Some("b\"öb"));
        assert_eq!(v.value(Field::Kind), Some("data"));
        assert_eq!(v.value(Field::ResourceId), None);
    }

    #[test]
    fn a_document_without_an_indexed_field_is_not_a_trace() {
        assert!(IndexedFields::from_json(br#"{"trace_id":1}"#).is_err());
        assert!(IndexedFields::from_json(b"{\"time\":1}").is_err());
        assert!(IndexedFields::from_json(b"[]").is_err());
        let mut doc = trace(serde_json::json!({})).to_json();
        let at = doc.len() - 5;
        doc[at] = 0xff;
        assert!(matches!(
            IndexedFields::from_json(&doc),
            Err(IndexedError::Utf8(_))
        ));
    }
}
