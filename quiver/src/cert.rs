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
    /// Everything a new cluster needs in one idempotent step (for a one-shot init container
    /// without a shell): the CA, a certificate per listed process, and JOIN_TOKEN_FILE, a TOML
    /// file holding a random join_token (pass it as a second --config). Files that exist are
    /// kept, so running it again changes nothing.
    Init {
        /// Output directory.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Coordinator certificates to issue (comma-separated or repeated).
        #[arg(long, value_delimiter = ',')]
        coordinators: Vec<String>,
        /// Node certificates to issue.
        #[arg(long, value_delimiter = ',')]
        nodes: Vec<String>,
        /// Operator certificates (`quiver admin`) to issue.
        #[arg(long, value_delimiter = ',')]
        admins: Vec<String>,
        /// Extra DNS names or IP addresses for every certificate (repeatable).
        #[arg(long = "san")]
        sans: Vec<String>,
    },
}

/// The file `quiver cert init` writes the join token to: `join_token = "..."`.
pub const JOIN_TOKEN_FILE: &str = "join-token.toml";

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
        CertCommand::Init {
            out,
            coordinators,
            nodes,
            admins,
            sans,
        } => {
            use quiver_net::tls::Role;
            let mut wanted = Vec::new();
            for (names, role) in [
                (coordinators, Role::Coordinator),
                (nodes, Role::Node),
                (admins, Role::Admin),
            ] {
                wanted.extend(names.into_iter().map(|name| (name, role)));
            }
            for written in init(&out, &wanted, &sans)? {
                println!("wrote {}", out.join(written).display());
            }
        }
    }
    Ok(())
}

/// Creates what is missing in `out`: `ca.pem`/`ca.key`, `NAME.pem`/`NAME.key` for each
/// `(name, role)`, and [`JOIN_TOKEN_FILE`]. Returns the files written.
pub fn init(
    out: &std::path::Path,
    certs: &[(String, quiver_net::tls::Role)],
    sans: &[String],
) -> anyhow::Result<Vec<String>> {
    let mut written = Vec::new();
    let ca = if out.join("ca.key").exists() {
        let read = |file: &str| {
            std::fs::read_to_string(out.join(file))
                .with_context(|| format!("reading {}", out.join(file).display()))
        };
        GeneratedCa::from_pem(&read("ca.pem")?, &read("ca.key")?)?
    } else {
        let ca = GeneratedCa::generate("Quiver cluster CA")?;
        ca.write(out)?;
        written.extend(["ca.pem".to_owned(), "ca.key".to_owned()]);
        ca
    };
    for (name, role) in certs {
        if !quiver_proto::valid_node_id(name) {
            anyhow::bail!("{name:?}: names are 1-64 characters [A-Za-z0-9._-]");
        }
        if out.join(format!("{name}.pem")).exists() {
            continue;
        }
        ca.issue_to(out, name, sans, &[*role])?;
        written.extend([format!("{name}.pem"), format!("{name}.key")]);
    }
    let token_path = out.join(JOIN_TOKEN_FILE);
    if !token_path.exists() {
        let token: [u8; 24] = rand::random();
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        use std::io::Write;
        let mut file = options
            .open(&token_path)
            .with_context(|| format!("creating {}", token_path.display()))?;
        writeln!(
            file,
            "# Written by `quiver cert init`: the cluster's join token.\njoin_token = \"{}\"",
            hex::encode(token)
        )?;
        file.sync_all()?;
        written.push(JOIN_TOKEN_FILE.to_owned());
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;
    use figment::providers::Format;
    use quiver_net::tls::Role;

    #[test]
    fn init_creates_once_and_keeps_what_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = vec![
            ("coordinator-1".to_owned(), Role::Coordinator),
            ("node-1".to_owned(), Role::Node),
        ];
        let written = init(dir.path(), &certs, &[]).expect("init");
        for file in [
            "ca.pem",
            "ca.key",
            "coordinator-1.pem",
            "coordinator-1.key",
            "node-1.pem",
            "node-1.key",
            JOIN_TOKEN_FILE,
        ] {
            assert!(written.iter().any(|w| w == file), "{file} in {written:?}");
        }
        let token = std::fs::read_to_string(dir.path().join(JOIN_TOKEN_FILE)).expect("token");
        let parsed: toml_token::Token =
            figment::Figment::from(figment::providers::Toml::string(&token))
                .extract()
                .expect("token file is TOML");
        assert_eq!(parsed.join_token.len(), 48);

        // Again, with one more name: only that certificate is new; CA and token are kept.
        let ca = std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca");
        let mut more = certs.clone();
        more.push(("admin".to_owned(), Role::Admin));
        let written = init(dir.path(), &more, &[]).expect("init again");
        assert_eq!(
            written,
            vec!["admin.pem".to_owned(), "admin.key".to_owned()]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("ca.pem")).expect("ca"),
            ca
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join(JOIN_TOKEN_FILE)).expect("token"),
            token
        );
        assert!(init(dir.path(), &[("bad name".to_owned(), Role::Node)], &[]).is_err());
    }

    mod toml_token {
        #[derive(serde::Deserialize)]
        pub struct Token {
            pub join_token: String,
        }
    }
}
