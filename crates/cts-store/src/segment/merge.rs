//! Merging segments of one partition into one: doc tables are merged in
//! query order, term tables in hash order with every ordinal renumbered.
//! Both are read and written in chunks, so a merge holds little more than
//! the renumbering (4 bytes per doc), whatever the segments' size, and a
//! caller-given `pace` runs between chunks (to yield, or to abort).

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::build::{self, DocTable, SegmentFile, TermTable};
use super::{Posting, Segment};
use crate::memtable::{Candidate, Key};
use crate::StoreError;

/// Entries read from an input at a time.
const CHUNK: u32 = 4096;

/// What a merge calls between chunks; an error aborts the merge.
pub type Pace<'a> = &'a mut dyn FnMut() -> Result<(), StoreError>;

/// Writes segment `id` holding every doc and term of `inputs`, which must
/// be segments of one partition, in the same format a flush writes.
pub fn merge(
    dir: &Path,
    id: u64,
    inputs: &[Arc<Segment>],
    fsync: bool,
    pace: Pace<'_>,
) -> Result<PathBuf, StoreError> {
    let Some(partition) = inputs.first().map(|s| s.partition()) else {
        return Err(StoreError::Unavailable("a merge needs segments".into()));
    };
    if inputs.iter().any(|s| s.partition() != partition) {
        return Err(StoreError::Unavailable(
            "only segments of one partition are merged".into(),
        ));
    }
    let docs_total: u64 = inputs.iter().map(|s| s.docs() as u64).sum();
    if docs_total >= u32::MAX as u64 {
        return Err(StoreError::Unavailable(
            "the merged segment would hold more than 2^32 - 1 traces".into(),
        ));
    }
    let mut out = SegmentFile::create(dir, partition, id, fsync)?;
    let mut docs = DocTable::new(&out);
    let renumber = merge_docs(&mut out, &mut docs, inputs, pace)?;
    let mut terms = TermTable::new(&out);
    merge_terms(&mut out, &mut terms, inputs, &renumber, pace)?;
    build::finish(out, partition, id, docs, terms)
}

/// Entries of one input still to merge, read a chunk at a time.
struct Cursor<T> {
    next: u32,
    end: u32,
    buf: VecDeque<(u32, T)>,
}

impl<T> Cursor<T> {
    fn new(start: u32, end: u32) -> Self {
        Cursor {
            next: start,
            end,
            buf: VecDeque::new(),
        }
    }

    /// The next entry (with its ordinal in the input), reading a chunk with
    /// `read(first, n)` when the buffer is empty.
    fn head(
        &mut self,
        pace: Pace<'_>,
        read: impl FnOnce(u32, u32) -> Result<Vec<T>, StoreError>,
    ) -> Result<Option<&T>, StoreError> {
        if self.buf.is_empty() && self.next < self.end {
            pace()?;
            let n = CHUNK.min(self.end - self.next);
            let first = self.next;
            self.buf.extend((first..).zip(read(first, n)?));
            self.next += n;
        }
        Ok(self.buf.front().map(|(_, e)| e))
    }

    fn take(&mut self) -> Option<(u32, T)> {
        self.buf.pop_front()
    }
}

