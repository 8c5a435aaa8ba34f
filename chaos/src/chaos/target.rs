//! The cluster a chaos run breaks ([`Target`]), and its first kind: the local multi-process
//! layout of `scripts/cluster.py` (`make cluster`), described by its `cluster.json`. The
//! container cluster is the other (`compose.rs`).
//!
//! On the local cluster faults are applied with signals (kill -9, SIGSTOP/SIGCONT), by restarting a process exactly
//! as `cluster.py` launched it, and with `iptables` rules on the processes' UDP (QUIC) ports:
//! on loopback every process has one cluster port, so dropping packets by port cuts it off
//! from the others while clients still reach the coordinators' HTTP ports. Every rule added is
//! remembered and removed by exactly the matching `iptables -D`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

/// How long `cluster.py restart` may take (it waits up to 60 s for `/ready`).
const RESTART_TIMEOUT: Duration = Duration::from_secs(90);
/// Deadline of one `quiver admin status`.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);
/// How long the final heal keeps trying to add removed coordinators back: right after a
/// partition heals, the control plane may be between leaders for a few election rounds.
const MEMBERSHIP_HEAL_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Coordinator,
    Node,
}

/// One process of `cluster.json` (the fields this tool needs).
#[derive(Debug, Clone, Deserialize)]
pub struct Process {
    pub name: String,
    pub role: Role,
    pub data_dir: PathBuf,
    /// `http://127.0.0.1:<port>` (the S3 Vectors API of a coordinator, health and metrics of a node).
    pub http: String,
    /// A coordinator's cluster port.
    #[serde(default)]
    pub cluster_addr: Option<String>,
    /// A node's cluster port.
    #[serde(default)]
    pub addr: Option<String>,
    pub pid: i32,
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

#[derive(Debug, Clone, Deserialize)]
pub struct ClusterState {
    pub processes: Vec<Process>,
    pub endpoints: Vec<String>,
    pub tls_dir: PathBuf,
    #[serde(default)]
    pub binary: Option<PathBuf>,
}

fn read_state(dir: &Path) -> anyhow::Result<ClusterState> {
    let path = dir.join("cluster.json");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// A process of a target, by name (`coordinator-1`, `node-2`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub role: Role,
}

/// One iptables rule this tool added: the arguments after `-I`/`-D`, run on the host or in the
/// network namespace of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub netns: Option<i32>,
    pub args: Vec<String>,
}

impl Rule {
    /// `CHAIN <matches> [-m statistic --mode random --probability P] -j DROP`, in the network
    /// namespace of process `netns` or on the host.
    pub fn dropping(netns: Option<i32>, matches: &[&str], probability: Option<f64>) -> Rule {
        let mut args: Vec<String> = matches.iter().map(|a| a.to_string()).collect();
        if let Some(p) = probability {
            args.extend(["-m", "statistic", "--mode", "random", "--probability"].map(String::from));
            args.push(format!("{p:.3}"));
        }
        args.extend(["-j", "DROP"].map(String::from));
        Rule { netns, args }
    }

