//! The trainer: the service trains, checks and replaces its own model.
//!
//! Every `trainer.check_interval` (on the primary only) it decides from the
//! store whether a training is due: the first model once the stored
//! `/latest` history spans `trainer.bootstrap_after`; then a new one once
//! the newest stored tick is `trainer.interval` past the data the last
//! training read; early, at most every `trainer.drift_cooldown`, when the
//! accuracy monitor reports drift. Times are the store's tick times, so a
//! replay at any speed schedules as the live service would.
//!
//! A training runs as a child process, `gept train --from-db` over the last
//! `trainer.window` of the store (streamed an hour at a time, in bounded
//! memory) under SCHED_IDLE (`chrt --idle 0`, `trainer.idle_priority`) or
//! at `nice` `trainer.nice`, so serving keeps its cores. The
//! ACTIVE model is scored beside the new one on validation rows it never
//! trained on (`--compare-with`). The new model is registered with its
//! files, refused when its mean AUC there is below the ACTIVE model's by
//! more than `trainer.max_auc_loss`, then put through the activation gates;
//! once ACTIVE, the inference reloads at once. Every step is logged,
//! counted (`gept_trainings_total{outcome}`) and shown in `/api/v1/status`.

use crate::accuracy::Monitor;
use crate::inference::Inference;
use crate::standby::Role;
use gept_core::config::TrainerConfig;
use gept_core::metrics as m;
use gept_model::file::read_meta;
use gept_store::{Expiring, Store};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// One training, as `/api/v1/status` shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Run {
    /// `bootstrap`, `schedule` or `drift`.
    pub reason: String,
    /// Wall clock, Unix seconds.
    pub started_at: i64,
    pub seconds: f64,
    /// The stored ticks it read: `[data_from, data_until]`.
    pub data_from: i64,
    pub data_until: i64,
    /// `activated`, `rejected` or `failed`.
    pub outcome: String,
    pub version: Option<String>,
    pub training_rows: Option<u64>,
    pub validation_rows: Option<u64>,
    pub mean_auc: Option<f64>,
    /// Why it was rejected or failed; the gates' findings.
    pub message: Option<String>,
}

/// The trainer's state for `/api/v1/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TrainerStatus {
    pub enabled: bool,
    /// `idle` or `training`.
    pub state: String,
    /// Why the current training runs, and since when.
    pub current: Option<Run>,
    pub last: Option<Run>,
    pub runs: u64,
}

/// Handle to the trainer (its status).
#[derive(Clone, Default)]
pub struct Trainer {
    pub status: Arc<Mutex<TrainerStatus>>,
}

/// What the trainer works with.
pub struct TrainerEnv {
    pub config: TrainerConfig,
    /// The database the training child reads (the service's own).
    pub database_url: String,
    /// Where training children write (a folder under the model cache).
    pub work_dir: PathBuf,
    /// Where registry models are written to be loaded (for the comparison).
    pub model_cache: PathBuf,
    pub store: Store,
    pub inference: Inference,
    pub accuracy: Option<Monitor>,
    pub role: Arc<Role>,
    /// Train on shuffled labels (crash tests of the gates only).
    pub shuffle_labels: bool,
}

impl Trainer {
    /// Starts the trainer's loop on the tokio runtime; this handle shows
    /// its status.
    pub fn start(&self, env: TrainerEnv, cancel: CancellationToken) -> tokio::task::JoinHandle<()> {
        {
            let mut s = self.status.lock().expect("trainer status");
            s.enabled = true;
            s.state = "idle".into();
        }
        let status = self.status.clone();
        tokio::spawn(async move {
            let mut last_attempt: Option<(i64, Instant)> = None;
            // The ACTIVE model's last training tick, read once per version.
            let mut trained: Option<(String, Option<i64>)> = None;
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => break,
                    _ = tokio::time::sleep(env.config.check_interval) => {}
                }
                if !env.role.is_primary() {
                    continue;
                }
                let due = match due(&env, last_attempt, &mut trained).await {
                    Ok(due) => due,
                    Err(e) => {
                        tracing::warn!(error = %e, "trainer: cannot read the store to decide");
                        continue;
                    }
                };
                let Some((reason, from, until)) = due else {
                    continue;
                };
                last_attempt = Some((until, Instant::now()));
                let run = tokio::select! {
                    _ = cancel.cancelled() => break,
                    run = train(&env, &status, reason, from, until) => run,
                };
                metrics::counter!(m::TRAININGS, "outcome" => run.outcome.clone()).increment(1);
                metrics::gauge!(m::TRAINING_SECONDS).set(run.seconds);
                if run.outcome == "activated" {
                    metrics::gauge!(m::TRAINING_LAST_SUCCESS)
                        .set(chrono::Utc::now().timestamp() as f64);
                }
                let mut s = status.lock().expect("trainer status");
                s.state = "idle".into();
                s.current = None;
                s.last = Some(run);
                s.runs += 1;
            }
        })
    }
}

