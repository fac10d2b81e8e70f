-- The primary's lease (standby takeover; with SQLite one process owns the
-- file, so it is only ever held by that process): see the PostgreSQL schema.
CREATE TABLE IF NOT EXISTS service_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
);
