-- Retention fences an expired day before it detaches the day's partitions
-- (see retention.rs): a row trigger on the day's positions partition runs
-- this function, which refuses the row, and so the batch's whole
-- statement, with SQLSTATE RT001 and the message the trigger was made
-- with.
CREATE FUNCTION cts_day_retired() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING ERRCODE = 'RT001', MESSAGE = TG_ARGV[0];
END $$;
