//! zstd dictionaries for journal frames.
//!
//! Traces repeat the same keys and many of the same values; a dictionary
//! trained on recent traces lets zstd compress frames of a few traces as well
//! as it compresses hundreds without one, so a query decompresses ~5 KB to
//! return a trace instead of ~20 KB. Dictionaries are files
//! `journal/dict-{id}.zdict`, durable before any frame uses them; a frame
//! names its dictionary (0: none).
//!
//! A dictionary file is `magic u32 | format u32 | crc32 u32 | zstd
//! dictionary`; the CRC is checked when it is loaded. Files of format 1 are
//! the bare zstd dictionary and are read as they are.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use zstd::zstd_safe::{CDict, DDict};

use crate::journal::ZSTD_LEVEL;
use crate::StoreError;

/// Traces kept as training samples (one in `SAMPLE_EVERY` is offered).
const SAMPLES: usize = 4000;
const SAMPLE_EVERY: u64 = 8;
const DICT_BYTES: usize = 112 * 1024;
const RETRAIN_EVERY: Duration = Duration::from_secs(3600);

struct Sampler {
    docs: Vec<Vec<u8>>,
    next: usize,
}

pub struct Dictionaries {
    dir: PathBuf,
    fsync: bool,
    current: RwLock<Option<(u32, Arc<CDict<'static>>)>>,
    decoders: RwLock<HashMap<u32, Arc<DDict<'static>>>>,
    sampler: Mutex<Sampler>,
    /// Traces offered; only every `SAMPLE_EVERY`-th takes the lock.
    seen: AtomicU64,
    training: AtomicBool,
    want_new: AtomicBool,
    trained_at: Mutex<Option<Instant>>,
}

const DICT_MAGIC: u32 = 0x4354_5344; // "CTSD"
const DICT_FORMAT: u32 = 2;
const DICT_HEADER: usize = 12;

/// A dictionary's file: header and CRC, then the zstd dictionary.
fn encode_file(dict: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DICT_HEADER + dict.len());
    out.extend_from_slice(&DICT_MAGIC.to_le_bytes());
    out.extend_from_slice(&DICT_FORMAT.to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(dict).to_le_bytes());
    out.extend_from_slice(dict);
    out
}

/// The zstd dictionary in a dictionary file, checked.
fn read_file(path: &Path) -> Result<Vec<u8>, StoreError> {
    let corrupt = |detail: String| StoreError::Corrupt {
        what: "compression dictionary",
        path: path.to_path_buf(),
        detail,
    };
    let mut bytes = fs::read(path).map_err(StoreError::io(path))?;
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    if bytes.len() < DICT_HEADER || word(0) != DICT_MAGIC {
        // Format 1: the bare dictionary, without a check.
        return Ok(bytes);
    }
    if word(4) != DICT_FORMAT {
        return Err(corrupt(format!(
            "format {} is not one this version reads",
            word(4)
        )));
    }
    let (stored, actual) = (word(8), crc32fast::hash(&bytes[DICT_HEADER..]));
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x}); the journal frames compressed with it cannot be read"
        )));
    }
    bytes.drain(..DICT_HEADER);
    Ok(bytes)
}

pub(crate) fn file_name(id: u32) -> String {
    format!("dict-{id:06}.zdict")
}

