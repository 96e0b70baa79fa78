//! Replays the fuzzing corpus of the request parsers (`fuzz/corpus/report`,
//! `query`, `signature`): a fast regression run on stable. Each input must be
//! accepted or refused, never panic. `write_seed_corpus` (ignored) writes the
//! signed seeds, whose signatures only the signer can compute.

use cts_model::fuzzing::{self, replay};

#[test]
fn report_corpus() {
    replay("report", fuzzing::report);
}

#[test]
fn query_corpus() {
    replay("query", fuzzing::query);
}

#[test]
fn signature_corpus() {
    replay("signature", cts_sign::fuzzing::signature);
}

/// Writes `signature/valid-*`: `cargo test -p cts-model --test corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    use cts_sign::fuzzing::{ACCESS_KEY, HOST, SECRET_KEY};
    let out = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/signature");
    let seeds = [
        (
            "valid-report",
            "/v3/p/trace",
            br#"{"traces":[]}"#.as_slice(),
        ),
        (
            "valid-query",
            "/v3/p/traces?limit=10&trace_type=system&service_type=ECS",
            b"".as_slice(),
        ),
    ];
    for (name, target, body) in seeds {
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        let url = format!("http://{HOST}{target}");
        cts_sign::sign_request(
            "POST",
            &url,
            &mut headers,
            body,
            ACCESS_KEY,
            SECRET_KEY,
            1_700_000_000,
        )
        .unwrap();
        let header = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        let file = format!(
            "{}\n{}\n{target}\n{}",
            header("Authorization"),
            header("X-Sdk-Date"),
            String::from_utf8_lossy(body)
        );
        std::fs::write(out.join(name), file).unwrap();
        assert!(cts_sign::fuzzing::signature(
            &std::fs::read(out.join(name)).unwrap()
        ));
    }
}
