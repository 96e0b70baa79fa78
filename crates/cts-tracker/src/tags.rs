//! Tags on trackers: `POST /v3/{project_id}/cts-tracker/{tracker_id}/tags/create`
//! and `DELETE …/tags/delete`, body `{"tags": [{"key", "value"}]}`.
//!
//! One value per key, as the tag management service keeps them: creating a
//! key that exists replaces its value.

use std::collections::HashSet;

use cts_db::Sql;

use crate::error::TrackerError;
use crate::model::{Tag, Tracker};
use crate::request::{parse_json, Fields};
use crate::store::{load, Failure, TrackerStore};

/// The only `resource_type` of the tag paths.
pub const TAG_RESOURCE_TYPE: &str = "cts-tracker";
/// Tags per tracker: the tag management service's limit per resource.
pub const MAX_TAGS: usize = 20;
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_CHARS: usize = 255;
/// Keys under this prefix are the platform's own.
const RESERVED_KEY_PREFIX: &str = "_sys_";

/// One entry of a delete request: without `value` the key goes whatever
/// its value; with one, only that key/value pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagFilter {
    pub key: String,
    pub value: Option<String>,
}

/// The body of `tags/create`. An absent `value` is the empty value; a key
/// given twice is refused, since which value was meant is unclear.
pub fn parse_tags_create(body: &[u8]) -> Result<Vec<Tag>, TrackerError> {
    let mut seen = HashSet::new();
    entries(body)?
        .into_iter()
        .map(|(path, key, value)| {
            if !seen.insert(key.clone()) {
                return Err(TrackerError::body(
                    &format!("{path}.key"),
                    format!("tag key {key:?} is given more than once"),
                ));
            }
            Ok(Tag {
                key,
                value: value.unwrap_or_default(),
            })
        })
        .collect()
}

/// The body of `tags/delete`.
pub fn parse_tags_delete(body: &[u8]) -> Result<Vec<TagFilter>, TrackerError> {
    Ok(entries(body)?
        .into_iter()
        .map(|(_, key, value)| TagFilter { key, value })
        .collect())
}

/// `(path, key, value)` of each entry of `tags`, each checked.
fn entries(body: &[u8]) -> Result<Vec<(String, String, Option<String>)>, TrackerError> {
    let v = parse_json(body)?;
    let root = Fields::root(&v)?;
    root.objects("tags")?
        .into_iter()
        .map(|f| {
            let key_path = f.path("key");
            let Some(key) = f.string("key")? else {
                return Err(TrackerError::body(
                    &key_path,
                    format!("{key_path} is required"),
                ));
            };
            check_text(&key_path, key, 1, MAX_KEY_CHARS)?;
            if key.starts_with(RESERVED_KEY_PREFIX) {
                return Err(TrackerError::body(
                    &key_path,
                    format!("{key_path} cannot start with {RESERVED_KEY_PREFIX}"),
                ));
            }
            let value = f.string("value")?;
            if let Some(value) = value {
                check_text(&f.path("value"), value, 0, MAX_VALUE_CHARS)?;
            }
            let path = key_path.trim_end_matches(".key").to_owned();
            Ok((path, key.to_owned(), value.map(str::to_owned)))
        })
        .collect()
}

/// Length in characters, and none of ASCII 0–31 or `= * < > \ , | /`.
fn check_text(field: &str, s: &str, min: usize, max: usize) -> Result<(), TrackerError> {
    let n = s.chars().count();
    if n < min || n > max {
        return Err(TrackerError::body(
            field,
            format!("{field} must be {min} to {max} characters, not {n}"),
        ));
    }
    if let Some(c) = s
        .chars()
        .find(|c| u32::from(*c) < 32 || "=*<>\\,|/".contains(*c))
    {
        return Err(TrackerError::body(
            field,
            format!(
                "{field} cannot contain control characters or any of = * < > \\ , | / (found {c:?})"
            ),
        ));
    }
    Ok(())
}

