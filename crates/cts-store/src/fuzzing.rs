//! Entry points for fuzzing the decoders of stored bytes: the `cargo fuzz`
//! targets in `fuzz/` and the replay of their corpus (`tests/corpus.rs`)
//! call these. Each takes arbitrary bytes and must return, never panic; the
//! result says whether the bytes decoded.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use cts_model::Field;

use crate::dict::Dictionaries;
use crate::journal;
use crate::memtable::{Probe, TopK};
use crate::segment::{self, Segment};

/// Dictionaries of an empty directory: frames that name one fail cleanly.
fn no_dictionaries() -> &'static Arc<Dictionaries> {
    static DICTS: OnceLock<Arc<Dictionaries>> = OnceLock::new();
    DICTS.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("cts-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Dictionaries::open(&dir, false).expect("an empty dictionary directory")
    })
}

/// A journal file: its records, their frames and documents.
pub fn journal_file(data: &[u8]) -> bool {
    let scan = journal::scan_bytes(1, data);
    for r in &scan.records {
        for f in &r.frames {
            let at = f.offset as usize;
            frame(&data[at..at + f.len as usize]);
        }
    }
    if let journal::Tail::Corrupt { resumes: Some(n) } = scan.tail {
        journal_file(&data[scan.valid_len as usize + n as usize..]);
    }
    scan.tail == journal::Tail::Clean
}

/// One frame (header included): decompressed and split into documents.
pub fn frame(data: &[u8]) -> bool {
    journal::with_frame_bytes(no_dictionaries(), Path::new("<fuzz>"), data, |raw| {
        journal::split_frame(raw).len()
    })
    .is_ok()
}

/// A posting list: 4 bytes of count, then the varints.
pub fn postings(data: &[u8]) -> bool {
    let Some((count, bytes)) = data.split_first_chunk::<4>() else {
        return false;
    };
    segment::decode_postings(bytes, u32::from_le_bytes(*count), u32::MAX).is_ok()
}

/// An index manifest.
pub fn manifest(data: &[u8]) -> bool {
    crate::embedded::decode_manifest(data).is_ok()
}

/// An index segment: opened, then probed and searched as queries do.
pub fn segment(data: &[u8]) -> bool {
    thread_local! {
        static PATH: PathBuf = std::env::temp_dir().join(format!(
            "cts-fuzz-{}-{:?}.seg",
            std::process::id(),
            std::thread::current().id()
        ));
    }
    PATH.with(|path| {
        std::fs::write(path, data).expect("a temporary file");
        segment_file(path).is_ok()
    })
}

/// Opens the segment at `path` and runs every kind of read on it.
pub fn segment_file(path: &Path) -> Result<(), crate::StoreError> {
    let s = Segment::open(path)?;
    let filters = vec![(Field::ServiceType, "S1".to_string())];
    for project in ["a", "b"] {
        let probe = Probe {
            project,
            from: 0,
            upper: (i64::MAX, [0xff; 16]),
            filters: &filters,
        };
        let mut top = TopK::new(50);
        s.probe(&probe, &mut top, 50)?;
        // Every doc of the project: its entries and frames are read.
        let everything = Probe {
            filters: &[],
            ..probe
        };
        s.probe(&everything, &mut TopK::new(1000), 1000)?;
        let unfiltered = Probe {
            filters: &[],
            from: 1100,
            upper: (1200, [0; 16]),
            ..probe
        };
        s.probe(&unfiltered, &mut top, 50)?;
        let mut id = [0u8; 16];
        id[0] = 7;
        s.find(project, &id)?;
    }
    Ok(())
}
