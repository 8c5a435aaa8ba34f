//! `quiver cert`: the cluster CA and the certificates of processes and operators.

use anyhow::Context;
use clap::Subcommand;
use quiver_net::tls::GeneratedCa;

#[derive(Subcommand)]
pub enum CertCommand {
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
        roles: Vec<quiver_net::tls::Role>,
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
    },
}

fn parse_role(name: &str) -> Result<quiver_net::tls::Role, String> {
    quiver_net::tls::Role::parse(name)
        .ok_or_else(|| format!("unknown role {name:?}: expected coordinator, node or admin"))
}

pub fn run(command: CertCommand) -> anyhow::Result<()> {
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
