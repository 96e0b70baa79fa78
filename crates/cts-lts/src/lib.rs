//! Trace analysis (LTS): every tracker with `lts` on streams the traces it
//! records to a log system the operator runs, as OpenTelemetry logs over
//! OTLP/HTTP ([`otlp`]) or as RFC 5424 syslog over TCP/TLS ([`syslog`]),
//! both behind one [`Protocol`].
//!
//! Delivery is a journal consumer on the shared seam (`cts-consumer`,
//! consumer [`CONSUMER`], one cursor per tracker): at least once, in order
//! per tracker, batched (at most [`Settings::batch_max`] records a request,
//! a pass at least every [`Settings::interval`]), retried with backoff
//! while the receiver is down, the journal held until delivered. A tracker
//! begins at the transfer period holding the instant `lts` was switched on
//! (`Tracker::lts_since`), from the period's start, so there is no start
//! gap. Its status is `enabled`, or `error` with a reason
//! ([`Failure`]); each sink counts what it delivered and failed and how
//! far behind it is ([`SinkMetrics`]).

mod batch;
mod fields;
mod otlp;
mod pipeline;
mod protocol;
mod scan;
mod sink;
mod stream;
mod syslog;

pub use sink::{Compression, Facility, Failure, SinkError, SinkKind, SinkSpec, SpecError};
pub use stream::{Lts, LtsStatus, RegionOf, Routing, Settings, SinkMetrics};

/// The journal consumer name of LTS streaming.
pub const CONSUMER: &str = "lts";

#[derive(Debug, thiserror::Error)]
pub enum LtsError {
    #[error(transparent)]
    Consumer(#[from] cts_consumer::ConsumerError),
    #[error("reading the journal: {0}")]
    Journal(#[from] cts_store::StoreError),
    #[error("trackers: {0}")]
    Trackers(#[from] cts_tracker::TrackerError),
    #[error("blocking task: {0}")]
    Task(String),
}

#[cfg(test)]
mod tests;
