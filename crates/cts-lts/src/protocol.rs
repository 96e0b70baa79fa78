//! What every sink kind does the same way: turn a batch of one tracker's
//! traces into the bytes of one delivery, and deliver them. The consumer
//! (`stream.rs`) batches, retries and commits for both kinds alike.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::fields::Record;
use crate::sink::{SinkError, SinkKind, SinkSpec};
use crate::{otlp, syslog};

/// Whose stream a batch is: the tracker's log group and topic and the
/// stable ids of the tracker answer.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    pub project_id: String,
    pub region: String,
    pub log_group: String,
    pub log_topic: String,
    pub group_id: String,
    pub stream_id: String,
}

pub(crate) type Sending<'a> = Pin<Box<dyn Future<Output = Result<(), SinkError>> + Send + 'a>>;

/// One sink kind's wire format and transport.
pub(crate) trait Protocol: Send + Sync {
    /// The bytes of one delivery of `records`. CPU work: call it off the
    /// async workers.
    fn encode(&self, stream: &Stream, records: &[Record<'_>]) -> Vec<u8>;

    /// Whether several deliveries may be in flight at once. Not over one
    /// ordered connection (syslog): a failed batch would be overtaken by
    /// the next on the reopened connection.
    fn concurrent(&self) -> bool;

    /// Delivers one encoded batch; `Ok` once it is handed over (see each
    /// kind for what that guarantees).
    fn send(&self, body: Vec<u8>) -> Sending<'_>;
}

/// The protocol of a checked `spec`; a CA file that does not read is an
/// error (at start, not at the first delivery).
pub(crate) fn build(spec: &SinkSpec) -> Result<Arc<dyn Protocol>, String> {
    Ok(match spec.kind {
        SinkKind::Otlp => Arc::new(otlp::Client::new(spec)?),
        SinkKind::Syslog => Arc::new(syslog::Client::new(spec)?),
    })
}

/// A CA file's certificates (PEM), for both kinds' TLS.
pub(crate) fn read_ca(path: &std::path::Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))
}
