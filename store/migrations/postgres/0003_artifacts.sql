-- Model artifacts travel through the registry: model.json and the weights
-- of a registered model, so that any process on this database can load a
-- model another one registered, with no shared disk. `sha256` is the
-- weights' (the registry row's), checked before a model is loaded.
CREATE TABLE IF NOT EXISTS model_artifacts (
    version text  PRIMARY KEY REFERENCES model_registry (version) ON DELETE CASCADE,
    meta    bytea NOT NULL,
    weights bytea NOT NULL,
    sha256  text  NOT NULL
);
