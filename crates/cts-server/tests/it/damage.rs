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

#[test]
fn by_setting_a_damaged_closed_journal_file_starts_read_only() {
    let small_files = ("CTS_STORE_JOURNAL_SEGMENT_BYTES", "16384");
    let mut server = TestServer::builder()
        .env(small_files.0, small_files.1)
        .start();
    let now = now_ms();
    let mut batches: Vec<Vec<String>> = Vec::new();
    for b in 0..12 {
        let traces: Vec<Value> = (0..20).map(|i| trace(now - b * 1000 - i)).collect();
        let answer = server.report("main", &traces);
        let reported = answer["trace_ids"].as_array().unwrap().iter();
        batches.push(reported.map(|v| v.as_str().unwrap().to_string()).collect());
    }
    // A crash: nothing reached the index, so the start reads every file.
    server.kill();

    // One byte of a middle record of a closed (not the newest) file.
    let files = wal_files(&server.data_dir);
    let (wal, middle, data) = files[..files.len() - 1]
        .iter()
        .find_map(|f| {
            let data = std::fs::read(f).unwrap();
            let scan = cts_store::journal::scan_bytes(1, &data);
            let r = scan.records.get(1).filter(|_| scan.records.len() >= 3)?;
            let middle = (r.first_seq, r.count as usize, r.frames[0].offset as usize);
            Some((f.clone(), middle, data))
        })
        .expect("a closed journal file of three records or more");
    let mut data = data;
    let (first_seq, count, frame_at) = middle;
    data[frame_at + 30] ^= 0x02;
    std::fs::write(&wal, &data).unwrap();

    // Without the setting: the start is refused, as before.
    let serve = ctsd(&["serve", "--listen", "127.0.0.1:0"], &server.data_dir);
    assert!(!serve.status.success());
    assert!(
        text(&serve).contains(&wal.display().to_string()),
        "{}",
        text(&serve)
    );

    let ro = TestServer::builder()
        .root(&server.root)
        .env(small_files.0, small_files.1)
        .env("CTS_STORE_ON_DAMAGE", "read-only")
        .start();
    assert_eq!(
        std::fs::read(&wal).unwrap(),
        data,
        "the journal is left as it is"
    );

    // Every trace outside the damaged record is queryable, none inside it.
    let got = ids(&ro.query_all("main", &[("limit", "100".into())]));
    let missing: Vec<&Vec<String>> = batches
        .iter()
        .filter(|b| !b.iter().all(|id| got.contains(id)))
        .collect();
    assert_eq!(missing.len(), 1, "one report was in the damaged record");
    assert_eq!(missing[0].len(), count);
    assert!(missing[0].iter().all(|id| !got.contains(id)));

    // Reports and audited changes are refused, saying why and what to run.
    let refused = [
        ro.post_traces("main", &batch(&[trace(now)])),
        ro.post_json(
            "/v3/projects",
            &serde_json::json!({"project": {"name": "eu-de_other", "region": ro.admin.region}}),
        ),
    ];
    for a in refused {
        assert_eq!(a.status, 503, "{}", a.text);
        assert_eq!(a.body["error_code"], "CTS.9011", "{}", a.text);
        let msg = a.body["error_msg"].as_str().unwrap();
        assert!(
            msg.contains("read-only") && msg.contains("ctsd repair"),
            "{msg}"
        );
        assert!(msg.contains(&wal.display().to_string()), "{msg}");
    }

    // Readiness says so; the damaged bytes are copied into quarantine.
    let ready = ro.get("/readyz");
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["status"], "read-only", "{}", ready.text);
    let q = &ready.body["quarantined"][0];
    assert_eq!(q["first_seq"], first_seq, "{}", ready.text);
    let (offset, len) = (q["offset"].as_u64().unwrap(), q["len"].as_u64().unwrap());
    assert!((offset..offset + len).contains(&(frame_at as u64)));
    let saved = server
        .data_dir
        .join("quarantine")
        .join(q["saved_as"].as_str().unwrap());
    assert_eq!(
        std::fs::read(saved).unwrap(),
        data[offset as usize..(offset + len) as usize]
    );
    drop(ro);

    // `ctsd repair` then takes the range out (listed once), and the next
    // start takes writes.
    let repair = ctsd(&["repair"], &server.data_dir);
    assert!(repair.status.success(), "{}", text(&repair));
    let again = TestServer::builder()
        .root(&server.root)
        .env(small_files.0, small_files.1)
        .start();
    again.report("main", &[trace(now)]);
    let ready = again.get("/readyz");
    assert_eq!(ready.body["status"], "ready", "{}", ready.text);
    assert_eq!(ready.body["quarantined"].as_array().unwrap().len(), 1);
}
