//! `gept migrate`: apply the embedded migrations to the configured database.

use gept_core::config::{redact_url, Config};
use gept_store::Store;

pub async fn run(config: &Config) -> anyhow::Result<()> {
    let url = config.database_url()?;
    let store = Store::connect(&url, config.database.max_connections).await?;
    store.migrate().await?;
    println!("migrations applied to {}", redact_url(&url));
    store.close().await;
    Ok(())
}
