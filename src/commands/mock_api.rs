//! `gept mock-api`: serve the recordings until SIGINT or SIGTERM.

use crate::cli::MockApiArgs;
use crate::mock_api::{self, Faults, MockOptions};

pub async fn run(args: &MockApiArgs) -> anyhow::Result<()> {
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
    let server = mock_api::start(&args.data_dir, args.listen, options).await?;
    eprintln!("mock-api: listening on http://{}", server.addr);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    server.stop().await;
    Ok(())
}