/// Whether a training is due: its reason and the stored span to read.
async fn due(
    env: &TrainerEnv,
    last_attempt: Option<(i64, Instant)>,
    trained: &mut Option<(String, Option<i64>)>,
) -> anyhow::Result<Option<(&'static str, i64, i64)>> {
    let Some(newest) = env.store.newest_time("prices_latest_1m").await? else {
        return Ok(None);
    };
    let oldest = env
        .store
        .oldest_time(Expiring::Latest)
        .await?
        .unwrap_or(newest);
    let from = newest - env.config.window.as_secs() as i64;
    let active = env.store.active_model().await?;
    let Some(active) = active else {
        let enough = newest - oldest >= env.config.bootstrap_after.as_secs() as i64;
        // Not twice on the same data: a failed bootstrap waits for more.
        let retried = last_attempt.is_some_and(|(until, _)| {
            newest - until < env.config.check_interval.as_secs().max(3600) as i64
        });
        return Ok((enough && !retried).then_some(("bootstrap", from, newest)));
    };
    // The data the ACTIVE model (or the last attempt) read ends here.
    if trained.as_ref().is_none_or(|(v, _)| *v != active.version) {
        *trained = Some((active.version.clone(), active_last_tick(env, &active).await));
    }
    let trained_until = trained.as_ref().and_then(|(_, t)| *t);
    let last_until = match (trained_until, last_attempt) {
        (Some(a), Some((b, _))) => Some(a.max(b)),
        (a, b) => a.or(b.map(|(u, _)| u)),
    };
    let interval = env.config.interval.as_secs() as i64;
    if last_until.is_none_or(|u| newest - u >= interval) {
        return Ok(Some(("schedule", from, newest)));
    }
    let drift = env
        .accuracy
        .as_ref()
        .is_some_and(|a| a.report.load().models.first().is_some_and(|r| r.drift));
    let cooled = last_attempt.is_none_or(|(_, at)| at.elapsed() >= env.config.drift_cooldown);
    Ok((drift && cooled).then_some(("drift", from, newest)))
}

/// The last tick the ACTIVE model trained on, from its model.json.
async fn active_last_tick(env: &TrainerEnv, active: &gept_store::ModelEntry) -> Option<i64> {
    let meta: gept_model::ModelMeta = match env.store.model_artifact(&active.version).await {
        Ok(Some(a)) => serde_json::from_slice(&a.meta).ok()?,
        _ => read_meta(Path::new(&active.path)).ok()?,
    };
    meta.training["last_tick"].as_i64()
}

/// One training: the child, registration, the gates, activation.
async fn train(
    env: &TrainerEnv,
    status: &Mutex<TrainerStatus>,
    reason: &str,
    from: i64,
    until: i64,
) -> Run {
    let started = Instant::now();
    let mut run = Run {
        reason: reason.into(),
        started_at: chrono::Utc::now().timestamp(),
        data_from: from,
        data_until: until,
        outcome: "failed".into(),
        ..Run::default()
    };
    {
        let mut s = status.lock().expect("trainer status");
        s.state = "training".into();
        s.current = Some(run.clone());
    }
    tracing::info!(reason, from, until, "trainer: training a model");
    let out = env
        .work_dir
        .join(format!("training-{until}-{}", std::process::id()));
    let result = train_and_activate(env, &out, from, until, &mut run).await;
    let _ = std::fs::remove_dir_all(&out);
    run.seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(()) => tracing::info!(
            outcome = %run.outcome,
            version = ?run.version,
            seconds = run.seconds,
            message = ?run.message,
            "trainer: training finished"
        ),
        Err(e) => {
            run.outcome = "failed".into();
            run.message = Some(e.to_string());
            tracing::error!(error = %e, seconds = run.seconds, "trainer: training failed");
        }
    }
    run
}

