//! Trace files built while the journal is read on: a period's reading and
//! the gzip (encryption, hashing) of its full files run on separate
//! threads of the transfer's pool, at most `Settings::files_building` files' worth at a
//! time besides the one being filled. Files are uploaded in the order they were
//! started, all of them before the tracker's cursor moves (the caller
//! commits it after the period), so a failure or a kill leaves the period
//! to be written again whole, as before.

use std::collections::VecDeque;
use std::sync::Arc;

use cts_archive::{build_trace_files, LogFile, ObjectStorage, Period, TraceFile};
use cts_archive::{TraceFileOptions, TrackerPath};
use tokio::task::JoinHandle;

use super::{write, Failed, TransferError};

/// The files of one run of a chain's documents.
pub(crate) struct FilesSpec {
    pub path: TrackerPath,
    pub project: String,
    /// The service of a tracker sorting by service, or "".
    pub chain: String,
    pub period: Period,
    pub docs: Vec<Vec<u8>>,
    pub options: TraceFileOptions,
}

type Built = Vec<(TraceFile, LogFile)>;

pub(crate) struct Building {
    bucket: String,
    /// Files built at once, at most.
    at_once: usize,
    /// The transfer's threads, where the files are built.
    workers: Arc<cts_priority::Pool>,
    /// (chain, its files being built), oldest first.
    running: VecDeque<(String, JoinHandle<Result<Built, TransferError>>)>,
}

impl Building {
    pub(crate) fn new(bucket: &str, at_once: usize, workers: Arc<cts_priority::Pool>) -> Self {
        Building {
            bucket: bucket.to_string(),
            at_once,
            workers,
            running: VecDeque::new(),
        }
    }

    /// Starts building `spec`'s files, then uploads the oldest until at
    /// most `at_once` are being built. Their log entries go to `pending`
    /// when uploaded.
    pub(crate) async fn start(
        &mut self,
        spec: FilesSpec,
        pending: &mut Vec<(String, LogFile)>,
        storage: &ObjectStorage,
    ) -> Result<(), Failed> {
        let (chain, bucket) = (spec.chain.clone(), self.bucket.clone());
        // Gzip, encryption and hashing of up to 50 MB: off the async
        // workers. The documents move in and are dropped there.
        let files = self.workers.spawn_blocking(move || build(&bucket, spec));
        self.running.push_back((chain, files));
        while self.running.len() > self.at_once {
            self.upload_oldest(pending, storage).await?;
        }
        Ok(())
    }

    /// Uploads every file started.
    pub(crate) async fn finish(
        &mut self,
        pending: &mut Vec<(String, LogFile)>,
        storage: &ObjectStorage,
    ) -> Result<(), Failed> {
        while !self.running.is_empty() {
            self.upload_oldest(pending, storage).await?;
        }
        Ok(())
    }

    async fn upload_oldest(
        &mut self,
        pending: &mut Vec<(String, LogFile)>,
        storage: &ObjectStorage,
    ) -> Result<(), Failed> {
        let Some((chain, files)) = self.running.pop_front() else {
            return Ok(());
        };
        let files = files
            .await
            .map_err(|e| TransferError::State(format!("building trace files: {e}")))??;
        for (f, log) in files {
            storage
                .put(&self.bucket, &f.key, f.body, &[])
                .await
                .map_err(write)?;
            pending.push((chain.clone(), log));
        }
        Ok(())
    }
}

fn build(bucket: &str, spec: FilesSpec) -> Result<Built, TransferError> {
    let service = (!spec.chain.is_empty()).then_some(spec.chain.as_str());
    let files = build_trace_files(
        &spec.path,
        &spec.project,
        service,
        spec.period,
        &spec.docs,
        &spec.options,
    )?;
    Ok(files
        .into_iter()
        .map(|f| {
            let log = LogFile::new(bucket, &f.key, &f.body);
            (f, log)
        })
        .collect())
}
