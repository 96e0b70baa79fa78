//! Query planning: which index sources a ListTraces page reads, in which
//! order, and the reads of trace bodies from the journal.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;

use std::sync::atomic::Ordering;

use cts_model::{Field, IndexedFields, TraceQuery};

use super::{now_ms, EmbeddedStore, Inner};
use crate::journal::{self, FrameRef};
use crate::memtable::{Candidate, Key, Probe, TopK};
use crate::segment::{self, Segment};
use crate::{QueryPage, StoreError};

const MARKER_CACHE: usize = 4096;

#[derive(Default)]
pub(super) struct MarkerCache {
    keys: HashMap<(String, [u8; 16]), i64>,
    order: std::collections::VecDeque<(String, [u8; 16])>,
}

impl MarkerCache {
    pub(super) fn get(&self, project: &str, id: &[u8; 16]) -> Option<Key> {
        self.keys
            .get(&(project.to_string(), *id))
            .map(|time| (*time, *id))
    }

    pub(super) fn put(&mut self, project: &str, key: Key) {
        let entry = (project.to_string(), key.1);
        if self.keys.insert(entry.clone(), key.0).is_none() {
            self.order.push_back(entry);
            if self.order.len() > MARKER_CACHE {
                if let Some(old) = self.order.pop_front() {
                    self.keys.remove(&old);
                }
            }
        }
    }
}

impl EmbeddedStore {
    pub(super) fn reader(&self, file: u32) -> Option<Arc<File>> {
        self.inner.readers.get(&self.inner.journal_dir, file)
    }

    /// Reads the bodies of the candidates, in their order, each checked
    /// against what the index said of it (see [`checked`]). A body whose
    /// journal file retention removed meanwhile is left out. Frames come
    /// from the frame cache when it holds them.
    fn fetch(
        &self,
        cands: &[Candidate],
        project: &str,
        filters: &[(Field, String)],
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        // Each frame is read and decompressed once, however many of the
        // page's traces it holds.
        let mut by_frame: HashMap<FrameRef, Vec<(usize, u8)>> = HashMap::new();
        for (pos, c) in cands.iter().enumerate() {
            by_frame.entry(c.frame).or_default().push((pos, c.idx));
        }
        // Start every frame's read before waiting for the first, as a few
        // large reads where frames lie close together (a page of traces is
        // usually a stretch of the journal).
        let mut frames: Vec<(FrameRef, Vec<(usize, u8)>)> = by_frame.into_iter().collect();
        frames.sort_by_key(|(f, _)| (f.file, f.offset));
        let ranges: Vec<FrameRef> = frames.iter().map(|(f, _)| *f).collect();
        for span in coalesce(&ranges, READ_GAP) {
            if let Some(file) = self.reader(span.file) {
                segment::advise_willneed(&file, span.offset as u64, span.len as u64);
            }
        }
        // A page of a rare value reads a frame for each of its traces
        // (about 4 ms of CPU for 200): the helper reads frames beside this
        // thread, when it is not busy with another page.
        let fetched = if frames.len() >= HELP_FRAMES {
            let inner = self.inner.clone();
            let (cands, project, filters) = (cands.to_vec(), project.to_string(), filters.to_vec());
            self.inner
                .fetch_helper
                .share(frames, move |(frame, wanted), out| {
                    read_frame(&inner, *frame, wanted, &cands, &project, &filters, out)
                })?
        } else {
            let mut out = Vec::with_capacity(cands.len());
            for (frame, wanted) in &frames {
                read_frame(
                    &self.inner,
                    *frame,
                    wanted,
                    cands,
                    project,
                    filters,
                    &mut out,
                )?;
            }
            out
        };
        let mut out: Vec<Option<Vec<u8>>> = vec![None; cands.len()];
        for (pos, doc) in fetched {
            out[pos] = doc;
        }
        Ok(out.into_iter().flatten().collect())
    }

