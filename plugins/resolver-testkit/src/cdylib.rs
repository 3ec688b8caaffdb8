//! Builds a plugin crate's loadable library from a test, so that the laws
//! (and end-to-end tests) can go through the real dynamic loader.
//!
//! Why a nested `cargo build` into its own target directory
//! (`<target>/hubsync-plugins`) rather than the test's own: the outer
//! `cargo test` holds the lock of its target directory while tests run,
//! and a crate that is also linked into a host as an rlib (hubsync's
//! built-ins) exports the entry symbol only with a feature the host's
//! build must not have. The first build compiles serde and serde_json
//! once; later ones take about a second. Builds in one test process are
//! serialized and remembered; cargo's own lock serializes test processes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The bound on one nested build (a cold build on a busy two-core machine
/// included).
pub const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

static BUILT: Mutex<Option<HashMap<String, Vec<PathBuf>>>> = Mutex::new(None);

/// The cargo target directory of the running test binary
/// (`CARGO_TARGET_DIR`, else three levels above `target/<profile>/deps/<test>`).
pub fn target_dir() -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    exe.ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("cannot find the target directory above {}", exe.display()))
}

/// The file name cargo gives the cdylib of `package` on this platform.
pub fn library_file_name(package: &str) -> String {
    format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    )
}

/// Builds the cdylibs of `packages` (each with its features) in one cargo
/// run and returns their paths, in order.
pub fn build_cdylibs(packages: &[(&str, &[&str])]) -> Result<Vec<PathBuf>, String> {
    let key = format!("{packages:?}");
    let mut guard = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(paths) = guard.as_ref().and_then(|m| m.get(&key)) {
        return Ok(paths.clone());
    }
    let out_dir = target_dir()?.join("hubsync-plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.arg("build").arg("--target-dir").arg(&out_dir);
    let mut features = Vec::new();
    for (package, feats) in packages {
        cmd.arg("-p").arg(package);
        features.extend(feats.iter().map(|f| format!("{package}/{f}")));
    }
    if !features.is_empty() {
        cmd.arg("--features").arg(features.join(","));
    }
    std::fs::create_dir_all(&out_dir).map_err(|e| format!("{}: {e}", out_dir.display()))?;
    let log_path = out_dir.join("build.log");
    let log =
        std::fs::File::create(&log_path).map_err(|e| format!("{}: {e}", log_path.display()))?;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("could not run {cargo}: {e}"))?;
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if start.elapsed() > BUILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "building {packages:?} took longer than {BUILD_TIMEOUT:?}; see {}",
                    log_path.display()
                ));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => return Err(format!("waiting for cargo: {e}")),
        }
    };
    if !status.success() {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        return Err(format!(
            "building {packages:?} failed ({status}):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ));
    }
    let paths: Vec<PathBuf> = packages
        .iter()
        .map(|(p, _)| out_dir.join("debug").join(library_file_name(p)))
        .collect();
    if let Some(missing) = paths.iter().find(|p| !p.exists()) {
        return Err(format!(
            "cargo built {packages:?} but {} is missing: is the crate's crate-type \"cdylib\"?",
            missing.display()
        ));
    }
    guard
        .get_or_insert_with(HashMap::new)
        .insert(key, paths.clone());
    Ok(paths)
}

/// Builds one package's cdylib.
pub fn build_cdylib(package: &str, features: &[&str]) -> Result<PathBuf, String> {
    build_cdylibs(&[(package, features)]).map(|mut v| v.remove(0))
}

/// The path of one of [`hubsync_test_plugins`]' libraries, as text for a
/// configuration file; panics with the build's message if it cannot be had
/// (a test cannot go on without it).
pub fn test_plugin_path(package: &str) -> String {
    let libs = hubsync_test_plugins().unwrap_or_else(|e| panic!("building test plugins: {e}"));
    match libs.get(package) {
        Some(p) => p.display().to_string(),
        None => panic!("{package} is not one of the test plugins"),
    }
}

/// Every library hubsync's own tests load: the five built-ins (with their
/// `export` feature), the example plugin and the two test fixtures. Built
/// in one cargo run. Returned by package name.
pub fn hubsync_test_plugins() -> Result<HashMap<&'static str, PathBuf>, String> {
    const EXPORT: &[&str] = &["export"];
    const NONE: &[&str] = &[];
    let packages: [(&'static str, &[&str]); 8] = [
        ("hubsync-resolver-server-wins", EXPORT),
        ("hubsync-resolver-client-wins", EXPORT),
        ("hubsync-resolver-last-writer-wins", EXPORT),
        ("hubsync-resolver-field-merge", EXPORT),
        ("hubsync-resolver-manual", EXPORT),
        ("hubsync-example-merge-report-lines", NONE),
        ("hubsync-test-misbehaving-resolver", NONE),
        ("hubsync-test-bad-abi-resolver", NONE),
    ];
    let paths = build_cdylibs(&packages)?;
    Ok(packages.iter().map(|(p, _)| *p).zip(paths).collect())
}
