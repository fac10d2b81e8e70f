-- /latest ticks stored once (store/src/ticks.rs): one row per stored tick;
-- prices_latest_1m keeps every item of a keyframe and, for the other ticks,
-- only the items that changed since the tick before.
CREATE TABLE IF NOT EXISTS latest_ticks (
    timestamp INTEGER PRIMARY KEY,
    keyframe  INTEGER NOT NULL
);
-- Ticks stored before held every item: each is a keyframe.
INSERT OR IGNORE INTO latest_ticks (timestamp, keyframe)
    SELECT DISTINCT timestamp, 1 FROM prices_latest_1m;
