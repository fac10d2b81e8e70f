//! Every metric GePT emits: one name each, in one place, with its type,
//! labels and meaning. `docs/METRICS.md` documents the same list. Names carry
//! the `gept_` prefix and base units; counters end in `_total`.

/// The type of a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Observations (rows) ingested, by feed. Labels: `feed`.
pub const OBSERVATIONS_INGESTED: &str = "gept_observations_ingested_total";
/// Records kept out of parsed responses, by feed and reason. Labels: `feed`, `reason`.
pub const RECORDS_REJECTED: &str = "gept_records_rejected_total";
/// Rows actually stored (new), by table. Labels: `table`.
pub const ROWS_STORED: &str = "gept_rows_stored_total";
/// Store writes that failed and will be retried. Labels: `table`.
pub const STORE_ERRORS: &str = "gept_store_errors_total";
/// Rows waiting in the store writer.
pub const STORE_BUFFERED_ROWS: &str = "gept_store_buffered_rows";
/// Bytes in the store writer's journal (rows spilled during an outage).
pub const STORE_JOURNAL_BYTES: &str = "gept_store_journal_bytes";
/// Upstream request failures (each attempt). Labels: `kind`.
pub const UPSTREAM_ERRORS: &str = "gept_upstream_errors_total";
/// 1 while the circuit breaker of an upstream host is open. Labels: `host`.
pub const UPSTREAM_BREAKER_OPEN: &str = "gept_upstream_breaker_open";
/// Free bytes of a watched volume. Labels: `volume` (`database`, `backups`).
pub const DISK_FREE_BYTES: &str = "gept_disk_free_bytes";
/// Size in bytes of a watched volume. Labels: `volume`.
pub const DISK_SIZE_BYTES: &str = "gept_disk_size_bytes";
/// 1 while one of the service's own alerts fires. Labels: `alert`.
pub const ALERTS_FIRING: &str = "gept_alerts_firing";
/// Alert posts to the webhook. Labels: `outcome` (`ok`, `error`).
pub const ALERT_NOTIFICATIONS: &str = "gept_alert_notifications_total";
/// 1 while this node holds the primary's lease (always 1 without standby).
pub const LEASE_HELD: &str = "gept_lease_held";
/// Times this node took the lease from a follower's role.
pub const LEASE_TAKEOVERS: &str = "gept_lease_takeovers_total";
/// Times the upstream circuit breaker opened.
pub const UPSTREAM_BREAKER_OPENED: &str = "gept_upstream_breaker_opened_total";
/// Collector polls that failed. Labels: `collector`.
pub const COLLECTOR_ERRORS: &str = "gept_collector_errors_total";
/// Collector restarts by the supervisor. Labels: `collector`.
pub const COLLECTOR_RESTARTS: &str = "gept_collector_restarts_total";
/// Collector polls that succeeded. Labels: `collector`.
pub const COLLECTOR_POLLS: &str = "gept_collector_polls_total";
/// Consecutive failed polls of a collector, now. Labels: `collector`.
pub const COLLECTOR_CONSECUTIVE_FAILURES: &str = "gept_collector_consecutive_failures";
/// Unix time of a collector's last successful poll. Labels: `collector`.
pub const COLLECTOR_LAST_SUCCESS: &str = "gept_collector_last_success_timestamp_seconds";
/// Age of the newest data of a feed, in seconds (upstream time). Labels: `feed`.
pub const DATA_AGE: &str = "gept_data_age_seconds";
/// Restarts of a supervised thread after a panic. Labels: `component`
/// (`features`, `inference`).
pub const COMPONENT_RESTARTS: &str = "gept_component_restarts_total";
/// 1 while a supervised thread runs, 0 while it restarts. Labels: `component`.
pub const COMPONENT_UP: &str = "gept_component_up";
/// 1 while a supervised thread has restarted at least 5 times in 10 minutes.
/// Labels: `component`.
pub const RESTART_STORM: &str = "gept_component_restart_storm";
/// Missed buckets detected. Labels: `feed`.
pub const GAPS_DETECTED: &str = "gept_data_gaps_detected_total";
/// Missed buckets back-filled. Labels: `feed`.
pub const GAPS_FILLED: &str = "gept_data_gaps_filled_total";
/// Feature rows computed by the serving engine.
pub const FEATURE_ROWS: &str = "gept_feature_rows_total";
/// Seconds the serving engine takes per tick, from receiving it to its rows.
pub const FEATURE_TICK_SECONDS: &str = "gept_feature_tick_seconds";
/// Collector events the feature engine missed because it fell behind.
pub const FEATURE_EVENTS_LAGGED: &str = "gept_feature_events_lagged_total";
/// HTTP requests served. Labels: `route`, `status`.
pub const HTTP_REQUESTS: &str = "gept_http_requests_total";

