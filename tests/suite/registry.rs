//! Models travel through the registry: two `gept serve` processes on one
//! PostgreSQL database, each with its own data folder (no shared disk). A
//! model registered and activated with `gept model` from a folder that is
//! then deleted is loaded by both within the registry poll, from the files
//! stored in the database; a later model whose stored weights were corrupted
//! is refused by both (checksum), and the first keeps serving.

use crate::common;

use crate::common::{serve_env, wait_for, Serve};
use gept_model::net::TrainOptions;
use std::path::Path;

/// `gept model ARGS` against `url`; asserts it succeeded.
fn gept_model(url: &str, args: &[&str]) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gept"))
        .arg("model")
        .args(args)
        .env("GEPT__DATABASE__URL", url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "gept model {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn train(rec: &Path, snapshots: usize, out: &Path) -> gept_model::ModelMeta {
    common::train_model(
        rec,
        snapshots,
        TrainOptions {
            hidden: vec![16],
            max_epochs: 1,
            ..TrainOptions::default()
        },
        out,
    )
}

#[test]
fn a_model_registered_once_is_served_by_every_process_on_the_database() {
    gept::service::system().block_on(transport());
}

async fn transport() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let rec = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let first = train(&rec, 100, &tmp.path().join("first"));
    let second = train(&rec, 110, &tmp.path().join("second"));
    assert_ne!(first.version, second.version);

    // No upstream: the collectors are off; the processes only serve.
    let unreachable: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    let env = |node: &str| {
        let mut env = serve_env(unreachable, &url);
        for c in [
            "LATEST",
            "5M",
            "1H",
            "MAPPING",
            "NEWS",
            "PLAYER_COUNT",
            "TIMESERIES",
        ] {
            env.push((format!("GEPT__COLLECTORS__{c}__ENABLED"), "false".into()));
        }
        for (k, v) in [
            ("GEPT__INFERENCE__REGISTRY_POLL", "200ms".to_string()),
            ("GEPT__RETENTION__ENABLED", "false".into()),
            ("GEPT__BACKUP__ENABLED", "false".into()),
            (
                "GEPT__DATA__DIR",
                tmp.path().join(node).display().to_string(),
            ),
        ] {
            env.push((k.to_string(), v));
        }
        env
    };
    let a = Serve::start(&env("a"));
    let b = Serve::start(&env("b"));
    for s in [&a, &b] {
        assert_eq!(
            crate::common::status(&s.url).await["model"]["active"],
            false
        );
    }

    // Registered from a folder that is gone before either process loads it.
    let dir = tmp.path().join("first");
    gept_model(&url, &["register", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    gept_model(&url, &["activate", &first.version, "--force"]);
    for s in [&a, &b] {
        let base = s.url.clone();
        let want = first.version.clone();
        wait_for("the registered model to be served", 20, || {
            let (base, want) = (base.clone(), want.clone());
            async move { crate::common::status(&base).await["model"]["version"] == want.as_str() }
        })
        .await;
        assert_eq!(
            crate::common::status(&s.url).await["model"]["load_failed"],
            false
        );
    }
    // Each process wrote the files into its own cache, checked.
    for node in ["a", "b"] {
        let cached = tmp.path().join(node).join("models").join(&first.version);
        assert_eq!(
            gept_model::file::sha256_file(&cached.join("weights.safetensors")).unwrap(),
            first.weights_sha256
        );
    }

    // A model whose stored weights were altered is refused by both.
    let dir = tmp.path().join("second");
    gept_model(&url, &["register", dir.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let altered = sqlx::query(
        "UPDATE model_artifacts SET weights = set_byte(weights, 200, 255 - get_byte(weights, 200)) \
         WHERE version = $1",
    )
    .bind(&second.version)
    .execute(&pool)
    .await
    .unwrap()
    .rows_affected();
    assert_eq!(altered, 1);
    pool.close().await;
    gept_model(&url, &["activate", &second.version, "--force"]);
    for s in [&a, &b] {
        let base = s.url.clone();
        wait_for("the altered model to be refused", 20, || {
            let base = base.clone();
            async move { crate::common::status(&base).await["model"]["load_failed"] == true }
        })
        .await;
        let st = crate::common::status(&s.url).await;
        assert_eq!(st["model"]["version"], first.version.as_str());
    }
    a.stop();
    b.stop();
    common::drop_postgres_database(&url).await;
}
