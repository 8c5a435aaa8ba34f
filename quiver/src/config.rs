//! Configuration files of `quiver coordinator` and `quiver node`: one TOML file per role
//! (commented templates in `deploy/`), overridden by `QUIVER_*` environment variables
//! (`QUIVER_HTTP_LISTEN`, `QUIVER_TLS__DIR` for a key in a table), validated at start.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Toml};
use figment::Figment;
use serde::Deserialize;

use quiver_coordinator::cluster::types::CoordinatorNode;
use quiver_coordinator::cluster::RaftTimings;
use quiver_coordinator::throttle::{RateLimits, DEFAULT_MAX_CONCURRENT_REQUESTS};
use quiver_net::check_peer_addr;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    Missing(String),
    #[error("invalid configuration in {path}: {message}")]
    Invalid { path: String, message: String },
}

/// Where a process finds its certificate: `DIR/ca.pem`, `DIR/NAME.pem`, `DIR/NAME.key`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub dir: PathBuf,
    pub name: String,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MemberConfig {
    pub id: u64,
    /// `host:port` other coordinators and nodes reach this member's cluster port at.
    pub cluster_addr: String,
    /// `host:port` of this member's S3 Vectors API.
    pub http_addr: String,
}

fn default_region() -> String {
    "us-east-1".into()
}
fn default_account_id() -> String {
    "123456789012".into()
}
fn default_shards_per_index() -> u32 {
    6
}
fn default_replication_factor() -> usize {
    3
}
fn default_max_concurrent_requests() -> usize {
    DEFAULT_MAX_CONCURRENT_REQUESTS
}
fn default_write_requests() -> u32 {
    RateLimits::DEFAULT.write_requests_per_second
}
fn default_write_vectors() -> u32 {
    RateLimits::DEFAULT.write_vectors_per_second
}
fn default_read_requests() -> u32 {
    RateLimits::DEFAULT.read_requests_per_second
}
fn default_heartbeat_ms() -> u64 {
    RaftTimings::DEFAULT.heartbeat_ms
}
fn default_election_min_ms() -> u64 {
    RaftTimings::DEFAULT.election_timeout_min_ms
}
fn default_election_max_ms() -> u64 {
    RaftTimings::DEFAULT.election_timeout_max_ms
}
fn default_node_timeout_ms() -> u64 {
    3_000
}
fn default_node_heartbeat_ms() -> u64 {
    500
}
fn default_faiss_index() -> String {
    quiver_node::index::vector::DEFAULT_INDEX_DESCRIPTION.into()
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CoordinatorConfig {
    pub id: u64,
    pub http_listen: SocketAddr,
    pub cluster_listen: SocketAddr,
    /// `host:port` other processes reach the cluster port at (default: `cluster_listen`, which
    /// then cannot be a wildcard). A DNS name survives a restart under a new IP.
    #[serde(default)]
    pub advertise: Option<String>,
    pub data_dir: PathBuf,
    pub join_token: String,
    pub tls: TlsConfig,
    #[serde(default)]
    pub initial_members: Vec<MemberConfig>,
    #[serde(default = "default_region")]
    pub region: String,
    #[serde(default = "default_account_id")]
    pub account_id: String,
    #[serde(default)]
    pub auth_config: Option<PathBuf>,
    #[serde(default)]
    pub allow_dev_credentials: bool,
    #[serde(default = "default_shards_per_index")]
    pub shards_per_index: u32,
    /// Replicas of each shard of a new index, on distinct nodes (a Raft group per shard).
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    #[serde(default = "default_max_concurrent_requests")]
    pub max_concurrent_requests: usize,
    /// HTTP connections held at once (0, the default: the open-file limit minus a reserve).
    #[serde(default)]
    pub max_http_connections: usize,
    #[serde(default = "default_write_requests")]
    pub max_write_requests_per_index: u32,
    #[serde(default = "default_write_vectors")]
    pub max_write_vectors_per_index: u32,
    #[serde(default = "default_read_requests")]
    pub max_read_requests_per_index: u32,
    #[serde(default = "default_heartbeat_ms")]
    pub raft_heartbeat_ms: u64,
    #[serde(default = "default_election_min_ms")]
    pub raft_election_timeout_min_ms: u64,
    #[serde(default = "default_election_max_ms")]
    pub raft_election_timeout_max_ms: u64,
    #[serde(default = "default_node_timeout_ms")]
    pub node_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: String,
    pub listen: SocketAddr,
    /// `host:port` coordinators reach this node at (default: `listen`).
    #[serde(default)]
    pub advertise: Option<String>,
    #[serde(default)]
    pub http_listen: Option<SocketAddr>,
    pub data_dir: PathBuf,
    /// `host:port` of the coordinators' cluster ports (any of them).
    pub coordinators: Vec<String>,
    pub join_token: String,
    pub tls: TlsConfig,
    #[serde(default = "default_node_heartbeat_ms")]
    pub heartbeat_ms: u64,
    #[serde(default = "default_faiss_index")]
    pub faiss_index: String,
}

/// Reads the TOML files in order (later ones override earlier ones), then environment
/// variables that map to keys of `T`'s file: `QUIVER_<KEY>`, `QUIVER_TLS__DIR`.
fn load<T: serde::de::DeserializeOwned>(
    paths: &[PathBuf],
    keys: &[&str],
) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    for path in paths {
        if !path.exists() {
            return Err(ConfigError::Missing(path.display().to_string()));
        }
        figment = figment.merge(Toml::file(path));
    }
    let path = shown(paths);
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    let env = Env::prefixed("QUIVER_")
        .filter(move |key| {
            keys.iter()
                .any(|k| k.as_str() == key.as_str().to_lowercase())
        })
        .split("__");
    figment
        .merge(env)
        .extract()
        .map_err(|e| ConfigError::Invalid {
            path,
            message: e.to_string(),
        })
}

