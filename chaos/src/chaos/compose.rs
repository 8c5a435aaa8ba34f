//! The container cluster of `deploy/compose` as a chaos target: faults through the container
//! engine. kill -9 is `docker kill -s KILL`, a pause is `docker pause` (the cgroup freezer), a
//! restart is `docker start` and a wait for the container's health check; partitions and packet
//! loss are iptables rules run by the host's `iptables` inside the container's network
//! namespace (`nsenter -t PID -n`), since the image has no shell and no iptables; disk loss
//! empties the container's volume on the host while it is stopped.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::target::{run_with_timeout, Member, Role, Rule, Target};

/// How long the stack may take to become healthy, and one container after a restart.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(180);
/// Deadline of one docker / docker-compose command.
const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

pub struct ComposeCluster {
    file: PathBuf,
    project: String,
    tag: String,
    http_base: u16,
    members: Vec<Member>,
    rules: Vec<Rule>,
}

fn docker(args: &[&str]) -> anyhow::Result<String> {
    let out = run_with_timeout(Command::new("docker").args(args), DOCKER_TIMEOUT)
        .with_context(|| format!("docker {}", args.join(" ")))?;
    Ok(String::from_utf8_lossy(&out).trim().to_owned())
}

impl ComposeCluster {
    /// The stack of `file` as project `project`, coordinators' HTTP published on
    /// `127.0.0.1:http_base..+2`, image `quiver:tag`.
    pub fn new(file: PathBuf, project: String, tag: String, http_base: u16) -> ComposeCluster {
        let members = (1..=3)
            .map(|i| Member {
                name: format!("coordinator-{i}"),
                role: Role::Coordinator,
            })
            .chain((1..=3).map(|i| Member {
                name: format!("node-{i}"),
                role: Role::Node,
            }))
            .collect();
        ComposeCluster {
            file,
            project,
            tag,
            http_base,
            members,
            rules: Vec::new(),
        }
    }

    fn compose(&self, args: &[&str], timeout: Duration) -> anyhow::Result<String> {
        let mut command = Command::new("docker-compose");
        command
            .arg("-p")
            .arg(&self.project)
            .arg("-f")
            .arg(&self.file)
            .args(args)
            .env("QUIVER_TAG", &self.tag);
        for i in 0..3u16 {
            command.env(
                format!("QUIVER_HTTP_{}", i + 1),
                (self.http_base + i).to_string(),
            );
        }
        let out = run_with_timeout(&mut command, timeout)
            .with_context(|| format!("docker-compose {}", args.join(" ")))?;
        Ok(String::from_utf8_lossy(&out).trim().to_owned())
    }

    /// Brings a fresh stack up (whatever the project held is removed first) and waits until
    /// every container is healthy.
    pub fn up(&self) -> anyhow::Result<()> {
        self.down();
        self.compose(&["up", "-d"], HEALTHY_TIMEOUT)?;
        for member in &self.members {
            self.wait_healthy(&member.name)?;
        }
        Ok(())
    }

    /// Removes the stack, its network and volumes.
    pub fn down(&self) {
        let _ = self.compose(&["down", "-v", "--remove-orphans"], DOCKER_TIMEOUT);
    }

    fn container(&self, service: &str) -> anyhow::Result<String> {
        let id = self.compose(&["ps", "-q", service], DOCKER_TIMEOUT)?;
        if id.is_empty() {
            bail!("no container for {service} in project {}", self.project);
        }
        Ok(id)
    }

    fn inspect(&self, service: &str, format: &str) -> anyhow::Result<String> {
        docker(&["inspect", "-f", format, &self.container(service)?])
    }

    fn pid(&self, service: &str) -> anyhow::Result<i32> {
        let pid: i32 = self.inspect(service, "{{.State.Pid}}")?.parse()?;
        if pid <= 0 {
            bail!("{service} is not running");
        }
        Ok(pid)
    }

