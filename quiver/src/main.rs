//! The `quiver` binary.

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "quiver",
    version,
    about = "Quiver: a distributed vector search cluster speaking the Amazon S3 Vectors API"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an embedded single-process cluster (coordinator + node over loopback QUIC).
    Dev(quiver::dev::DevArgs),
    /// Run a coordinator: the S3 Vectors API and a voter in the control-plane Raft group.
    Coordinator {
        /// TOML configuration (template: deploy/coordinator.example.toml). Repeat to layer
        /// files: later ones override earlier ones (e.g. a secrets file with the join token).
        #[arg(long, env = "QUIVER_CONFIG", required = true)]
        config: Vec<std::path::PathBuf>,
    },
    /// Run a storage node that joins the cluster and hosts shards.
    Node {
        /// TOML configuration (template: deploy/node.example.toml). Repeatable, like the
        /// coordinator's.
        #[arg(long, env = "QUIVER_CONFIG", required = true)]
        config: Vec<std::path::PathBuf>,
    },
    /// Operator commands against a running cluster (mutual TLS).
    Admin(quiver::admin::AdminArgs),
    /// Create the cluster CA and certificates for mutual TLS between processes.
    #[command(subcommand)]
    Cert(quiver::cert::CertCommand),
    /// Exit 0 if a URL answers HTTP 200 (container health checks; the image has no shell).
    Health(quiver::health::HealthArgs),
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let cli = match cli.command {
        Command::Cert(command) => return quiver::cert::run(command),
        Command::Health(args) => return quiver::health::run(args),
        command => Cli { command },
    };
    if !matches!(cli.command, Command::Admin(_)) {
        // A serving process: raise the open-file limit before anything opens files.
        quiver::fd_budget::raise_open_file_limit();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver")
        .build()?;
    runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            signal.cancel();
        });
        match cli.command {
            Command::Dev(args) => quiver::dev::run(args, shutdown).await,
            Command::Coordinator { config } => {
                let config = quiver::config::CoordinatorConfig::load_layered(&config)?;
                quiver::process::run_coordinator(config, shutdown).await
            }
            Command::Node { config } => {
                let config = quiver::config::NodeConfig::load_layered(&config)?;
                quiver::node::run_node(config, shutdown).await
            }
            Command::Admin(args) => quiver::admin::run(args).await,
            Command::Cert(_) | Command::Health(_) => Ok(()),
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
