//! What reading a stored trace's indexed fields costs (the check a query
//! makes of every trace it fetches): the whole trace decoded with borrowed
//! text, as before, against only the indexed fields. Same process, same
//! ~1 KB documents, rounds alternating; prints medians per trace.
//!
//! `cargo run --release -p cts-model --example index_read_cost`

use std::hint::black_box;
use std::time::Instant;

use cts_model::{Field, IndexedFields, Text, Trace};

/// A page of traces per pass; many passes, so that the medians hold on a
/// busy machine.
const DOCS: usize = 200;
const ROUNDS: usize = 401;

/// A stored trace of the benchmark's shape: ~1 KB, most of it the request
/// and response bodies.
fn doc(i: usize) -> Vec<u8> {
    let words = "volume attach detach snapshot backup restore resize migrate";
    let description: String = words.repeat(10).chars().take(60 + i % 160).collect();
    serde_json::to_vec(&serde_json::json!({
        "trace_id": uuid::Uuid::from_u128(i as u128 * 7919).to_string(),
        "time": 1_700_000_000_000i64 + i as i64, "record_time": 1_700_000_000_100i64 + i as i64,
        "user": {"id": "7d3f0c1e9b2a4c5d8e6f0a1b2c3d4e5f", "name": format!("user-{}", i % 50),
                 "domain": {"id": "0a1b2c3d4e5f", "name": "acme"}, "access_key_id": "HPUAXKZQ3RBN7T0E",
                 "user_name": format!("user-{}", i % 50), "type": "IAMUser"},
        "request": {"volume": {"name": "data-3f9a1c", "availability_zone": "eu-de-01",
                               "size": 100, "description": description}},
        "response": {"status": "SUCCESS", "job_id": "ff80808288d41e1b0189e9a0d1b82c7e",
                     "entities": {"id": "b1d7a3c2-5e4f-4a6b-8c9d-0e1f2a3b4c5d"}},
        "code": "200", "service_type": "EVS", "event_type": "system", "project_id": "p0",
        "resource_type": "volume", "resource_id": "c0ffee00-0000-4000-8000-000000000001",
        "resource_name": "volume-prod-web-00001", "tracker_name": "system",
        "operation_id": "EVS.volume.createVolume", "source_ip": "10.0.3.17", "domain_id": "0a1b2c3d4e5f",
        "trace_name": "createVolume", "trace_rating": "normal", "trace_type": "ApiCall",
        "api_version": "v2", "request_id": "5e0c8a1f2b3d4e6f", "enterprise_project_id": "0",
        "user_agent": "openstacksdk/3.0.0 keystoneauth1/5.6.0 python-requests/2.31.0",
    }))
    .unwrap()
}

/// What the check reads of a trace: its project, time, id and every filter value.
fn use_fields(f: &IndexedFields<'_>) -> usize {
    let values: usize = Field::ALL
        .iter()
        .filter_map(|x| f.value(*x))
        .map(str::len)
        .sum();
    values + f.project_id.len() + f.trace_id.len() + f.time as usize
}

fn whole_trace(doc: &[u8]) -> usize {
    let t: Trace<Text> = serde_json::from_slice(doc).unwrap();
    use_fields(&IndexedFields::of(&t))
}

/// The floor of any check that reads the JSON: skipping all of it.
fn skip_only(doc: &[u8]) -> usize {
    let _: serde::de::IgnoredAny = serde_json::from_slice(doc).unwrap();
    0
}

fn indexed_only(doc: &[u8]) -> usize {
    use_fields(&IndexedFields::from_json(doc).unwrap())
}

/// Nanoseconds per document of one pass over all of them.
fn pass(docs: &[Vec<u8>], read: fn(&[u8]) -> usize) -> f64 {
    let start = Instant::now();
    for d in docs {
        black_box(read(black_box(d)));
    }
    start.elapsed().as_nanos() as f64 / docs.len() as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let docs: Vec<Vec<u8>> = (0..DOCS).map(doc).collect();
    let mean = docs.iter().map(Vec::len).sum::<usize>() / docs.len();
    type Read = fn(&[u8]) -> usize;
    let ways: [(&str, Read); 3] = [
        ("whole trace decoded (before)", whole_trace),
        ("indexed fields only (after)", indexed_only),
        ("document skipped (floor)", skip_only),
    ];
    let mut times = vec![Vec::new(); ways.len()];
    for _ in 0..ROUNDS {
        for ((_, read), t) in ways.iter().zip(&mut times) {
            t.push(pass(&docs, *read));
        }
    }
    let medians: Vec<f64> = times.into_iter().map(median).collect();
    println!("{DOCS} traces of {mean} bytes (mean), median of {ROUNDS} alternating passes");
    for ((name, _), m) in ways.iter().zip(&medians) {
        println!(
            "{name:<30} {m:>6.0} ns/trace  {:>5.0} µs/page of 200",
            m * 0.2
        );
    }
    println!("before/after: {:.2}x", medians[0] / medians[1]);
}
