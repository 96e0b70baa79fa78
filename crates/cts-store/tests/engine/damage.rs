//! Damaged files: what the store does when a byte of its directory is not
//! what it wrote. No acknowledged trace is ever cut, overwritten or answered
//! altered; the error names the file and what to do.

use super::*;

/// A store with `batches` appends of 50 traces each, closed cleanly; returns
/// the ids in append order.
fn filled(cfg: &StoreConfig, batches: usize) -> Vec<String> {
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    let t = now() - HOUR;
    for b in 0..batches {
        let items: Vec<(i64, &str, &str, Option<&str>)> = (0..50)
            .map(|i| (t + (b * 50 + i) as i64, "ECS", "bob", None))
            .collect();
        store.append(traces("p", &items)).unwrap();
    }
    store.close().unwrap();
    read_all(&store, 0, 10_000)
        .iter()
        .map(|e| doc_id(&e.doc))
        .collect()
}

/// [`filled`] in a new directory, with journal files of `segment_bytes`.
fn filled_dir(segment_bytes: u64, batches: usize) -> (tempfile::TempDir, StoreConfig, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.journal_segment_bytes = segment_bytes;
    let ids = filled(&cfg, batches);
    (dir, cfg, ids)
}

#[test]
fn a_flipped_byte_in_the_middle_of_the_newest_journal_file_refuses_the_start() {
    let (dir, cfg, ids) = filled_dir(64 << 20, 6);
    let wal = wal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&wal).unwrap();
    let at = data.len() / 2;
    data[at] ^= 0x20;
    std::fs::write(&wal, &data).unwrap();

    let err = EmbeddedStore::open(cfg.clone()).err().expect("refused");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Corrupt { .. }), "{msg}");
    assert!(msg.contains(&wal.display().to_string()), "{msg}");
    assert!(
        msg.contains("ctsd check") && msg.contains("ctsd repair"),
        "{msg}"
    );
    assert!(msg.contains("at byte"), "{msg}");
    // Nothing was cut or overwritten.
    assert_eq!(std::fs::read(&wal).unwrap(), data);

    // Undo the damage: every trace is still there.
    data[at] ^= 0x20;
    std::fs::write(&wal, &data).unwrap();
    let store = EmbeddedStore::open(cfg).unwrap();
    let got = all_pages(&store, "p", &[], 200);
    assert_eq!(got.len(), ids.len());
}

/// Where the last record of a journal file starts.
fn last_record_start(data: &[u8]) -> usize {
    let scan = cts_store::journal::scan_bytes(1, data);
    let r = scan.records.last().unwrap();
    r.frames[0].offset as usize - cts_store::journal::RECORD_PREFIX
}

#[test]
fn a_torn_write_after_the_last_record_is_cut_and_everything_kept() {
    let (dir, cfg, ids) = filled_dir(64 << 20, 3);
    let wal = wal_files(dir.path()).pop().unwrap();
    let data = std::fs::read(&wal).unwrap();
    let last = &data[last_record_start(&data)..];
    // A write of one more record, interrupted (every byte of it is covered
    // by the journal's unit test).
    for cut in [1, 11, 40, last.len() - 1] {
        let mut torn = data.clone();
        torn.extend_from_slice(&last[..cut]);
        std::fs::write(&wal, &torn).unwrap();
        let store = EmbeddedStore::open(cfg.clone()).unwrap();
        assert_eq!(all_pages(&store, "p", &[], 200).len(), ids.len());
        drop(store);
        assert_eq!(std::fs::read(&wal).unwrap(), data);
    }
}

#[test]
fn an_acknowledged_record_cut_like_a_torn_write_refuses_the_start() {
    let (dir, cfg, _) = filled_dir(64 << 20, 3);
    let wal = wal_files(dir.path()).pop().unwrap();
    let data = std::fs::read(&wal).unwrap();
    let cut = &data[..data.len() - 10];
    std::fs::write(&wal, cut).unwrap();
    let err = EmbeddedStore::open(cfg).err().expect("refused");
    assert!(
        err.to_string().contains("acknowledged records are missing"),
        "{err}"
    );
    assert_eq!(std::fs::read(&wal).unwrap(), cut);
}