pub(crate) fn list(dir: &Path) -> Result<Vec<u32>, StoreError> {
    let mut ids = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::io(dir))? {
        let name = entry.map_err(StoreError::io(dir))?.file_name();
        let name = name.to_string_lossy();
        if let Some(id) = name
            .strip_prefix("dict-")
            .and_then(|s| s.strip_suffix(".zdict"))
            .and_then(|s| s.parse().ok())
        {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl Dictionaries {
    pub fn open(dir: &Path, fsync: bool) -> Result<Arc<Dictionaries>, StoreError> {
        let d = Dictionaries {
            dir: dir.to_path_buf(),
            fsync,
            current: RwLock::new(None),
            decoders: RwLock::new(HashMap::new()),
            sampler: Mutex::new(Sampler {
                docs: Vec::with_capacity(SAMPLES),
                next: 0,
            }),
            seen: AtomicU64::new(0),
            training: AtomicBool::new(false),
            want_new: AtomicBool::new(false),
            trained_at: Mutex::new(None),
        };
        if let Some(&id) = list(dir)?.last() {
            let path = dir.join(file_name(id));
            // A damaged newest dictionary stops no write: new frames go
            // without one until a new one is trained. Reads of the frames
            // that use it fail, naming it.
            let loaded = read_file(&path).and_then(|bytes| {
                CDict::try_create(&bytes, ZSTD_LEVEL).ok_or_else(|| StoreError::Corrupt {
                    what: "compression dictionary",
                    path: path.clone(),
                    detail: "zstd refused it".into(),
                })
            });
            match loaded {
                Ok(cdict) => *d.current.write() = Some((id, Arc::new(cdict))),
                Err(e) => {
                    tracing::error!(error = %e, "the newest compression dictionary is damaged; compressing without it until a new one is trained")
                }
            }
        }
        Ok(Arc::new(d))
    }

    /// The dictionary new frames are compressed with.
    pub fn current(&self) -> Option<(u32, Arc<CDict<'static>>)> {
        self.current.read().clone()
    }

    /// The dictionary a stored frame names.
    pub fn decoder(&self, id: u32) -> Result<Arc<DDict<'static>>, StoreError> {
        if let Some(d) = self.decoders.read().get(&id) {
            return Ok(d.clone());
        }
        let path = self.dir.join(file_name(id));
        let bytes = read_file(&path)?;
        let d = Arc::new(
            DDict::try_create(&bytes).ok_or_else(|| StoreError::Corrupt {
                what: "compression dictionary",
                path: path.clone(),
                detail: "zstd refused it".into(),
            })?,
        );
        self.decoders.write().insert(id, d.clone());
        Ok(d)
    }

    /// Offers a trace as a training sample; starts training in the
    /// background when there is no dictionary yet or a new one was asked for.
    pub fn sample(self: &Arc<Self>, doc: &[u8]) {
        if !(self.seen.fetch_add(1, Ordering::Relaxed) + 1).is_multiple_of(SAMPLE_EVERY) {
            return;
        }
        let full = {
            let mut s = self.sampler.lock();
            if s.docs.len() < SAMPLES {
                s.docs.push(doc.to_vec());
            } else {
                let at = s.next;
                s.docs[at] = doc.to_vec();
                s.next = (at + 1) % SAMPLES;
            }
            s.docs.len() == SAMPLES
        };
        let needed = self.current.read().is_none() || self.want_new.load(Ordering::Relaxed);
        if full && needed && !self.training.swap(true, Ordering::AcqRel) {
            let me = self.clone();
            std::thread::spawn(move || {
                if let Err(e) = me.train() {
                    tracing::warn!(error = %e, "training a compression dictionary failed; frames stay compressed without the new one");
                }
                me.training.store(false, Ordering::Release);
            });
        }
    }

    /// Asks for a dictionary trained on newer traces (the journal rotated).
    /// Training costs ~0.3 s of CPU, so it happens at most once per
    /// [`RETRAIN_EVERY`]: traces change their shape slowly.
    pub fn request_new(&self) {
        let due = self
            .trained_at
            .lock()
            .is_none_or(|at| at.elapsed() >= RETRAIN_EVERY);
        if due {
            self.want_new.store(true, Ordering::Relaxed);
        }
    }

    fn train(&self) -> Result<(), StoreError> {
        let samples = self.sampler.lock().docs.clone();
        let dict = zstd::dict::from_samples(&samples, DICT_BYTES)
            .map_err(StoreError::io("<zstd dictionary>"))?;
        let id = self
            .current
            .read()
            .as_ref()
            .map(|(id, _)| *id)
            .unwrap_or(0)
            .max(list(&self.dir)?.last().copied().unwrap_or(0))
            + 1;
        let path = self.dir.join(file_name(id));
        cts_fs::write_atomic(&path, &encode_file(&dict), self.fsync)
            .map_err(StoreError::io(&path))?;
        self.decoders
            .write()
            .insert(id, Arc::new(DDict::create(&dict)));
        *self.current.write() = Some((id, Arc::new(CDict::create(&dict, ZSTD_LEVEL))));
        self.want_new.store(false, Ordering::Relaxed);
        *self.trained_at.lock() = Some(Instant::now());
        tracing::info!(
            id,
            bytes = dict.len(),
            "trained a new journal compression dictionary"
        );
        Ok(())
    }

    /// Deletes dictionaries older than `min_used` (no journal file names
    /// them any more), never the current one.
    pub fn retain(&self, min_used: u32) -> Result<(), StoreError> {
        let current = self.current.read().as_ref().map(|(id, _)| *id);
        for id in list(&self.dir)? {
            if id < min_used && Some(id) != current {
                let path = self.dir.join(file_name(id));
                fs::remove_file(&path).map_err(StoreError::io(&path))?;
                self.decoders.write().remove(&id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_dictionary_is_named_and_stops_no_write() {
        let dir = tempfile::tempdir().unwrap();
        let dicts = Dictionaries::open(dir.path(), false).unwrap();
        dicts.sampler.lock().docs = (0..SAMPLES)
            .map(|i| format!("{{\"trace\":{i},\"service_type\":\"ECS{}\"}}", i % 7).into_bytes())
            .collect();
        dicts.train().unwrap();
        let (id, _) = dicts.current().unwrap();
        let path = dir.path().join(file_name(id));
        assert!(Dictionaries::open(dir.path(), false)
            .unwrap()
            .decoder(id)
            .is_ok());

        // A dictionary of the previous format (the bare zstd dictionary).
        let bytes = fs::read(&path).unwrap();
        fs::write(&path, &bytes[DICT_HEADER..]).unwrap();
        assert!(Dictionaries::open(dir.path(), false)
            .unwrap()
            .current()
            .is_some());
        assert!(Dictionaries::open(dir.path(), false)
            .unwrap()
            .decoder(id)
            .is_ok());
        fs::write(&path, &bytes).unwrap();

        let mut bytes = fs::read(&path).unwrap();
        let at = bytes.len() / 2;
        bytes[at] ^= 0x40;
        fs::write(&path, bytes).unwrap();
        let reopened = Dictionaries::open(dir.path(), false).unwrap();
        assert!(reopened.current().is_none());
        match reopened.decoder(id) {
            Err(StoreError::Corrupt { what, path: p, .. }) => {
                assert_eq!((what, p), ("compression dictionary", path));
            }
            other => panic!("{:?}", other.map(|_| ())),
        }
    }
}