impl TrackerStore {
    /// Adds `tags` to tracker `tracker_id`, replacing the values of keys it
    /// has; at most [`MAX_TAGS`] keys per tracker. Returns the tracker.
    pub fn create_tags(
        &self,
        project_id: &str,
        tracker_id: &str,
        tags: &[Tag],
    ) -> Result<Tracker, TrackerError> {
        self.write(project_id, |tx| {
            let t = tracker(tx, project_id, tracker_id)?;
            let keys: HashSet<&str> = t
                .tags
                .iter()
                .map(|t| t.key.as_str())
                .chain(tags.iter().map(|t| t.key.as_str()))
                .collect();
            if keys.len() > MAX_TAGS {
                return Err(TrackerError::body(
                    "tags",
                    format!(
                        "a tracker can have at most {MAX_TAGS} tags; this would make {}",
                        keys.len()
                    ),
                )
                .into());
            }
            for tag in tags {
                tx.exec(
                    "INSERT INTO tags (tracker_id, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (tracker_id, key) DO UPDATE SET value = excluded.value",
                    &[
                        t.id.as_str().into(),
                        tag.key.as_str().into(),
                        tag.value.as_str().into(),
                    ],
                )?;
            }
            tracker(tx, project_id, tracker_id)
        })
    }

    /// Removes the tags `filters` select; keys the tracker lacks are no
    /// error. Returns the tracker.
    pub fn delete_tags(
        &self,
        project_id: &str,
        tracker_id: &str,
        filters: &[TagFilter],
    ) -> Result<Tracker, TrackerError> {
        self.write(project_id, |tx| {
            let t = tracker(tx, project_id, tracker_id)?;
            for f in filters {
                match &f.value {
                    None => tx.exec(
                        "DELETE FROM tags WHERE tracker_id = $1 AND key = $2",
                        &[t.id.as_str().into(), f.key.as_str().into()],
                    )?,
                    Some(v) => tx.exec(
                        "DELETE FROM tags WHERE tracker_id = $1 AND key = $2 AND value = $3",
                        &[
                            t.id.as_str().into(),
                            f.key.as_str().into(),
                            v.as_str().into(),
                        ],
                    )?,
                };
            }
            tracker(tx, project_id, tracker_id)
        })
    }
}