#[test]
fn a_flipped_byte_in_a_closed_journal_file_is_an_error_never_altered_data() {
    let (dir, cfg, _) = filled_dir(8 << 10, 8);
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    let entries = read_all(&store, 0, 10_000);
    drop(store);
    let closed = wal_files(dir.path()).remove(1);
    let mut data = std::fs::read(&closed).unwrap();
    let scan = cts_store::journal::scan_bytes(2, &data);
    let frame = scan.records[0].frames[1];
    // The traces of that frame (the second eight of the record).
    let first_seq = scan.records[0].first_seq;
    let originals: HashMap<String, Vec<u8>> = entries
        .into_iter()
        .filter(|e| (first_seq + 8..first_seq + 16).contains(&e.seq))
        .map(|e| (doc_id(&e.doc), e.doc))
        .collect();
    assert_eq!(originals.len(), 8);
    // Every byte of a frame's compressed documents, one at a time. A few
    // bits of a zstd frame change nothing it decodes to; all others are
    // noticed. Without the frame cache: every query reads the file (a
    // cached frame is the verified original, see the test below).
    let mut cfg = cfg;
    cfg.frame_cache_bytes = 0;
    let store = EmbeddedStore::open(cfg).unwrap();
    let mut noticed = 0;
    let first = frame.offset as usize + 9;
    for at in first..(frame.offset + frame.len) as usize {
        data[at] ^= 0x01;
        std::fs::write(&closed, &data).unwrap();
        let mut failed = 0;
        for (id, doc) in &originals {
            match store.query(&by_id("p", id)) {
                Ok(page) => assert_eq!(page.traces, vec![doc.clone()], "flip at {at}"),
                Err(StoreError::Corrupt { path, .. }) => {
                    assert_eq!(path, closed);
                    failed += 1;
                }
                Err(e) => panic!("{e}"),
            }
        }
        noticed += (failed > 0) as usize;
        data[at] ^= 0x01;
    }
    let flips = frame.len as usize - 9;
    assert!(
        noticed * 100 >= flips * 95,
        "{noticed} of {flips} flips noticed"
    );
    assert!(store.stats().corrupt_reads >= noticed as u64);
}

#[test]
fn a_frame_damaged_after_it_was_cached_is_answered_as_verified_then_noticed_from_disk() {
    let (dir, cfg, _) = filled_dir(8 << 10, 8);
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    let entries = read_all(&store, 0, 10_000);
    let closed = wal_files(dir.path()).remove(1);
    let mut data = std::fs::read(&closed).unwrap();
    let scan = cts_store::journal::scan_bytes(2, &data);
    let frame = scan.records[0].frames[0];
    let first_seq = scan.records[0].first_seq;
    let (id, doc) = entries
        .into_iter()
        .find(|e| e.seq == first_seq)
        .map(|e| (doc_id(&e.doc), e.doc))
        .unwrap();
    assert_eq!(
        store.query(&by_id("p", &id)).unwrap().traces,
        vec![doc.clone()]
    );
    let before = store.stats();
    assert!(before.frame_cache_bytes > 0, "{before:?}");
    // Every byte of the frame's documents damaged at once.
    for b in &mut data[frame.offset as usize + 9..(frame.offset + frame.len) as usize] {
        *b ^= 0x5a;
    }
    std::fs::write(&closed, &data).unwrap();
    // The frame cache holds what passed the checksum: the original, never
    // bytes decoded from the damaged file.
    assert_eq!(store.query(&by_id("p", &id)).unwrap().traces, vec![doc]);
    assert_eq!(store.stats().frame_cache_hits, before.frame_cache_hits + 1);
    drop(store);
    // A store that has not cached it reads the file: an error naming it.
    let store = EmbeddedStore::open(cfg).unwrap();
    match store.query(&by_id("p", &id)) {
        Err(StoreError::Corrupt { path, .. }) => assert_eq!(path, closed),
        other => panic!("{other:?}"),
    }
    assert_eq!(store.stats().corrupt_reads, 1);
}

fn by_id(project: &str, id: &str) -> TraceQuery {
    let p: HashMap<String, String> = [("trace_id".to_string(), id.to_string())].into();
    TraceQuery::parse(ApiVersion::V3, project, None, &p, now()).unwrap()
}

fn index_file(dir: &std::path::Path, ext: &str) -> std::path::PathBuf {
    let mut found = Vec::new();
    for part in std::fs::read_dir(dir.join("index")).unwrap() {
        let part = part.unwrap().path();
        if part.is_dir() {
            for f in std::fs::read_dir(&part).unwrap() {
                found.push(f.unwrap().path());
            }
        } else {
            found.push(part);
        }
    }
    found.sort();
    found
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == ext))
        .unwrap()
}

