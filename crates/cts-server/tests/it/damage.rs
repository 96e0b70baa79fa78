//! A damaged journal, end to end: the server refuses to start naming the
//! file, offset and command; `ctsd check` lists the damage; `ctsd repair`
//! quarantines it and the rest stays queryable; the quarantine is reported
//! until acknowledged.

use std::process::{Command, Output};

use serde_json::Value;

use crate::support::*;

fn ctsd(args: &[&str], data_dir: &std::path::Path) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ctsd"));
    cmd.args(args).arg("--data-dir").arg(data_dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("CTS_") {
            cmd.env_remove(k);
        }
    }
    cmd.output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_damaged_journal_refuses_the_start_and_check_and_repair_recover_the_rest() {
    let mut server = TestServer::start();
    let now = now_ms();
    let mut reported = Vec::new();
    for b in 0..3 {
        let traces: Vec<Value> = (0..40).map(|i| trace(now - b * 1000 - i)).collect();
        reported.push(server.report("main", &traces)["trace_ids"].clone());
    }
    server.terminate();

    // One byte of the middle report's record.
    let wal = wal_files(&server.data_dir).pop().unwrap();
    let mut data = std::fs::read(&wal).unwrap();
    let scan = cts_store::journal::scan_bytes(1, &data);
    let middle = scan
        .records
        .iter()
        .find(|r| r.count == 40 && r.frames[0].offset as usize > data.len() / 3)
        .unwrap();
    data[middle.frames[1].offset as usize + 30] ^= 0x02;
    std::fs::write(&wal, &data).unwrap();

    let serve = ctsd(&["serve", "--listen", "127.0.0.1:0"], &server.data_dir);
    assert!(!serve.status.success());
    let msg = text(&serve);
    assert!(msg.contains(&wal.display().to_string()), "{msg}");
    assert!(
        msg.contains("at byte") && msg.contains("ctsd check"),
        "{msg}"
    );
    assert_eq!(std::fs::read(&wal).unwrap(), data, "nothing was cut");

    let check = ctsd(&["check"], &server.data_dir);
    assert!(!check.status.success());
    let msg = text(&check);
    let last = middle.first_seq + 39;
    let damaged = format!("traces {}..={last}", middle.first_seq);
    assert!(msg.contains(&format!("DAMAGED {}", wal.display())), "{msg}");
    assert!(msg.contains(&damaged), "{msg}");

    let repair = ctsd(&["repair"], &server.data_dir);
    assert!(repair.status.success(), "{}", text(&repair));
    assert!(text(&repair).contains("quarantined"), "{}", text(&repair));
    assert!(ctsd(&["check"], &server.data_dir).status.success());

    let again = TestServer::builder().root(&server.root).start();
    let mut got = ids(&again.query_all("main", &[("limit", "50".into())]));
    got.sort();
    let mut expect: Vec<String> = [&reported[0], &reported[2]]
        .iter()
        .flat_map(|a| {
            a.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string())
        })
        .collect();
    expect.sort();
    assert_eq!(got, expect);
    let ready = again.get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["quarantined"][0]["first_seq"], middle.first_seq);
    assert!(again
        .get("/metrics")
        .text
        .contains("cts_store_quarantined_ranges 1"));
    drop(again);

    let ack = ctsd(&["repair", "--acknowledge"], &server.data_dir);
    assert!(ack.status.success(), "{}", text(&ack));
    let again = TestServer::builder().root(&server.root).start();
    assert!(again.get("/readyz").body.get("quarantined").is_none());
}