/// Writes the docs of every input in query order; returns, per input, the
/// new ordinal of each of its docs.
fn merge_docs(
    out: &mut SegmentFile,
    docs: &mut DocTable,
    inputs: &[Arc<Segment>],
    pace: Pace<'_>,
) -> Result<Vec<Vec<u32>>, StoreError> {
    let mut renumber: Vec<Vec<u32>> = inputs
        .iter()
        .map(|s| vec![u32::MAX; s.docs() as usize])
        .collect();
    let projects: BTreeSet<&str> = inputs
        .iter()
        .flat_map(|s| s.meta.projects.iter().map(|p| p.0.as_str()))
        .collect();
    for project in projects {
        let mut cursors: Vec<(usize, Cursor<Candidate>)> = inputs
            .iter()
            .enumerate()
            .filter_map(|(k, s)| {
                s.project_range(project)
                    .map(|(a, b)| (k, Cursor::new(a, b)))
            })
            .collect();
        // Newest first; equal keys (never expected) in input order.
        let mut heap: BinaryHeap<(Key, Reverse<usize>)> = BinaryHeap::new();
        for (c, (k, cursor)) in cursors.iter_mut().enumerate() {
            let seg = &inputs[*k];
            if let Some(e) = cursor.head(pace, |a, n| seg.read_docs(a, n))? {
                heap.push((e.key, Reverse(c)));
            }
        }
        while let Some((_, Reverse(c))) = heap.pop() {
            let (k, cursor) = &mut cursors[c];
            let seg = &inputs[*k];
            let (old, doc) = cursor.take().expect("the heap holds its head");
            let new = docs.push(out, project, doc.key, doc.frame, doc.idx)?;
            renumber[*k][old as usize] = new;
            if let Some(e) = cursor.head(pace, |a, n| seg.read_docs(a, n))? {
                heap.push((e.key, Reverse(c)));
            }
        }
    }
    Ok(renumber)
}

