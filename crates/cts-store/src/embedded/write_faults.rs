//! A failing disk under the journal writer: write errors, short writes, a
//! full disk and fsync errors. Each failed batch is answered with an error,
//! the writer leaves the file (after a failed fsync the kernel may have
//! dropped the pages), no acknowledged trace is lost, no offset points at
//! the wrong bytes, and the sequence numbers stay without gaps.

use cts_model::{ApiVersion, ReportContext, Trace, TraceQuery};

use super::*;
use crate::journal;
use crate::journal::faults::{inject, Fault};

const HOUR: i64 = 3_600_000;

pub(super) fn batch(tag: &str, n: usize) -> Vec<Trace> {
    let now = now_ms();
    let traces: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "time": now - 1000 + i as i64, "service_type": "ECS", "resource_type": "vm",
                "trace_name": tag, "trace_type": "ApiCall", "code": "200",
                "user": {"id": "u", "name": "bob", "domain": {"id": "d", "name": "dn"}},
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "traces": traces })).unwrap();
    let ctx = ReportContext {
        project_id: "p",
        now_ms: now,
        oldest_time_ms: now - HOUR,
        newest_time_ms: now + HOUR,
        max_traces: 10_000,
    };
    cts_model::parse_report(&body, &ctx)
        .unwrap()
        .into_iter()
        .map(Trace::into_owned)
        .collect()
}

/// trace_name of every trace the store answers, sorted.
fn names(store: &EmbeddedStore) -> Vec<String> {
    let params = [("limit".to_string(), "200".to_string())].into();
    let q = TraceQuery::parse(ApiVersion::V3, "p", None, &params, now_ms()).unwrap();
    let page = store.query(&q).unwrap();
    assert!(page.marker.is_none());
    let mut names: Vec<String> = page
        .traces
        .iter()
        .map(|d| {
            let v: serde_json::Value = serde_json::from_slice(d).unwrap();
            v["trace_name"].as_str().unwrap().to_string()
        })
        .collect();
    names.sort();
    names
}

fn check_fault(faults: &[Fault]) {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig::new(dir.path());
    let store = EmbeddedStore::open(config.clone()).unwrap();
    store.append(batch("before", 20)).unwrap();
    for f in faults {
        inject(&dir.path().join("journal"), *f);
    }
    let failed = store.append(batch("failed", 20));
    assert!(failed.is_err(), "{faults:?}: the failed batch is refused");
    store.append(batch("after", 20)).unwrap();

    let expect: Vec<&str> = [["after"; 20], ["before"; 20]].concat(); // sorted
    assert_eq!(names(&store), expect, "{faults:?}");
    let seqs: Vec<u64> = store
        .read_journal(0, 100)
        .unwrap()
        .entries
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs, (1..=40).collect::<Vec<u64>>(), "{faults:?}");
    let files = journal::list_files(&dir.path().join("journal")).unwrap();
    assert_eq!(
        files.len(),
        2,
        "{faults:?}: the writer left the failed file"
    );
    drop(store);

    let store = EmbeddedStore::open(config).unwrap();
    assert_eq!(names(&store), expect, "{faults:?} after a restart");
    store.append(batch("later", 1)).unwrap();
    assert_eq!(store.read_journal(40, 10).unwrap().entries[0].seq, 41);
}

#[test]
fn a_failed_write_is_refused_and_the_writer_moves_on() {
    check_fault(&[Fault::Write]);
}

#[test]
fn a_short_write_is_refused_and_cut() {
    check_fault(&[Fault::ShortWrite]);
}

#[test]
fn a_full_disk_mid_batch_is_refused_and_cut() {
    check_fault(&[Fault::NoSpace]);
}

#[test]
fn a_failed_fsync_leaves_the_file() {
    check_fault(&[Fault::Fsync]);
}

#[test]
fn a_failed_fsync_whose_cut_fails_too_is_left_at_the_next_write() {
    check_fault(&[Fault::Fsync, Fault::Cut]);
}