/// From a `/latest` response's arrival to its predictions' publication, seconds.
pub const TICK_TO_PREDICTION_SECONDS: &str = "gept_tick_to_prediction_latency_seconds";
/// Seconds of one tick's inference (encoding, forward pass, calibration, publication).
pub const INFERENCE_SECONDS: &str = "gept_inference_seconds";
/// Items predicted at the last tick.
pub const PREDICTIONS_PER_TICK: &str = "gept_predictions_per_tick";
/// Item predictions published.
pub const PREDICTIONS: &str = "gept_predictions_total";
/// The model in use: 1 for the loaded version, 0 for earlier ones. Labels: `version`.
pub const MODEL_INFO: &str = "gept_model_info";
/// Websocket clients connected now.
pub const WS_CLIENTS: &str = "gept_websocket_clients";
/// Stream messages not delivered to a slow client (it got `lagged` instead).
pub const WS_DROPPED: &str = "gept_websocket_dropped_messages_total";
/// HTTP connections open now.
pub const HTTP_CONNECTIONS: &str = "gept_http_connections";
/// HTTP connections refused because a connection cap was full.
pub const HTTP_CONNECTIONS_REFUSED: &str = "gept_http_connections_refused_total";
/// HTTP connections that ended with an error (timeouts, resets, bad requests).
pub const HTTP_CONNECTION_ERRORS: &str = "gept_http_connection_errors_total";
/// HTTP requests refused by the rate limit.
pub const RATE_LIMITED: &str = "gept_http_rate_limited_total";
/// Retention passes. Labels: `outcome` (`ok`, `error`).
pub const RETENTION_RUNS: &str = "gept_retention_runs_total";
/// Rows removed by retention. Labels: `table`.
pub const RETENTION_ROWS_DELETED: &str = "gept_retention_rows_deleted_total";
/// Partitions dropped by retention (PostgreSQL). Labels: `table`.
pub const RETENTION_PARTITIONS_DROPPED: &str = "gept_retention_partitions_dropped_total";
/// `/5m` and `/1h` rows filled in from expiring ticks.
pub const RETENTION_ROWS_DOWNSAMPLED: &str = "gept_retention_rows_downsampled_total";
/// `/latest`, `/5m` and `/1h` rows moved into packed days (PostgreSQL).
pub const RETENTION_ROWS_PACKED: &str = "gept_retention_rows_packed_total";
/// Unix time of the last successful retention pass.
pub const RETENTION_LAST_SUCCESS: &str = "gept_retention_last_success_timestamp_seconds";
/// Backups made. Labels: `outcome` (`ok`, `error`).
pub const BACKUPS: &str = "gept_backups_total";
/// Unix time of the newest complete backup.
pub const BACKUP_LAST_SUCCESS: &str = "gept_backup_last_success_timestamp_seconds";
/// Size of the newest complete backup.
pub const BACKUP_BYTES: &str = "gept_backup_bytes";
/// Bytes a table takes with its indexes, after each retention pass.
/// Labels: `table`.
pub const TABLE_BYTES: &str = "gept_table_bytes";
/// Bytes the database holds in use.
pub const DATABASE_BYTES: &str = "gept_database_bytes";
/// HTTP request duration in seconds. Labels: `route`.
pub const HTTP_REQUEST_SECONDS: &str = "gept_http_request_duration_seconds";

/// Live Brier score of the serving model, by horizon group. Labels: `group`.
pub const ACCURACY_BRIER: &str = "gept_accuracy_brier";
/// Live expected calibration error, by horizon group. Labels: `group`.
pub const ACCURACY_ECE: &str = "gept_accuracy_ece";
/// Live AUC, by horizon group. Labels: `group`.
pub const ACCURACY_AUC: &str = "gept_accuracy_auc";
/// Live within-item AUC, by horizon group. Labels: `group`.
pub const ACCURACY_WITHIN_ITEM_AUC: &str = "gept_accuracy_within_item_auc";
/// Matured labels the live figures cover, by horizon group. Labels: `group`.
pub const ACCURACY_LABELS: &str = "gept_accuracy_labels";
/// 1 while a horizon group's live figures drift from validation. Labels: `group`.
pub const ACCURACY_DRIFT: &str = "gept_accuracy_drift";
/// Rows the accuracy monitor follows.
pub const ACCURACY_OPEN_ROWS: &str = "gept_accuracy_open_rows";
/// Times the accuracy monitor fell behind and dropped its rows.
pub const ACCURACY_GAPS: &str = "gept_accuracy_gaps_total";
/// Seconds to recompute the live figures.
pub const ACCURACY_PUBLISH_SECONDS: &str = "gept_accuracy_publish_seconds";

