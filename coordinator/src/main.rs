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
    Dev(quiver_coordinator::dev::DevArgs),
    /// Run a coordinator: the S3 Vectors API and a voter in the control-plane Raft group.
    Coordinator {
        /// TOML configuration (template: deploy/coordinator.example.toml).
        #[arg(long, env = "QUIVER_CONFIG")]
        config: std::path::PathBuf,
    },
    /// Run a storage node that joins the cluster and hosts shards.
    Node {
        /// TOML configuration (template: deploy/node.example.toml).
        #[arg(long, env = "QUIVER_CONFIG")]
        config: std::path::PathBuf,
    },
    /// Operator commands against a running cluster (mutual TLS).
    Admin(quiver_coordinator::admin::AdminArgs),
    /// Create the cluster CA and certificates for mutual TLS between processes.
    #[command(subcommand)]
    Cert(CertCommand),
}

#[derive(Subcommand)]
enum CertCommand {
    /// Create a new cluster CA: writes ca.pem and ca.key (keep ca.key offline).
    Ca {
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Common name of the CA certificate.
        #[arg(long, default_value = "Quiver cluster CA")]
        name: String,
    },
    /// Issue a certificate for one process (node or coordinator), signed by the CA. Writes
    /// NAME.pem and NAME.key; copy ca.pem next to them.
    Issue {
        /// Directory holding ca.pem and ca.key.
        #[arg(long)]
        ca_dir: std::path::PathBuf,
        /// Process name, e.g. node-1; also the certificate's common name.
        #[arg(long)]
        name: String,
        /// Extra DNS names or IP addresses the process is reached at (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
        /// What the holder may do (repeatable): coordinator (Raft peer, calls nodes), node
        /// (joins and heartbeats), admin (`quiver admin`).
        #[arg(long = "role", required = true, value_parser = parse_role)]
        roles: Vec<quiver_node::tls::Role>,
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn parse_role(name: &str) -> Result<quiver_node::tls::Role, String> {
    quiver_node::tls::Role::parse(name)
        .ok_or_else(|| format!("unknown role {name:?}: expected coordinator, node or admin"))
}

fn cert(command: CertCommand) -> anyhow::Result<()> {
    use anyhow::Context;
    use quiver_node::tls::GeneratedCa;
    match command {
        CertCommand::Ca { out, name } => {
            if out.join("ca.key").exists() {
                anyhow::bail!(
                    "{} already holds a CA; refusing to overwrite it",
                    out.display()
                );
            }
            GeneratedCa::generate(&name)?.write(&out)?;
            println!("wrote {0}/ca.pem and {0}/ca.key", out.display());
        }
        CertCommand::Issue {
            ca_dir,
            name,
            sans,
            roles,
            out,
        } => {
            let read = |file: &str| {
                std::fs::read_to_string(ca_dir.join(file))
                    .with_context(|| format!("reading {}", ca_dir.join(file).display()))
            };
            let ca = GeneratedCa::from_pem(&read("ca.pem")?, &read("ca.key")?)?;
            ca.issue_to(&out, &name, &sans, &roles)?;
            println!("wrote {0}/{name}.pem and {0}/{name}.key", out.display());
        }
    }
    Ok(())
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
    if let Command::Cert(command) = cli.command {
        return cert(command);
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
            Command::Dev(args) => quiver_coordinator::dev::run(args, shutdown).await,
            Command::Coordinator { config } => {
                let config = quiver_coordinator::config::CoordinatorConfig::load(&config)?;
                quiver_coordinator::process::run_coordinator(config, shutdown).await
            }
            Command::Node { config } => {
                let config = quiver_coordinator::config::NodeConfig::load(&config)?;
                quiver_coordinator::process::run_node(config, shutdown).await
            }
            Command::Admin(args) => quiver_coordinator::admin::run(args).await,
            Command::Cert(_) => Ok(()),
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
