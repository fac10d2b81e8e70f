//! The `gept` binary as an operator runs it: help, config layering and
//! redaction, migrate on both backends. The binary runs with no
//! LD_LIBRARY_PATH, so these tests also prove its libtorch rpath.

use crate::common;

use std::process::{Command, Output};

fn gept(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gept"));
    cmd.args(args).env_remove("LD_LIBRARY_PATH");
    for (k, _) in std::env::vars().filter(|(k, _)| k.starts_with("GEPT__")) {
        cmd.env_remove(k);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("gept runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn help_explains_each_subcommand() {
    let o = gept(&["--help"], &[]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for sub in [
        "serve", "migrate", "config", "train", "eval", "model", "backup", "restore",
    ] {
        assert!(t.contains(sub), "--help lacks {sub}: {t}");
    }
}

#[test]
fn config_prints_layers_with_secrets_redacted() {
    let o = gept(
        &["config"],
        &[
            ("GEPT__API__LISTEN", "127.0.0.1:9999"),
            ("GEPT__DATABASE__URL", "postgres://gept:topsecret@db/gept"),
            ("GEPT__ADMIN__TOKEN", "admintoken"),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("listen = \"127.0.0.1:9999\""), "{t}");
    assert!(
        !t.contains("topsecret") && !t.contains("admintoken"),
        "secret leaked: {t}"
    );
    assert!(t.contains("# models run on:"), "{t}");
}

#[test]
fn the_example_production_config_loads_and_keeps_its_secrets_in_files() {
    let prod = concat!(env!("CARGO_MANIFEST_DIR"), "/ops/gept.prod.toml");
    let o = gept(
        &["--config", prod, "config"],
        &[(
            "GEPT__ALERTS__WEBHOOK_URL",
            "https://discord.invalid/api/webhooks/1/secret",
        )],
    );
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    for line in [
        "url = \"postgres://gept@127.0.0.1:5432/gept\"",
        "password_file = \"/etc/gept/secrets/database-password\"",
        "token_file = \"/etc/gept/secrets/metrics-token\"",
        "webhook_url_file = \"/etc/gept/secrets/alerts-webhook-url\"",
        "trusted_proxies = [",
    ] {
        assert!(t.contains(line), "{line} missing: {t}");
    }
    assert!(
        !t.contains("webhooks/1/secret"),
        "the webhook URL leaked: {t}"
    );
}

#[test]
fn config_errors_name_every_key_and_exit_nonzero() {
    let o = gept(
        &["config"],
        &[
            ("GEPT__API__LISTEN", "nowhere"),
            ("GEPT__DATABASE__URLL", "x"),
        ],
    );
    assert!(!o.status.success());
    let t = text(&o);
    assert!(t.contains("urll"), "{t}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gept.toml");
    std::fs::write(&file, "[database]\nurl = \"postgres://u:pw@h/db\"\n").unwrap();
    let o = gept(&["--config", file.to_str().unwrap(), "config"], &[]);
    assert!(!o.status.success());
    assert!(
        text(&o).contains("database.url: a password written into a config file is refused"),
        "{}",
        text(&o)
    );
}

#[test]
fn migrate_builds_the_default_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let o = gept(
        &["migrate"],
        &[(
            "GEPT__DATA__DIR",
            dir.path().join("state").to_str().unwrap(),
        )],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(dir.path().join("state/gept.db").is_file());
}

#[tokio::test]
async fn migrate_builds_the_postgres_schema() {
    let Some(url) = common::postgres_database().await else {
        return;
    };
    let o = gept(&["migrate"], &[("GEPT__DATABASE__URL", &url)]);
    assert!(o.status.success(), "{}", text(&o));
    let store = gept_store::Store::connect(&url, 1).await.unwrap();
    assert_eq!(store.count("prices_latest_1m").await.unwrap(), 0);
    store.close().await;
    common::drop_postgres_database(&url).await;
}
