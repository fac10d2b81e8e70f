-- Closed days packed (store/src/packed.rs): the retention pass moves a
-- closed UTC day's rows of each time-series table into its _packed sibling,
-- one row per item and day holding that day's rows in one compressed body.
-- Partitioned like the table they pack, so retention drops both alike.
CREATE TABLE IF NOT EXISTS prices_latest_1m_packed (
    item_id    integer     NOT NULL,
    day        timestamptz NOT NULL,
    rows       integer     NOT NULL,
    first_time timestamptz NOT NULL,
    last_time  timestamptz NOT NULL,
    body       bytea       NOT NULL,
    PRIMARY KEY (item_id, day)
) PARTITION BY RANGE (day);

CREATE TABLE IF NOT EXISTS price_data_5min_packed (
    item_id    integer     NOT NULL,
    day        timestamptz NOT NULL,
    rows       integer     NOT NULL,
    first_time timestamptz NOT NULL,
    last_time  timestamptz NOT NULL,
    body       bytea       NOT NULL,
    PRIMARY KEY (item_id, day)
) PARTITION BY RANGE (day);

CREATE TABLE IF NOT EXISTS prices_1h_packed (
    item_id    integer     NOT NULL,
    day        timestamptz NOT NULL,
    rows       integer     NOT NULL,
    first_time timestamptz NOT NULL,
    last_time  timestamptz NOT NULL,
    body       bytea       NOT NULL,
    PRIMARY KEY (item_id, day)
) PARTITION BY RANGE (day);
