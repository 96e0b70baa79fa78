use std::path::PathBuf;

/// Failures of the embedded store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("corrupt {what} in {path}: {detail}; {}", remedy(what))]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the data directory is in use by another process ({path} is locked); stop it first")]
    Locked { path: PathBuf },
    #[error("invalid store setting: {0}")]
    Setting(String),
    #[error("the store is shut down or its writer failed: {0}")]
    Unavailable(String),
    /// The database of a database-backed store failed (the message names
    /// the server's error).
    #[error("the trace database failed: {0}")]
    Database(String),
    /// A batch holding traces of a day retention is removing (a database
    /// store, between a pass's fence and its drop): nothing of it was
    /// stored. The message names the day. The client's trace is late,
    /// like one older than the window.
    #[error("{0}")]
    Retired(String),
    /// The store opened read-only on a damaged journal
    /// ([`crate::OnDamage::ReadOnly`]): nothing can be recorded.
    #[error("the store is read-only because its journal is damaged: {0}")]
    ReadOnly(String),
    /// Journal readers: traces after `after_seq` were removed by retention.
    /// The first trace still held after the cursor is `oldest_seq`; reading
    /// from `oldest_seq - 1` skips the lost ones knowingly.
    #[error("the journal no longer holds the traces after sequence number {after_seq}; the oldest one left after it is {oldest_seq}")]
    JournalGone { after_seq: u64, oldest_seq: u64 },
    /// Journal readers: the cursor is past every acknowledged trace, so it
    /// does not belong to this journal (restored or replaced data).
    #[error(
        "journal cursor {after_seq} is past the last acknowledged sequence number {durable_seq}"
    )]
    CursorAhead { after_seq: u64, durable_seq: u64 },
}

/// What an operator does about a damaged file of the given kind.
fn remedy(what: &str) -> &'static str {
    match what {
        "index segment" | "index manifest" => {
            "the index is rebuilt from the journal by `ctsd reindex` (server stopped)"
        }
        "compression dictionary" => {
            "the traces compressed with it cannot be read without it: restore the file from a backup; `ctsd check` lists them"
        }
        "quarantine list" => {
            "the quarantined ranges themselves are the `*.damaged` files beside it; restore the list from a backup or remove it to stop reporting them"
        }
        _ => {
            "`ctsd check` lists the damage and the traces it affects; `ctsd repair` quarantines it (server stopped)"
        }
    }
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