    pub(super) fn query_page(&self, q: &TraceQuery) -> Result<QueryPage, StoreError> {
        let cutoff = now_ms() - self.inner.config.retention_ms;
        if let Some(id) = &q.trace_id {
            let bytes = cts_model::query::trace_id_bytes(id);
            let found = self.find(&q.project_id, &bytes, None)?;
            let cands: Vec<Candidate> = found.into_iter().filter(|c| c.key.0 >= cutoff).collect();
            return Ok(QueryPage {
                traces: self.fetch(&cands, &q.project_id, &[])?,
                marker: None,
            });
        }
        let mut upper: Key = (q.to, [0u8; 16]);
        if let Some(next) = &q.next {
            let id = cts_model::query::trace_id_bytes(next);
            let cached = self.markers.lock().get(&q.project_id, &id);
            let key = match cached {
                Some(key) => Some(key),
                None => self.find(&q.project_id, &id, None)?.map(|c| c.key),
            };
            match key {
                Some(key) => upper = upper.min(key),
                // The marker's trace expired, and everything older with it.
                None => return Ok(QueryPage::default()),
            }
        }
        let probe = Probe {
            project: &q.project_id,
            from: q.from.max(cutoff - 1),
            upper,
            filters: &q.filters,
        };
        let k = q.limit + 1;
        let mut top;
        let (frozen, mut segments) = loop {
            top = TopK::new(k);
            let generation = {
                let active = self.inner.active.read();
                active.probe(&probe, &mut top);
                active.generation
            };
            // The memtable just read may have been frozen since: it is then
            // among the frozen ones too, and read once. Were it flushed
            // already, its traces would be in segments too: read again.
            let idx = self.inner.index.read();
            if idx.flushed_generation < generation {
                let frozen: Vec<_> = (idx.frozen.iter())
                    .filter(|m| m.generation != generation)
                    .cloned()
                    .collect();
                break (frozen, idx.segments.clone());
            }
        };
        for m in &frozen {
            m.probe(&probe, &mut top);
        }
        // Only segments that overlap the window; newest first.
        segments.retain(|s| s.max_time() > probe.from && s.min_time() <= probe.upper.0);
        segments.sort_by_key(|s| std::cmp::Reverse(s.max_time()));
        // Most queries are answered by the newest one or two segments. Past
        // those, segments go in growing windows (4, 8, 16) whose reads are
        // all started before any is waited for: term blocks, then doc
        // entries. When the index is not in the page cache this turns a
        // chain of random reads into a few rounds of parallel ones, without
        // reading ahead for segments a dense query never needs.
        const SEQUENTIAL: usize = 2;
        const MAX_WINDOW: usize = 16;
        let passed = |s: &Segment, top: &TopK| {
            top.floor()
                .is_some_and(|floor| (s.max_time(), [0xff; 16]) < floor)
        };
        let mut i = 0;
        let mut width = 4;
        while i < segments.len() && !passed(&segments[i], &top) {
            if i < SEQUENTIAL {
                segments[i].probe(&probe, &mut top, k)?;
                i += 1;
                continue;
            }
            let window = &segments[i..(i + width).min(segments.len())];
            for s in window {
                s.prefetch(&probe);
            }
            let hits = window
                .iter()
                .map(|s| s.hits(&probe, k))
                .collect::<Result<Vec<_>, _>>()?;
            for (s, h) in window.iter().zip(&hits) {
                if !passed(s, &top) {
                    s.offer(h, &mut top)?;
                }
            }
            i += window.len();
            width = (width * 2).min(MAX_WINDOW);
        }
        let mut cands = top.into_sorted();
        let more = cands.len() > q.limit;
        cands.truncate(q.limit);
        let last = cands.last().filter(|_| more);
        if let Some(c) = last {
            self.markers.lock().put(&q.project_id, c.key);
        }
        let marker = last.map(|c| uuid::Uuid::from_bytes(c.key.1).hyphenated().to_string());
        Ok(QueryPage {
            traces: self.fetch(&cands, &q.project_id, &q.filters)?,
            marker,
        })
    }
}

/// A fetched trace's position in the page; `None` when it does not match
/// the query after all (see [`checked`]).
type Fetched = (usize, Option<Vec<u8>>);

/// Reads `frame` and checks each of the page's traces in it (`wanted`:
/// their positions and indexes in the frame; see [`checked`]), pushing them
/// to `out` by position. Nothing when retention removed its journal file.
fn read_frame(
    inner: &Inner,
    frame: FrameRef,
    wanted: &[(usize, u8)],
    cands: &[Candidate],
    project: &str,
    filters: &[(Field, String)],
    out: &mut Vec<Fetched>,
) -> Result<(), StoreError> {
    let Some(file) = inner.readers.get(&inner.journal_dir, frame.file) else {
        return Ok(());
    };
    let path = inner.journal_dir.join(journal::file_name(frame.file));
    let mut pick = |raw: &[u8]| {
        let docs = journal::split_frame(raw);
        for &(pos, idx) in wanted {
            let doc = docs.get(idx as usize).copied().unwrap_or_default();
            out.push((pos, checked(doc, &cands[pos], project, filters)?));
        }
        Ok::<(), String>(())
    };
    // Checked again on a hit too: the filters are this query's.
    let frames = &inner.frames;
    let read = match frames.get(frame) {
        Some(raw) => Ok(pick(&raw)),
        None => journal::with_frame(&inner.dicts, &file, &path, frame, |raw| {
            if frames.enabled() {
                frames.insert(frame, raw.into());
            }
            pick(raw)
        }),
    };
    read.and_then(|r| {
        r.map_err(|detail| StoreError::Corrupt {
            what: "journal frame",
            path: path.clone(),
            detail: format!("{detail} (frame at byte {})", frame.offset),
        })
    })
    .inspect_err(|e| {
        if matches!(e, StoreError::Corrupt { .. }) {
            inner.corrupt_reads.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                file = %path.display(),
                offset = frame.offset,
                len = frame.len,
                error = %e,
                "a stored trace failed its check; its page is answered with an error"
            );
        }
    })
}

