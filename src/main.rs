use clap::Parser;
use gept::cli::Cli;

fn main() -> std::process::ExitCode {
    gept::telemetry::init();
    let cli = Cli::parse();
    match gept::commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