/// What `load_role` needs of a role's configuration.
trait RoleConfig: serde::de::DeserializeOwned {
    /// The keys `QUIVER_*` variables may override.
    const KEYS: &'static [&'static str];
    fn validate(&self, paths: &[PathBuf]) -> Result<(), ConfigError>;
}

/// Loads `paths` (later ones overriding earlier ones), then the environment, and validates.
fn load_role<T: RoleConfig>(paths: &[PathBuf]) -> Result<T, ConfigError> {
    let config: T = load(paths, T::KEYS)?;
    config.validate(paths)?;
    Ok(config)
}

/// The join token, shared by every process of a cluster.
fn check_join_token(token: &str) -> Result<(), String> {
    if token.len() < 16 {
        return Err("join_token must be at least 16 characters".into());
    }
    Ok(())
}

/// `advertise` when given, otherwise a listen address (`listen_key`) that is not a wildcard.
fn check_advertise(
    advertise: Option<&str>,
    listen: SocketAddr,
    listen_key: &str,
    reached_by: &str,
) -> Result<(), String> {
    match advertise {
        Some(advertise) => check_peer_addr(advertise).map_err(|e| format!("advertise: {e}")),
        None if listen.ip().is_unspecified() => Err(format!(
            "{listen_key} is a wildcard address: set advertise to the host:port {reached_by}"
        )),
        None => Ok(()),
    }
}

/// How a list of configuration files is named in errors: `a.toml + b.toml`.
fn shown(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(" + ")
}

fn invalid(paths: &[PathBuf], message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: shown(paths),
        message: message.into(),
    }
}

impl CoordinatorConfig {
    pub const ENV_KEYS: &'static [&'static str] = &[
        "id",
        "http_listen",
        "cluster_listen",
        "advertise",
        "data_dir",
        "join_token",
        "tls__dir",
        "tls__name",
        "region",
        "account_id",
        "auth_config",
        "allow_dev_credentials",
        "shards_per_index",
        "replication_factor",
        "max_concurrent_requests",
        "max_http_connections",
        "max_write_requests_per_index",
        "max_write_vectors_per_index",
        "max_read_requests_per_index",
        "raft_heartbeat_ms",
        "raft_election_timeout_min_ms",
        "raft_election_timeout_max_ms",
        "node_timeout_ms",
    ];

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_role(&[path.to_path_buf()])
    }

    /// Loads several files, later ones overriding earlier ones, then the environment.
    pub fn load_layered(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        load_role(paths)
    }
}