/// A fetched trace, checked: it must be the trace the index named (its
/// project, time and id), or the index points at the wrong bytes (an
/// error); and it must match the query's filters, which the index matched
/// only by 64-bit hashes (on a collision the trace is left out, `None`).
fn checked(
    doc: &[u8],
    cand: &Candidate,
    project: &str,
    filters: &[(Field, String)],
) -> Result<Option<Vec<u8>>, String> {
    // Only the indexed fields, borrowed from `doc`: request, response and
    // the rest are skipped, not decoded (this runs for every fetched trace).
    let t = IndexedFields::from_json(doc)
        .map_err(|e| format!("document {} of the frame is not a trace: {e}", cand.idx))?;
    let key = (t.time, cts_model::query::trace_id_bytes(&t.trace_id));
    if *t.project_id != *project || key != cand.key {
        return Err(format!(
            "document {} of the frame is not the trace the index names",
            cand.idx
        ));
    }
    let matches = filters
        .iter()
        .all(|(field, value)| t.value(*field) == Some(value.as_str()));
    Ok(matches.then(|| doc.to_vec()))
}

/// Pages reading at least this many frames share them with the helper.
const HELP_FRAMES: usize = 48;

/// Frames closer than this are read as one range.
const READ_GAP: u32 = 32 << 10;

/// Merges sorted frame ranges of the same file whose gaps are below `gap`.
fn coalesce(sorted: &[FrameRef], gap: u32) -> Vec<FrameRef> {
    let mut out: Vec<FrameRef> = Vec::new();
    for f in sorted {
        match out.last_mut() {
            Some(last) if last.file == f.file && f.offset <= last.offset + last.len + gap => {
                last.len = last.len.max(f.offset + f.len - last.offset);
            }
            _ => out.push(*f),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memtable::IndexValues;

    #[test]
    fn a_fetched_trace_must_be_the_named_one_and_match_the_filters() {
        let now = now_ms();
        let body = serde_json::json!({"traces": [{
            "time": now, "service_type": "ECS", "resource_type": "vm",
            "trace_name": "deleteServer", "trace_type": "ApiCall", "code": "200",
            "user": {"id": "u", "name": "bob", "domain": {"id": "d", "name": "dn"}},
        }]});
        let ctx = cts_model::ReportContext {
            project_id: "p",
            now_ms: now,
            oldest_time_ms: now - 1000,
            newest_time_ms: now + 1000,
            max_traces: 10,
        };
        let trace = cts_model::parse_report(&serde_json::to_vec(&body).unwrap(), &ctx)
            .unwrap()
            .remove(0)
            .into_owned();
        let doc = trace.to_json();
        let v = IndexValues::of(&IndexedFields::of(&trace));
        let cand = Candidate {
            key: (v.time, v.id),
            frame: FrameRef {
                file: 1,
                offset: 0,
                len: 0,
            },
            idx: 0,
        };
        let filter = |field, value: &str| vec![(field, value.to_string())];
        let ecs = filter(Field::ServiceType, "ECS");
        assert_eq!(checked(&doc, &cand, "p", &ecs), Ok(Some(doc.clone())));
        // A 64-bit hash collision in a segment: the trace is left out.
        let evs = filter(Field::ServiceType, "EVS");
        assert_eq!(checked(&doc, &cand, "p", &evs), Ok(None));
        assert_eq!(
            checked(&doc, &cand, "p", &filter(Field::User, "eve")),
            Ok(None)
        );
        // Not the trace the index named: an error, never the wrong trace.
        assert!(checked(&doc, &cand, "q", &ecs).is_err());
        let other = Candidate {
            key: (v.time + 1, v.id),
            ..cand
        };
        assert!(checked(&doc, &other, "p", &[]).is_err());
        assert!(checked(b"{\"trace_id\":1}", &cand, "p", &[]).is_err());
    }

    #[test]
    fn close_frames_are_read_as_one_range() {
        let f = |file, offset, len| FrameRef { file, offset, len };
        let spans = coalesce(
            &[
                f(1, 0, 100),
                f(1, 150, 50),
                f(1, 100_000, 10),
                f(2, 120, 10),
            ],
            1000,
        );
        assert_eq!(spans, vec![f(1, 0, 200), f(1, 100_000, 10), f(2, 120, 10)]);
    }
}
