//! `gept discord register-commands`: the bot's slash commands
//! (`gept::discord::commands`) posted to the Discord API.

use crate::cli::DiscordCommand;
use gept_core::config::Config;

pub async fn run(config: &Config, command: &DiscordCommand) -> anyhow::Result<()> {
    match command {
        DiscordCommand::RegisterCommands { guild } => {
            let app = config.discord_application_id()?.ok_or_else(|| {
                anyhow::anyhow!(
                    "no application id: set GEPT__DISCORD__APPLICATION_ID or discord.application_id_file"
                )
            })?;
            let token = config.discord_token()?.ok_or_else(|| {
                anyhow::anyhow!("no bot token: set GEPT__DISCORD__TOKEN or discord.token_file")
            })?;
            let base = config.discord.api_base.trim_end_matches('/');
            let url = match guild {
                Some(g) => format!("{base}/applications/{app}/guilds/{g}/commands"),
                None => format!("{base}/applications/{app}/commands"),
            };
            let body = crate::discord::commands();
            let resp = reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .user_agent(config.upstream.user_agent.clone())
                .build()?
                .put(&url)
                .header("authorization", format!("Bot {token}"))
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            anyhow::ensure!(
                status.is_success(),
                "Discord answered {status}: {}",
                text.chars().take(500).collect::<String>()
            );
            let names: Vec<String> = body
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c["name"].as_str())
                        .map(|n| format!("/{n}"))
                        .collect()
                })
                .unwrap_or_default();
            println!("registered {} ({status})", names.join(", "));
            Ok(())
        }
    }
}
