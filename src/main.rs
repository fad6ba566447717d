//! The `herald` binary: parse the command line, load config, start tracing, run.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use herald::{
    config::Config,
    startup::{Application, Roles},
};

/// Herald: publish to topics, deliver to every subscription; Cinder-style user messages.
///
/// Configuration: defaults, then the --config TOML file, then HERALD_* environment
/// variables (HERALD_LISTEN, HERALD_NATS_URL, HERALD_AUTH_MODE, HERALD_TOKENS_FILE, ...).
/// The publish and delivery paths allocate per request and per message; mimalloc's
/// thread-local free lists cut that cost (see README, Performance).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "herald", version)]
struct Cli {
    /// TOML configuration file.
    #[arg(long, global = true, env = "HERALD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API and the delivery workers (the default).
    Serve {
        /// Only the REST API, no delivery workers.
        #[arg(long, conflicts_with = "workers_only")]
        api_only: bool,
        /// Only the delivery workers, no REST API.
        #[arg(long)]
        workers_only: bool,
    },
    /// Print the effective configuration and exit.
    Config,
    /// Print the OpenAPI document and exit.
    Openapi,
    /// Print new NATS auth callout keys (issuer account nkey and xkey): the seeds for
    /// Herald's config, the public keys for nats-server's `auth_callout`.
    NkeyGen,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Some(Command::NkeyGen)) {
        print!("{}", herald::auth::callout::generate_keys());
        return std::process::ExitCode::SUCCESS;
    }
    let config = match Config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let roles = match cli.command.unwrap_or(Command::Serve {
        api_only: false,
        workers_only: false,
    }) {
        Command::Config => {
            println!("{config:#?}");
            return std::process::ExitCode::SUCCESS;
        }
        Command::Openapi => {
            use utoipa::OpenApi;
            println!(
                "{}",
                herald::api::ApiDoc::openapi()
                    .to_pretty_json()
                    .unwrap_or_default()
            );
            return std::process::ExitCode::SUCCESS;
        }
        // Printed before the configuration is loaded (it needs none).
        Command::NkeyGen => return std::process::ExitCode::SUCCESS,
        Command::Serve {
            api_only,
            workers_only,
        } => Roles {
            api: !workers_only,
            workers: !api_only,
        },
    };
    herald::telemetry::init_tracing(config.log_format);
    tracing::info!(config = ?config, "effective configuration");
    let risky = config.risky_outbound_allow();
    if !risky.is_empty() {
        tracing::warn!(
            outbound_allow = ?risky,
            "outbound_allow lets deliveries reach loopback or private addresses (SSRF guard relaxed); \
             fine for development, not for a deployment where projects choose subscriber URLs"
        );
    }
    let result = async {
        let app = Application::build(config, roles).await?;
        app.run(herald::shutdown::token_on_signal()).await
    }
    .await;
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error.cause_chain = ?e, error.message = %e, "herald failed");
            eprintln!("herald: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
