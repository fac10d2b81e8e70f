//! `gept backtest`: `gept::backtest` over recordings or the store, with a
//! progress bar, report.json, equity curves and a table on stdout.

use crate::backtest::{self, Settings, Strategy};
use crate::cli::BacktestArgs;
use crate::recommend::{Risk, Style};
use gept_core::config::Config;
use gept_core::duration;
use gept_model::Model;

/// Ticks before the simulated period that warm the features up.
const WARM_UP: i64 = 25 * 3600;

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

async fn connect(config: &Config) -> anyhow::Result<gept_store::Store> {
    Ok(
        gept_store::Store::connect(&config.database_url()?, config.database.max_connections)
            .await?,
    )
}

pub fn run(args: &BacktestArgs, config: Option<&Config>) -> anyhow::Result<()> {
    let period = duration::parse(&args.period)
        .map_err(|e| anyhow::anyhow!("--period: {e}"))?
        .as_secs() as i64;
    let history = if args.history.from_db {
        // Only the period and its warm-up are read from the store.
        let config = config.ok_or_else(|| anyhow::anyhow!("--from-db needs a configuration"))?;
        runtime()?.block_on(async {
            let store = connect(config).await?;
            let newest = store
                .newest_time("prices_latest_1m")
                .await?
                .ok_or_else(|| anyhow::anyhow!("the store holds no /latest tick"))?;
            let until = args.history.until.unwrap_or(newest).min(newest);
            let from = args.from.unwrap_or(until - period);
            let h = gept_model::history::History::from_store_between(&store, from - WARM_UP, until)
                .await;
            store.close().await;
            anyhow::Ok(h?)
        })?
    } else {
        args.history.load(None)?
    };
    anyhow::ensure!(!history.ticks.is_empty(), "no /latest ticks in the history");
    let model = match &args.model {
        Some(dir) => Some(Model::load(dir, args.device.device()?)?),
        None => None,
    };
    let first = history.ticks[0].time;
    let last = history.ticks[history.ticks.len() - 1].time;
    let from = args
        .from
        .unwrap_or((last - period).max(first + WARM_UP).min(last));
    anyhow::ensure!(from <= last, "--from is after the last tick ({last})");
    let replan = duration::parse(&args.replan)
        .map_err(|e| anyhow::anyhow!("--replan: {e}"))?
        .as_secs() as i64;
    let style: Style = args.style.parse().map_err(anyhow::Error::msg)?;
    anyhow::ensure!((1..=8).contains(&args.slots), "--slots must be 1 to 8");
    anyhow::ensure!(
        args.volume_share > 0.0 && args.volume_share <= 1.0,
        "--volume-share must be in (0, 1]"
    );
    let mut settings = Vec::new();
    for &capital in &args.capital {
        anyhow::ensure!(capital > 0, "--capital must be positive");
        for risk in &args.risk {
            let risk: Risk = risk.parse().map_err(anyhow::Error::msg)?;
            settings.push(Settings {
                slots: args.slots,
                replan_seconds: replan.max(1),
                volume_share: args.volume_share,
                seed: args.seed,
                ..Settings::new(capital, risk, style)
            });
        }
    }
    if model.is_none() {
        eprintln!("no --model: only the peers (margin_flip, random) trade");
    }
    let total = history.ticks.iter().filter(|t| t.time >= from).count();
    let bar = if args.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "backtest {bar:40} {pos}/{len} ticks {elapsed_precise} (eta {eta})",
            )
            .expect("a progress template"),
        );
        b
    };
    let report = backtest::run(
        model.as_ref(),
        &history.ticks,
        &history.hours,
        &history.items,
        from,
        &settings,
        &Strategy::ALL,
        |done, _| bar.set_position(done as u64),
    );
    bar.finish_and_clear();
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(
        args.out.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    println!(
        "{} ticks from {} to {} ({:.1} h), model {}",
        report.ticks,
        report.from,
        report.until,
        (report.until - report.from) as f64 / 3600.0,
        report.model_version.as_deref().unwrap_or("none")
    );
    println!(
        "{:>12} {:>6} {:>12} | {:>12} {:>8} {:>10} {:>6} {:>6} {:>7} {:>6} {:>7} {:>18}",
        "capital",
        "risk",
        "strategy",
        "profit",
        "ROI",
        "gp/slot-h",
        "fill",
        "trips",
        "h/trip",
        "used",
        "drawdn",
        "pred/label/real"
    );
    for run in &report.runs {
        let s = &run.settings;
        let name = format!("equity_{}_{:?}.svg", s.capital, s.risk).to_lowercase();
        std::fs::write(
            args.out.join(&name),
            backtest::equity_svg(
                run,
                &format!(
                    "Equity: {} gp, {:?} risk, {:?}, {} slots",
                    crate::recommend::gp(s.capital),
                    s.risk,
                    s.style,
                    s.slots
                ),
            ),
        )?;
        for r in &run.strategies {
            println!(
                "{:>12} {:>6} {:>12} | {:>12} {:>7.2}% {:>10.0} {:>5.0}% {:>6} {:>7} {:>5.0}% {:>6.2}% {:>18}",
                s.capital,
                format!("{:?}", s.risk).to_lowercase(),
                r.strategy.name(),
                r.profit,
                r.roi * 100.0,
                r.profit_per_slot_hour,
                r.fill_rate * 100.0,
                r.completed,
                r.mean_hours_to_complete.map_or("-".into(), |h| format!("{h:.2}")),
                r.capital_utilisation * 100.0,
                r.max_drawdown * 100.0,
                r.calibration.as_ref().map_or("-".into(), |c| format!(
                    "{:.2}/{}/{:.2} n={}",
                    c.mean_predicted,
                    c.labelled.map_or("-".into(), |l| format!("{l:.2}")),
                    c.realised,
                    c.trips
                )),
            );
        }
    }
    println!("report: {}", args.out.join("report.json").display());
    if args.store {
        let config = config.ok_or_else(|| anyhow::anyhow!("--store needs a configuration"))?;
        let version = report
            .model_version
            .clone()
            .ok_or_else(|| anyhow::anyhow!("--store needs --model"))?;
        let json = serde_json::to_string(&report)?;
        runtime()?.block_on(async {
            let store = connect(config).await?;
            store.migrate().await?;
            anyhow::ensure!(
                store.models().await?.iter().any(|m| m.version == version),
                "model {version} is not registered: `gept model register DIR` first"
            );
            store
                .put_backtest(&version, chrono::Utc::now().timestamp(), &json)
                .await?;
            store.close().await;
            println!("stored as the backtest of model {version}");
            anyhow::Ok(())
        })?;
    }
    Ok(())
}
