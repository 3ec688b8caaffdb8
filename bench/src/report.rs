//! The result table (stdout) and its JSON (a file).
//!
//! Every row is a figure next to a baseline measured in the same run, and
//! their ratio, always read the same way: **how many times worse the
//! figure is than its baseline** (> 1: hubsync is slower, takes longer or
//! uses more). For a rate that is `baseline / figure`; for a time or a size
//! it is `figure / baseline`.

use std::path::Path;

use serde::Serialize;
use serde_json::Value;

/// One measured figure against its baseline.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub scenario: String,
    /// What was measured: "N=100000", "1000 changes", "500 clients".
    pub size: String,
    pub figure: f64,
    /// "ent/s", "ms", "MB", "exch/s", "errors".
    pub unit: String,
    /// What the baseline did ("" when the row has none).
    pub baseline: String,
    pub baseline_value: Option<f64>,
    /// How many times worse the figure is than the baseline.
    pub ratio: Option<f64>,
    /// Anything the figure needs to be read right (counts, timings).
    pub note: String,
}

impl Row {
    /// A rate (higher is better): ratio = baseline / figure.
    pub fn rate(
        scenario: &str,
        size: String,
        unit: &str,
        per_s: f64,
        baseline: &str,
        base_per_s: f64,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            size,
            figure: per_s,
            unit: unit.into(),
            baseline: baseline.into(),
            baseline_value: Some(base_per_s),
            ratio: Some(base_per_s / per_s.max(1e-9)),
            note: String::new(),
        }
    }

    /// A cost (lower is better: a time, a size): ratio = figure / baseline.
    pub fn cost(
        scenario: &str,
        size: String,
        unit: &str,
        value: f64,
        baseline: &str,
        base: f64,
    ) -> Row {
        Row {
            scenario: scenario.into(),
            size,
            figure: value,
            unit: unit.into(),
            baseline: baseline.into(),
            baseline_value: Some(base),
            ratio: Some(value / base.max(1e-9)),
            note: String::new(),
        }
    }

    /// A figure without a baseline (an error count).
    pub fn plain(scenario: &str, size: String, unit: &str, value: f64) -> Row {
        Row {
            scenario: scenario.into(),
            size,
            figure: value,
            unit: unit.into(),
            baseline: String::new(),
            baseline_value: None,
            ratio: None,
            note: String::new(),
        }
    }

    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }
}

#[derive(Serialize)]
struct Report<'a> {
    scenario: &'a str,
    quick: bool,
    profile: &'static str,
    command: String,
    started_at: String,
    machine: Machine,
    /// `/proc/loadavg` before and after the run (other work on the machine).
    load_before: String,
    load_after: String,
    rows: &'a [Row],
    extra: &'a Value,
}

#[derive(Serialize)]
struct Machine {
    cpus: usize,
    os: &'static str,
    arch: &'static str,
    cpu_model: String,
    mem_total: String,
}

/// `/proc/loadavg`'s three load averages, or "" off Linux.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn proc_field(file: &str, key: &str) -> String {
    std::fs::read_to_string(file)
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The table, as printed.
pub fn table(rows: &[Row]) -> String {
    let mut s = format!(
        "{:<34} {:<14} {:>10} {:<7} {:<38} {:>10} {:>7}\n",
        "scenario", "size", "figure", "unit", "baseline (same run)", "baseline", "ratio"
    );
    for r in rows {
        s.push_str(&format!(
            "{:<34} {:<14} {:>10} {:<7} {:<38} {:>10} {:>7}\n",
            r.scenario,
            r.size,
            fmt_num(r.figure),
            r.unit,
            r.baseline,
            r.baseline_value.map(fmt_num).unwrap_or_default(),
            r.ratio.map(|x| format!("{x:.2}x")).unwrap_or_default(),
        ));
    }
    s
}

/// What a run adds to its JSON besides the rows.
pub struct RunInfo<'a> {
    pub load_before: String,
    pub started_at: String,
    pub extra: &'a Value,
}

/// Prints the table and writes the JSON report to `out`.
pub fn emit(
    name: &str,
    quick: bool,
    rows: &[Row],
    info: &RunInfo<'_>,
    out: &Path,
) -> anyhow::Result<()> {
    print!("{}", table(rows));
    let report = Report {
        scenario: name,
        quick,
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started_at: info.started_at.clone(),
        machine: Machine {
            cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
            os: std::env::consts::OS,
            arch: std::env::consts::ARCH,
            cpu_model: proc_field("/proc/cpuinfo", "model name"),
            mem_total: proc_field("/proc/meminfo", "MemTotal"),
        },
        load_before: info.load_before.clone(),
        load_after: loadavg(),
        rows,
        extra: info.extra,
    };
    if let Some(dir) = out.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(out, serde_json::to_string_pretty(&report)?)?;
    println!(
        "\nJSON: {}   load average before/after: {} / {}",
        out.display(),
        report.load_before,
        report.load_after
    );
    Ok(())
}