impl RoleConfig for CoordinatorConfig {
    const KEYS: &'static [&'static str] = Self::ENV_KEYS;

    fn validate(&self, path: &[PathBuf]) -> Result<(), ConfigError> {
        if self.id == 0 {
            return Err(invalid(path, "id must be a positive integer"));
        }
        if !(1..=7).contains(&self.replication_factor) {
            return Err(invalid(path, "replication_factor must be 1 to 7"));
        }
        check_join_token(&self.join_token).map_err(|e| invalid(path, e))?;
        check_advertise(
            self.advertise.as_deref(),
            self.cluster_listen,
            "cluster_listen",
            "other processes reach this coordinator at",
        )
        .map_err(|e| invalid(path, e))?;
        for member in &self.initial_members {
            check_peer_addr(&member.cluster_addr)
                .and_then(|()| check_peer_addr(&member.http_addr))
                .map_err(|e| invalid(path, format!("initial_members id {}: {e}", member.id)))?;
        }
        if !self.initial_members.is_empty() {
            let Some(me) = self.initial_members.iter().find(|m| m.id == self.id) else {
                return Err(invalid(
                    path,
                    "initial_members must include this coordinator (or be empty to join an existing group)",
                ));
            };
            if me.cluster_addr != self.advertised() {
                return Err(invalid(
                    path,
                    format!(
                        "this coordinator's initial_members entry names {} but it advertises {}",
                        me.cluster_addr,
                        self.advertised()
                    ),
                ));
            }
        }
        if self.raft_election_timeout_min_ms <= self.raft_heartbeat_ms
            || self.raft_election_timeout_max_ms <= self.raft_election_timeout_min_ms
        {
            return Err(invalid(
                path,
                "need raft_heartbeat_ms < raft_election_timeout_min_ms < raft_election_timeout_max_ms",
            ));
        }
        if self.node_timeout_ms < 1_000 {
            return Err(invalid(path, "node_timeout_ms must be at least 1000"));
        }
        quiver_coordinator::api::ArnScope::new(&self.region, &self.account_id)
            .map(drop)
            .map_err(|e| invalid(path, e))
    }
}

impl CoordinatorConfig {
    /// The `host:port` this coordinator's cluster port is reached at.
    pub fn advertised(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| self.cluster_listen.to_string())
    }

    pub fn members(&self) -> BTreeMap<u64, CoordinatorNode> {
        self.initial_members
            .iter()
            .map(|m| {
                (
                    m.id,
                    CoordinatorNode {
                        cluster_addr: m.cluster_addr.clone(),
                        http_addr: m.http_addr.clone(),
                    },
                )
            })
            .collect()
    }

    pub fn raft_timings(&self) -> RaftTimings {
        RaftTimings {
            heartbeat_ms: self.raft_heartbeat_ms,
            election_timeout_min_ms: self.raft_election_timeout_min_ms,
            election_timeout_max_ms: self.raft_election_timeout_max_ms,
            ..RaftTimings::default()
        }
    }

    pub fn node_timeout(&self) -> Duration {
        Duration::from_millis(self.node_timeout_ms)
    }
}

impl NodeConfig {
    pub const ENV_KEYS: &'static [&'static str] = &[
        "id",
        "listen",
        "advertise",
        "http_listen",
        "data_dir",
        "coordinators",
        "join_token",
        "tls__dir",
        "tls__name",
        "heartbeat_ms",
        "faiss_index",
    ];

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        load_role(&[path.to_path_buf()])
    }

    /// Loads several files, later ones overriding earlier ones, then the environment.
    pub fn load_layered(paths: &[PathBuf]) -> Result<Self, ConfigError> {
        load_role(paths)
    }
}

