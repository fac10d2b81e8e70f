//! `gept config`: print the effective configuration, secrets redacted.

use gept_core::config::Config;

pub fn run(config: &Config) -> anyhow::Result<()> {
    print!("{}", config.redacted_toml());
    let device = if tch::Cuda::is_available() {
        format!("cuda ({} device(s))", tch::Cuda::device_count())
    } else {
        "cpu".to_string()
    };
    println!("\n# models run on: {device}");
    Ok(())
}
