-- One order row per run of a batch's traces in one day instead of one
-- per trace: a run holds the consecutive positions `pos` .. `pos + n - 1`,
-- given to the day's traces whose row keys lie in `seq` .. `last_seq`, in
-- key order. A batch's keys are unique to it, so the keys of a run are
-- exactly the rows the batch inserted into that day. It writes a few rows
-- under the counter's lock where it wrote one per trace (each with two
-- index entries). Existing rows are runs of one.
ALTER TABLE cts_trace_order
    ADD COLUMN n integer NOT NULL DEFAULT 1,
    ADD COLUMN last_seq bigint;
UPDATE cts_trace_order SET last_seq = seq;
ALTER TABLE cts_trace_order
    ALTER COLUMN last_seq SET NOT NULL,
    ALTER COLUMN n DROP DEFAULT;