/// Opening fails naming `damaged` and `ctsd reindex`; a reindex brings
/// every trace back.
fn refused_until_reindexed(cfg: &StoreConfig, damaged: &std::path::Path, traces: usize) {
    let err = EmbeddedStore::open(cfg.clone()).err().expect("refused");
    let msg = err.to_string();
    assert!(msg.contains(&damaged.display().to_string()), "{msg}");
    assert!(msg.contains("ctsd reindex"), "{msg}");
    EmbeddedStore::reindex(cfg.clone()).unwrap();
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    assert_eq!(all_pages(&store, "p", &[], 200).len(), traces);
}

#[test]
fn a_hand_edited_manifest_is_refused_not_believed() {
    let (dir, cfg, ids) = filled_dir(64 << 10, 4);
    let manifest = dir.path().join("index/MANIFEST.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let edited = text.replace("\"durable_seq\":200", "\"durable_seq\":150");
    assert_ne!(edited, text);
    std::fs::write(&manifest, edited).unwrap();
    refused_until_reindexed(&cfg, &manifest, ids.len());
}

#[test]
fn a_damaged_segment_is_named_and_reindex_restores_it() {
    let (dir, cfg, ids) = filled_dir(64 << 10, 4);
    let seg = index_file(dir.path(), "seg");
    let mut data = std::fs::read(&seg).unwrap();
    data[100] ^= 0x08;
    std::fs::write(&seg, data).unwrap();
    refused_until_reindexed(&cfg, &seg, ids.len());
}

#[test]
fn a_damaged_journal_summary_is_ignored_and_its_file_scanned() {
    let (dir, cfg, ids) = filled_dir(8 << 10, 8);
    let meta = wal_files(dir.path())[0].with_extension("meta");
    let text = std::fs::read_to_string(&meta).unwrap();
    std::fs::write(&meta, text.replace("\"last_seq\":", "\"last_seq\":1")).unwrap();
    let store = EmbeddedStore::open(cfg).unwrap();
    assert_eq!(all_pages(&store, "p", &[], 200).len(), ids.len());
    assert_eq!(read_all(&store, 0, 1000).len(), ids.len());
}

#[test]
fn check_finds_the_damage_and_repair_quarantines_it_keeping_the_rest() {
    let (dir, cfg, ids) = filled_dir(64 << 20, 6);
    let report = EmbeddedStore::check(&cfg).unwrap();
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert_eq!((report.records, report.traces), (6, 300));

    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    assert!(matches!(
        EmbeddedStore::check(&cfg),
        Err(StoreError::Locked { .. })
    ));
    drop(store);

    // The third record (traces 101..=150) gets a flipped byte.
    let wal = wal_files(dir.path()).pop().unwrap();
    let mut data = std::fs::read(&wal).unwrap();
    let scan = cts_store::journal::scan_bytes(1, &data);
    let third = scan.records[2].frames[2];
    let bad = &data[third.offset as usize + 20..third.offset as usize + 21].to_vec();
    data[third.offset as usize + 20] ^= 0x01;
    std::fs::write(&wal, &data).unwrap();

    let report = EmbeddedStore::check(&cfg).unwrap();
    assert_eq!(report.damage.len(), 1, "{:?}", report.damage);
    let d = &report.damage[0];
    assert_eq!(d.path, wal);
    assert_eq!(d.seqs, Some((101, 150)));
    let (offset, len) = d.range.unwrap();
    assert!(offset < third.offset as u64 && offset + len > third.offset as u64);

    let repaired = EmbeddedStore::repair(cfg.clone()).unwrap();
    assert_eq!(repaired.quarantined.len(), 1);
    assert_eq!(repaired.indexed, 250);
    let q = &repaired.quarantined[0];
    let saved = std::fs::read(dir.path().join("quarantine").join(&q.saved_as)).unwrap();
    assert_eq!(saved.len() as u64, len);
    assert_eq!(
        &saved[(third.offset as u64 + 20 - offset) as usize..][..1],
        &[bad[0] ^ 0x01]
    );
    assert!(EmbeddedStore::check(&cfg).unwrap().damage.is_empty());

    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    let got: std::collections::HashSet<String> = all_pages(&store, "p", &[], 200)
        .into_iter()
        .map(|(_, id)| id)
        .collect();
    let expect: std::collections::HashSet<String> = ids
        .iter()
        .enumerate()
        .filter(|(i, _)| !(100..150).contains(i))
        .map(|(_, id)| id.clone())
        .collect();
    assert_eq!(got, expect);
    assert_eq!(store.stats().quarantined, repaired.quarantined);
    // A journal consumer reading across the quarantined range is told.
    assert_eq!(store.read_journal(0, 1000).unwrap().entries.len(), 100);
    assert!(matches!(
        store.read_journal(100, 10),
        Err(StoreError::JournalGone {
            after_seq: 100,
            oldest_seq: 151
        })
    ));
    assert_eq!(read_all(&store, 150, 1000).len(), 150);
    drop(store);
    assert_eq!(EmbeddedStore::acknowledge_quarantine(&cfg).unwrap(), 1);
    let store = EmbeddedStore::open(cfg).unwrap();
    assert!(store.stats().quarantined.is_empty());
}

