//! Entry points for fuzzing the parsers of request input, and the replay of
//! every fuzzing corpus (`fuzz/corpus/TARGET/*`) that the crates' tests share.
//! Each entry takes arbitrary bytes and must return, never panic; the result
//! says whether the bytes were accepted.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::{parse_report, ApiVersion, ReportContext, TraceQuery};

/// A fixed clock, so that a corpus file means the same on every run.
const NOW_MS: i64 = 1_700_000_000_000;

/// A ReportTraces body, checked as the server checks it.
pub fn report(data: &[u8]) -> bool {
    let ctx = ReportContext {
        project_id: "p",
        now_ms: NOW_MS,
        oldest_time_ms: NOW_MS - 7 * 86_400_000,
        newest_time_ms: NOW_MS + 3_600_000,
        max_traces: 50,
    };
    parse_report(data, &ctx).is_ok()
}

/// A ListTraces query string (without the `?`), decoded as the server's
/// `Query` extractor does and checked by every API version; accepted if one
/// version accepts it.
pub fn query(data: &[u8]) -> bool {
    let Ok(params) = serde_urlencoded::from_bytes::<HashMap<String, String>>(data) else {
        return false;
    };
    let v1 = TraceQuery::parse(ApiVersion::V1, "p", Some("system"), &params, NOW_MS);
    let v2 = TraceQuery::parse(ApiVersion::V2, "p", Some("system"), &params, NOW_MS);
    let v3 = TraceQuery::parse(ApiVersion::V3, "p", None, &params, NOW_MS);
    v1.is_ok() || v2.is_ok() || v3.is_ok()
}

/// The files of `fuzz/corpus/TARGET`, sorted.
fn corpus(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../fuzz/corpus")).join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a corpus directory entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

/// Replays the corpus of `target` (a regression run on stable): every file,
/// and every one-byte truncation and flip of the first few hundred bytes of
/// it, through `accept`; the seeds named `valid-*` must be accepted.
pub fn replay(target: &str, accept: fn(&[u8]) -> bool) {
    for path in corpus(target) {
        let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ok = accept(&data);
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with("valid-") {
            assert!(ok, "{} is no longer accepted", path.display());
        }
        for at in (0..data.len().min(400)).step_by(3) {
            accept(&data[..at]);
            let mut flipped = data.clone();
            flipped[at] ^= 0xa5;
            accept(&flipped);
        }
    }
}
