-- GePT schema, SQLite. Times are integer Unix seconds, UTC. Nulls are kept.

CREATE TABLE IF NOT EXISTS items (
    item_id    INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    examine    TEXT,
    members    INTEGER NOT NULL,
    lowalch    INTEGER,
    highalch   INTEGER,
    value      INTEGER,
    buy_limit  INTEGER,
    icon       TEXT,
    updated_at INTEGER NOT NULL
);

-- One row per item and /latest observation (the poll's HTTP Date).
CREATE TABLE IF NOT EXISTS prices_latest_1m (
    item_id   INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    high      INTEGER,
    high_time INTEGER,
    low       INTEGER,
    low_time  INTEGER,
    PRIMARY KEY (item_id, timestamp)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS prices_latest_1m_timestamp ON prices_latest_1m (timestamp);

-- /5m buckets, keyed by bucket start.
CREATE TABLE IF NOT EXISTS price_data_5min (
    item_id           INTEGER NOT NULL,
    timestamp         INTEGER NOT NULL,
    avg_high_price    INTEGER,
    high_price_volume INTEGER NOT NULL,
    avg_low_price     INTEGER,
    low_price_volume  INTEGER NOT NULL,
    PRIMARY KEY (item_id, timestamp)
) WITHOUT ROWID;

-- /1h buckets, keyed by bucket start.
CREATE TABLE IF NOT EXISTS prices_1h (
    item_id           INTEGER NOT NULL,
    timestamp         INTEGER NOT NULL,
    avg_high_price    INTEGER,
    high_price_volume INTEGER NOT NULL,
    avg_low_price     INTEGER,
    low_price_volume  INTEGER NOT NULL,
    PRIMARY KEY (item_id, timestamp)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS osrs_news (
    guid         TEXT PRIMARY KEY,
    title        TEXT NOT NULL,
    link         TEXT NOT NULL,
    published_at INTEGER,
    category     TEXT,
    fetched_at   INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS player_counts (
    timestamp INTEGER PRIMARY KEY,
    players   INTEGER NOT NULL
);

-- Compact predictions: one row per item and tick; `probabilities` holds the
-- 108 targets in canonical order as little-endian f32 (432 bytes).
CREATE TABLE IF NOT EXISTS predictions (
    item_id       INTEGER NOT NULL,
    tick_time     INTEGER NOT NULL,
    observed_at   INTEGER NOT NULL,
    model_version TEXT    NOT NULL,
    probabilities BLOB    NOT NULL,
    PRIMARY KEY (item_id, tick_time)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS predictions_tick_time ON predictions (tick_time);

CREATE TABLE IF NOT EXISTS model_registry (
    version       TEXT PRIMARY KEY,
    state         TEXT NOT NULL CHECK (state IN ('PENDING', 'ACTIVE', 'DEPRECATED', 'ARCHIVED')),
    path          TEXT NOT NULL,
    sha256        TEXT NOT NULL,
    mean_auc      REAL,
    metrics       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    activated_at  INTEGER,
    deprecated_at INTEGER,
    archived_at   INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS model_registry_one_active ON model_registry (state) WHERE state = 'ACTIVE';

CREATE TABLE IF NOT EXISTS inference_status (
    tick_time     INTEGER PRIMARY KEY,
    items         INTEGER NOT NULL,
    latency_ms    REAL    NOT NULL,
    model_version TEXT,
    outcome       TEXT    NOT NULL,
    message       TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS collector_status (
    collector            TEXT PRIMARY KEY,
    last_success         INTEGER,
    last_error           TEXT,
    last_error_at        INTEGER,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    restarts             INTEGER NOT NULL DEFAULT 0,
    rows_written         INTEGER NOT NULL DEFAULT 0,
    updated_at           INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS data_gaps (
    feed        TEXT    NOT NULL,
    bucket      INTEGER NOT NULL,
    detected_at INTEGER NOT NULL,
    filled_at   INTEGER,
    PRIMARY KEY (feed, bucket)
);
