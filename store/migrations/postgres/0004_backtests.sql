-- The newest backtest report of each registered model (`gept backtest
-- --store`, run by the trainer after each training): JSON, a few KB.
CREATE TABLE IF NOT EXISTS backtests (
    version    text   PRIMARY KEY REFERENCES model_registry (version) ON DELETE CASCADE,
    created_at bigint NOT NULL,
    report     text   NOT NULL
);
