//! `gept-replay`: serve the recordings until SIGINT or SIGTERM.

use clap::Parser;
use gept_replay::{Clock, FaultKind, Faults, MockOptions};
use std::path::PathBuf;

/// Replays recorded OSRS Wiki prices API responses on loopback, in the
/// API's exact format and paths (see the library documentation).
#[derive(Debug, clap::Parser)]
#[command(name = "gept-replay", version)]
struct Args {
    /// Folder with latest_snapshots.jsonl.zst, 1h_snapshots.jsonl.gz,
    /// 5m_snapshots_partial.jsonl.gz and mapping.json.gz (a missing file makes
    /// its endpoint answer 404).
    #[arg(long, value_name = "DIR")]
    data_dir: PathBuf,
    /// Address to listen on (port 0 picks a free one; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: std::net::SocketAddr,
    /// `step`: one recorded /latest snapshot per request; `realtime` or
    /// `speed:N`: a virtual clock from the first snapshot at N times real time.
    #[arg(long, default_value = "step")]
    clock: Clock,
    /// Share of API responses that are faulted (0..1).
    #[arg(long, default_value_t = 0.0)]
    fault_rate: f64,
    /// Kinds of faults injected, comma separated: 500, 429, slow, truncated, malformed.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "500,429,slow,truncated,malformed"
    )]
    faults: Vec<FaultKind>,
    /// How long a slow response takes, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    slow_ms: u64,
    /// Seed of the fault injection.
    #[arg(long, default_value_t = 1)]
    fault_seed: u64,
    /// Serve only the first N /latest snapshots.
    #[arg(long)]
    max_snapshots: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.fault_rate),
        "--fault-rate must be between 0 and 1"
    );
    let options = MockOptions {
        clock: args.clock,
        faults: Faults {
            rate: args.fault_rate,
            kinds: args.faults.clone(),
            slow_ms: args.slow_ms,
        },
        seed: args.fault_seed,
        max_snapshots: args.max_snapshots,
    };
    let server = gept_replay::start(&args.data_dir, args.listen, options).await?;
    eprintln!("gept-replay: listening on http://{}", server.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    server.stop().await;
    Ok(())
}
