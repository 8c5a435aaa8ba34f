//! The cluster a chaos run breaks: the local multi-process layout of `scripts/cluster.py`
//! (`make cluster`), described by its `cluster.json`.
//!
//! Faults are applied with signals (kill -9, SIGSTOP/SIGCONT), by restarting a process exactly
//! as `cluster.py` launched it, and with `iptables` rules on the processes' UDP (QUIC) ports:
//! on loopback every process has one cluster port, so dropping packets by port cuts it off
//! from the others while clients still reach the coordinators' HTTP ports. Every rule added is
//! remembered and removed by exactly the matching `iptables -D`.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long a restarted process may take to answer `/ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Deadline of one `quiver admin status`.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Coordinator,
    Node,
}

/// One process of `cluster.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Process {
    pub name: String,
    pub role: Role,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// `http://127.0.0.1:<port>` (the S3 Vectors API of a coordinator, health and metrics of a node).
    pub http: String,
    /// A coordinator's cluster port.
    #[serde(default)]
    pub cluster_addr: Option<String>,
    /// A node's cluster port.
    #[serde(default)]
    pub addr: Option<String>,
    pub pid: i32,
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

impl Process {
    /// The UDP port this process's QUIC endpoint listens on.
    pub fn udp_port(&self) -> anyhow::Result<u16> {
        let addr = self
            .cluster_addr
            .as_deref()
            .or(self.addr.as_deref())
            .with_context(|| format!("{} has no cluster address", self.name))?;
        let port = addr.rsplit_once(':').map(|(_, p)| p).unwrap_or_default();
        port.parse()
            .with_context(|| format!("{}: bad cluster address {addr:?}", self.name))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterState {
    pub processes: Vec<Process>,
    pub endpoints: Vec<String>,
    pub tls_dir: PathBuf,
    #[serde(default)]
    pub binary: Option<PathBuf>,
    #[serde(flatten)]
    pub rest: BTreeMap<String, serde_json::Value>,
}

/// The local cluster. Methods block (they run signals, short commands and fsyncs); call them
/// from `spawn_blocking`.
pub struct LocalCluster {
    dir: PathBuf,
    binary: PathBuf,
    state: ClusterState,
    /// Processes this tool restarted, kept to reap them when they are killed again.
    children: BTreeMap<String, Child>,
    /// Every iptables rule in place, as the arguments after `-I`/`-D`.
    rules: Vec<Vec<String>>,
}

impl LocalCluster {
    /// Attaches to the cluster described by `dir/cluster.json`.
    pub fn attach(dir: &Path, binary: Option<&Path>) -> anyhow::Result<LocalCluster> {
        let path = dir.join("cluster.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let state: ClusterState =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let binary = binary
            .map(Path::to_path_buf)
            .or_else(|| state.binary.clone())
            .context("cluster.json names no binary: pass --quiver-bin")?;
        if state.processes.is_empty() || state.endpoints.is_empty() {
            bail!("{} lists no processes or no endpoints", path.display());
        }
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            binary,
            state,
            children: BTreeMap::new(),
            rules: Vec::new(),
        })
    }

    pub fn endpoints(&self) -> &[String] {
        &self.state.endpoints
    }

    pub fn processes(&self) -> &[Process] {
        &self.state.processes
    }

    pub fn process(&self, name: &str) -> anyhow::Result<&Process> {
        self.state
            .processes
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no process {name} in the cluster"))
    }

    pub fn names(&self, role: Role) -> Vec<String> {
        self.state
            .processes
            .iter()
            .filter(|p| p.role == role)
            .map(|p| p.name.clone())
            .collect()
    }

    fn signal(&mut self, name: &str, signal: Signal) -> anyhow::Result<()> {
        let pid = self.process(name)?.pid;
        match kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => bail!("{signal} to {name} (pid {pid}): {e}"),
        }
        if signal == Signal::SIGKILL {
            self.wait_dead(name, pid)?;
        }
        Ok(())
    }

