//! The flusher thread: frozen memtables become index segments, and the
//! manifest moves the index's durable position.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use cts_priority::Tier;

use super::files::{rel, store_manifest};
use super::Inner;
use crate::memtable::Memtable;
use crate::segment::{self, Segment};
use crate::StoreError;

pub(super) fn flusher_loop(inner: Arc<Inner>, rx: Receiver<Arc<Memtable>>) {
    // At ingest's priority, not lower: frozen memtables wait for it without
    // bound and only it can flush them (in order), so it must keep pace with
    // the ingest threads that fill them. Queries go first.
    cts_priority::enter(Tier::Ingest, "index flusher thread");
    while let Ok(mem) = rx.recv() {
        // A failed flush (disk full, say) is retried under the same id: the
        // memtable stays queryable and the journal still holds every trace.
        let flush_id = inner.reserve_segment_id();
        let mut delay = Duration::from_millis(100);
        while let Err(e) = flush(&inner, &mem, flush_id) {
            tracing::error!(error = %e, "writing an index segment failed; retrying");
            std::thread::sleep(delay);
            delay = (delay * 2).min(Duration::from_secs(10));
        }
        for tx in inner.merge_tx.lock().iter() {
            let _ = tx.send(());
        }
    }
}

pub(super) fn flush(inner: &Inner, mem: &Arc<Memtable>, flush_id: u64) -> Result<(), StoreError> {
    let pm = inner.config.partition_ms;
    let mut by_partition: BTreeMap<i64, Vec<u32>> = BTreeMap::new();
    for (i, d) in mem.docs.iter().enumerate() {
        by_partition
            .entry(d.time.div_euclid(pm) * pm)
            .or_default()
            .push(i as u32);
    }
    let mut opened = Vec::new();
    for (partition, members) in &by_partition {
        let path = segment::write(
            &inner.index_dir,
            *partition,
            flush_id,
            mem,
            members,
            inner.config.fsync,
        )?;
        opened.push(Arc::new(Segment::open_cached(
            &path,
            Arc::clone(&inner.summaries),
        )?));
    }
    {
        let mut m = inner.manifest.lock();
        let mut next = m.clone();
        next.durable_seq = next.durable_seq.max(mem.max_seq);
        next.segments
            .extend(opened.iter().map(|s| rel(&inner.index_dir, &s.path)));
        store_manifest(&inner.index_dir, &next, inner.config.fsync)?;
        *m = next;
    }
    {
        let mut idx = inner.index.write();
        idx.segments.extend(opened);
        idx.frozen.retain(|f| !Arc::ptr_eq(f, mem));
        idx.flushed_generation = idx.flushed_generation.max(mem.generation);
    }
    inner.durable_seq.fetch_max(mem.max_seq, Ordering::AcqRel);
    Ok(())
}
