//! The service trains its own models. Recorded ticks and buckets are stored
//! and published as the collectors do, into a service with no model and a
//! small bootstrap threshold (6 h of ticks): the trainer trains the first
//! model in a child process, registers it, activates it and predictions
//! flow, without a restart. More ticks, past the schedule (3 h): a second
//! training replaces it. Then a service on the same database whose trainer
//! learns from shuffled labels: the gates refuse that model, the old one
//! stays ACTIVE, and `/api/v1/status` says why.

mod common;

use gept::service::Service;
use gept_actors::supervise::Faults;
use gept_core::recordings::{HOURLY_FILE, LATEST_FILE};
use gept_dataflows::inputs::{load_hours, load_ticks};
use std::time::Duration;

/// Ticks of each phase (the recordings hold one about every 5 minutes).
const BOOTSTRAP: usize = 84;
const MORE: usize = 40;
const LAST: usize = 40;

fn config(url: &str) -> gept_core::config::Config {
    let mut config = common::in_process_config(
        url,
        &[
            ("GEPT__TRAINER__PROGRAM", env!("CARGO_BIN_EXE_gept")),
            ("GEPT__TRAINER__BOOTSTRAP_AFTER", "6h"),
            ("GEPT__TRAINER__INTERVAL", "3h"),
            ("GEPT__TRAINER__CHECK_INTERVAL", "200ms"),
            ("GEPT__TRAINER__STRIDE", "2"),
            ("GEPT__TRAINER__EPOCHS", "3"),
            ("GEPT__TRAINER__VALIDATION_FRACTION", "0.3"),
            ("GEPT__TRAINER__MAX_AUC_LOSS", "0.05"),
            ("GEPT__RETENTION__ENABLED", "false"),
            ("GEPT__BACKUP__ENABLED", "false"),
        ],
    );
    config.trainer.hidden = vec![16];
    config
}

/// Waits for the trainer's `runs` to reach `n`; answers the last run.
async fn trained(base: &str, n: u64) -> serde_json::Value {
    let b = base.to_string();
    common::wait_for("a training to finish", 300, || {
        let b = b.clone();
        async move { common::status(&b).await["trainer"]["runs"].as_u64() >= Some(n) }
    })
    .await;
    common::status(base).await["trainer"]["last"].clone()
}

#[test]
fn the_service_trains_checks_and_replaces_its_own_model() {
    gept::service::system().block_on(trainer());
}

async fn trainer() {
    let rec = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}?mode=rwc", tmp.path().join("gept.db").display());
    let mut config = config(&url);
    config.data.dir = tmp.path().join("data");
    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(BOOTSTRAP + MORE + LAST)).unwrap();
    let hours = load_hours(Some(&rec.join(HOURLY_FILE))).unwrap();

    let service = Service::start(&config).await.unwrap();
    let base = format!("http://{}", service.addr);
    assert_eq!(common::status(&base).await["model"]["active"], false);
    let mut stream = service.inference.stream.subscribe();

    // Enough history: the first model, trained, ACTIVE and predicting.
    common::feed_recorded(&service, &ticks[..BOOTSTRAP], &hours).await;
    let first = trained(&base, 1).await;
    assert_eq!(first["reason"], "bootstrap", "{first}");
    assert_eq!(first["outcome"], "activated", "{first}");
    assert!(first["training_rows"].as_u64().unwrap() > 0, "{first}");
    let v1 = first["version"].as_str().unwrap().to_string();
    let active = service.store.active_model().await.unwrap().unwrap();
    assert_eq!(active.version, v1);
    assert_eq!(common::status(&base).await["model"]["version"], v1.as_str());
    // The next tick is predicted by it.
    common::feed_recorded(&service, &ticks[BOOTSTRAP..BOOTSTRAP + 1], &hours).await;
    let published = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let p = stream.recv().await.unwrap();
            if p.tick_time == ticks[BOOTSTRAP].time {
                return p;
            }
        }
    })
    .await
    .expect("the tick after the first training is predicted");
    assert_eq!(&*published.model_version, v1.as_str());
    assert!(!published.predictions.is_empty());
    // Its backtest on the rows it validated on, served for the ACTIVE model.
    let backtest: serde_json::Value = common::get_json(format!("{base}/api/v1/backtest")).await;
    assert_eq!(backtest["model_version"], v1.as_str(), "{backtest}");
    let report = &backtest["report"];
    assert_eq!(report["model_version"], v1.as_str(), "{backtest}");
    assert!(report["ticks"].as_u64().unwrap() > 0, "{backtest}");
    assert_eq!(report["until"], first["data_until"], "{backtest}");
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "two capitals × three risks");
    assert!(runs
        .iter()
        .all(|r| r["strategies"].as_array().unwrap().len() == 4));

    // Past the schedule: a second model replaces the first.
    common::feed_recorded(&service, &ticks[BOOTSTRAP + 1..BOOTSTRAP + MORE], &hours).await;
    let second = trained(&base, 2).await;
    assert_eq!(second["reason"], "schedule", "{second}");
    assert_eq!(second["outcome"], "activated", "{second}");
    let v2 = second["version"].as_str().unwrap().to_string();
    assert_ne!(v2, v1);
    assert!(
        second["data_until"].as_i64().unwrap() >= first["data_until"].as_i64().unwrap() + 3 * 3600,
        "{second}"
    );
    assert!(second["data_from"].as_i64().unwrap() <= ticks[0].time);
    let b = base.clone();
    let want = v2.clone();
    common::wait_for("the second model to serve", 30, || {
        let (b, want) = (b.clone(), want.clone());
        async move { common::status(&b).await["model"]["version"] == want.as_str() }
    })
    .await;
    let metrics = common::get_text(format!("{base}/metrics")).await;
    assert_eq!(
        common::metric_value(&metrics, "gept_trainings_total{outcome=\"activated\"}"),
        Some(2.0)
    );
    assert!(service.shutdown().await.clean());

    // A model that learned nothing (shuffled labels) is refused.
    let service = Service::start_with_faults(
        &config,
        Faults {
            trainer_shuffle_labels: true,
            ..Faults::none()
        },
    )
    .await
    .unwrap();
    let base = format!("http://{}", service.addr);
    common::feed_recorded(&service, &ticks[BOOTSTRAP + MORE..], &hours).await;
    let bad = trained(&base, 1).await;
    assert_eq!(bad["reason"], "schedule", "{bad}");
    assert_eq!(bad["outcome"], "rejected", "{bad}");
    let message = bad["message"].as_str().unwrap();
    assert!(
        message.contains("AUC"),
        "the rejection names the failing figure: {message}"
    );
    let models = service.store.models().await.unwrap();
    let active: Vec<_> = models
        .iter()
        .filter(|m| m.state == gept_store::ModelState::Active)
        .collect();
    assert_eq!(active.len(), 1);
    assert_eq!(active[0].version, v2, "the old model stays ACTIVE");
    assert_eq!(common::status(&base).await["model"]["version"], v2.as_str());
    assert!(service.shutdown().await.clean());
}