    fn wait_dead(&mut self, name: &str, pid: i32) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.children.get_mut(name) {
                if child.try_wait()?.is_some() {
                    self.children.remove(name);
                    return Ok(());
                }
            } else if !alive(pid) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} (pid {pid}) still alive 10 s after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_alive(&self, name: &str) -> bool {
        self.process(name).is_ok_and(|p| alive(p.pid))
    }

    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        // A stopped process dies of SIGKILL too; SIGCONT first keeps its state tidy.
        self.signal(name, Signal::SIGCONT)?;
        self.signal(name, Signal::SIGKILL)
    }

    pub fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, Signal::SIGSTOP)
    }

    pub fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, Signal::SIGCONT)
    }

    /// Deletes a (killed) node's data directory: the disk is gone.
    pub fn wipe(&mut self, name: &str) -> anyhow::Result<()> {
        let process = self.process(name)?.clone();
        if alive(process.pid) {
            bail!("refusing to wipe {name} while it runs");
        }
        if process.data_dir.exists() {
            std::fs::remove_dir_all(&process.data_dir)
                .with_context(|| format!("wiping {}", process.data_dir.display()))?;
        }
        Ok(())
    }

    /// Starts a stopped process again, as `cluster.py` does, records its pid in `cluster.json`
    /// and waits until it is ready.
    pub fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let process = self.process(name)?.clone();
        if alive(process.pid) {
            return Ok(());
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&process.log)
            .with_context(|| format!("opening {}", process.log.display()))?;
        let role = match process.role {
            Role::Coordinator => "coordinator",
            Role::Node => "node",
        };
        let child = Command::new(&self.binary)
            .arg(role)
            .arg("--config")
            .arg(&process.config)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        let pid = i32::try_from(child.id()).context("pid out of range")?;
        self.children.insert(name.to_owned(), child);
        for p in &mut self.state.processes {
            if p.name == name {
                p.pid = pid;
            }
        }
        self.save()?;
        self.wait_ready(name, &process.http)
    }

    fn wait_ready(&mut self, name: &str, http: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let url = format!("{http}/ready");
        loop {
            if let Some(child) = self.children.get_mut(name) {
                if let Some(status) = child.try_wait()? {
                    self.children.remove(name);
                    bail!("{name} exited ({status}) while starting; see its log");
                }
            }
            // `quiver health` is the image's health check: 0 on HTTP 200.
            if run_with_timeout(
                Command::new(&self.binary).args(["health", "--url", &url]),
                Duration::from_secs(5),
            )
            .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{name} not ready {READY_TIMEOUT:?} after a restart; see its log");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn save(&self) -> anyhow::Result<()> {
        let path = self.dir.join("cluster.json");
        let tmp = self.dir.join("cluster.json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(&self.state)?)?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    // -- network faults ---------------------------------------------------------------------

    /// Adds every rule of `rules`; on a failure removes those already added. Returns the rules,
    /// to remove exactly them later with [`LocalCluster::remove_rules`].
    fn add_rules(&mut self, rules: Vec<Vec<String>>) -> anyhow::Result<Vec<Vec<String>>> {
        for (i, rule) in rules.iter().enumerate() {
            if let Err(e) = iptables("-I", rule) {
                self.remove_rules(&rules[..i])?;
                return Err(e);
            }
            self.rules.push(rule.clone());
        }
        Ok(rules)
    }

    /// Removes exactly these rules (added by this tool). Keeps going past failures and reports
    /// the first.
    pub fn remove_rules(&mut self, rules: &[Vec<String>]) -> anyhow::Result<()> {
        let mut first_error = None;
        for rule in rules.iter().rev() {
            if let Some(at) = self.rules.iter().rposition(|r| r == rule) {
                match iptables("-D", rule) {
                    Ok(()) => {
                        self.rules.remove(at);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn ports(&self, names: &[String]) -> anyhow::Result<String> {
        let ports: Vec<String> = names
            .iter()
            .map(|n| Ok(self.process(n)?.udp_port()?.to_string()))
            .collect::<anyhow::Result<_>>()?;
        Ok(ports.join(","))
    }

    /// Cuts the processes of `a` off from those of `b` (both directions, cluster ports only).
    pub fn partition(&mut self, a: &[String], b: &[String]) -> anyhow::Result<Vec<Vec<String>>> {
        let (a, b) = (self.ports(a)?, self.ports(b)?);
        let rule = |from: &str, to: &str| -> Vec<String> {
            [
                "INPUT",
                "-p",
                "udp",
                "-m",
                "multiport",
                "--sports",
                from,
                "-m",
                "multiport",
                "--dports",
                to,
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec()
        };
        self.add_rules(vec![rule(&a, &b), rule(&b, &a)])
    }

    /// Drops `probability` of the packets to and from one process's cluster port.
    pub fn packet_loss(
        &mut self,
        name: &str,
        probability: f64,
    ) -> anyhow::Result<Vec<Vec<String>>> {
        let port = self.process(name)?.udp_port()?.to_string();
        let probability = format!("{probability:.3}");
        let rule = |direction: &str| -> Vec<String> {
            [
                "INPUT",
                "-p",
                "udp",
                direction,
                &port,
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec()
        };
        self.add_rules(vec![rule("--dport"), rule("--sport")])
    }

    /// Removes every rule this tool added.
    pub fn heal_network(&mut self) -> anyhow::Result<()> {
        let rules = self.rules.clone();
        self.remove_rules(&rules)
    }

    pub fn rules_in_place(&self) -> usize {
        self.rules.len()
    }

    /// Undoes every fault: removes the rules, resumes every process and restarts the dead.
    pub fn heal_all(&mut self) -> anyhow::Result<()> {
        let mut first_error = self.heal_network().err();
        let names: Vec<String> = self.processes().iter().map(|p| p.name.clone()).collect();
        for name in names {
            let result = self
                .resume(&name)
                .and_then(|()| self.restart(&name))
                .with_context(|| format!("healing {name}"));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    // -- who leads ----------------------------------------------------------------------------

    /// `quiver admin status --json` through the first coordinator that answers.
    pub fn status(&self) -> anyhow::Result<serde_json::Value> {
        let mut last = None;
        for p in self
            .processes()
            .iter()
            .filter(|p| p.role == Role::Coordinator)
        {
            if !alive(p.pid) {
                continue;
            }
            let Some(addr) = &p.cluster_addr else {
                continue;
            };
            match run_with_timeout(
                Command::new(&self.binary)
                    .args(["admin", "--coordinator", addr, "--tls-dir"])
                    .arg(&self.state.tls_dir)
                    .args(["--tls-name", "admin", "status", "--json"]),
                ADMIN_TIMEOUT,
            ) {
                Ok(out) => return serde_json::from_slice(&out).context("parsing admin status"),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator is running")))
    }

    /// The control plane's Raft leader, by process name.
    pub fn control_leader(&self) -> anyhow::Result<String> {
        let status = self.status()?;
        let id = status["leader"]
            .as_u64()
            .context("no control-plane leader")?;
        Ok(format!("coordinator-{id}"))
    }

    /// The node that leads the most shard replicas.
    pub fn busiest_shard_leader(&self) -> anyhow::Result<String> {
        let status = self.status()?;
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for replica in status["replicas"].as_array().into_iter().flatten() {
            if replica["leader"].as_bool() == Some(true) {
                if let Some(node) = replica["node"].as_str() {
                    *counts.entry(node.to_owned()).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(name.clone())))
            .map(|(name, _)| name)
            .context("no node leads a shard")
    }
}

pub fn alive(pid: i32) -> bool {
    // Signal 0 checks existence; a zombie still "exists" but its /proc state is Z.
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(") ")
                .is_none_or(|(_, rest)| !rest.starts_with('Z'))
        })
        .unwrap_or(false)
}

fn iptables(action: &str, rule: &[String]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(action)
        .args(rule)
        .stdin(Stdio::null())
        .output()
        .context("running iptables (installed? root?)")?;
    if !out.status.success() {
        bail!(
            "iptables {action} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether `iptables` can be used here (present, and we may change rules).
pub fn iptables_usable() -> bool {
    Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs a command, killing it after `timeout`; returns its stdout on success.
pub fn run_with_timeout(command: &mut Command, timeout: Duration) -> anyhow::Result<Vec<u8>> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning")?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait()?.is_some() {
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "exited with {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            return Ok(out.stdout);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("timed out after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
