//! Prometheus metrics. The registry lives in the app state (no global
//! recorder), so several servers can run in one test process.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use cts_store::StoreStats;

/// Content type of the OpenMetrics text format that `encode` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    /// HTTP status of the answer.
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabel {
    /// `v1`, `v2` or `v3`.
    pub api: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// Why a credential was refused (`bad_signature`, `token_expired`, …).
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    pub method: String,
    /// The route's path template, e.g. `/v3/{project_id}/traces`.
    pub route: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    /// `delivered`, `retry` or `dead`.
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SinkLabel {
    /// An LTS sink's name (the operator's, not a tenant's).
    pub sink: String,
}

/// Per LTS sink.
#[derive(Default)]
struct LtsMetrics {
    delivered: Family<SinkLabel, Counter>,
    failed: Family<SinkLabel, Counter>,
    backlog: Family<SinkLabel, Gauge>,
    oldest: Family<SinkLabel, Gauge>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TrackerLabel {
    pub project_id: String,
    pub tracker: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s: an fsync'd group commit sits in the low ms, a cold
    // query over many segments can take seconds.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

/// Gauges mirrored from the store's `stats()` at each scrape.
#[derive(Default)]
struct StoreGauges {
    journal_bytes: Gauge,
    index_bytes: Gauge,
    index_segments: Gauge,
    index_segment_merges: Gauge,
    index_summary_bytes: Gauge,
    frame_cache_bytes: Gauge,
    frame_cache_hits: Gauge,
    frame_cache_misses: Gauge,
    indexed_traces: Gauge,
    journal_seq: Gauge,
    index_durable_seq: Gauge,
    index_consumer_lag: Gauge,
    corrupt_reads: Gauge,
    quarantined_ranges: Gauge,
}

pub struct Metrics {
    registry: Registry,
    pub traces_accepted: Counter,
    pub traces_rejected: Counter,
    pub traces_duplicate: Counter,
    pub report_requests: Family<CodeLabel, Counter>,
    pub ingest_duration: Histogram,
    pub query_duration: HistogramFamily<ApiLabel>,
    pub http_requests: Family<RouteLabel, Counter>,
    pub auth_failures: Family<ReasonLabel, Counter>,
    pub auth_throttled: Counter,
    pub access_denied: Counter,
    pub tokens_issued: Counter,
    pub audit_traces: Counter,
    pub audit_failures: Counter,
    pub transfer_failures: Counter,
    pub transfer_skipped: Counter,
    pub notification_matched: Counter,
    pub notification_skipped: Counter,
    pub notification_failures: Counter,
    /// Label-free: project ids and tracker names only go to authenticated
    /// scrapers (see [`render_trackers`]).
    transfer_backlog_all: Gauge,
    transfer_oldest_age_max: Gauge,
    pub lts_skipped: Counter,
    lts: LtsMetrics,
    pub notification_deliveries: Family<ResultLabel, Counter>,
    pub notification_pruned: Family<ResultLabel, Counter>,
    notification_pending: Gauge,
    notification_dead: Gauge,
    notification_oldest_pending: Gauge,
    store: StoreGauges,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            registry: Registry::default(),
            traces_accepted: Counter::default(),
            traces_rejected: Counter::default(),
            traces_duplicate: Counter::default(),
            report_requests: Family::default(),
            ingest_duration: latency_histogram(),
            query_duration: Family::new_with_constructor(latency_histogram),
            http_requests: Family::default(),
            auth_failures: Family::default(),
            auth_throttled: Counter::default(),
            access_denied: Counter::default(),
            tokens_issued: Counter::default(),
            audit_traces: Counter::default(),
            audit_failures: Counter::default(),
            transfer_failures: Counter::default(),
            transfer_skipped: Counter::default(),
            notification_matched: Counter::default(),
            notification_skipped: Counter::default(),
            notification_failures: Counter::default(),
            transfer_backlog_all: Gauge::default(),
            transfer_oldest_age_max: Gauge::default(),
            lts_skipped: Counter::default(),
            lts: LtsMetrics::default(),
            notification_deliveries: Family::default(),
            notification_pruned: Family::default(),
            notification_pending: Gauge::default(),
            notification_dead: Gauge::default(),
            notification_oldest_pending: Gauge::default(),
            store: StoreGauges::default(),
        };
        let registry = &mut m.registry;
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "cts_traces_accepted",
            "Traces newly recorded",
            m.traces_accepted.clone(),
        );
        registry.register(
            "cts_traces_rejected",
            "Traces that broke a rule of the trace structure (their whole batch was refused)",
            m.traces_rejected.clone(),
        );
        registry.register(
            "cts_traces_duplicate",
            "Reported traces whose trace_id was already recorded",
            m.traces_duplicate.clone(),
        );
        registry.register(
            "cts_report_requests",
            "Report requests by HTTP status",
            m.report_requests.clone(),
        );
        registry.register(
            "cts_ingest_duration_seconds",
            "Time to check and durably record a report request",
            m.ingest_duration.clone(),
        );
        registry.register(
            "cts_query_duration_seconds",
            "Time to answer a trace query, by API version",
            m.query_duration.clone(),
        );
        registry.register(
            "cts_http_requests",
            "Requests by method, route and HTTP status (refusals such as 401, 403, 413 and 429 included)",
            m.http_requests.clone(),
        );
        registry.register(
            "cts_auth_failures",
            "Requests refused for a missing or invalid credential, by reason",
            m.auth_failures.clone(),
        );
        for (name, help, counter) in [
            (
                "cts_auth_throttled",
                "Authentications refused because the user, key or address failed too often",
                &m.auth_throttled,
            ),
            (
                "cts_access_denied",
                "Authenticated requests refused for lack of a role on the project",
                &m.access_denied,
            ),
            ("cts_tokens_issued", "Tokens issued", &m.tokens_issued),
            (
                "cts_audit_traces",
                "Traces CTS recorded about its own operations",
                &m.audit_traces,
            ),
            (
                "cts_audit_failures",
                "Audit traces that could not be recorded (see the log)",
                &m.audit_failures,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        registry.register(
            "cts_transfer_failures",
            "Failed transfer writes (a bucket missing or refusing, the store unreachable) and transfer passes that failed (state or journal errors); see the log",
            m.transfer_failures.clone(),
        );
        registry.register(
            "cts_transfer_skipped_traces",
            "Traces a tracker should have archived that the transfer passed over (unreadable, or removed from the journal first); should stay 0, each is logged",
            m.transfer_skipped.clone(),
        );
        registry.register(
            "cts_notification_matched",
            "Messages the notification rules produced for the outbox (a trace evaluated again after a rule change counts again; the outbox keeps one)",
            m.notification_matched.clone(),
        );
        registry.register(
            "cts_notification_skipped_traces",
            "Traces the notification matcher passed over (unreadable, or removed from the journal first); should stay 0, each is logged",
            m.notification_skipped.clone(),
        );
        registry.register(
            "cts_notification_matcher_failures",
            "Matcher passes that failed (journal, consumer state or outbox errors; retried); see the log",
            m.notification_failures.clone(),
        );
        registry.register(
            "cts_transfer_backlog_all_traces",
            "Journaled traces after the transfer cursors, summed over every tracker",
            m.transfer_backlog_all.clone(),
        );
        registry.register(
            "cts_transfer_oldest_untransferred_max_seconds",
            "Age of the oldest period not yet in trace files, over every tracker",
            m.transfer_oldest_age_max.clone(),
        );
        registry.register(
            "cts_notification_deliveries",
            "Attempts to deliver a notification message to a subscription, by result (delivered, retry: failed and retried later, dead: failed past delivery.retry_for)",
            m.notification_deliveries.clone(),
        );
        registry.register(
            "cts_notification_pruned",
            "Finished notification deliveries removed from the outbox after their retention, by result (delivered: delivery.retain_delivered, dead: delivery.retain_dead)",
            m.notification_pruned.clone(),
        );
        registry.register(
            "cts_lts_skipped_traces",
            "Traces a tracker should have streamed that LTS passed over (unreadable, or removed from the journal first); should stay 0, each is logged",
            m.lts_skipped.clone(),
        );
        registry.register(
            "cts_lts_delivered_traces",
            "Traces an LTS sink's receiver accepted",
            m.lts.delivered.clone(),
        );
        registry.register(
            "cts_lts_failed_requests",
            "Deliveries to an LTS sink that failed (receiver unreachable, refusing, TLS); retried, see the log",
            m.lts.failed.clone(),
        );
        registry.register(
            "cts_lts_backlog_traces",
            "Journaled traces after the lowest cursor of an LTS sink's trackers",
            m.lts.backlog.clone(),
        );
        registry.register(
            "cts_lts_oldest_undelivered_seconds",
            "Age of the oldest trace a failed LTS delivery waits on",
            m.lts.oldest.clone(),
        );
        let g = &m.store;
        for (name, help, gauge) in [
            (
                "cts_notification_pending",
                "Notification messages waiting for delivery, counted per subscription",
                &m.notification_pending,
            ),
            (
                "cts_notification_dead",
                "Notification messages given up after delivery.retry_for (dead letters), per subscription",
                &m.notification_dead,
            ),
            (
                "cts_notification_oldest_pending_seconds",
                "Age of the oldest notification message waiting for delivery",
                &m.notification_oldest_pending,
            ),
            (
                "cts_journal_bytes",
                "Size of the journal on disk",
                &g.journal_bytes,
            ),
            (
                "cts_index_bytes",
                "Size of the trace index on disk",
                &g.index_bytes,
            ),
            (
                "cts_index_segments",
                "Index segments on disk",
                &g.index_segments,
            ),
            (
                "cts_index_segment_merges",
                "Merges of index segments since the start (each partition is kept within store.max_segments_per_partition)",
                &g.index_segment_merges,
            ),
            (
                "cts_index_summary_bytes",
                "Bytes of index segment summaries in memory (Bloom filters and samples; within store.index_cache_bytes plus a thinned copy of each segment's samples)",
                &g.index_summary_bytes,
            ),
            (
                "cts_query_frame_cache_bytes",
                "Bytes of decompressed journal frames cached for queries (within store.frame_cache_bytes)",
                &g.frame_cache_bytes,
            ),
            (
                "cts_query_frame_cache_hits",
                "Journal frames queries found decompressed in the frame cache, since the start",
                &g.frame_cache_hits,
            ),
            (
                "cts_query_frame_cache_misses",
                "Journal frames queries read and decompressed, since the start",
                &g.frame_cache_misses,
            ),
            (
                "cts_indexed_traces",
                "Traces currently queryable",
                &g.indexed_traces,
            ),
            (
                "cts_journal_seq",
                "Sequence number of the last journaled trace",
                &g.journal_seq,
            ),
            (
                "cts_index_durable_seq",
                "Sequence number up to which the index is durable",
                &g.index_durable_seq,
            ),
            (
                "cts_index_consumer_lag",
                "Journaled traces not yet durable in the index",
                &g.index_consumer_lag,
            ),
            (
                "cts_store_corrupt_reads",
                "Reads since the start that found stored data failing its check (each is logged with its file and offset)",
                &g.corrupt_reads,
            ),
            (
                "cts_store_quarantined_ranges",
                "Damaged journal ranges in quarantine not yet acknowledged (ctsd repair --acknowledge)",
                &g.quarantined_ranges,
            ),
        ] {
            registry.register(name, help, gauge.clone());
        }
        m
    }

    /// Sets the label-free transfer gauges from every tracker's progress.
    pub fn set_transfer(&self, progress: &[cts_transfer::Progress]) {
        let backlog = progress.iter().map(|p| p.backlog).sum();
        self.transfer_backlog_all.set(gauge_value(backlog));
        let oldest = progress.iter().map(|p| p.oldest_age_secs).max();
        self.transfer_oldest_age_max.set(oldest.unwrap_or(0));
    }

    /// Sets the notification gauges from the outbox's `backlog` at `now_ms`.
    pub fn set_notifications(&self, backlog: &cts_smn::Backlog, now_ms: i64) {
        self.notification_pending.set(gauge_value(backlog.pending));
        self.notification_dead.set(gauge_value(backlog.dead));
        let age = backlog
            .oldest_pending_ms
            .map_or(0, |t| (now_ms - t).max(0) / 1000);
        self.notification_oldest_pending.set(age);
    }

    /// Adds what the LTS sinks did since the last call.
    pub fn add_lts(&self, sinks: &[cts_lts::SinkMetrics]) {
        for s in sinks {
            let label = SinkLabel {
                sink: s.sink.clone(),
            };
            self.lts.delivered.get_or_create(&label).inc_by(s.delivered);
            self.lts.failed.get_or_create(&label).inc_by(s.failed);
            self.lts
                .backlog
                .get_or_create(&label)
                .set(gauge_value(s.backlog));
            self.lts
                .oldest
                .get_or_create(&label)
                .set(s.oldest_undelivered_secs);
        }
    }

    /// The text exposition; store gauges are refreshed from `stats` when the
    /// store answered. `trackers` (for authenticated scrapers) adds the
    /// per-tracker series, labelled with project ids and tracker names.
    pub fn render(
        &self,
        stats: Option<&StoreStats>,
        trackers: Option<&[cts_transfer::Progress]>,
    ) -> String {
        if let Some(s) = stats {
            let g = &self.store;
            g.journal_bytes.set(gauge_value(s.journal_bytes));
            g.index_bytes.set(gauge_value(s.index_bytes));
            g.index_segments.set(gauge_value(s.segments as u64));
            g.index_segment_merges.set(gauge_value(s.segment_merges));
            g.index_summary_bytes
                .set(gauge_value(s.index_summary_bytes));
            g.frame_cache_bytes.set(gauge_value(s.frame_cache_bytes));
            g.frame_cache_hits.set(gauge_value(s.frame_cache_hits));
            g.frame_cache_misses.set(gauge_value(s.frame_cache_misses));
            g.indexed_traces.set(gauge_value(s.indexed_traces));
            g.journal_seq.set(gauge_value(s.journal_seq));
            g.index_durable_seq.set(gauge_value(s.index_durable_seq));
            g.corrupt_reads.set(gauge_value(s.corrupt_reads));
            g.quarantined_ranges
                .set(gauge_value(s.quarantined.len() as u64));
            g.index_consumer_lag.set(gauge_value(
                s.journal_seq.saturating_sub(s.index_durable_seq),
            ));
        }
        let mut out = String::new();
        encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        if let Some(progress) = trackers {
            // One exposition: one `# EOF`, at the end.
            if let Some(body) = out.strip_suffix("# EOF\n") {
                out.truncate(body.len());
            }
            encode(&mut out, &tracker_registry(progress)).expect("writing to a String cannot fail");
        }
        out
    }
}

/// The per-tracker transfer gauges of `progress`, in a registry of their
/// own, made at each scrape.
fn tracker_registry(progress: &[cts_transfer::Progress]) -> Registry {
    let backlog = Family::<TrackerLabel, Gauge>::default();
    let oldest = Family::<TrackerLabel, Gauge>::default();
    for p in progress {
        let label = TrackerLabel {
            project_id: p.project_id.clone(),
            tracker: p.tracker_name.clone(),
        };
        backlog.get_or_create(&label).set(gauge_value(p.backlog));
        oldest.get_or_create(&label).set(p.oldest_age_secs);
    }
    let mut registry = Registry::default();
    registry.register(
        "cts_transfer_backlog_traces",
        "Journaled traces after a tracker's transfer cursor (not yet decided into files)",
        backlog,
    );
    registry.register(
        "cts_transfer_oldest_untransferred_seconds",
        "Age of the oldest period of a tracker not yet in trace files",
        oldest,
    );
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_metric() {
        let m = Metrics::new();
        m.traces_accepted.inc_by(3);
        m.report_requests
            .get_or_create(&CodeLabel { code: 201 })
            .inc();
        m.query_duration
            .get_or_create(&ApiLabel { api: "v3" })
            .observe(0.01);
        let stats = StoreStats {
            journal_seq: 10,
            index_durable_seq: 4,
            ..StoreStats::default()
        };
        let progress = [cts_transfer::Progress {
            project_id: "p1".into(),
            tracker_name: "system".into(),
            backlog: 7,
            oldest_age_secs: 30,
        }];
        m.set_transfer(&progress);
        let public = m.render(Some(&stats), None);
        assert!(!public.contains("p1"), "{public}");
        assert!(
            public.contains("cts_transfer_backlog_all_traces 7"),
            "{public}"
        );
        assert!(
            public.contains("cts_transfer_oldest_untransferred_max_seconds 30"),
            "{public}"
        );
        let text = m.render(Some(&stats), Some(&progress));
        assert_eq!(text.matches("# EOF").count(), 1, "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            text.contains("cts_transfer_backlog_traces{project_id=\"p1\",tracker=\"system\"} 7"),
            "{text}"
        );
        for needle in [
            "cts_traces_accepted_total 3",
            "cts_traces_rejected_total 0",
            "cts_traces_duplicate_total 0",
            "cts_report_requests_total{code=\"201\"} 1",
            "cts_ingest_duration_seconds_count 0",
            "cts_query_duration_seconds_count{api=\"v3\"} 1",
            "cts_journal_bytes 0",
            "cts_index_bytes 0",
            "cts_index_segments 0",
            "cts_index_segment_merges 0",
            "cts_index_summary_bytes 0",
            "cts_query_frame_cache_bytes 0",
            "cts_query_frame_cache_hits 0",
            "cts_indexed_traces 0",
            "cts_journal_seq 10",
            "cts_index_durable_seq 4",
            "cts_index_consumer_lag 6",
            "cts_auth_throttled_total 0",
            "cts_access_denied_total 0",
            "cts_tokens_issued_total 0",
            "cts_audit_traces_total 0",
            "cts_audit_failures_total 0",
        ] {
            assert!(text.contains(needle), "{needle} missing in\n{text}");
        }
    }
}
