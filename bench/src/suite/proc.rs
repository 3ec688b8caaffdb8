//! hubsync nodes as child processes: this binary re-executed as
//! `hubsync-bench node serve --config F`, which runs exactly the `hubsync`
//! command line (`hubsync::cli::run`), so a master and each client are
//! real, separate processes with their own memory — their peak RSS
//! (`VmHWM`) is read from `/proc`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;

/// A free loopback port (bound, read, released: the node binds it next).
pub fn free_addr() -> anyhow::Result<SocketAddr> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?)
}

/// A running `hubsync serve`, killed when dropped.
pub struct NodeProc {
    pub name: String,
    pub api: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl NodeProc {
    /// Starts `serve` on `config` and waits (bounded) until its local API
    /// answers `/health`.
    pub async fn start(name: &str, config: &Path, api: SocketAddr) -> anyhow::Result<NodeProc> {
        let exe = std::env::current_exe().context("locating the hubsync-bench binary")?;
        let log = config.with_file_name("serve.log");
        let err =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(exe)
            .arg("node")
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .context("starting a hubsync node process")?;
        let mut node = NodeProc {
            name: name.into(),
            api,
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = node.child.try_wait() {
                anyhow::bail!(
                    "node {name} exited at start ({status}); its log {}:\n{}",
                    node.log.display(),
                    std::fs::read_to_string(&node.log).unwrap_or_default()
                );
            }
            if let Ok(Ok((200, _))) = tokio::time::timeout(
                Duration::from_secs(2),
                hubsync::local_client::request(api, "GET", "/health", None),
            )
            .await
            {
                return Ok(node);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "node {name} did not answer /health on {api} within 60 s; see {}",
                node.log.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Peak resident set size so far (`VmHWM`), in MB.
    pub fn peak_rss_mb(&self) -> f64 {
        proc_status_kb(self.pid(), "VmHWM:") as f64 / 1024.0
    }

    /// CPU time the process has used so far (user + system), in seconds.
    pub fn cpu_secs(&self) -> f64 {
        proc_cpu_secs(self.pid())
    }

    /// Context switches of all the process's threads so far (voluntary
    /// and not, from `/proc/PID/task/*/status`; 0 where unreadable). An
    /// exchange's hand-offs between the async runtime and SQLite's worker
    /// thread show up here.
    pub fn context_switches(&self) -> u64 {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{}/task", self.pid())) else {
            return 0;
        };
        tasks
            .flatten()
            .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
            .map(|status| {
                status
                    .lines()
                    .filter(|l| {
                        l.starts_with("voluntary_ctxt_switches:")
                            || l.starts_with("nonvoluntary_ctxt_switches:")
                    })
                    .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum::<u64>()
            })
            .sum()
    }

    /// Current resident set size (`VmRSS`), in MB.
    pub fn rss_mb(&self) -> f64 {
        proc_status_kb(self.pid(), "VmRSS:") as f64 / 1024.0
    }

    /// A request to the node's local API, bounded by `timeout`; fails on a
    /// status other than 2xx.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Value> {
        let (status, v) = tokio::time::timeout(
            timeout,
            hubsync::local_client::request(self.api, method, path, body),
        )
        .await
        .with_context(|| {
            format!(
                "{method} {path} on {} took longer than {timeout:?}",
                self.name
            )
        })?
        .with_context(|| format!("{method} {path} on {}", self.name))?;
        anyhow::ensure!(
            (200..300).contains(&status),
            "{method} {path} on {}: HTTP {status}: {v}",
            self.name
        );
        Ok(v)
    }

    /// One sync session through the node's local API (`POST /api/v1/sync`,
    /// what `hubsync sync` does against a running node), bounded by
    /// `timeout`; the summary.
    pub async fn sync(&self, timeout: Duration) -> anyhow::Result<Value> {
        self.call("POST", "/api/v1/sync", None, timeout).await
    }

    /// Stops the process (SIGKILL: every commit is already durable).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Peak resident set size (`VmHWM`) of this bench process itself, in MB.
pub fn self_peak_rss_mb() -> f64 {
    proc_status_kb(std::process::id(), "VmHWM:") as f64 / 1024.0
}

/// Current resident set size (`VmRSS`) of this bench process, in MB.
pub fn self_rss_mb() -> f64 {
    proc_status_kb(std::process::id(), "VmRSS:") as f64 / 1024.0
}

/// Raises this process's soft limit on open files (`RLIMIT_NOFILE`) to at
/// least `want`, as far as the hard limit allows; node processes started
/// afterwards inherit it. Returns the soft and hard limits in force after.
#[cfg(unix)]
pub fn raise_open_files(want: libc::rlim_t) -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass, which we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if lim.rlim_cur >= want {
        return Ok((lim.rlim_cur, lim.rlim_max));
    }
    let raised = libc::rlimit {
        rlim_cur: want.min(lim.rlim_max),
        rlim_max: lim.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct we pass; the soft limit stays
    // within the hard one, which an unprivileged process may always set.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((raised.rlim_cur, raised.rlim_max))
}

/// User + system CPU time of a process (`/proc/PID/stat` fields 14 and
/// 15), in seconds; 0 when unreadable.
pub fn proc_cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // The command name (field 2) may hold spaces: count from after its ')'.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state), so fields 14 and 15 are at 11 and 12.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|v| v.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if per_s <= 0 {
        return 0.0;
    }
    ticks as f64 / per_s as f64
}

/// A `kB` field of `/proc/PID/status`, 0 when unreadable.
pub fn proc_status_kb(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with(key)).and_then(|l| {
                l[key.len()..]
                    .split_whitespace()
                    .next()
                    .and_then(|v| v.parse().ok())
            })
        })
        .unwrap_or(0)
}

/// `perf record` attached to a node process for the duration of one step,
/// when `HUBSYNC_BENCH_PERF` names a directory (profiles go there as
/// `<label>.perf.data`; read them with `perf report -i FILE`).
pub struct Perf {
    child: Child,
}

impl Perf {
    pub fn start(node: &NodeProc, label: &str) -> Option<Perf> {
        let dir = std::env::var_os("HUBSYNC_BENCH_PERF")?;
        let _ = std::fs::create_dir_all(&dir);
        let out = Path::new(&dir).join(format!("{label}.perf.data"));
        let child = Command::new("perf")
            .args(["record", "-F", "1500", "--call-graph", "dwarf,16384", "-o"])
            .arg(&out)
            .arg("-p")
            .arg(node.pid().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                eprintln!("suite: perf record did not start ({e}); no profile for {label}")
            })
            .ok()?;
        // perf needs a moment to attach before the step starts.
        std::thread::sleep(Duration::from_millis(500));
        eprintln!("suite: profiling {} into {}", node.name, out.display());
        Some(Perf { child })
    }

    /// Stops the recording (SIGINT, as perf expects) and waits for it to
    /// write its file.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}
