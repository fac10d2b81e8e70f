-- Predictions stored one row per tick (store/src/predictions.rs): the
-- tick's items and their quantised probabilities in one compressed body.
-- The rows stored one per item and tick move to predictions_v1; the store
-- converts them tick by tick when it opens, then drops that table.
ALTER TABLE predictions RENAME TO predictions_v1;
CREATE TABLE predictions (
    tick_time     INTEGER PRIMARY KEY,
    model_version TEXT    NOT NULL,
    items         INTEGER NOT NULL,
    body          BLOB    NOT NULL
);
