//! `gept model register|activate|archive|list`: the registry of the
//! configured database, with the activation gates.

use crate::cli::ModelCommand;
use gept_core::config::Config;
use gept_store::ModelEntry;
use gept_store::Store;

async fn activate(store: &Store, entry: &ModelEntry, force: bool) -> anyhow::Result<()> {
    let v = gept_model::registry::activate_gated(
        store,
        &entry.version,
        force,
        chrono::Utc::now().timestamp(),
        true,
    )
    .await?;
    for r in &v.reasons {
        println!("  gate: {r}");
    }
    if !v.passed && !force {
        anyhow::bail!(
            "model {} fails the activation gates; it stays {}",
            entry.version,
            entry.state.as_str()
        );
    }
    if !v.passed {
        println!("  gates failed; activated anyway (--force)");
    }
    println!("model {} is ACTIVE", entry.version);
    Ok(())
}

pub async fn run(config: &Config, command: &ModelCommand) -> anyhow::Result<()> {
    let store = Store::connect(&config.database_url()?, config.database.max_connections).await?;
    store.migrate().await?;
    let result = async {
        match command {
            ModelCommand::Register { dir, activate: act } => {
                // Loading checks the checksum, features and targets; the
                // files are stored with the row, for every process on this
                // database.
                let entry = gept_model::registry::register_dir(&store, dir).await?;
                println!(
                    "model {} registered (PENDING) from {}, its files stored in the registry",
                    entry.version, entry.path
                );
                if *act {
                    activate(&store, &entry, false).await?;
                }
            }
            ModelCommand::Activate { version, force } => {
                let entry = store
                    .models()
                    .await?
                    .into_iter()
                    .find(|m| &m.version == version)
                    .ok_or_else(|| anyhow::anyhow!("no model {version} in the registry"))?;
                activate(&store, &entry, *force).await?;
            }
            ModelCommand::Archive { version } => {
                store
                    .archive_model(version, chrono::Utc::now().timestamp())
                    .await?;
                println!("model {version} is ARCHIVED");
            }
            ModelCommand::List { json } => {
                let models = store.models().await?;
                if *json {
                    println!("{}", serde_json::to_string_pretty(&models)?);
                } else {
                    println!(
                        "{:<32} {:<10} {:>8}  {:<20} path",
                        "version", "state", "mean_auc", "created"
                    );
                    for m in models {
                        println!(
                            "{:<32} {:<10} {:>8}  {:<20} {}",
                            m.version,
                            m.state.as_str(),
                            m.mean_auc.map_or("-".into(), |a| format!("{a:.4}")),
                            chrono::DateTime::from_timestamp(m.created_at, 0)
                                .map_or("-".into(), |t| t.format("%Y-%m-%d %H:%M:%S").to_string()),
                            m.path
                        );
                    }
                }
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}
