-- Predictions stored one row per tick (store/src/predictions.rs): the
-- tick's items and their quantised probabilities in one compressed body.
-- The rows stored one per item and tick move to predictions_v1 (and its
-- partitions to predictions_v1_p…); the store converts them tick by tick
-- when it opens, then drops that table.
ALTER TABLE predictions RENAME TO predictions_v1;
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.relname::text AS name FROM pg_inherits i
             JOIN pg_class c ON c.oid = i.inhrelid
             JOIN pg_class p ON p.oid = i.inhparent
             WHERE p.relname = 'predictions_v1'
    LOOP
        EXECUTE format('ALTER TABLE %I RENAME TO %I', r.name,
                       replace(r.name, 'predictions_p', 'predictions_v1_p'));
    END LOOP;
END $$;
-- The conversion reads the old rows tick by tick.
CREATE INDEX IF NOT EXISTS predictions_v1_tick_time ON predictions_v1 (tick_time);
CREATE TABLE predictions (
    tick_time     timestamptz NOT NULL,
    model_version text        NOT NULL,
    items         integer     NOT NULL,
    body          bytea       NOT NULL,
    PRIMARY KEY (tick_time)
) PARTITION BY RANGE (tick_time);
-- The body is compressed already: stored out of line as it is.
ALTER TABLE predictions ALTER COLUMN body SET STORAGE EXTERNAL;