/// Rewrites every file that has a format version in the first format:
/// manifest and summaries as bare JSON, segments without their CRC and with
/// a frame table that doc entries name by ordinal.
fn to_previous_format(dir: &std::path::Path) {
    let unwrap_body = |path: &std::path::Path| {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        std::fs::write(path, serde_json::to_vec(&v["body"]).unwrap()).unwrap();
    };
    unwrap_body(&dir.join("index/MANIFEST.json"));
    for wal in wal_files(dir) {
        let meta = wal.with_extension("meta");
        if meta.exists() {
            unwrap_body(&meta);
        }
    }
    for part in std::fs::read_dir(dir.join("index")).unwrap() {
        let part = part.unwrap().path();
        if !part.is_dir() {
            continue;
        }
        for seg in std::fs::read_dir(&part).unwrap() {
            let seg = seg.unwrap().path();
            let data = std::fs::read(&seg).unwrap();
            std::fs::write(&seg, segment_format_1(&data)).unwrap();
        }
    }
}

/// A format-3 segment rewritten in format 1.
fn segment_format_1(data: &[u8]) -> Vec<u8> {
    let word = |at: usize| u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
    let n = data.len();
    assert_eq!(word(n - 4), 0x4354_5333, "a format-3 segment");
    let meta_at = n - 12 - word(n - 12) as usize;
    let mut meta: serde_json::Value = serde_json::from_slice(&data[meta_at..n - 12]).unwrap();
    let at = |meta: &serde_json::Value, k: &str| meta[k].as_u64().unwrap() as usize;
    // Frames in the order docs first name them; entries name their ordinal.
    let (mut frames, mut ordinals): (Vec<&[u8]>, Vec<u8>) = (Vec::new(), Vec::new());
    for entry in data[at(&meta, "docs_at")..at(&meta, "postings_at")].chunks_exact(37) {
        let frame = &entry[24..36];
        let ord = frames.iter().position(|f| *f == frame).unwrap_or_else(|| {
            frames.push(frame);
            frames.len() - 1
        });
        ordinals.extend_from_slice(&entry[..24]);
        ordinals.extend_from_slice(&(ord as u32).to_le_bytes());
        ordinals.push(entry[36]);
    }
    let mut out: Vec<u8> = frames.concat();
    let docs_at = out.len();
    out.extend_from_slice(&ordinals);
    // Format 1 is smaller: sections after the docs move back.
    let shift = at(&meta, "postings_at") - out.len();
    out.extend_from_slice(&data[at(&meta, "postings_at")..meta_at]);
    for k in [
        "postings_at",
        "terms_at",
        "tsample_at",
        "dsample_at",
        "bloom_at",
    ] {
        meta[k] = (at(&meta, k) - shift).into();
    }
    meta["frames"] = frames.len().into();
    meta["docs_at"] = docs_at.into();
    let json = serde_json::to_vec(&meta).unwrap();
    out.extend_from_slice(&json);
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&0x4354_5347u32.to_le_bytes());
    out
}

#[test]
fn a_data_directory_of_the_previous_format_still_opens() {
    let (dir, cfg, ids) = filled_dir(8 << 10, 6);
    to_previous_format(dir.path());
    let report = EmbeddedStore::check(&cfg).unwrap();
    assert!(report.damage.is_empty(), "{:?}", report.damage);
    assert!(report.segments > 0);
    let store = EmbeddedStore::open(cfg.clone()).unwrap();
    assert_eq!(all_pages(&store, "p", &[], 200).len(), ids.len());
    assert_eq!(read_all(&store, 0, 1000).len(), ids.len());
    store
        .append(traces("p", &[(now(), "ECS", "bob", None)]))
        .unwrap();
    drop(store);
    let store = EmbeddedStore::open(cfg).unwrap();
    assert_eq!(all_pages(&store, "p", &[], 200).len(), ids.len() + 1);
}
