-- Retention deletes the bucket tables and filled gaps by time. (Space is
-- given back by PRAGMA incremental_vacuum; auto_vacuum = INCREMENTAL is set
-- when a file is created and, for files made before, by SqliteStore::migrate
-- with a one-time VACUUM, which cannot run inside a migration's transaction.)
CREATE INDEX IF NOT EXISTS price_data_5min_timestamp ON price_data_5min (timestamp);
CREATE INDEX IF NOT EXISTS prices_1h_timestamp ON prices_1h (timestamp);
CREATE INDEX IF NOT EXISTS data_gaps_filled_at ON data_gaps (filled_at);