/// Trainings run by the trainer. Labels: `outcome` (`activated`, `rejected`, `failed`).
pub const TRAININGS: &str = "gept_trainings_total";
/// Live recalibrations of uncalibrated horizon groups. Labels: `outcome`
/// (`activated`, `rejected`, `failed`).
pub const RECALIBRATIONS: &str = "gept_recalibrations_total";
/// Seconds the last training took.
pub const TRAINING_SECONDS: &str = "gept_training_seconds";
/// Unix time of the last training that activated a model.
pub const TRAINING_LAST_SUCCESS: &str = "gept_training_last_success_timestamp_seconds";

/// Every metric: (name, kind, help).
pub const ALL: &[(&str, Kind, &str)] = &[
    (
        OBSERVATIONS_INGESTED,
        Kind::Counter,
        "Rows parsed from upstream responses, by feed.",
    ),
    (
        RECORDS_REJECTED,
        Kind::Counter,
        "Records kept out of upstream responses, by feed and reason.",
    ),
    (ROWS_STORED, Kind::Counter, "New rows stored, by table."),
    (
        STORE_ERRORS,
        Kind::Counter,
        "Failed store writes (retried), by table.",
    ),
    (
        STORE_BUFFERED_ROWS,
        Kind::Gauge,
        "Rows waiting in the store writer.",
    ),
    (
        STORE_JOURNAL_BYTES,
        Kind::Gauge,
        "Bytes in the store writer's journal (rows spilled during an outage).",
    ),
    (
        UPSTREAM_ERRORS,
        Kind::Counter,
        "Failed upstream request attempts, by kind.",
    ),
    (
        TABLE_BYTES,
        Kind::Gauge,
        "Bytes a table takes with its indexes, by table (after each retention pass).",
    ),
    (
        UPSTREAM_BREAKER_OPEN,
        Kind::Gauge,
        "1 while the circuit breaker of an upstream host is open, by host.",
    ),
    (
        DISK_FREE_BYTES,
        Kind::Gauge,
        "Free bytes of a watched volume (database, backups).",
    ),
    (
        DISK_SIZE_BYTES,
        Kind::Gauge,
        "Size in bytes of a watched volume (database, backups).",
    ),
    (
        ALERTS_FIRING,
        Kind::Gauge,
        "1 while one of the service's own alerts fires, by alert.",
    ),
    (
        ALERT_NOTIFICATIONS,
        Kind::Counter,
        "Alert posts to the webhook, by outcome.",
    ),
    (
        LEASE_HELD,
        Kind::Gauge,
        "1 while this node holds the primary's lease (always without standby).",
    ),
    (
        LEASE_TAKEOVERS,
        Kind::Counter,
        "Times this node took the primary's lease as a follower.",
    ),
    (
        UPSTREAM_BREAKER_OPENED,
        Kind::Counter,
        "Times the upstream circuit breaker opened.",
    ),
    (
        COLLECTOR_ERRORS,
        Kind::Counter,
        "Failed collector polls, by collector.",
    ),
    (
        COLLECTOR_RESTARTS,
        Kind::Counter,
        "Collector restarts by the supervisor, by collector.",
    ),
    (HTTP_CONNECTIONS, Kind::Gauge, "HTTP connections open now."),
    (
        HTTP_CONNECTIONS_REFUSED,
        Kind::Counter,
        "HTTP connections refused because a connection cap was full.",
    ),
    (
        HTTP_CONNECTION_ERRORS,
        Kind::Counter,
        "HTTP connections that ended with an error (timeouts, resets, bad requests).",
    ),
    (
        COMPONENT_RESTARTS,
        Kind::Counter,
        "Restarts of a supervised thread after a panic, by component.",
    ),
    (
        COMPONENT_UP,
        Kind::Gauge,
        "1 while a supervised thread runs, 0 while it restarts, by component.",
    ),
    (
        RESTART_STORM,
        Kind::Gauge,
        "1 while a supervised thread restarted at least 5 times in 10 minutes.",
    ),
    (
        COLLECTOR_POLLS,
        Kind::Counter,
        "Successful collector polls, by collector.",
    ),
    (
        COLLECTOR_CONSECUTIVE_FAILURES,
        Kind::Gauge,
        "Consecutive failed polls, by collector.",
    ),
    (
        COLLECTOR_LAST_SUCCESS,
        Kind::Gauge,
        "Unix time of the last successful poll, by collector.",
    ),
    (
        DATA_AGE,
        Kind::Gauge,
        "Seconds since the newest data of a feed (upstream time).",
    ),
    (
        GAPS_DETECTED,
        Kind::Counter,
        "Missed buckets detected, by feed.",
    ),
    (
        GAPS_FILLED,
        Kind::Counter,
        "Missed buckets back-filled, by feed.",
    ),
    (
        HTTP_REQUESTS,
        Kind::Counter,
        "HTTP requests served, by route and status.",
    ),
    (
        FEATURE_ROWS,
        Kind::Counter,
        "Feature rows computed by the serving engine.",
    ),
    (
        FEATURE_TICK_SECONDS,
        Kind::Histogram,
        "Seconds per tick in the feature engine.",
    ),
    (
        FEATURE_EVENTS_LAGGED,
        Kind::Counter,
        "Collector events the feature engine missed.",
    ),
    (
        TICK_TO_PREDICTION_SECONDS,
        Kind::Histogram,
        "Seconds from a /latest response's arrival to its predictions' publication.",
    ),
    (
        INFERENCE_SECONDS,
        Kind::Histogram,
        "Seconds of one tick's inference.",
    ),
    (
        PREDICTIONS_PER_TICK,
        Kind::Gauge,
        "Items predicted at the last tick.",
    ),
    (PREDICTIONS, Kind::Counter, "Item predictions published."),
    (
        MODEL_INFO,
        Kind::Gauge,
        "1 for the model version in use, by version.",
    ),
    (WS_CLIENTS, Kind::Gauge, "Websocket clients connected."),
    (
        WS_DROPPED,
        Kind::Counter,
        "Stream messages not delivered to slow clients.",
    ),
    (
        RATE_LIMITED,
        Kind::Counter,
        "HTTP requests refused by the rate limit.",
    ),
    (
        HTTP_REQUEST_SECONDS,
        Kind::Histogram,
        "HTTP request duration in seconds, by route.",
    ),
    (
        RETENTION_RUNS,
        Kind::Counter,
        "Retention passes, by outcome.",
    ),
    (
        RETENTION_ROWS_DELETED,
        Kind::Counter,
        "Rows removed by retention, by table.",
    ),
    (
        RETENTION_PARTITIONS_DROPPED,
        Kind::Counter,
        "Whole partitions dropped by retention, by table.",
    ),
    (
        RETENTION_ROWS_DOWNSAMPLED,
        Kind::Counter,
        "5m and 1h rows filled in from expiring 1-minute ticks.",
    ),
    (
        RETENTION_ROWS_PACKED,
        Kind::Counter,
        "latest, 5m and 1h rows of closed days moved into one compressed row per item and day (PostgreSQL).",
    ),
    (
        RETENTION_LAST_SUCCESS,
        Kind::Gauge,
        "Unix time of the last successful retention pass.",
    ),
    (BACKUPS, Kind::Counter, "Backups made, by outcome."),
    (
        BACKUP_LAST_SUCCESS,
        Kind::Gauge,
        "Unix time of the newest complete backup.",
    ),
    (
        BACKUP_BYTES,
        Kind::Gauge,
        "Size in bytes of the newest complete backup.",
    ),
    (
        DATABASE_BYTES,
        Kind::Gauge,
        "Bytes the database holds in use, measured after each retention pass.",
    ),
    (
        ACCURACY_BRIER,
        Kind::Gauge,
        "Live Brier score of the serving model, by horizon group.",
    ),
    (
        ACCURACY_ECE,
        Kind::Gauge,
        "Live expected calibration error, by horizon group.",
    ),
    (ACCURACY_AUC, Kind::Gauge, "Live AUC, by horizon group."),
    (
        ACCURACY_WITHIN_ITEM_AUC,
        Kind::Gauge,
        "Live within-item AUC, by horizon group.",
    ),
    (
        ACCURACY_LABELS,
        Kind::Gauge,
        "Matured labels the live figures cover, by horizon group.",
    ),
    (
        ACCURACY_DRIFT,
        Kind::Gauge,
        "1 while a horizon group's live Brier or ECE is worse than validation by more than the margin.",
    ),
    (
        ACCURACY_OPEN_ROWS,
        Kind::Gauge,
        "Rows (item x sampled tick) the accuracy monitor follows.",
    ),
    (
        ACCURACY_GAPS,
        Kind::Counter,
        "Times the accuracy monitor fell behind the ticks and dropped its rows.",
    ),
    (
        ACCURACY_PUBLISH_SECONDS,
        Kind::Histogram,
        "Seconds to recompute the live accuracy figures.",
    ),
    (
        TRAININGS,
        Kind::Counter,
        "Trainings run by the service's trainer, by outcome.",
    ),
    (
        RECALIBRATIONS,
        Kind::Counter,
        "Live recalibrations of horizon groups validation had no label for, by outcome.",
    ),
    (TRAINING_SECONDS, Kind::Gauge, "Seconds the last training took."),
    (
        TRAINING_LAST_SUCCESS,
        Kind::Gauge,
        "Unix time of the last training that activated a model.",
    ),
];
