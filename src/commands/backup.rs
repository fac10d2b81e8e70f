//! `gept backup now|list` and `gept restore FILE`: backups of the configured
//! database through `gept_actors::backup` and `Store::restore_from`.

use crate::cli::BackupCommand;
use gept_core::config::{redact_url, Config};
use gept_store::Store;
use std::path::Path;

pub async fn run(config: &Config, command: &BackupCommand) -> anyhow::Result<()> {
    let dir = config.backup_dir();
    match command {
        BackupCommand::Now => {
            let store = Store::connect(&config.database_url()?, 2).await?;
            store.migrate().await?;
            let made = gept_actors::backup::backup_now(&store, &dir, config.backup.keep).await;
            store.close().await;
            let (path, bytes) = made?;
            println!("backup written: {} ({bytes} bytes)", path.display());
        }
        BackupCommand::List => {
            for p in gept_actors::backup::backups_in(&dir) {
                let bytes = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                println!("{}\t{bytes}", p.display());
            }
        }
    }
    Ok(())
}

pub async fn restore(config: &Config, file: &Path) -> anyhow::Result<()> {
    let url = config.database_url()?;
    let store = Store::connect(&url, 2).await?;
    store.migrate().await?;
    let restored = store.restore_from(file).await;
    store.close().await;
    restored?;
    println!("{} restored into {}", file.display(), redact_url(&url));
    Ok(())
}
