-- The newest backtest report of each registered model: see the PostgreSQL schema.
CREATE TABLE IF NOT EXISTS backtests (
    version    TEXT    PRIMARY KEY REFERENCES model_registry (version) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    report     TEXT    NOT NULL
);