fn tracker(tx: &dyn Sql, project_id: &str, id: &str) -> Result<Tracker, Failure> {
    load(
        tx,
        "project_id = $1 AND id = $2",
        &[project_id.into(), id.into()],
    )?
    .pop()
    .ok_or_else(|| TrackerError::not_found(format!("id {id:?}")).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::sys_spec;
    use crate::testing::trackers;
    use cts_testpg::{both, Place};
    use serde_json::json;

    fn create(v: serde_json::Value) -> Result<Vec<Tag>, TrackerError> {
        parse_tags_create(v.to_string().as_bytes())
    }

    fn tag(k: &str, v: &str) -> Tag {
        Tag {
            key: k.into(),
            value: v.into(),
        }
    }

    #[test]
    fn key_and_value_rules() {
        let field = |v| create(v).unwrap_err().field.unwrap();
        assert_eq!(field(json!({"tags": [{"value": "v"}]})), "tags[0].key");
        assert_eq!(field(json!({"tags": [{"key": ""}]})), "tags[0].key");
        assert_eq!(
            field(json!({"tags": [{"key": "a"}, {"key": "k".repeat(129)}]})),
            "tags[1].key"
        );
        assert_eq!(
            field(json!({"tags": [{"key": "a", "value": "v".repeat(256)}]})),
            "tags[0].value"
        );
        for bad in [
            "a=b", "a*", "<", ">", "a\\b", "a,b", "a|b", "a/b", "a\u{1}b", "a\nb",
        ] {
            let e = create(json!({"tags": [{"key": bad}]})).unwrap_err();
            assert_eq!(
                (e.code, e.field.as_deref()),
                ("CTS.0003", Some("tags[0].key")),
                "{bad:?}"
            );
            let e = create(json!({"tags": [{"key": "k", "value": bad}]})).unwrap_err();
            assert_eq!(e.field.as_deref(), Some("tags[0].value"), "{bad:?}");
        }
        assert_eq!(field(json!({"tags": [{"key": "_sys_x"}]})), "tags[0].key");
        assert_eq!(field(json!({"tags": [{"key": 1}]})), "tags[0].key");
        assert_eq!(field(json!({"tags": ["k"]})), "tags[0]");
        // Limits count characters, not bytes.
        let ok = create(
            json!({"tags": [{"key": "ü".repeat(128), "value": "é".repeat(255)}, {"key": "b"}]}),
        )
        .unwrap();
        assert_eq!(ok[1], tag("b", ""));
    }

    #[test]
    fn duplicate_keys_in_one_create_request_are_refused() {
        let e = create(json!({"tags": [{"key": "a", "value": "1"}, {"key": "a", "value": "2"}]}))
            .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("tags[1].key"));
        let d =
            parse_tags_delete(br#"{"tags": [{"key": "a"}, {"key": "a", "value": "1"}]}"#).unwrap();
        assert_eq!(d[0].value, None);
        assert_eq!(d[1].value.as_deref(), Some("1"));
    }

    fn tags_are_returned_with_the_tracker_and_replace_values(place: &Place) {
        let store = trackers(place, crate::Limits::default());
        let t = store
            .create("p1", "d1", &sys_spec(), 1, &|_| false)
            .unwrap();
        store
            .create_tags("p1", &t.id, &[tag("b", "2"), tag("a", "1")])
            .unwrap();
        let after = store.create_tags("p1", &t.id, &[tag("a", "9")]).unwrap();
        assert_eq!(after.tags, [tag("a", "9"), tag("b", "2")]);
        assert_eq!(store.list("p1", None, None).unwrap()[0].tags, after.tags);
        assert_eq!(
            store.get("p1", &t.id).unwrap().to_v3_json()["tags"],
            json!([{"key": "a", "value": "9"}, {"key": "b", "value": "2"}])
        );
    }

    fn delete_with_value_removes_the_pair_and_without_the_key(place: &Place) {
        let store = trackers(place, crate::Limits::default());
        let t = store
            .create("p1", "d1", &sys_spec(), 1, &|_| false)
            .unwrap();
        store
            .create_tags("p1", &t.id, &[tag("a", "1"), tag("b", "2"), tag("c", "3")])
            .unwrap();
        let f = |k: &str, v: Option<&str>| TagFilter {
            key: k.into(),
            value: v.map(Into::into),
        };
        let after = store
            .delete_tags(
                "p1",
                &t.id,
                &[
                    f("a", Some("other")),
                    f("b", Some("2")),
                    f("c", None),
                    f("zz", None),
                ],
            )
            .unwrap();
        assert_eq!(after.tags, [tag("a", "1")]);
    }

    fn at_most_twenty_tags_per_tracker(place: &Place) {
        let store = trackers(place, crate::Limits::default());
        let t = store
            .create("p1", "d1", &sys_spec(), 1, &|_| false)
            .unwrap();
        let twenty: Vec<Tag> = (0..20).map(|i| tag(&format!("k{i}"), "")).collect();
        store.create_tags("p1", &t.id, &twenty).unwrap();
        // Replacing an existing key is fine at the limit; a new key is not.
        store.create_tags("p1", &t.id, &[tag("k0", "x")]).unwrap();
        let e = store
            .create_tags("p1", &t.id, &[tag("k20", "")])
            .unwrap_err();
        assert_eq!((e.code, e.field.as_deref()), ("CTS.0003", Some("tags")));
        assert_eq!(store.get("p1", &t.id).unwrap().tags.len(), 20);
    }

    fn tags_of_a_missing_or_foreign_tracker_are_not_found(place: &Place) {
        let store = trackers(place, crate::Limits::default());
        let t = store
            .create("p1", "d1", &sys_spec(), 1, &|_| false)
            .unwrap();
        let e = store.create_tags("p2", &t.id, &[tag("a", "")]).unwrap_err();
        assert_eq!((e.code, e.status), ("CTS.0214", 404));
        let e = store.delete_tags("p1", "nope", &[]).unwrap_err();
        assert_eq!(e.code, "CTS.0214");
    }

    fn deleting_a_tracker_deletes_its_tags(place: &Place) {
        let store = trackers(place, crate::Limits::default());
        let t = store
            .create("p1", "d1", &sys_spec(), 1, &|_| false)
            .unwrap();
        store.create_tags("p1", &t.id, &[tag("a", "1")]).unwrap();
        let gone = store.delete("p1", Some("system"), None).unwrap();
        assert_eq!(gone[0].tags, [tag("a", "1")]);
        let t2 = store
            .create("p1", "d1", &sys_spec(), 2, &|_| false)
            .unwrap();
        assert!(t2.tags.is_empty());
        let n = store
            .read(|c| Ok(c.query("SELECT COUNT(*) FROM tags", &[])?[0][0].int()?))
            .unwrap();
        assert_eq!(n, 0);
    }

    both!(
        tags_are_returned_with_the_tracker_and_replace_values,
        delete_with_value_removes_the_pair_and_without_the_key,
        at_most_twenty_tags_per_tracker,
        tags_of_a_missing_or_foreign_tracker_are_not_found,
        deleting_a_tracker_deletes_its_tags,
    );
}
