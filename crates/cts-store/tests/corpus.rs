//! Replays the fuzzing corpus (`fuzz/corpus/TARGET/*`) through the decoders
//! of stored bytes: a fast regression run on stable. Each input must decode
//! or be refused, never panic. `write_seed_corpus` (ignored) regenerates the
//! seeds from a real store.

use std::path::Path;

use cts_model::fuzzing::replay;
use cts_store::fuzzing;

#[test]
fn journal_corpus() {
    replay("journal", fuzzing::journal_file);
}

#[test]
fn frame_corpus() {
    replay("frame", fuzzing::frame);
}

#[test]
fn segment_corpus() {
    replay("segment", fuzzing::segment);
}

#[test]
fn manifest_corpus() {
    replay("manifest", fuzzing::manifest);
}

#[test]
fn postings_corpus() {
    replay("postings", fuzzing::postings);
}

/// Writes the `valid-*` seeds from a real store:
/// `cargo test -p cts-store --test corpus -- --ignored`. The `*-format2`
/// seeds are not written here: the writer of format-2 segments is gone, and
/// that segment and the journal file it points into are kept as written
/// (the segment tests read them).
#[test]
#[ignore]
fn write_seed_corpus() {
    use cts_model::{ReportContext, Trace};
    use cts_store::{EmbeddedStore, StoreConfig, TraceStore};

    let dir = tempfile::tempdir().unwrap();
    let mut cfg = StoreConfig::new(dir.path());
    cfg.memtable_max_traces = 40;
    let store = EmbeddedStore::open(cfg).unwrap();
    let now = 1_700_000_000_000i64;
    let traces: Vec<serde_json::Value> = (0..60)
        .map(|i| {
            let service = ["ECS", "EVS", "OBS"][i as usize % 3];
            serde_json::json!({
                "time": now - i, "service_type": service,
                "resource_type": "vm", "trace_name": "deleteServer", "trace_type": "ApiCall",
                "code": "200", "user": {"id": "u", "name": "bob", "domain": {"id": "d", "name": "dn"}},
            })
        })
        .collect();
    let body = serde_json::to_vec(&serde_json::json!({ "traces": traces })).unwrap();
    let ctx = ReportContext {
        project_id: "a",
        now_ms: now,
        oldest_time_ms: now - 3_600_000,
        newest_time_ms: now + 3_600_000,
        max_traces: 1000,
    };
    let parsed: Vec<Trace> = cts_model::parse_report(&body, &ctx)
        .unwrap()
        .into_iter()
        .map(Trace::into_owned)
        .collect();
    store.append(parsed[..30].to_vec()).unwrap();
    store.append(parsed[30..].to_vec()).unwrap();
    store.close().unwrap();

    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
    let wal = std::fs::read(dir.path().join("journal/0000000001.wal")).unwrap();
    std::fs::write(out.join("journal/valid-two-records"), &wal).unwrap();
    let scan = cts_store::journal::scan_bytes(1, &wal);
    let f = scan.records[0].frames[0];
    let frame = &wal[f.offset as usize..(f.offset + f.len) as usize];
    std::fs::write(out.join("frame/valid-eight-traces"), frame).unwrap();
    let manifest = std::fs::read(dir.path().join("index/MANIFEST.json")).unwrap();
    std::fs::write(out.join("manifest/valid-two-segments"), &manifest).unwrap();
    let m: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let seg = m["body"]["segments"][0].as_str().unwrap();
    let seg = std::fs::read(dir.path().join("index").join(seg)).unwrap();
    std::fs::write(out.join("segment/valid-forty-traces"), seg).unwrap();
    let mut postings = 4u32.to_le_bytes().to_vec();
    postings.extend_from_slice(&[3, 0xc8, 0x01, 0x81, 0x80, 0x04, 0x01]);
    std::fs::write(out.join("postings/valid-four"), postings).unwrap();
}
