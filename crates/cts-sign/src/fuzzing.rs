//! The entry point for fuzzing the `Authorization` header parser and the
//! verification behind it (the `signature` target in `fuzz/`, replayed by
//! cts-model's `tests/corpus.rs`).

use crate::{authenticate, parse_sdk_date, RequestParts, DEFAULT_MAX_SKEW_SECS};

/// The access key the fuzzed requests may name, and its secret key.
pub const ACCESS_KEY: &str = "AK";
pub const SECRET_KEY: &str = "SK";
/// The Host the fuzzed requests were signed for.
pub const HOST: &str = "127.0.0.1:8080";

/// A signed request, one part per line: the `Authorization` value, the
/// `X-Sdk-Date` value, the path with its query, then the body. It must
/// return, never panic; true when the request authenticates (at its own
/// date, so that the clock plays no part).
pub fn signature(data: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(data) else {
        return false;
    };
    let mut lines = text.splitn(4, '\n');
    let authorization = lines.next().unwrap_or_default();
    let date = lines.next().unwrap_or_default();
    let target = lines.next().unwrap_or("/");
    let body = lines.next().unwrap_or_default();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let parts = RequestParts {
        method: "POST",
        path,
        query,
        headers: vec![
            ("Authorization", authorization),
            ("X-Sdk-Date", date),
            ("Host", HOST),
            ("Content-Type", "application/json"),
        ],
        body: body.as_bytes(),
    };
    let now = parse_sdk_date(crate::canonical::py_strip(date)).unwrap_or(0);
    authenticate(&parts, now, DEFAULT_MAX_SKEW_SECS, |ak| {
        (ak == ACCESS_KEY).then_some(SECRET_KEY)
    })
    .is_ok()
}
