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
    #[error("corrupt {what} in {path}: {detail}")]
    Corrupt {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
    #[error("the store is shut down or its writer failed: {0}")]
    Unavailable(String),
}

impl StoreError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> StoreError {
        let path = path.into();
        move |source| StoreError::Io { path, source }
    }
}
