//! The benchmark's environment: its own nats-server and Herald processes on loopback,
//! started fresh for each scenario so one scenario's state never skews another's.

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub use herald_testkit::free_port;
use herald_testkit::nats::NatsServer;

/// Where the binaries are.
#[derive(Clone, Debug)]
pub struct Bins {
    pub herald: PathBuf,
    pub nats_server: PathBuf,
}

impl Bins {
    pub fn resolve(herald: Option<PathBuf>, nats: Option<PathBuf>) -> Result<Self> {
        let herald = match herald {
            Some(p) => p,
            None => std::env::current_exe()?
                .parent()
                .context("no parent dir")?
                .join("herald"),
        };
        if !herald.is_file() {
            bail!(
                "herald binary not found at {} (build it: cargo build --release --workspace --bins)",
                herald.display()
            );
        }
        let nats_server = nats
            .or_else(|| std::env::var_os("NATS_SERVER_BIN").map(PathBuf::from))
            .unwrap_or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
                    .map(|d| d.join("nats-server"))
                    .find(|p| p.is_file())
                    .unwrap_or_else(|| PathBuf::from(".venv/bin/nats-server"))
            });
        Ok(Self {
            herald,
            nats_server,
        })
    }

    pub fn versions(&self) -> (String, String) {
        let run = |p: &PathBuf, arg: &str| {
            Command::new(p)
                .arg(arg)
                .output()
                .ok()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                .unwrap_or_default()
        };
        (
            run(&self.herald, "--version"),
            run(&self.nats_server, "--version"),
        )
    }
}

/// A nats-server with JetStream in a temporary store (`herald_testkit::nats`), with the
/// benchmark's limits.
pub struct Nats {
    pub url: String,
    /// The monitoring endpoint (`/varz`, `/jsz`).
    pub monitor: String,
    server: NatsServer,
}

impl Nats {
    pub async fn start(bins: &Bins, sync_always: bool) -> Result<Self> {
        let sync = if sync_always {
            "jetstream {\n  sync_interval: always\n}\n"
        } else {
            ""
        };
        let monitor_port = free_port();
        let conf = format!("max_payload: 1MB\nhttp: \"127.0.0.1:{monitor_port}\"\n{sync}");
        let server = NatsServer::try_start_as(bins.nats_server.clone(), Some(&conf), None)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("cannot start {}", bins.nats_server.display()))?;
        Ok(Self {
            url: server.url(),
            monitor: format!("http://127.0.0.1:{monitor_port}"),
            server,
        })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid().unwrap_or(0)
    }
}

/// A Herald process (release binary), so its RSS is its own.
pub struct Herald {
    pub base: String,
    pub start_to_ready: Duration,
    child: Child,
}

impl Herald {
    pub async fn start(bins: &Bins, nats_url: &str, env: &[(&str, String)]) -> Result<Self> {
        let port = free_port();
        let started = Instant::now();
        let mut cmd = Command::new(&bins.herald);
        cmd.arg("serve")
            .env("HERALD_LISTEN", format!("127.0.0.1:{port}"))
            .env("HERALD_NATS_URL", nats_url)
            .env("HERALD_OUTBOUND_ALLOW", "127.0.0.0/8")
            .env("HERALD_MAX_TOPICS_PER_PROJECT", "0")
            .env(
                "RUST_LOG",
                std::env::var("BENCH_HERALD_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().context("cannot start herald")?;
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                bail!("herald did not become ready");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(Self {
            base,
            start_to_ready: started.elapsed(),
            child,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time (user + system) used so far (see [`cpu_time`]).
    pub fn cpu_time(&self) -> Duration {
        cpu_time(self.child.id())
    }

    /// Resident set size in MiB (see [`rss_mib`]).
    pub fn rss_mib(&self) -> f64 {
        rss_mib(self.child.id())
    }
}

/// A process's CPU time (user + system) so far, from /proc: a per-message cost that stays
/// meaningful when other processes compete for the cores.
pub fn cpu_time(pid: u32) -> Duration {
    stat_cpu_time(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// CPU time so far of this process's threads named `name` (`/proc/self/task/*/comm`); threads
/// that have ended no longer count.
pub fn threads_cpu_time(name: &str) -> Duration {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    tasks
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim_end() == name)
        })
        .map(|t| stat_cpu_time(&std::fs::read_to_string(t.path().join("stat")).unwrap_or_default()))
        .sum()
}

/// utime + stime of a `/proc/.../stat` line.
fn stat_cpu_time(stat: &str) -> Duration {
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports in USER_HZ, 100 on every mainstream build.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A process's resident set size in MiB, from /proc (0 when it is gone).
pub fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// CPU used by each of `pids` over `window` of wall time, in % of one core.
pub async fn cpu_percent(pids: &[u32], window: Duration) -> Vec<f64> {
    let before: Vec<Duration> = pids.iter().map(|p| cpu_time(*p)).collect();
    let start = Instant::now();
    tokio::time::sleep(window).await;
    let wall = start.elapsed().as_secs_f64();
    pids.iter()
        .zip(before)
        .map(|(p, b)| cpu_time(*p).saturating_sub(b).as_secs_f64() * 100.0 / wall)
        .collect()
}

impl Drop for Herald {
    fn drop(&mut self) {
        // SIGTERM first so it shuts down cleanly; then make sure.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
