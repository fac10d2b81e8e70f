-- GePT schema, PostgreSQL. Times are timestamptz (UTC). Nulls are kept.
-- Time-series tables are range-partitioned by time so retention drops whole
-- partitions; the store writer creates each partition before its first row
-- (daily for 1-minute ticks and predictions, monthly for 5m and 1h buckets).

CREATE TABLE IF NOT EXISTS items (
    item_id    integer PRIMARY KEY,
    name       text    NOT NULL,
    examine    text,
    members    boolean NOT NULL,
    lowalch    integer,
    highalch   integer,
    value      integer,
    buy_limit  integer,
    icon       text,
    updated_at timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS prices_latest_1m (
    item_id   integer     NOT NULL,
    timestamp timestamptz NOT NULL,
    high      integer,
    high_time timestamptz,
    low       integer,
    low_time  timestamptz,
    PRIMARY KEY (item_id, timestamp)
) PARTITION BY RANGE (timestamp);

CREATE TABLE IF NOT EXISTS price_data_5min (
    item_id           integer     NOT NULL,
    timestamp         timestamptz NOT NULL,
    avg_high_price    integer,
    high_price_volume bigint      NOT NULL,
    avg_low_price     integer,
    low_price_volume  bigint      NOT NULL,
    PRIMARY KEY (item_id, timestamp)
) PARTITION BY RANGE (timestamp);

CREATE TABLE IF NOT EXISTS prices_1h (
    item_id           integer     NOT NULL,
    timestamp         timestamptz NOT NULL,
    avg_high_price    integer,
    high_price_volume bigint      NOT NULL,
    avg_low_price     integer,
    low_price_volume  bigint      NOT NULL,
    PRIMARY KEY (item_id, timestamp)
) PARTITION BY RANGE (timestamp);

CREATE TABLE IF NOT EXISTS osrs_news (
    guid         text PRIMARY KEY,
    title        text NOT NULL,
    link         text NOT NULL,
    published_at timestamptz,
    category     text,
    fetched_at   timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS player_counts (
    timestamp timestamptz PRIMARY KEY,
    players   integer NOT NULL
);

-- One row per item and tick; the 108 probabilities as little-endian f32.
CREATE TABLE IF NOT EXISTS predictions (
    item_id       integer     NOT NULL,
    tick_time     timestamptz NOT NULL,
    observed_at   timestamptz NOT NULL,
    model_version text        NOT NULL,
    probabilities bytea       NOT NULL,
    PRIMARY KEY (item_id, tick_time)
) PARTITION BY RANGE (tick_time);

CREATE TABLE IF NOT EXISTS model_registry (
    version       text PRIMARY KEY,
    state         text NOT NULL CHECK (state IN ('PENDING', 'ACTIVE', 'DEPRECATED', 'ARCHIVED')),
    path          text NOT NULL,
    sha256        text NOT NULL,
    mean_auc      double precision,
    metrics       jsonb NOT NULL,
    created_at    timestamptz NOT NULL,
    activated_at  timestamptz,
    deprecated_at timestamptz,
    archived_at   timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS model_registry_one_active ON model_registry (state) WHERE state = 'ACTIVE';

CREATE TABLE IF NOT EXISTS inference_status (
    tick_time     timestamptz PRIMARY KEY,
    items         integer NOT NULL,
    latency_ms    double precision NOT NULL,
    model_version text,
    outcome       text NOT NULL,
    message       text,
    created_at    timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS collector_status (
    collector            text PRIMARY KEY,
    last_success         timestamptz,
    last_error           text,
    last_error_at        timestamptz,
    consecutive_failures bigint NOT NULL DEFAULT 0,
    restarts             bigint NOT NULL DEFAULT 0,
    rows_written         bigint NOT NULL DEFAULT 0,
    updated_at           timestamptz NOT NULL
);

CREATE TABLE IF NOT EXISTS data_gaps (
    feed        text        NOT NULL,
    bucket      timestamptz NOT NULL,
    detected_at timestamptz NOT NULL,
    filled_at   timestamptz,
    PRIMARY KEY (feed, bucket)
);
