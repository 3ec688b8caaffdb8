//! `hubsync-bench`: benchmarks, not tests. Each scenario measures hubsync
//! and, in the same run on the same machine, a baseline that does the bare
//! minimum of the same work, and reports both and their ratio — a figure
//! alone says little on a shared machine.
//!
//! ```text
//! cargo run --release -p hubsync-bench -- suite [--quick] [--only LIST] [--n N] [--clients C] [--nodes K] [--targets K] [--json FILE]
//! cargo run --release -p hubsync-bench -- pg-ingest [--quick] [--n N] [--json FILE]
//! cargo run --release -p hubsync-bench -- gzip [--quick] [--json FILE]
//! ```
//!
//! `suite` starts real `hubsync serve` processes: this binary re-executed as
//! `hubsync-bench node <hubsync arguments>`, which is the `hubsync` command
//! line itself (`hubsync::cli::run`), so nodes are separate processes whose
//! memory can be measured.
//!
//! One module per scenario; [`report`] prints the table and writes the
//! JSON. To add a scenario: a module with a `run(Args)` returning
//! [`Outcome`], and a line in [`SCENARIOS`].

mod data;
mod report;
mod scenarios;
mod suite;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command-line options shared by the scenarios.
#[derive(Debug, Clone)]
pub struct Args {
    /// A smaller run (seconds, for CI or a quick look).
    pub quick: bool,
    /// Entities to push (scenario default when None).
    pub n: Option<usize>,
    /// Concurrent clients (suite; default 500, 50 with --quick).
    pub clients: Option<usize>,
    /// Registered nodes for the master-write scenario (suite; default
    /// 10,000, 1,000 with --quick).
    pub nodes: Option<usize>,
    /// The interval between a client's exchanges in the paced run of the
    /// suite's `many` part, in ms (default 5,000, 2,000 with --quick).
    pub pace_ms: Option<usize>,
    /// Employees the suite's reports reference, three per report (default
    /// 3: every report references the same five entities).
    pub targets: Option<usize>,
    /// Where the JSON report goes.
    pub out: Option<PathBuf>,
    /// Only these parts of the scenario (suite: `--only push,download`);
    /// None runs them all.
    pub only: Option<Vec<String>>,
}

type Scenario = fn(&Args) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Outcome>>>>;

/// What a scenario produced.
pub enum Outcome {
    Rows {
        rows: Vec<report::Row>,
        /// Anything else worth keeping in the JSON.
        extra: serde_json::Value,
    },
    /// Not run here, and why (e.g. no PostgreSQL server).
    Skipped(String),
}

const SCENARIOS: &[(&str, &str, Scenario)] = &[
    (
        "suite",
        "issue #8: local writes, push, download, incremental, many clients, node count, RSS — real master and clients over HTTPS",
        |a| Box::pin(suite::run(a.clone())),
    ),
    (
        "gzip",
        "the packet compression level: a push packet of 500 reports compressed and decompressed at gzip levels 1 (hubsync), 3, 6 and 9 vs level 6",
        |a| Box::pin(scenarios::gzip::run(a.clone())),
    ),
    (
        "pg-ingest",
        "master ingest on PostgreSQL (Engine::handle_exchange, packets of max_packet_entities) vs a plain multi-row INSERT of the same rows",
        |a| Box::pin(scenarios::pg_ingest::run(a.clone())),
    ),
];

fn usage() -> String {
    let mut s = String::from(
        "usage: hubsync-bench SCENARIO [--quick] [--only LIST] [--n N] [--clients C] [--nodes K] [--pace-ms MS] [--targets K] [--json FILE]\n\nscenarios:\n",
    );
    for (name, what, _) in SCENARIOS {
        s.push_str(&format!("  {name:<10} {what}\n"));
    }
    s.push_str(&format!(
        "\n--only LIST (suite): comma-separated parts to run, of {}; all when absent.\n",
        suite::PARTS.join(",")
    ));
    s.push_str(
        "--targets K (suite): the reports reference K employees, three each (default 3: all the same five entities).\n\nPostgreSQL scenarios read HUBSYNC_BENCH_POSTGRES_URL or HUBSYNC_TEST_POSTGRES_URL.\nThe JSON report goes to target/bench/SCENARIO.json unless --json (or --out) names a file.\n",
    );
    s
}

