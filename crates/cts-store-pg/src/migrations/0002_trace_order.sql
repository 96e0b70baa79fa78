-- Journal positions move out of `cts_traces` into a narrow table of their
-- own, so that a batch writes its traces (and their 14 indexes) before it
-- takes the positions counter's lock, and under the lock only numbers the
-- rows it inserted (see write.rs). `seq` identifies a trace row: its
-- batch's number from `cts_trace_batches`, shifted, plus its index in the
-- batch, so ascending `seq` is batch order. Existing rows keep their
-- position: it becomes their `seq` and their order row's `pos`.
ALTER TABLE cts_traces RENAME COLUMN pos TO seq;
ALTER INDEX cts_traces_pos RENAME TO cts_traces_seq;
CREATE SEQUENCE cts_trace_batches;

-- Positions, partitioned like the traces (retention drops a day of both
-- in one transaction). One row per trace: its position and its row's key.
CREATE TABLE cts_trace_order (
    pos bigint NOT NULL,
    day integer NOT NULL,
    seq bigint NOT NULL
) PARTITION BY RANGE (day);
-- Journal consumers read in position order.
CREATE INDEX cts_trace_order_pos ON cts_trace_order (pos);
-- The position of a trace (the import's already-recorded traces).
CREATE INDEX cts_trace_order_seq ON cts_trace_order (seq);

DO $$
DECLARE
    part record;
    name text;
BEGIN
    FOR part IN
        SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound
        FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
        WHERE i.inhparent = 'cts_traces'::regclass
    LOOP
        name := 'cts_trace_order_' || substr(part.relname, length('cts_traces_') + 1);
        EXECUTE format('CREATE TABLE %I PARTITION OF cts_trace_order %s', name, part.bound);
        EXECUTE format('INSERT INTO %I (pos, day, seq) SELECT seq, day, seq FROM %I',
                       name, part.relname);
    END LOOP;
END $$;

-- New row keys start above every old position (see write.rs: ORD_BITS).
SELECT setval('cts_trace_batches', ((SELECT next_pos FROM cts_trace_positions) >> 24) + 1);
