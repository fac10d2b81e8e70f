-- Model artifacts travel through the registry: see the PostgreSQL schema.
CREATE TABLE IF NOT EXISTS model_artifacts (
    version TEXT PRIMARY KEY REFERENCES model_registry (version) ON DELETE CASCADE,
    meta    BLOB NOT NULL,
    weights BLOB NOT NULL,
    sha256  TEXT NOT NULL
);
