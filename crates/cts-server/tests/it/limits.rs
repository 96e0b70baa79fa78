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

/// A raw connection to `server`.
fn connect(server: &TestServer) -> TcpStream {
    TcpStream::connect(server.base.trim_start_matches("http://")).unwrap()
}

/// What the server sends before it closes `c`, if it closes it within
/// `within`; `None` if it is still open then.
fn closed_within(c: &mut TcpStream, within: Duration) -> Option<String> {
    c.set_read_timeout(Some(within)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Some(String::from_utf8_lossy(&got).into_owned()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(String::from_utf8_lossy(&got).into_owned())
            }
            Err(_) => return None,
        }
    }
}

fn healthz(server: &TestServer) -> String {
    let host = server.base.trim_start_matches("http://");
    format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n")
}

/// A head sent too slowly, an idle keep-alive connection and a body that
/// stops in the middle are each cut off after their timeout.
#[test]
fn slow_heads_idle_connections_and_stalled_bodies_are_cut_off() {
    let server = TestServer::builder()
        .env("CTS_LIMITS_HEADER_READ_TIMEOUT", "1s")
        .env("CTS_LIMITS_IDLE_TIMEOUT", "1s")
        .env("CTS_LIMITS_BODY_READ_TIMEOUT", "1s")
        .start();
    // Half a request head, then nothing.
    let mut slow = connect(&server);
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHo").unwrap();
    // One request, then nothing: the connection is idle.
    let mut idle = connect(&server);
    idle.write_all(healthz(&server).as_bytes()).unwrap();
    // A signed report that stops after 10 of its 1000 bytes.
    let path = format!("/v3/{}/traces", server.pid("main"));
    let (ak, sk) = (&server.admin.access_key, &server.admin.secret_key);
    let mut stalled = connect(&server);
    stalled
        .write_all(signed_head(&server, &path, 1000, ak, sk).as_bytes())
        .unwrap();
    stalled.write_all(b"{\"traces\":").unwrap();

    let within = Duration::from_secs(4);
    assert!(closed_within(&mut slow, within).is_some(), "slow head kept");
    let idle_got = closed_within(&mut idle, within).expect("idle connection kept");
    assert!(idle_got.starts_with("HTTP/1.1 200"), "{idle_got}");
    let stalled_got = closed_within(&mut stalled, within).expect("stalled body kept");
    assert!(stalled_got.starts_with("HTTP/1.1 408"), "{stalled_got}");
    assert!(stalled_got.contains("CTS.9010"), "{stalled_got}");
    // The server itself is fine.
    assert_eq!(server.get("/healthz").status, 200);
}

/// Beyond `limits.max_connections`, a connection is answered 503 at once
/// (not left unaccepted); once one closes, the next is served again.
#[test]
fn connections_beyond_the_limit_get_503() {
    let server = TestServer::builder()
        .env("CTS_LIMITS_MAX_CONNECTIONS", "2")
        .start();
    let held: Vec<TcpStream> = (0..2).map(|_| connect(&server)).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut extra = connect(&server);
    extra.write_all(healthz(&server).as_bytes()).unwrap();
    let got = closed_within(&mut extra, Duration::from_secs(5)).expect("answered and closed");
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(got.contains("CTS.9009"), "{got}");
    drop(held);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(server.get("/healthz").status, 200);
}

/// `ctsd` raises its open-file soft limit to the hard limit.
#[test]
fn the_open_file_limit_is_raised() {
    let limits = |pid: u32| {
        let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = text
            .lines()
            .find(|l| l.starts_with("Max open files"))
            .unwrap()
            .to_string();
        let fields: Vec<String> = line.split_whitespace().map(str::to_string).collect();
        (fields[3].clone(), fields[4].clone())
    };
    let server = TestServer::builder().open_files(256).start();
    let (soft, hard) = limits(server.process_id());
    assert_ne!(soft, "256");
    assert_eq!(soft, hard);
}

/// ctsd runs without transparent huge pages (a buffer of some kilobytes must
/// not fault in a 2 MiB page on a query's path), whatever the machine's setting.
#[test]
fn transparent_huge_pages_are_off() {
    let server = TestServer::start();
    let status = std::fs::read_to_string(format!("/proc/{}/status", server.process_id())).unwrap();
    let line = status.lines().find(|l| l.starts_with("THP_enabled:"));
    assert_eq!(
        line.map(str::split_whitespace).and_then(|mut f| f.nth(1)),
        Some("0"),
        "{status}"
    );
}

/// SIGTERM with a request stalled mid-body: the server exits after
/// `limits.shutdown_grace`, not never.
#[test]
fn shutdown_is_bounded_by_the_grace() {
    let mut server = TestServer::builder()
        .env("CTS_LIMITS_SHUTDOWN_GRACE", "1s")
        .env("CTS_LIMITS_BODY_READ_TIMEOUT", "1h")
        .start();
    let path = format!("/v3/{}/traces", server.pid("main"));
    let (ak, sk) = (
        server.admin.access_key.clone(),
        server.admin.secret_key.clone(),
    );
    let mut stalled = connect(&server);
    stalled
        .write_all(signed_head(&server, &path, 1000, &ak, &sk).as_bytes())
        .unwrap();
    stalled.write_all(b"{\"traces\":").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = std::time::Instant::now();
    server.terminate();
    assert!(started.elapsed() < Duration::from_secs(5));
}
