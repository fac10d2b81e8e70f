//! `gept dataset`: the rows `gept train` learns from, as CSV for peer models.

use crate::cli::DatasetArgs;
use gept_core::config::Config;
use gept_model::dataset::write_csv;
use gept_model::pipeline::{self, Split};
use std::io::Write;

pub fn run(args: &DatasetArgs, config: Option<&Config>) -> anyhow::Result<()> {
    let history = args.history.load(config)?;
    let split = Split {
        validation_fraction: args.validation_fraction,
        stride: args.stride,
    };
    let rows = pipeline::split_rows(&history.ticks, &history.hours, &history.items, &split, true)?;
    std::fs::create_dir_all(&args.out)?;
    for (name, features, labels) in [
        ("train.csv", &rows.train, &rows.y_train),
        ("validation.csv", &rows.val, &rows.y_val),
    ] {
        let path = args.out.join(name);
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let n = write_csv(&mut out, features, labels, |_| true)?;
        out.flush()?;
        println!("{n} rows written to {}", path.display());
    }
    println!(
        "split: training {} .. {}, validation {} .. {} (Unix seconds)",
        rows.first_tick, rows.cut, rows.cut, rows.last_tick
    );
    Ok(())
}
