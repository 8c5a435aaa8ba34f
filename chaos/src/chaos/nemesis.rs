//! The nemesis: a seeded schedule of faults, and how each is injected and healed on a
//! [`Target`].
//!
//! The schedule (which kind of fault, after which quiet gap, held for how long, and a random
//! number that picks the target) is a pure function of the seed and the settings, so the same
//! command replays the same schedule. Targets that depend on the cluster's state (the
//! control-plane leader, the node leading the most shards) are resolved when the fault starts.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::target::{Role, Rule, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NemesisKind {
    /// kill -9 a random process; restart it at the heal.
    Kill,
    /// SIGSTOP a random process; SIGCONT at the heal.
    Pause,
    /// Cut one random process off from every other (cluster ports).
    Partition,
    /// Cut a minority (one coordinator and one node) off from the majority.
    Split,
    /// Drop 10-40% of one random process's cluster packets.
    Loss,
    /// kill -9 the control plane's Raft leader.
    KillLeader,
    /// kill -9 the node that leads the most shards.
    KillShardLeader,
    /// Cut the node that leads the most shards off from every other process.
    PartitionShardLeader,
    /// kill -9 a node, delete its data directory, restart it empty.
    Wipe,
    /// Remove a coordinator from the control plane's Raft group; add it back at the heal.
    Churn,
}

pub const ALL_KINDS: [NemesisKind; 10] = [
    NemesisKind::Kill,
    NemesisKind::Pause,
    NemesisKind::Partition,
    NemesisKind::Split,
    NemesisKind::Loss,
    NemesisKind::KillLeader,
    NemesisKind::KillShardLeader,
    NemesisKind::PartitionShardLeader,
    NemesisKind::Wipe,
    NemesisKind::Churn,
];

/// Every fault but disk loss, which loses data by design unless shards replicate.
pub const DEFAULT_MIX: &str =
    "kill=2,pause=1,partition=2,split=1,loss=1,kill-leader=1,kill-shard-leader=1,partition-shard-leader=1,churn=1";

impl NemesisKind {
    pub fn name(self) -> &'static str {
        match self {
            NemesisKind::Kill => "kill",
            NemesisKind::Pause => "pause",
            NemesisKind::Partition => "partition",
            NemesisKind::Split => "split",
            NemesisKind::Loss => "loss",
            NemesisKind::KillLeader => "kill-leader",
            NemesisKind::KillShardLeader => "kill-shard-leader",
            NemesisKind::PartitionShardLeader => "partition-shard-leader",
            NemesisKind::Wipe => "wipe",
            NemesisKind::Churn => "churn",
        }
    }

    /// Whether injecting it needs iptables.
    pub fn needs_iptables(self) -> bool {
        matches!(
            self,
            NemesisKind::Partition
                | NemesisKind::Split
                | NemesisKind::Loss
                | NemesisKind::PartitionShardLeader
        )
    }
}

impl fmt::Display for NemesisKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NemesisKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        ALL_KINDS
            .into_iter()
            .find(|k| k.name() == s)
            .with_context(|| {
                let names: Vec<_> = ALL_KINDS.iter().map(|k| k.name()).collect();
                format!("unknown nemesis {s:?}; one of {}", names.join(", "))
            })
    }
}

/// `kind=weight,...` (a bare `kind` weighs 1).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix(pub Vec<(NemesisKind, u32)>);

impl FromStr for Mix {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let mut mix = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (kind, weight) = match part.split_once('=') {
                Some((k, w)) => (k, w.parse().with_context(|| format!("weight of {k}"))?),
                None => (part, 1),
            };
            let kind: NemesisKind = kind.parse()?;
            if mix.iter().any(|(k, _)| *k == kind) {
                bail!("{kind} appears twice in the nemesis mix");
            }
            if weight > 0 {
                mix.push((kind, weight));
            }
        }
        if mix.is_empty() {
            bail!("the nemesis mix selects no fault");
        }
        Ok(Mix(mix))
    }
}

impl fmt::Display for Mix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|(k, w)| format!("{k}={w}")).collect();
        f.write_str(&parts.join(","))
    }
}

/// One fault of the schedule.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Planned {
    pub kind: NemesisKind,
    /// Quiet time before it starts.
    pub gap: Duration,
    /// How long it stays in place.
    pub hold: Duration,
    /// Picks the target among the candidates.
    pub pick: u64,
    /// Packet loss probability (only for `loss`).
    pub loss: f64,
}

/// Settings of the schedule: gaps and holds are drawn uniformly from these ranges (seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleSettings {
    pub mix: Mix,
    pub gap: (f64, f64),
    pub hold: (f64, f64),
}