    fn ips(&self, services: &[String]) -> anyhow::Result<String> {
        let ips: Vec<String> = services
            .iter()
            .map(|s| {
                self.inspect(
                    s,
                    "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                )
            })
            .collect::<anyhow::Result<_>>()?;
        if ips.iter().any(String::is_empty) {
            bail!("a container of {services:?} has no address");
        }
        Ok(ips.join(","))
    }

    fn wait_healthy(&self, service: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let health = self.inspect(
                service,
                "{{if .State.Health}}{{.State.Health.Status}}{{end}}",
            );
            if health.as_deref().ok() == Some("healthy") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{service} not healthy after {HEALTHY_TIMEOUT:?} ({health:?})");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn running(&self, service: &str) -> bool {
        self.inspect(service, "{{.State.Running}}").as_deref().ok() == Some("true")
    }
}

impl Target for ComposeCluster {
    fn endpoints(&self) -> Vec<String> {
        (0..3)
            .map(|i| format!("http://127.0.0.1:{}", self.http_base + i))
            .collect()
    }

    fn members(&self) -> Vec<Member> {
        self.members.clone()
    }

    fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let id = self.container(name)?;
        let _ = docker(&["unpause", &id]);
        docker(&["kill", "-s", "KILL", &id]).map(drop)
    }

    fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        if !self.running(name) {
            docker(&["start", &self.container(name)?])?;
        }
        self.wait_healthy(name)
    }

    fn pause(&mut self, name: &str) -> anyhow::Result<()> {
        docker(&["pause", &self.container(name)?]).map(drop)
    }

    fn resume(&mut self, name: &str) -> anyhow::Result<()> {
        let id = self.container(name)?;
        if self.inspect(name, "{{.State.Paused}}")? == "true" {
            docker(&["unpause", &id])?;
        }
        Ok(())
    }

    fn wipe(&mut self, name: &str) -> anyhow::Result<()> {
        if self.running(name) {
            bail!("refusing to wipe {name} while it runs");
        }
        let volume = format!("{}_{name}", self.project);
        let mountpoint = PathBuf::from(docker(&[
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}}",
            &volume,
        ])?);
        for entry in std::fs::read_dir(&mountpoint)
            .with_context(|| format!("reading {}", mountpoint.display()))?
        {
            let path = entry?.path();
            if path.is_dir() {
                std::fs::remove_dir_all(&path)?;
            } else {
                std::fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    fn partition(&mut self, a: &[String], b: &[String]) -> anyhow::Result<Vec<Rule>> {
        let peers = self.ips(b)?;
        let mut rules = Vec::new();
        for name in a {
            let pid = Some(self.pid(name)?);
            for (chain, direction) in [("INPUT", "-s"), ("OUTPUT", "-d")] {
                let matches = [chain, "-p", "udp", direction, &peers];
                rules.push(Rule::dropping(pid, &matches, None));
            }
        }
        self.add_rules(rules)
    }

    fn packet_loss(&mut self, name: &str, probability: f64) -> anyhow::Result<Vec<Rule>> {
        let pid = Some(self.pid(name)?);
        let rules = ["INPUT", "OUTPUT"]
            .map(|chain| Rule::dropping(pid, &[chain, "-p", "udp"], Some(probability)))
            .to_vec();
        self.add_rules(rules)
    }

    fn rules(&mut self) -> &mut Vec<Rule> {
        &mut self.rules
    }

    fn admin(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut last = None;
        for i in 1..=3 {
            let service = format!("coordinator-{i}");
            if !self.running(&service) {
                continue;
            }
            let addr = format!("{service}:7277");
            let result = self.container(&service).and_then(|id| {
                let mut command = vec![
                    "exec",
                    &id,
                    "/bin/quiver",
                    "admin",
                    "--coordinator",
                    &addr,
                    "--tls-dir",
                    "/etc/quiver/tls",
                ];
                command.extend_from_slice(args);
                docker(&command)
            });
            match result {
                Ok(out) => return Ok(out),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no coordinator container is running")))
    }

    fn coordinator_addrs(&self, name: &str) -> anyhow::Result<(String, String)> {
        Ok((format!("{name}:7277"), format!("{name}:8277")))
    }
}
