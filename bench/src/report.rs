//! The result table (stdout) and its JSON (a file).

use std::path::Path;

use serde::Serialize;

use crate::Args;

/// One measured scenario against its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    pub entities: usize,
    pub figure_per_s: f64,
    pub baseline: String,
    pub baseline_per_s: f64,
    /// baseline / figure: how many times faster the bare baseline is.
    pub ratio: f64,
    pub figure_secs: f64,
    pub baseline_secs: f64,
}

#[derive(Serialize)]
struct Report<'a> {
    scenario: &'a str,
    quick: bool,
    profile: &'static str,
    machine: Machine,
    rows: &'a [Row],
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    os: &'static str,
    arch: &'static str,
}

/// Prints the table and writes the JSON report to `out`.
pub fn emit(name: &str, args: &Args, rows: &[Row], out: &Path) -> anyhow::Result<()> {
    println!(
        "{:<28} {:>9} {:>14} {:>16} {:>8}",
        "scenario", "entities", "entities/s", "baseline ent/s", "ratio"
    );
    for r in rows {
        println!(
            "{:<28} {:>9} {:>14.0} {:>16.0} {:>7.1}x",
            r.scenario, r.entities, r.figure_per_s, r.baseline_per_s, r.ratio
        );
    }
    let report = Report {
        scenario: name,
        quick: args.quick,
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
        },
        rows,
    };
    if let Some(dir) = out.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!("\nJSON: {}", out.display());
    Ok(())
}
