//! Resource limits: what a client can make the server hold before it is
//! known, and how long it may take.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::*;

/// Resident memory of a process, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// The head of a signed POST of `len` bytes to `path` with key `ak`/`sk`
/// (the signature covers an empty body, so it cannot match anyway).
fn signed_head(server: &TestServer, path: &str, len: usize, ak: &str, sk: &str) -> String {
    let url = format!("{}{path}", server.base);
    let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
    cts_sign::sign_request(
        "POST",
        &url,
        &mut headers,
        b"",
        ak,
        sk,
        cts_sign::unix_now(),
    )
    .unwrap();
    let host = server.base.trim_start_matches("http://");
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {len}\r\n"
    );
    for (k, v) in headers {
        if !k.eq_ignore_ascii_case("host") {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    head.push_str("\r\n");
    head
}

/// 40 connections each send a 5 MiB body (all but its last byte) with an
/// unknown access key: the server must refuse them on the header alone,
/// not buffer 200 MiB first.
#[test]
fn bogus_credentials_cost_no_buffered_body() {
    const CONNECTIONS: usize = 40;
    const BODY: usize = 5 << 20;
    let server = TestServer::start();
    let path = format!("/v3/{}/traces", server.pid("main"));
    let head = signed_head(&server, &path, BODY, "NOSUCHKEY0000000000X", "bogus-secret");
    let addr = server.base.trim_start_matches("http://").to_string();
    let before = rss(server.process_id());
    let streams: Vec<TcpStream> = std::thread::scope(|s| {
        let senders: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                s.spawn(|| {
                    let mut c = TcpStream::connect(&addr).unwrap();
                    c.write_all(head.as_bytes()).unwrap();
                    let chunk = vec![b' '; 64 << 10];
                    let mut sent = 0;
                    while sent < BODY - 1 {
                        let n = chunk.len().min(BODY - 1 - sent);
                        c.write_all(&chunk[..n]).unwrap();
                        sent += n;
                    }
                    c
                })
            })
            .collect();
        senders.into_iter().map(|h| h.join().unwrap()).collect()
    });
    // Every byte but the last was accepted by the server; what it holds
    // now is what those bodies cost it.
    std::thread::sleep(Duration::from_millis(300));
    let during = rss(server.process_id());
    let growth = during.saturating_sub(before);
    eprintln!(
        "RSS of ctsd: {} MiB before, {} MiB with {CONNECTIONS} bogus 5 MiB uploads in flight (+{} MiB)",
        before >> 20,
        during >> 20,
        growth >> 20
    );
    for mut c in streams {
        c.write_all(b" ").unwrap();
        let mut answer = String::new();
        c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = c.read_to_string(&mut answer);
        assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    }
    // Streaming and dropping the bodies costs about 1 MiB a connection
    // (hyper's read buffers, allocator caches); buffering them, 5 MiB.
    assert!(
        growth < (BODY * CONNECTIONS / 2) as u64,
        "RSS grew by {} MiB",
        growth >> 20
    );
}
