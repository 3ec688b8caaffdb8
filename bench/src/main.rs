//! `hubsync-bench`: benchmarks, not tests. Each scenario measures hubsync
//! and, in the same run on the same machine, a baseline that does the bare
//! minimum of the same work, and reports both and their ratio — a figure
//! alone says little on a shared machine.
//!
//! ```text
//! cargo run --release -p hubsync-bench -- pg-ingest [--quick] [--n N] [--out FILE]
//! ```
//!
//! One module per scenario under `scenarios/`; [`report`] prints the table
//! and writes the JSON. To add a scenario: a module with a `run(&Args)`
//! returning `Vec<report::Row>`, and a line in [`SCENARIOS`].

mod report;
mod scenarios;

use std::path::PathBuf;
use std::process::ExitCode;

/// Command-line options shared by the scenarios.
#[derive(Debug, Clone)]
pub struct Args {
    /// A smaller run (seconds, for CI or a quick look).
    pub quick: bool,
    /// Entities to push (scenario default when None).
    pub n: Option<usize>,
    /// Where the JSON report goes.
    pub out: Option<PathBuf>,
}

type Scenario = fn(&Args) -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Outcome>>>>;

/// What a scenario produced.
pub enum Outcome {
    Rows(Vec<report::Row>),
    /// Not run here, and why (e.g. no PostgreSQL server).
    Skipped(String),
}

const SCENARIOS: &[(&str, &str, Scenario)] = &[(
    "pg-ingest",
    "master ingest on PostgreSQL (Engine::handle_exchange, packets of max_packet_entities) vs a plain multi-row INSERT of the same rows",
    |a| Box::pin(scenarios::pg_ingest::run(a.clone())),
)];

fn usage() -> String {
    let mut s = String::from(
        "usage: hubsync-bench SCENARIO [--quick] [--n N] [--out FILE]\n\nscenarios:\n",
    );
    for (name, what, _) in SCENARIOS {
        s.push_str(&format!("  {name:<12} {what}\n"));
    }
    s.push_str(
        "\nPostgreSQL scenarios read HUBSYNC_BENCH_POSTGRES_URL or HUBSYNC_TEST_POSTGRES_URL.\n",
    );
    s
}

fn parse(mut argv: impl Iterator<Item = String>) -> Result<(String, Args), String> {
    let name = argv.next().ok_or_else(usage)?;
    let mut args = Args {
        quick: false,
        n: None,
        out: None,
    };
    while let Some(a) = argv.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--n" => {
                let v = argv.next().ok_or("--n needs a number")?;
                args.n = Some(v.parse().map_err(|_| format!("--n {v}: not a number"))?);
            }
            "--out" => args.out = Some(argv.next().ok_or("--out needs a file")?.into()),
            "-h" | "--help" => return Err(usage()),
            other => return Err(format!("unknown argument {other}\n\n{}", usage())),
        }
    }
    Ok((name, args))
}

fn main() -> ExitCode {
    let (name, args) = match parse(std::env::args().skip(1)) {
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
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("could not start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(scenario(&args)) {
        Ok(Outcome::Rows(rows)) => {
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("target/bench/{name}.json")));
            match report::emit(&name, &args, &rows, &out) {
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