impl RoleConfig for NodeConfig {
    const KEYS: &'static [&'static str] = Self::ENV_KEYS;

    fn validate(&self, path: &[PathBuf]) -> Result<(), ConfigError> {
        if !quiver_proto::valid_node_id(&self.id) {
            return Err(invalid(path, "id must be 1-64 characters [A-Za-z0-9._-]"));
        }
        if self.coordinators.is_empty() {
            return Err(invalid(
                path,
                "coordinators must list at least one coordinator",
            ));
        }
        check_join_token(&self.join_token).map_err(|e| invalid(path, e))?;
        for coordinator in &self.coordinators {
            check_peer_addr(coordinator)
                .map_err(|e| invalid(path, format!("coordinators: {e}")))?;
        }
        check_advertise(
            self.advertise.as_deref(),
            self.listen,
            "listen",
            "coordinators reach this node at",
        )
        .map_err(|e| invalid(path, e))?;
        if !(100..=10_000).contains(&self.heartbeat_ms) {
            return Err(invalid(path, "heartbeat_ms must be between 100 and 10000"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serializes the tests that read `QUIVER_*` variables with the ones that set them (in a
    /// figment `Jail`): the environment is one per process, and tests run on parallel threads.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn env_lock() -> std::sync::MutexGuard<'static, ()> {
        ENV.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn template(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../deploy")
            .join(name)
    }

    #[test]
    fn the_templates_parse_and_validate() {
        let _env = env_lock();
        let coordinator = CoordinatorConfig::load(&template("coordinator.example.toml"))
            .expect("coordinator template");
        assert_eq!(coordinator.id, 1);
        assert_eq!(coordinator.initial_members.len(), 3);
        let node = NodeConfig::load(&template("node.example.toml")).expect("node template");
        assert_eq!(node.coordinators.len(), 3);
    }

    #[test]
    fn bad_configs_get_clear_errors() {
        let _env = env_lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let base = std::fs::read_to_string(template("coordinator.example.toml")).expect("read");
        std::fs::write(&path, format!("{base}\nunknown_key = 1\n")).expect("write");
        let error = CoordinatorConfig::load(&path).expect_err("unknown key");
        assert!(error.to_string().contains("unknown_key"), "{error}");
        std::fs::write(&path, base.replace("id = 1", "id = 0")).expect("write");
        let error = CoordinatorConfig::load(&path).expect_err("id 0");
        assert!(error.to_string().contains("positive"), "{error}");
        assert!(matches!(
            NodeConfig::load(&dir.path().join("absent.toml")),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    fn peers_may_be_named_by_host_name() {
        let _env = env_lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        let base = std::fs::read_to_string(template("coordinator.example.toml")).expect("read");
        let named = base
            .replace(
                "cluster_listen = \"127.0.0.1:7277\"",
                "cluster_listen = \"0.0.0.0:7277\"\nadvertise = \"coordinator-1.quiver:7277\"",
            )
            .replace(
                "cluster_addr = \"127.0.0.1:7277\"",
                "cluster_addr = \"coordinator-1.quiver:7277\"",
            )
            .replace(
                "cluster_addr = \"127.0.0.1:7278\"",
                "cluster_addr = \"coordinator-2.quiver:7277\"",
            );
        std::fs::write(&path, &named).expect("write");
        let config = CoordinatorConfig::load(&path).expect("names are accepted");
        assert_eq!(config.advertised(), "coordinator-1.quiver:7277");
        assert_eq!(
            config.members()[&2].cluster_addr,
            "coordinator-2.quiver:7277"
        );
        // A wildcard listen address needs an advertise address.
        std::fs::write(
            &path,
            named.replace("advertise = \"coordinator-1.quiver:7277\"\n", ""),
        )
        .expect("write");
        let error = CoordinatorConfig::load(&path).expect_err("wildcard without advertise");
        assert!(error.to_string().contains("advertise"), "{error}");
        // This coordinator's member entry must name what it advertises.
        std::fs::write(
            &path,
            named.replace(
                "advertise = \"coordinator-1.quiver:7277\"",
                "advertise = \"elsewhere:7277\"",
            ),
        )
        .expect("write");
        let error = CoordinatorConfig::load(&path).expect_err("mismatch");
        assert!(
            error.to_string().contains("advertises elsewhere:7277"),
            "{error}"
        );
        // Malformed names are refused before anything starts.
        std::fs::write(
            &path,
            named.replace("coordinator-2.quiver:7277", "bad name:7277"),
        )
        .expect("write");
        let error = CoordinatorConfig::load(&path).expect_err("bad member");
        assert!(
            error.to_string().contains("initial_members id 2"),
            "{error}"
        );

        let node = std::fs::read_to_string(template("node.example.toml")).expect("read");
        let node_path = dir.path().join("n.toml");
        std::fs::write(
            &node_path,
            node.replace("\"127.0.0.1:7278\"", "\"coordinator-2.quiver:7277\""),
        )
        .expect("write");
        let config = NodeConfig::load(&node_path).expect("node names");
        assert_eq!(config.coordinators[1], "coordinator-2.quiver:7277");
        std::fs::write(
            &node_path,
            node.replace("\"127.0.0.1:7278\"", "\"coordinator-2\""),
        )
        .expect("write");
        let error = NodeConfig::load(&node_path).expect_err("no port");
        assert!(error.to_string().contains("coordinators"), "{error}");
    }

    #[test]
    fn later_files_override_earlier_ones() {
        let _env = env_lock();
        let dir = tempfile::tempdir().expect("tempdir");
        let secrets = dir.path().join("join-token.toml");
        std::fs::write(&secrets, "join_token = \"from-the-second-file-0123\"\n").expect("write");
        let layered = [template("node.example.toml"), secrets.clone()];
        let node = NodeConfig::load_layered(&layered).expect("layered");
        assert_eq!(node.join_token, "from-the-second-file-0123");
        assert_eq!(node.id, "node-1");
        std::fs::write(&secrets, "join_token = \"short\"\n").expect("write");
        let error = NodeConfig::load_layered(&layered).expect_err("short token");
        let message = error.to_string();
        assert!(message.contains("node.example.toml + "), "{message}");
        assert!(message.contains("join_token"), "{message}");
        let absent = [
            template("node.example.toml"),
            dir.path().join("absent.toml"),
        ];
        assert!(matches!(
            NodeConfig::load_layered(&absent),
            Err(ConfigError::Missing(_))
        ));
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test harness decides the closure's type
    fn the_compose_configs_validate_with_their_overrides() {
        let _env = env_lock();
        figment::Jail::expect_with(|jail| {
            jail.create_file("join-token.toml", "join_token = \"0123456789abcdef0123\"")?;
            let token = jail.directory().join("join-token.toml");
            jail.set_env("QUIVER_ID", "2");
            jail.set_env("QUIVER_ADVERTISE", "coordinator-2:7277");
            jail.set_env("QUIVER_TLS__NAME", "coordinator-2");
            let c = CoordinatorConfig::load_layered(&[
                template("compose/coordinator.toml"),
                token.clone(),
            ])
            .map_err(|e| e.to_string())?;
            assert_eq!((c.id, c.advertised().as_str()), (2, "coordinator-2:7277"));
            assert_eq!(c.members().len(), 3);
            jail.set_env("QUIVER_ID", "node-3");
            jail.set_env("QUIVER_ADVERTISE", "node-3:7301");
            let n = NodeConfig::load_layered(&[template("compose/node.toml"), token])
                .map_err(|e| e.to_string())?;
            assert_eq!((n.id.as_str(), n.join_token.len()), ("node-3", 20));
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's test harness decides the closure's type
    fn environment_overrides_the_file() {
        let _env = env_lock();
        figment::Jail::expect_with(|jail| {
            jail.set_env("QUIVER_HTTP_LISTEN", "127.0.0.1:9999");
            jail.set_env("QUIVER_TLS__NAME", "from-env");
            let config = CoordinatorConfig::load(&template("coordinator.example.toml"))
                .map_err(|e| e.to_string())?;
            assert_eq!(config.http_listen.port(), 9999);
            assert_eq!(config.tls.name, "from-env");
            Ok(())
        });
    }
}
