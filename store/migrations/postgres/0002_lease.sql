-- The primary's lease (standby takeover): one row per lease name; the holder
-- renews it before it expires, a follower takes it once it has expired.
-- Times come from the database's clock, so the nodes' clocks never compare.
CREATE TABLE IF NOT EXISTS service_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at TIMESTAMPTZ NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);