async fn train_and_activate(
    env: &TrainerEnv,
    out: &Path,
    from: i64,
    until: i64,
    run: &mut Run,
) -> anyhow::Result<()> {
    let c = &env.config;
    std::fs::create_dir_all(&env.work_dir)?;
    let _ = std::fs::remove_dir_all(out);
    let active = env.store.active_model().await?;
    let compare = match &active {
        Some(entry) => {
            match gept_model::registry::materialise(&env.store, entry, &env.model_cache).await {
                Ok(dir) => Some(dir),
                Err(e) => {
                    tracing::warn!(error = %e, "trainer: the ACTIVE model cannot be compared");
                    None
                }
            }
        }
        None => None,
    };
    let mut cmd = child_command(c)?;
    let hidden: Vec<String> = c.hidden.iter().map(|h| h.to_string()).collect();
    cmd.arg("train")
        .arg("--from-db")
        .args(["--since", &from.to_string(), "--until", &until.to_string()])
        .arg("--out")
        .arg(out)
        .args(["--device", "cpu", "--quiet"])
        .args(["--stride", &c.stride.to_string()])
        .args(["--epochs", &c.epochs.to_string()])
        .args(["--hidden", &hidden.join(",")])
        .args(["--validation-fraction", &c.validation_fraction.to_string()])
        .args(["--max-minutes", &c.max_minutes.to_string()])
        .env("GEPT__DATABASE__URL", &env.database_url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if let Some(dir) = &compare {
        cmd.arg("--compare-with").arg(dir);
    }
    if env.shuffle_labels {
        cmd.arg("--shuffle-labels");
    }
    run_child(cmd, c.timeout, "training").await?;
    let meta = read_meta(out)?;
    run.version = Some(meta.version.clone());
    run.training_rows = meta.training["training_rows"].as_u64();
    run.validation_rows = meta.training["validation_rows"].as_u64();
    run.mean_auc = meta.metrics["mean_auc"].as_f64();
    let entry = gept_model::registry::register_dir(&env.store, out).await?;
    tracing::info!(version = %entry.version, mean_auc = ?run.mean_auc, "trainer: model registered");

    // Not worse than the ACTIVE model on rows neither trained on.
    let compared = &meta.training["compared"];
    if let (Some(new), Some(old)) = (
        compared["new"]["mean_auc"].as_f64(),
        compared["active"]["mean_auc"].as_f64(),
    ) {
        if new < old - c.max_auc_loss {
            run.outcome = "rejected".into();
            run.message = Some(format!(
                "mean AUC {new:.4} on {} rows after the ACTIVE model's data, below the ACTIVE model's {old:.4} by more than {}",
                compared["rows"], c.max_auc_loss
            ));
            let _ = env
                .store
                .archive_model(&entry.version, chrono::Utc::now().timestamp())
                .await;
            return Ok(());
        }
    }
    // The like-for-like comparison above replaces the validation-vs-validation
    // bar when it could be made.
    let verdict = gept_model::registry::activate_gated(
        &env.store,
        &entry.version,
        false,
        chrono::Utc::now().timestamp(),
        compared.is_null(),
    )
    .await?;
    if !verdict.passed {
        run.outcome = "rejected".into();
        run.message = Some(format!(
            "the gates refused it: {}",
            verdict.reasons.join("; ")
        ));
        let _ = env
            .store
            .archive_model(&entry.version, chrono::Utc::now().timestamp())
            .await;
        return Ok(());
    }
    run.outcome = "activated".into();
    run.message = (!verdict.reasons.is_empty()).then(|| verdict.reasons.join("; "));
    // Served from the next tick, without waiting for the registry poll.
    if let Err(e) = env.inference.reload().await {
        tracing::warn!(error = %e, "trainer: the inference did not reload yet; the registry poll will");
    }
    // Its backtest on the held-out end of the window (rows it did not train
    // on), stored for /api/v1/backtest. A failure is logged; the model stays.
    let held_out_from = meta.training["validation_from"]
        .as_i64()
        .unwrap_or(until - (c.window.as_secs_f64() * c.validation_fraction) as i64);
    let mut cmd = child_command(c)?;
    cmd.arg("backtest")
        .arg("--from-db")
        .args(["--from", &held_out_from.to_string()])
        .args(["--until", &until.to_string()])
        .arg("--model")
        .arg(out)
        .arg("--out")
        .arg(out.join("backtest"))
        .args([
            "--capital",
            "10000000,100000000",
            "--risk",
            "low,medium,high",
        ])
        .args(["--device", "cpu", "--quiet", "--store"])
        .env("GEPT__DATABASE__URL", &env.database_url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    match run_child(cmd, c.timeout, "backtest").await {
        Ok(()) => tracing::info!(version = %entry.version, "trainer: backtest stored"),
        Err(e) => {
            tracing::warn!(version = %entry.version, error = %e, "trainer: the backtest failed")
        }
    }
    Ok(())
}

/// `gept` (or `trainer.program`) under SCHED_IDLE where `chrt` is there
/// (the child runs only on CPU time the service leaves), else `nice`.
fn child_command(c: &gept_core::config::TrainerConfig) -> anyhow::Result<tokio::process::Command> {
    let program = if c.program.is_empty() {
        std::env::current_exe()?
    } else {
        PathBuf::from(&c.program)
    };
    let chrt = c.idle_priority.then(|| find_in_path("chrt")).flatten();
    Ok(if let Some(chrt) = chrt {
        let mut cmd = tokio::process::Command::new(chrt);
        cmd.args(["--idle", "0"]).arg(&program);
        cmd
    } else if c.nice > 0 {
        let mut cmd = tokio::process::Command::new("nice");
        cmd.arg("-n").arg(c.nice.to_string()).arg(&program);
        cmd
    } else {
        tokio::process::Command::new(&program)
    })
}

/// Runs a child to its end within `timeout` (killed after); its last lines
/// of stderr make the error.
async fn run_child(
    mut cmd: tokio::process::Command,
    timeout: std::time::Duration,
    what: &str,
) -> anyhow::Result<()> {
    let child = cmd.spawn()?;
    let output = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .map_err(|_| anyhow::anyhow!("the {what} did not finish within {timeout:?}; killed"))??;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let tail: String = err
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        anyhow::bail!("the {what} child exited with {}: {tail}", output.status);
    }
    Ok(())
}

/// `name` in a folder of `PATH`, if any.
fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}