/// Writes the terms of every input in hash order, each with the union of
/// its posting lists under the new ordinals.
fn merge_terms(
    out: &mut SegmentFile,
    terms: &mut TermTable,
    inputs: &[Arc<Segment>],
    renumber: &[Vec<u32>],
    pace: Pace<'_>,
) -> Result<(), StoreError> {
    let mut cursors: Vec<Cursor<(u64, Posting)>> = inputs
        .iter()
        .map(|s| Cursor::new(0, s.meta.terms))
        .collect();
    let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
    for (k, cursor) in cursors.iter_mut().enumerate() {
        let seg = &inputs[k];
        if let Some(e) = cursor.head(pace, |a, n| seg.read_terms(a, n))? {
            heap.push(Reverse((e.0, k)));
        }
    }
    let mut ords = Vec::new();
    while let Some(&Reverse((hash, _))) = heap.peek() {
        ords.clear();
        while let Some(&Reverse((h, k))) = heap.peek() {
            if h != hash {
                break;
            }
            heap.pop();
            let seg = &inputs[k];
            let (_, (_, posting)) = cursors[k].take().expect("the heap holds its head");
            for o in seg.decode(&posting)? {
                match renumber[k].get(o as usize) {
                    Some(&n) if n != u32::MAX => ords.push(n),
                    _ => return Err(seg.corrupt("a posting names a doc outside every project")),
                }
            }
            if let Some(e) = cursors[k].head(pace, |a, n| seg.read_terms(a, n))? {
                // A term table out of hash order would merge into a wrong one.
                if e.0 <= h {
                    return Err(seg.corrupt("term table out of order"));
                }
                heap.push(Reverse((e.0, k)));
            }
        }
        ords.sort_unstable();
        ords.dedup();
        terms.push(out, hash, &ords)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::FrameRef;
    use crate::memtable::{Candidate, IndexValues, Memtable, Probe, TopK, NF};
    use cts_model::Field;

    /// Segment `n` of partition 0: traces of two projects whose times
    /// interleave with the other segments', some sharing values.
    fn input(dir: &Path, n: u32, traces: u32) -> Arc<Segment> {
        input_at(dir, 0, 1000, n, traces)
    }

    /// As [`input`], in `partition`, with times from `base`.
    fn input_at(dir: &Path, partition: i64, base: i64, n: u32, traces: u32) -> Arc<Segment> {
        let mut mem = Memtable::default();
        for i in 0..traces {
            let service = format!("S{}", i % 3);
            let user = format!("u{}", (i + n) % 5);
            let mut values = [None; NF];
            values[0] = Some(service.as_str());
            values[Field::ALL.iter().position(|f| *f == Field::User).unwrap()] =
                Some(user.as_str());
            let project = if (i + n).is_multiple_of(3) { "a" } else { "b" };
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            id[4] = n as u8;
            let frame = FrameRef {
                file: n,
                offset: i / 8 * 100,
                len: 100,
            };
            let time = base + (i * 3 + n) as i64 % 500;
            mem.insert(
                &IndexValues::new(project, time, id, values),
                frame,
                (i % 8) as u8,
                i as u64 + 1,
            );
        }
        let members: Vec<u32> = (0..traces).collect();
        let path = super::super::write(dir, partition, n as u64, &mem, &members, false).unwrap();
        Arc::new(Segment::open(&path).unwrap())
    }

    fn page(segments: &[Arc<Segment>], probe: &Probe<'_>, k: usize) -> Vec<Candidate> {
        let mut top = TopK::new(k);
        for s in segments {
            s.probe(probe, &mut top, k).unwrap();
        }
        top.into_sorted()
    }

    #[test]
    fn a_merged_segment_answers_as_its_inputs_did() {
        let dir = tempfile::tempdir().unwrap();
        // Large enough that the doc and term tables span several chunks.
        let inputs: Vec<_> = (1..=3)
            .map(|n| input(dir.path(), n, 5000 + n * 7))
            .collect();
        let mut paces = 0;
        let path = merge(dir.path(), 9, &inputs, false, &mut || {
            paces += 1;
            Ok(())
        })
        .unwrap();
        assert!(paces > 10, "the merge paces itself between chunks");
        // The term table went through a spill file (the unit tests' buffer
        // is small), which is gone with the staged file.
        let files = std::fs::read_dir(dir.path().join("p0")).unwrap().count();
        assert_eq!(files, 4, "three inputs and the merged segment");
        let merged = Arc::new(Segment::open(&path).unwrap());
        assert_eq!(merged.size, std::fs::metadata(&path).unwrap().len());
        assert_answers_as_inputs(&merged, &inputs);
    }

    /// Every kind of query answers from `merged` as from its `inputs`.
    fn assert_answers_as_inputs(merged: &Arc<Segment>, inputs: &[Arc<Segment>]) {
        assert_eq!(merged.docs(), inputs.iter().map(|s| s.docs()).sum::<u32>());
        let merged = std::slice::from_ref(merged);
        let filters = [
            vec![],
            vec![(Field::ServiceType, "S1".to_string())],
            vec![(Field::ServiceType, "ECS".to_string())],
            vec![(Field::User, "u3".to_string())],
            vec![
                (Field::ServiceType, "S2".to_string()),
                (Field::User, "u0".to_string()),
            ],
            vec![(Field::User, "nobody".to_string())],
        ];
        let lo = inputs.iter().map(|s| s.min_time()).min().unwrap();
        for project in ["a", "b", "c"] {
            for f in &filters {
                for (from, to) in [(0, i64::MAX), (lo + 100, lo + 300), (lo + 499, lo + 600)] {
                    for k in [1, 200, 100_000] {
                        let probe = Probe {
                            project,
                            from,
                            upper: (to, [0; 16]),
                            filters: f,
                        };
                        assert_eq!(
                            page(merged, &probe, k),
                            page(inputs, &probe, k),
                            "{project} {f:?} {from}..{to} k={k}"
                        );
                    }
                }
            }
        }
        for s in inputs {
            for c in page(std::slice::from_ref(s), &everything("a", &[]), 100_000) {
                assert_eq!(merged[0].find("a", &c.key.1).unwrap(), Some(c));
                assert_eq!(merged[0].find("b", &c.key.1).unwrap(), None);
            }
        }
    }

    fn everything<'a>(project: &'a str, filters: &'a [(Field, String)]) -> Probe<'a> {
        Probe {
            project,
            from: 0,
            upper: (i64::MAX, [0; 16]),
            filters,
        }
    }

    /// A format-2 segment as the writer before format 3 wrote it, and the
    /// journal file it points into (kept in `fuzz/corpus` as written).
    fn format2() -> (Arc<Segment>, Vec<u8>) {
        let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        let s = Segment::open(&corpus.join("segment/valid-forty-traces-format2")).unwrap();
        let wal = std::fs::read(corpus.join("journal/valid-two-records-format2")).unwrap();
        (Arc::new(s), wal)
    }

    #[test]
    fn a_format_2_segment_is_read_through_its_frame_table_on_disk() {
        let (s, wal) = format2();
        assert_eq!(s.doc_entry, super::super::DOC_ENTRY_V2);
        let all = page(std::slice::from_ref(&s), &everything("a", &[]), 1000);
        assert_eq!(all.len(), 60);
        let dicts_dir = tempfile::tempdir().unwrap();
        let dicts = crate::dict::Dictionaries::open(dicts_dir.path(), false).unwrap();
        let mut ecs = Vec::new();
        for c in &all {
            // The frame the segment names holds the trace it names.
            let frame = &wal[c.frame.offset as usize..(c.frame.offset + c.frame.len) as usize];
            let (key, service) =
                crate::journal::with_frame_bytes(&dicts, Path::new("wal"), frame, |raw| {
                    let doc = crate::journal::split_frame(raw)[c.idx as usize];
                    let t = cts_model::IndexedFields::from_json(doc).unwrap();
                    assert_eq!(&*t.project_id, "a");
                    let key = (t.time, cts_model::query::trace_id_bytes(&t.trace_id));
                    (key, t.value(Field::ServiceType).map(str::to_string))
                })
                .unwrap();
            assert_eq!(key, c.key);
            if service.as_deref() == Some("ECS") {
                ecs.push(*c);
            }
            assert_eq!(s.find("a", &c.key.1).unwrap(), Some(*c));
        }
        assert!(!ecs.is_empty() && ecs.len() < all.len());
        let filter = [(Field::ServiceType, "ECS".to_string())];
        assert_eq!(
            page(std::slice::from_ref(&s), &everything("a", &filter), 1000),
            ecs
        );
    }

    #[test]
    fn format_2_and_format_3_segments_merge_into_format_3() {
        let dir = tempfile::tempdir().unwrap();
        let (old, _) = format2();
        let new = input_at(dir.path(), old.partition(), old.min_time(), 1, 3000);
        assert_eq!(new.doc_entry, super::super::DOC_ENTRY);
        let inputs = vec![old, new];
        let path = merge(dir.path(), 9, &inputs, false, &mut || Ok(())).unwrap();
        let merged = Arc::new(Segment::open(&path).unwrap());
        assert_eq!(merged.doc_entry, super::super::DOC_ENTRY);
        assert_answers_as_inputs(&merged, &inputs);
    }

    #[test]
    fn a_merged_bloom_filter_is_sized_by_its_own_terms() {
        let dir = tempfile::tempdir().unwrap();
        let inputs: Vec<_> = (1..=3).map(|n| input(dir.path(), n, 2000)).collect();
        let path = merge(dir.path(), 9, &inputs, false, &mut || Ok(())).unwrap();
        let merged = Segment::open(&path).unwrap();
        let listed: u32 = inputs.iter().map(|s| s.meta.terms).sum();
        assert!(merged.meta.terms < listed, "the inputs share terms");
        // It is held in memory while the segment is among those used most.
        assert_eq!(
            merged.with_summary(|_, bloom| bloom.len()),
            (merged.meta.terms as usize * super::super::BLOOM_BITS_PER_TERM).div_ceil(64)
        );
    }

    #[test]
    fn an_aborted_merge_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let inputs: Vec<_> = (1..=2).map(|n| input(dir.path(), n, 9000)).collect();
        let mut calls = 0;
        let err = merge(dir.path(), 9, &inputs, false, &mut || {
            calls += 1;
            if calls > 3 {
                return Err(StoreError::Unavailable("closing".into()));
            }
            Ok(())
        })
        .unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)));
        let mut left: Vec<_> = std::fs::read_dir(dir.path().join("p0"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["0000000001.seg", "0000000002.seg"]);
    }
}
