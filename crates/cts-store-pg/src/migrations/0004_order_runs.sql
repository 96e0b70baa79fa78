-- One order row per stretch of a batch's traces in one day (a run;
-- usually one a batch) instead of one per trace: a run holds the
-- consecutive positions `pos` .. `pos + n - 1`, given to the day's traces
-- whose row keys lie in `first_seq` .. `last_seq`, in key order. A
-- batch's keys are its own, so those are exactly the rows the batch
-- inserted there. Existing rows become runs of one. `seq` is renamed so
-- that a node still running the previous release fails on the table
-- (an error it reports) instead of reading a run as one trace.
-- Rewrites every order row: stop the nodes, then `ctsd migrate`.
CREATE FUNCTION pg_temp.cts_order_runs(t regclass) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ADD COLUMN n integer NOT NULL DEFAULT 1, '
                   'ADD COLUMN last_seq bigint', t);
    EXECUTE format('UPDATE %s SET last_seq = seq', t);
    EXECUTE format('ALTER TABLE %s ALTER COLUMN last_seq SET NOT NULL, '
                   'ALTER COLUMN n DROP DEFAULT', t);
    EXECUTE format('ALTER TABLE %s RENAME COLUMN seq TO first_seq', t);
END $$;

SELECT pg_temp.cts_order_runs('cts_trace_order');
-- A day's order table a stopped retention pass left detached (retention
-- may attach it again).
SELECT pg_temp.cts_order_runs(c.oid)
FROM pg_class c
WHERE c.relkind = 'r' AND NOT c.relispartition
  AND c.relname LIKE 'cts\_trace\_order\_%'
  AND c.relnamespace = (SELECT relnamespace FROM pg_class
                        WHERE oid = 'cts_trace_order'::regclass);
