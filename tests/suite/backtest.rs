//! The backtest on recorded ticks with a trained model: no look-ahead
//! (altering every price after T, and dropping the `/1h` buckets that end
//! after T, leaves every decision at or before T unchanged), the same inputs
//! give the same report (seeded), and the report holds what a player reads.

use crate::common;

use gept::backtest::{self, Settings, Strategy};
use gept::recommend::{Risk, Style};
use gept_core::recordings::{HOURLY_FILE, LATEST_FILE, MAPPING_FILE};
use gept_dataflows::inputs::{load_bucket_files, load_items, load_ticks};
use gept_model::net::TrainOptions;

const TICKS: usize = 170;
const FROM: usize = 110;
const CUT: usize = 140;

#[test]
fn decisions_never_look_ahead_and_reports_repeat() {
    let rec = common::recordings();
    let tmp = tempfile::tempdir().unwrap();
    let meta = common::train_model(
        &rec,
        100,
        TrainOptions {
            hidden: vec![64],
            max_epochs: 3,
            seed: 3,
            ..TrainOptions::default()
        },
        tmp.path(),
    );
    let model = gept_model::Model::load(tmp.path(), tch::Device::Cpu).unwrap();
    let ticks = load_ticks(&rec.join(LATEST_FILE), Some(TICKS)).unwrap();
    assert_eq!(ticks.len(), TICKS);
    let hours = load_bucket_files(&[rec.join(HOURLY_FILE)], None).unwrap();
    let items = load_items(Some(&rec.join(MAPPING_FILE))).unwrap();
    let from = ticks[FROM].time;
    let settings = [
        Settings::new(100_000_000, Risk::High, Style::Active),
        Settings::new(10_000_000, Risk::Medium, Style::Active),
    ];
    let run = |ticks: &[gept_dataflows::features::TickInput],
               hours: &[gept_dataflows::features::BucketInput]| {
        let mut sims = Vec::new();
        let report = backtest::run_with(
            Some(&model),
            ticks,
            hours,
            &items,
            from,
            &settings,
            &Strategy::ALL,
            |_, _| {},
            |run, strategy, sim| sims.push((run, strategy, sim.decisions.clone())),
        );
        (report, sims)
    };
    let (report, decisions) = run(&ticks, &hours);
    assert_eq!(report.ticks, TICKS - FROM);
    assert_eq!(report.model_version.as_deref(), Some(meta.version.as_str()));
    assert_eq!(report.runs.len(), 2);
    for r in &report.runs {
        assert_eq!(r.strategies.len(), Strategy::ALL.len());
        for s in &r.strategies {
            assert_eq!(s.equity.len(), TICKS - FROM, "{:?}", s.strategy);
            assert_eq!(s.profit, s.final_equity - r.settings.capital);
            assert!(s.max_drawdown >= 0.0 && s.max_drawdown < 1.0);
        }
    }
    let model_trades = |d: &[(usize, Strategy, Vec<backtest::Decision>)], t: i64| -> usize {
        d.iter()
            .filter(|(_, s, _)| *s == Strategy::Model)
            .map(|(_, _, v)| {
                v.iter()
                    .filter(|x| x.time <= t && x.action == "buy")
                    .count()
            })
            .sum()
    };
    let cut = ticks[CUT].time;
    assert!(
        model_trades(&decisions, cut) > 0,
        "the model strategy placed no buy before the cut"
    );
    let margin_trades: usize = decisions
        .iter()
        .filter(|(_, s, _)| *s == Strategy::MarginFlip)
        .map(|(_, _, v)| v.len())
        .sum();
    assert!(margin_trades > 0, "margin flipping placed nothing");

    // The same inputs: the same report, to the byte (random picks seeded).
    let (again, _) = run(&ticks, &hours);
    assert_eq!(
        serde_json::to_string(&report).unwrap(),
        serde_json::to_string(&again).unwrap()
    );

    // Every price after the cut changed, and the /1h buckets that end after
    // it dropped: decisions up to the cut are the same.
    let mut altered = ticks.clone();
    for t in altered.iter_mut().filter(|t| t.time > cut) {
        for r in &mut t.rows {
            r.high = r.high.map(|p| p * 3 / 2 + 7);
            r.low = r.low.map(|p| p * 2 / 3 + 1);
        }
    }
    let early_hours: Vec<_> = hours
        .iter()
        .filter(|b| b.start + 3600 <= cut)
        .cloned()
        .collect();
    assert!(early_hours.len() < hours.len());
    let (altered_report, altered_decisions) = run(&altered, &early_hours);
    let mut compared = 0;
    for ((ra, sa, a), (rb, sb, b)) in decisions.iter().zip(&altered_decisions) {
        assert_eq!((ra, sa), (rb, sb));
        let before = |v: &[backtest::Decision]| -> Vec<backtest::Decision> {
            v.iter().filter(|d| d.time <= cut).cloned().collect()
        };
        assert_eq!(
            before(a),
            before(b),
            "{sa:?} run {ra}: a decision at or before the cut changed"
        );
        compared += before(a).len();
    }
    assert!(compared > 0);
    // And the change after the cut did change what followed.
    assert_ne!(
        serde_json::to_string(&report).unwrap(),
        serde_json::to_string(&altered_report).unwrap()
    );
}
