-- Traces, partitioned by the day of their time (retention drops whole
-- partitions). `doc` is the stored JSON, byte for byte what a query returns;
-- the other columns are what ListTraces filters and orders on.
CREATE TABLE cts_traces (
    day integer NOT NULL,
    time_ms bigint NOT NULL,
    trace_id uuid NOT NULL,
    pos bigint NOT NULL,
    project_id text NOT NULL,
    service_type text,
    user_name text,
    resource_id text,
    resource_name text,
    resource_type text,
    trace_name text,
    trace_rating text,
    access_key_id text,
    enterprise_project_id text,
    tracker_name text,
    kind text,
    doc bytea NOT NULL
) PARTITION BY RANGE (day);

-- One trace id per project and day (the embedded store's rule for a
-- reporter's retries); also answers `trace_id=` and page markers.
CREATE UNIQUE INDEX cts_traces_id ON cts_traces (project_id, trace_id, day);
-- Journal consumers read in position order.
CREATE INDEX cts_traces_pos ON cts_traces (pos);
-- Pages: newest first, the trace id breaking ties; one index per filter.
CREATE INDEX cts_traces_time ON cts_traces (project_id, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_service_type ON cts_traces (project_id, service_type, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_user_name ON cts_traces (project_id, user_name, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_resource_id ON cts_traces (project_id, resource_id, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_resource_name ON cts_traces (project_id, resource_name, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_resource_type ON cts_traces (project_id, resource_type, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_trace_name ON cts_traces (project_id, trace_name, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_trace_rating ON cts_traces (project_id, trace_rating, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_access_key_id ON cts_traces (project_id, access_key_id, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_enterprise_project_id ON cts_traces (project_id, enterprise_project_id, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_tracker_name ON cts_traces (project_id, tracker_name, time_ms DESC, trace_id DESC);
CREATE INDEX cts_traces_kind ON cts_traces (project_id, kind, time_ms DESC, trace_id DESC);

-- The next journal position. Taken (row lock) and advanced inside each
-- batch's transaction, so positions are consecutive and committed in order.
CREATE TABLE cts_trace_positions (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    next_pos bigint NOT NULL
);
INSERT INTO cts_trace_positions (next_pos) VALUES (1);