    fn run(&self, action: &str) -> anyhow::Result<()> {
        let mut command = match self.netns {
            Some(pid) => {
                let mut c = Command::new("nsenter");
                c.args(["-t", &pid.to_string(), "-n", "iptables"]);
                c
            }
            None => Command::new("iptables"),
        };
        let out = command
            .arg("-w")
            .arg(action)
            .args(&self.args)
            .stdin(Stdio::null())
            .output()
            .context("running iptables (installed? root?)")?;
        if !out.status.success() {
            bail!(
                "iptables {action} {}: {}",
                self.args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// A rule inside a namespace whose process is gone went with it.
    fn vanished(&self) -> bool {
        self.netns.is_some_and(|pid| !alive(pid))
    }
}

/// What a nemesis needs from a cluster. Methods block (signals, short commands, waits for
/// readiness); call them from `spawn_blocking`.
pub trait Target: Send {
    /// The coordinators' S3 Vectors endpoints.
    fn endpoints(&self) -> Vec<String>;
    fn members(&self) -> Vec<Member>;
    fn kill(&mut self, name: &str) -> anyhow::Result<()>;
    /// Starts a stopped process again and waits until it is ready (a running one is left alone).
    fn restart(&mut self, name: &str) -> anyhow::Result<()>;
    fn pause(&mut self, name: &str) -> anyhow::Result<()>;
    fn resume(&mut self, name: &str) -> anyhow::Result<()>;
    /// Deletes a stopped process's data: the disk is gone.
    fn wipe(&mut self, name: &str) -> anyhow::Result<()>;
    /// Cuts the processes of `a` off from those of `b` (cluster traffic, both directions).
    fn partition(&mut self, a: &[String], b: &[String]) -> anyhow::Result<Vec<Rule>>;
    /// Drops `probability` of one process's cluster packets, both directions.
    fn packet_loss(&mut self, name: &str, probability: f64) -> anyhow::Result<Vec<Rule>>;
    /// The rules in place.
    fn rules(&mut self) -> &mut Vec<Rule>;
    /// `quiver admin ARGS` through a coordinator that answers; its standard output.
    fn admin(&self, args: &[&str]) -> anyhow::Result<String>;
    /// A coordinator's cluster and HTTP addresses as its peers reach them.
    fn coordinator_addrs(&self, name: &str) -> anyhow::Result<(String, String)>;

    /// `quiver admin status --json`.
    fn status(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_str(&self.admin(&["status", "--json"])?).context("parsing admin status")
    }

    /// Takes a coordinator out of the control plane's Raft group (its process runs on).
    fn remove_coordinator(&mut self, name: &str) -> anyhow::Result<()> {
        let id = coordinator_id(name)?;
        self.admin(&["remove-coordinator", "--id", &id]).map(drop)
    }

    /// Adds a coordinator back: it catches up as a learner, then votes.
    fn add_coordinator(&mut self, name: &str) -> anyhow::Result<()> {
        let id = coordinator_id(name)?;
        let (cluster, http) = self.coordinator_addrs(name)?;
        self.admin(&[
            "add-coordinator",
            "--id",
            &id,
            "--cluster-addr",
            &cluster,
            "--http-addr",
            &http,
        ])
        .map(drop)
    }

    /// Resumes every process and restarts the dead.
    fn heal_processes(&mut self) -> anyhow::Result<()> {
        let mut first_error = None;
        for member in self.members() {
            let result = self
                .resume(&member.name)
                .and_then(|()| self.restart(&member.name))
                .with_context(|| format!("healing {}", member.name));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Adds every rule; on a failure removes those already added. Returns the rules, to remove
    /// exactly them later with [`Target::remove_rules`].
    fn add_rules(&mut self, rules: Vec<Rule>) -> anyhow::Result<Vec<Rule>> {
        for (i, rule) in rules.iter().enumerate() {
            if let Err(e) = rule.run("-I") {
                self.remove_rules(&rules[..i])?;
                return Err(e);
            }
            self.rules().push(rule.clone());
        }
        Ok(rules)
    }

    /// Removes exactly these rules (added by this tool), newest first. Keeps going past
    /// failures and reports the first.
    fn remove_rules(&mut self, rules: &[Rule]) -> anyhow::Result<()> {
        let mut first_error = None;
        for rule in rules.iter().rev() {
            let Some(at) = self.rules().iter().rposition(|r| r == rule) else {
                continue;
            };
            match rule.run("-D") {
                Ok(()) => {
                    self.rules().remove(at);
                }
                Err(_) if rule.vanished() => {
                    self.rules().remove(at);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Adds back every coordinator of the target that the control plane no longer lists,
    /// retrying while the control plane has no leader (until [`MEMBERSHIP_HEAL_TIMEOUT`]).
    fn heal_membership(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + MEMBERSHIP_HEAL_TIMEOUT;
        loop {
            match self.rejoin_removed_coordinators() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => {
                    let waited = MEMBERSHIP_HEAL_TIMEOUT;
                    return Err(e.context(format!("coordinators still removed after {waited:?}")));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        }
    }

    /// One attempt of [`Target::heal_membership`].
    fn rejoin_removed_coordinators(&mut self) -> anyhow::Result<()> {
        let status = self.status()?;
        let listed: Vec<u64> = status["coordinators"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_u64())
            .collect();
        for member in self.members() {
            if member.role == Role::Coordinator
                && !listed.contains(&coordinator_id(&member.name)?.parse()?)
            {
                self.add_coordinator(&member.name)?;
            }
        }
        Ok(())
    }

    /// Undoes every fault: removes the rules, resumes every process and restarts the dead,
    /// adds removed coordinators back.
    fn heal_all(&mut self) -> anyhow::Result<()> {
        let rules = self.rules().clone();
        let network = self.remove_rules(&rules);
        let processes = self.heal_processes();
        let membership = self.heal_membership();
        network.and(processes).and(membership)
    }

    /// The control plane's Raft leader, by process name.
    fn control_leader(&self) -> anyhow::Result<String> {
        let status = self.status()?;
        let id = status["leader"]
            .as_u64()
            .context("no control-plane leader")?;
        Ok(format!("coordinator-{id}"))
    }

    /// The node that leads the most shard replicas.
    fn busiest_shard_leader(&self) -> anyhow::Result<String> {
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

/// The local cluster. Methods block (they run signals, short commands and fsyncs); call them
/// from `spawn_blocking`.
pub struct LocalCluster {
    dir: PathBuf,
    binary: PathBuf,
    /// `scripts/cluster.py`, which (re)starts processes and records them in `cluster.json`.
    script: PathBuf,
    state: ClusterState,
    /// Every iptables rule in place.
    rules: Vec<Rule>,
}

impl LocalCluster {
    /// Attaches to the cluster described by `dir/cluster.json`; `script` restarts processes.
    pub fn attach(
        dir: &Path,
        binary: Option<&Path>,
        script: &Path,
    ) -> anyhow::Result<LocalCluster> {
        let state = read_state(dir)?;
        let binary = binary
            .map(Path::to_path_buf)
            .or_else(|| state.binary.clone())
            .context("cluster.json names no binary: pass --quiver-bin")?;
        if state.processes.is_empty() || state.endpoints.is_empty() {
            bail!(
                "{}/cluster.json lists no processes or no endpoints",
                dir.display()
            );
        }
        Ok(LocalCluster {
            dir: dir.to_path_buf(),
            binary,
            script: script.to_path_buf(),
            state,
            rules: Vec::new(),
        })
    }

    fn process(&self, name: &str) -> anyhow::Result<&Process> {
        self.state
            .processes
            .iter()
            .find(|p| p.name == name)
            .with_context(|| format!("no process {name} in the cluster"))
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

    fn wait_dead(&self, name: &str, pid: i32) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            if Instant::now() > deadline {
                bail!("{name} (pid {pid}) still alive 10 s after SIGKILL");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn ports(&self, names: &[String]) -> anyhow::Result<String> {
        let ports: Vec<String> = names
            .iter()
            .map(|n| Ok(self.process(n)?.udp_port()?.to_string()))
            .collect::<anyhow::Result<_>>()?;
        Ok(ports.join(","))
    }
}

impl Target for LocalCluster {
    fn endpoints(&self) -> Vec<String> {
        self.state.endpoints.clone()
    }

    fn members(&self) -> Vec<Member> {
        self.state
            .processes
            .iter()
            .map(|p| Member {
                name: p.name.clone(),
                role: p.role,
            })
            .collect()
    }

    fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        // A stopped process dies of SIGKILL too; SIGCONT first keeps its state tidy.
        self.signal(name, Signal::SIGCONT)?;
        self.signal(name, Signal::SIGKILL)
    }

    fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, Signal::SIGSTOP)
    }

    fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        self.signal(name, Signal::SIGCONT)
    }

    fn wipe(&mut self, name: &str) -> anyhow::Result<()> {
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

    /// `cluster.py restart`: launches the process as `start` did, records its pid in
    /// `cluster.json` and waits until it is ready.
    fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        if alive(self.process(name)?.pid) {
            return Ok(());
        }
        run_with_timeout(
            Command::new(&self.script)
                .args(["restart", name, "--dir"])
                .arg(&self.dir)
                .arg("--binary")
                .arg(&self.binary),
            RESTART_TIMEOUT,
        )
        .with_context(|| format!("restarting {name}"))?;
        self.state = read_state(&self.dir)?;
        Ok(())
    }

    /// Drops UDP packets between the two groups' cluster ports.
    fn partition(&mut self, a: &[String], b: &[String]) -> anyhow::Result<Vec<Rule>> {
        let (a, b) = (self.ports(a)?, self.ports(b)?);
        let rule = |from: &str, to: &str| {
            let matches = ["INPUT", "-p", "udp", "-m", "multiport", "--sports", from];
            let matches = [&matches[..], &["-m", "multiport", "--dports", to]].concat();
            Rule::dropping(None, &matches, None)
        };
        self.add_rules(vec![rule(&a, &b), rule(&b, &a)])
    }

    fn packet_loss(&mut self, name: &str, probability: f64) -> anyhow::Result<Vec<Rule>> {
        let port = self.process(name)?.udp_port()?.to_string();
        let rule = |direction: &str| {
            Rule::dropping(
                None,
                &["INPUT", "-p", "udp", direction, &port],
                Some(probability),
            )
        };
        self.add_rules(vec![rule("--dport"), rule("--sport")])
    }

    fn rules(&mut self) -> &mut Vec<Rule> {
        &mut self.rules
    }

    fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut last = None;
        for p in self
            .state
            .processes
            .iter()
            .filter(|p| p.role == Role::Coordinator)
        {
            let Some(addr) = p.cluster_addr.as_ref().filter(|_| alive(p.pid)) else {
                continue;
            };
            match run_with_timeout(
                Command::new(&self.binary)
                    .args(["admin", "--coordinator", addr, "--tls-dir"])
                    .arg(&self.state.tls_dir)
                    .args(["--tls-name", "admin"])
                    .args(args),
                ADMIN_TIMEOUT,
            ) {
                Ok(out) => return Ok(String::from_utf8_lossy(&out).into_owned()),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator is running")))
    }

    fn coordinator_addrs(&self, name: &str) -> anyhow::Result<(String, String)> {
        let p = self.process(name)?;
        let cluster = p
            .cluster_addr
            .clone()
            .with_context(|| format!("{name} is not a coordinator"))?;
        Ok((cluster, p.http.trim_start_matches("http://").to_owned()))
    }
}

/// `coordinator-3` → `3`.
fn coordinator_id(name: &str) -> anyhow::Result<String> {
    name.strip_prefix("coordinator-")
        .filter(|id| id.parse::<u64>().is_ok())
        .map(str::to_owned)
        .with_context(|| format!("{name} is not a coordinator"))
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