/// The faults of one nemesis worker, as many as fit in `span`.
pub fn schedule(settings: &ScheduleSettings, seed: u64, span: Duration) -> Vec<Planned> {
    let mut rng = StdRng::seed_from_u64(seed);
    let total: u32 = settings.mix.0.iter().map(|(_, w)| w).sum();
    let mut planned = Vec::new();
    let mut used = Duration::ZERO;
    // Bounded: every fault takes at least its gap + hold, and at most 10,000 are planned.
    while planned.len() < 10_000 {
        let mut roll = rng.gen_range(0..total.max(1));
        let kind = settings
            .mix
            .0
            .iter()
            .find(|(_, w)| {
                if roll < *w {
                    true
                } else {
                    roll -= w;
                    false
                }
            })
            .map_or(NemesisKind::Kill, |(k, _)| *k);
        let draw = |rng: &mut StdRng, (lo, hi): (f64, f64)| {
            Duration::from_secs_f64(if hi > lo { rng.gen_range(lo..hi) } else { lo })
        };
        let gap = draw(&mut rng, settings.gap);
        let hold = draw(&mut rng, settings.hold);
        let pick = rng.gen();
        let loss = rng.gen_range(0.1..0.4);
        used += gap + hold;
        if used > span || gap + hold == Duration::ZERO {
            break;
        }
        planned.push(Planned {
            kind,
            gap,
            hold,
            pick,
            loss,
        });
    }
    planned
}

/// How a fault in place is undone.
#[derive(Debug, Clone, PartialEq)]
pub enum Undo {
    Restart(String),
    Resume(String),
    Rules(Vec<Rule>),
    Rejoin(String),
}

/// A fault in place.
#[derive(Debug, Clone, PartialEq)]
pub struct Active {
    pub kind: NemesisKind,
    pub target: String,
    /// Processes it affects, which no other concurrent fault may pick.
    pub holds: Vec<String>,
    pub undo: Undo,
}

fn pick<'a>(candidates: &'a [String], pick: u64, what: &str) -> anyhow::Result<&'a String> {
    if candidates.is_empty() {
        bail!("no {what} free to break");
    }
    Ok(&candidates[(pick % candidates.len() as u64) as usize])
}

/// Injects `planned`, avoiding the processes in `busy` (held by concurrent faults).
pub fn inject(
    cluster: &mut dyn Target,
    planned: &Planned,
    busy: &BTreeSet<String>,
) -> anyhow::Result<Active> {
    let members = cluster.members();
    let free = |role: Option<Role>| -> Vec<String> {
        members
            .iter()
            .filter(|m| role.is_none_or(|r| m.role == r) && !busy.contains(&m.name))
            .map(|m| m.name.clone())
            .collect()
    };
    let all = free(None);
    let others = |name: &str| -> Vec<String> {
        members
            .iter()
            .map(|m| m.name.clone())
            .filter(|n| n != name)
            .collect()
    };
    let leader_or_random = |found: anyhow::Result<String>, role: Role| -> anyhow::Result<String> {
        match found {
            Ok(name) if !busy.contains(&name) => Ok(name),
            _ => pick(&free(Some(role)), planned.pick, "process").cloned(),
        }
    };
    let kind = planned.kind;
    let single = |name: String, undo: Undo| Active {
        kind,
        target: name.clone(),
        holds: vec![name],
        undo,
    };
    Ok(match kind {
        NemesisKind::Kill => {
            let name = pick(&all, planned.pick, "process")?.clone();
            cluster.kill(&name)?;
            single(name.clone(), Undo::Restart(name))
        }
        NemesisKind::Pause => {
            let name = pick(&all, planned.pick, "process")?.clone();
            cluster.pause(&name)?;
            single(name.clone(), Undo::Resume(name))
        }
        NemesisKind::Partition => {
            let name = pick(&all, planned.pick, "process")?.clone();
            let rules = cluster.partition(std::slice::from_ref(&name), &others(&name))?;
            single(name, Undo::Rules(rules))
        }
        NemesisKind::Loss => {
            let name = pick(&all, planned.pick, "process")?.clone();
            let rules = cluster.packet_loss(&name, planned.loss)?;
            Active {
                target: format!("{name} ({:.0}%)", planned.loss * 100.0),
                ..single(name, Undo::Rules(rules))
            }
        }
        NemesisKind::Split => {
            let coordinator =
                pick(&free(Some(Role::Coordinator)), planned.pick, "coordinator")?.clone();
            let node = pick(&free(Some(Role::Node)), planned.pick / 7, "node")?.clone();
            let minority = vec![coordinator.clone(), node.clone()];
            let majority: Vec<String> = members
                .iter()
                .map(|m| m.name.clone())
                .filter(|n| !minority.contains(n))
                .collect();
            let rules = cluster.partition(&minority, &majority)?;
            Active {
                kind,
                target: format!("{coordinator}+{node} | rest"),
                holds: minority,
                undo: Undo::Rules(rules),
            }
        }
        NemesisKind::KillLeader => {
            let name = leader_or_random(cluster.control_leader(), Role::Coordinator)?;
            cluster.kill(&name)?;
            single(name.clone(), Undo::Restart(name))
        }
        NemesisKind::KillShardLeader => {
            let name = leader_or_random(cluster.busiest_shard_leader(), Role::Node)?;
            cluster.kill(&name)?;
            single(name.clone(), Undo::Restart(name))
        }
        NemesisKind::PartitionShardLeader => {
            let name = leader_or_random(cluster.busiest_shard_leader(), Role::Node)?;
            let rules = cluster.partition(std::slice::from_ref(&name), &others(&name))?;
            single(name, Undo::Rules(rules))
        }
        NemesisKind::Churn => {
            let name = pick(&free(Some(Role::Coordinator)), planned.pick, "coordinator")?.clone();
            cluster.remove_coordinator(&name)?;
            single(name.clone(), Undo::Rejoin(name))
        }
        NemesisKind::Wipe => {
            let name = pick(&free(Some(Role::Node)), planned.pick, "node")?.clone();
            cluster.kill(&name)?;
            cluster.wipe(&name)?;
            single(name.clone(), Undo::Restart(name))
        }
    })
}