fn number(argv: &mut impl Iterator<Item = String>, flag: &str) -> Result<usize, String> {
    let v = argv.next().ok_or(format!("{flag} needs a number"))?;
    v.replace('_', "")
        .parse()
        .map_err(|_| format!("{flag} {v}: not a number"))
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<(String, Args), String> {
    let name = argv.next().ok_or_else(usage)?;
    let mut args = Args {
        quick: false,
        n: None,
        clients: None,
        nodes: None,
        pace_ms: None,
        targets: None,
        out: None,
        only: None,
    };
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--n" => args.n = Some(number(&mut argv, "--n")?),
            "--clients" => args.clients = Some(number(&mut argv, "--clients")?.max(1)),
            "--nodes" => args.nodes = Some(number(&mut argv, "--nodes")?.max(10)),
            "--pace-ms" => args.pace_ms = Some(number(&mut argv, "--pace-ms")?.max(1)),
            "--targets" => args.targets = Some(number(&mut argv, "--targets")?.max(3)),
            "--json" | "--out" => {
                args.out = Some(argv.next().ok_or(format!("{a} needs a file"))?.into())
            }
            "--only" => {
                let list = argv.next().ok_or("--only needs a comma-separated list")?;
                let names: Vec<String> = list
                    .split(',')
                    .map(|p| p.trim().to_string())
                    .filter(|p| !p.is_empty())
                    .collect();
                if names.is_empty() {
                    return Err(format!("--only {list:?}: no part named"));
                }
                args.only = Some(names);
            }
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n\n{}", usage())),
        }
    }
    Ok((name, args))
}

fn runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("could not start the async runtime: {e}");
            ExitCode::FAILURE
        })
}

/// `hubsync-bench node ARGS…`: the `hubsync` binary's main, for the nodes
/// the suite starts as child processes.
fn node_main(argv: Vec<String>) -> ExitCode {
    let cli = hubsync::cli::Cli::parse_from(std::iter::once("hubsync".to_string()).chain(argv));
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("HUBSYNC_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(hubsync::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1).peekable();
    if argv.peek().map(String::as_str) == Some("node") {
        return node_main(argv.skip(1).collect());
    }
    let (name, args) = match parse(argv) {
        Ok(p) => p,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let Some((_, _, scenario)) = SCENARIOS.iter().find(|(n, _, _)| *n == name) else {
        eprintln!("unknown scenario {name}\n\n{}", usage());
        return ExitCode::from(2);
    };
    let rt = match runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let info_load = report::loadavg();
    let started_at = hubsync_core::entity::format_ts(hubsync_core::entity::now_utc());
    match rt.block_on(scenario(&args)) {
        Ok(Outcome::Rows { rows, extra }) => {
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("target/bench/{name}.json")));
            let info = report::RunInfo {
                load_before: info_load,
                started_at,
                extra: &extra,
            };
            match report::emit(&name, args.quick, &rows, &info, &out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("could not write {}: {e:#}", out.display());
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Outcome::Skipped(why)) => {
            eprintln!("SKIPPED {name}: {why}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name} failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<(String, Args), String> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_the_documented_command() {
        let (name, a) = p(&[
            "suite",
            "--quick",
            "--n",
            "100_000",
            "--clients",
            "20",
            "--nodes",
            "500",
            "--targets",
            "3_000",
            "--json",
            "x.json",
            "--only",
            "push, many",
        ])
        .expect("parses");
        assert_eq!(name, "suite");
        assert!(a.quick);
        assert_eq!(a.n, Some(100_000));
        assert_eq!(a.clients, Some(20));
        assert_eq!(a.nodes, Some(500));
        assert_eq!(a.targets, Some(3_000));
        assert_eq!(a.out, Some(PathBuf::from("x.json")));
        assert_eq!(a.only, Some(vec!["push".to_string(), "many".to_string()]));
        assert!(p(&["suite", "--only"]).is_err());
        assert!(p(&["suite", "--only", ","]).is_err());
        assert!(p(&["suite", "--n", "many"]).is_err());
        assert!(p(&["suite", "--bogus"]).is_err());
        assert!(SCENARIOS.iter().any(|(n, _, _)| *n == "suite"));
    }
}
