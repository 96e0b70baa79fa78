//! A read-only start on a damaged journal file ([`OnDamage::ReadOnly`]):
//! the file is checked as `ctsd check` does, its damaged ranges are copied
//! into quarantine as `ctsd repair` saves them (the file itself is left as
//! it is: nothing is cut, overwritten or deleted), and its valid records,
//! also those after a damage, are indexed so that they stay queryable.
//!
//! [`OnDamage::ReadOnly`]: super::OnDamage::ReadOnly

use std::fs;
use std::path::Path;

use super::check::{check_journal_file, CheckReport};
use super::repair::{load_list, save_ranges};
use crate::dict::Dictionaries;
use crate::journal::ScannedRecord;
use crate::StoreError;

/// What a damaged journal file still holds.
pub(super) struct Salvaged {
    pub records: Vec<ScannedRecord>,
    /// Why the store is read-only: the damage, where it was copied, and
    /// what to run.
    pub reason: String,
}

/// Checks the damaged journal file `path` (whose records follow sequence
/// number `last_seq`) and copies its damaged ranges into quarantine.
pub(super) fn salvage(
    dir: &Path,
    dicts: &Dictionaries,
    id: u32,
    path: &Path,
    last_seq: u64,
) -> Result<Salvaged, StoreError> {
    let mut report = CheckReport::default();
    let mut records = Vec::new();
    check_journal_file(id, path, dicts, last_seq, &mut report, &mut records)?;
    let ranges: Vec<_> = report
        .damage
        .iter()
        .filter(|d| d.range.is_some() && d.path == path)
        .collect();
    let data = fs::read(path).map_err(StoreError::io(path))?;
    let mut list = load_list(dir)?;
    let saved = save_ranges(dir, path, &data, &ranges, &mut list)?;
    let where_ = saved
        .iter()
        .map(|q| {
            format!(
                "bytes {}..{} (traces {}..={}) copied to quarantine/{}",
                q.offset,
                q.offset + q.len,
                q.first_seq,
                q.last_seq,
                q.saved_as
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let reason = format!(
        "journal file {} is damaged: {where_}; `ctsd check --data-dir {dir}` lists the damage, \
         `ctsd repair --data-dir {dir}` (server stopped) takes it out of the journal, then a \
         restart takes writes again",
        path.display(),
        dir = dir.display()
    );
    tracing::error!(file = %path.display(), ranges = saved.len(), "{reason}; the store opens read-only");
    Ok(Salvaged { records, reason })
}