/// Undoes a fault.
pub fn heal(cluster: &mut dyn Target, active: &Active) -> anyhow::Result<()> {
    match &active.undo {
        Undo::Restart(name) => cluster.restart(name),
        Undo::Resume(name) => cluster.resume(name),
        Undo::Rules(rules) => cluster.remove_rules(rules),
        Undo::Rejoin(name) => cluster.add_coordinator(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(mix: &str) -> ScheduleSettings {
        ScheduleSettings {
            mix: mix.parse().unwrap(),
            gap: (2.0, 5.0),
            hold: (5.0, 10.0),
        }
    }

    #[test]
    fn the_mix_parses_and_rejects_nonsense() {
        let mix: Mix = DEFAULT_MIX.parse().unwrap();
        assert_eq!(mix.0.len(), 9);
        assert!(!mix.0.iter().any(|(k, _)| *k == NemesisKind::Wipe));
        assert_eq!(mix.to_string(), DEFAULT_MIX);
        assert_eq!(
            "wipe, kill=0".parse::<Mix>().unwrap().0,
            vec![(NemesisKind::Wipe, 1)]
        );
        assert!("kill=0".parse::<Mix>().is_err());
        assert!("kill,kill=2".parse::<Mix>().is_err());
        assert!("explode".parse::<Mix>().is_err());
        assert!("kill=x".parse::<Mix>().is_err());
    }

    #[test]
    fn the_same_seed_gives_the_same_schedule() {
        let s = settings(DEFAULT_MIX);
        let a = schedule(&s, 7, Duration::from_secs(600));
        assert_eq!(a, schedule(&s, 7, Duration::from_secs(600)));
        assert_ne!(a, schedule(&s, 8, Duration::from_secs(600)));
        // The faults fit in the span and use every kind of the mix over a long run.
        let total: Duration = a.iter().map(|p| p.gap + p.hold).sum();
        assert!(total <= Duration::from_secs(600), "{total:?}");
        assert!(a.len() >= 600 / 15, "{}", a.len());
        let kinds: BTreeSet<_> = a.iter().map(|p| p.kind).collect();
        assert_eq!(kinds.len(), 9);
        for p in &a {
            assert!(p.gap >= Duration::from_secs(2) && p.gap < Duration::from_secs(5));
            assert!(p.hold >= Duration::from_secs(5) && p.hold < Duration::from_secs(10));
            assert!((0.1..0.4).contains(&p.loss));
        }
    }

    #[test]
    fn weights_bias_the_schedule() {
        let s = settings("kill=9,pause=1");
        let a = schedule(&s, 1, Duration::from_secs(100_000));
        let kills = a.iter().filter(|p| p.kind == NemesisKind::Kill).count();
        let share = kills as f64 / a.len() as f64;
        assert!((0.85..0.95).contains(&share), "{share}");
    }
}
