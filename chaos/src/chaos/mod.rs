//! `quiver-chaos chaos`: a seeded nemesis breaks a running cluster while clients write, delete,
//! read and probe through the real S3 Vectors API; everything they were told is recorded as a
//! JSONL history, every fault is healed, the final reads run, and a checker decides whether
//! anything acknowledged was lost, came back, appeared from nowhere or was read stale.
//!
//! `history` (the record), `checker` (a pure function over it) and `nemesis::schedule` are
//! tested without IO; `target` (processes and iptables), `clients` and this module are the shell.

pub mod checker;
pub mod clients;
pub mod compose;
pub mod history;
pub mod nemesis;
pub mod report;
pub mod target;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use self::checker::CheckReport;
use self::clients::{Recorder, Shared, Workload};
use self::compose::ComposeCluster;
use self::history::{Fault, History};
use self::nemesis::{Mix, Planned, ScheduleSettings};
use self::target::{run_with_timeout, LocalCluster, Target};
use crate::client::{S3VectorsClient, DEV_ACCESS_KEY_ID, DEV_REGION, DEV_SECRET_ACCESS_KEY};

/// How long `scripts/cluster.py start` may take.
const START_TIMEOUT: Duration = Duration::from_secs(180);
/// Longest a run may ask for.
const MAX_DURATION_S: u64 = 24 * 3600;

/// The cluster a run breaks, shared by the nemeses.
type SharedTarget = Arc<Mutex<Box<dyn Target>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetKind {
    /// Processes on this machine (`scripts/cluster.py`, the `make cluster` layout).
    Local,
    /// Containers of `deploy/compose` (`docker-compose`, image `quiver:<--image-tag>`).
    Compose,
}

#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// Which cluster to break.
    #[arg(long, value_enum, default_value = "local")]
    pub target: TargetKind,
    /// The compose file of `--target compose`.
    #[arg(long, default_value = "deploy/compose/docker-compose.yml")]
    pub compose_file: PathBuf,
    /// The compose project of `--target compose` (without --attach it is replaced by a fresh
    /// stack and removed at the end, volumes included).
    #[arg(long, default_value = "quiver-chaos")]
    pub compose_project: String,
    /// Image tag of `--target compose` (`make image` builds `latest`).
    #[arg(long, default_value = "latest")]
    pub image_tag: String,
    /// Directory of the local cluster (`cluster.json`). Without --attach, a fresh cluster is
    /// started there (whatever the directory held is stopped and deleted) and stopped at the end.
    #[arg(long, default_value = "./quiver-chaos-cluster")]
    pub cluster_dir: PathBuf,
    /// Use the running cluster in --cluster-dir (e.g. `make cluster`) and leave it running.
    #[arg(long)]
    pub attach: bool,
    /// The quiver binary (default: the one recorded in cluster.json).
    #[arg(long)]
    pub quiver_bin: Option<PathBuf>,
    /// The script that starts a local cluster.
    #[arg(long, default_value = "scripts/cluster.py")]
    pub cluster_script: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub coordinators: u32,
    #[arg(long, default_value_t = 3)]
    pub nodes: u32,
    /// Replicas per shard of the index the run writes (1 = no replication).
    #[arg(long, default_value_t = 3)]
    pub replication_factor: u32,
    #[arg(long, default_value_t = 6)]
    pub shards_per_index: u32,
    /// First HTTP port of the coordinators (local: the cluster ports follow from
    /// --port-base + 1000, the nodes' from + 1100, the nodes' HTTP ports from + 2000; compose:
    /// the three published ports). Every default port is below Linux's ephemeral range
    /// (32768-60999): a port a process picked for an outgoing connection or a QUIC client
    /// endpoint could otherwise be taken while a killed process is down, and its restart fail.
    #[arg(long, default_value_t = 21277)]
    pub port_base: u16,
    /// Seconds of faults under load (the final reads come after).
    #[arg(long, default_value_t = 600)]
    pub duration: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: u32,
    /// Seed of the schedule and of the workload (default: random, printed).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Faults and their weights, `kind=weight,...`, kinds: kill, pause, partition, split, loss,
    /// kill-leader, kill-shard-leader, partition-shard-leader, wipe, churn.
    #[arg(long, default_value = nemesis::DEFAULT_MIX)]
    pub nemesis: String,
    /// Quiet seconds before each fault, `min..max`.
    #[arg(long, default_value = "3..8")]
    pub gap: String,
    /// Seconds each fault stays in place, `min..max`.
    #[arg(long, default_value = "5..15")]
    pub hold: String,
    /// Faults in place at the same time (each from its own schedule, on distinct processes).
    #[arg(long, default_value_t = 1)]
    pub concurrent_faults: u32,
    #[arg(long, default_value_t = 16)]
    pub dimension: usize,
    /// Deadline of one request, in seconds (a request past it is recorded as unknown).
    #[arg(long, default_value_t = 5)]
    pub op_timeout: u64,
    /// How long the final reads may retry after the heal, in seconds.
    #[arg(long, default_value_t = 120)]
    pub recovery_timeout: u64,
    /// Probes of present keys after healing.
    #[arg(long, default_value_t = 100)]
    pub final_probes: usize,
    /// Share of the final probes that must find their key.
    #[arg(long, default_value_t = 0.99)]
    pub min_final_recall: f64,
    /// Succeed only if the checker finds lost writes (to prove it can, e.g. with
    /// `--nemesis wipe --replication-factor 1`).
    #[arg(long)]
    pub expect_lost: bool,
    /// JSON report; the history (`.history.jsonl`) and timeline (`.svg`) are written beside it.
    #[arg(long, default_value = "quiver-chaos-report.json")]
    pub report: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct CheckArgs {
    /// A history written by `quiver-chaos chaos` (`<report>.history.jsonl`).
    #[arg(long)]
    pub history: PathBuf,
    /// Share of the final probes that must find their key.
    #[arg(long, default_value_t = 0.99)]
    pub min_final_recall: f64,
}

/// `quiver-chaos check`: the checker again on a recorded history.
pub fn check_history(args: &CheckArgs) -> anyhow::Result<bool> {
    let file = std::fs::File::open(&args.history)
        .with_context(|| format!("opening {}", args.history.display()))?;
    let history = History::read(std::io::BufReader::new(file))?;
    let check = checker::check(&history, args.min_final_recall);
    print!("{}", report::render(&check, true));
    Ok(check.valid)
}

fn range(text: &str) -> anyhow::Result<(f64, f64)> {
    let (lo, hi) = text
        .split_once("..")
        .with_context(|| format!("expected min..max seconds, got {text:?}"))?;
    let (lo, hi): (f64, f64) = (lo.trim().parse()?, hi.trim().parse()?);
    if !(lo >= 0.0 && hi >= lo && hi <= 3600.0) {
        bail!("bad range {text:?}");
    }
    Ok((lo, hi))
}

#[derive(Serialize)]
struct ChaosReport<'a> {
    seed: u64,
    reproduce: String,
    duration_s: u64,
    replication_factor: u32,
    clients: u32,
    nemesis: String,
    schedule: &'a [Vec<Planned>],
    skipped_faults: &'a [String],
    listed_all: bool,
    by_kind: std::collections::BTreeMap<String, report::KindSummary>,
    check: &'a CheckReport,
    history: PathBuf,
    timeline: PathBuf,
}

/// The command line that replays this run.
fn reproduce(args: &ChaosArgs, seed: u64) -> String {
    let mut line = format!(
        "quiver-chaos chaos --seed {seed} --duration {} --clients {} --nemesis {} --gap {} --hold {} \
         --concurrent-faults {} --replication-factor {} --shards-per-index {} --coordinators {} --nodes {} \
         --dimension {} --op-timeout {}",
        args.duration,
        args.clients,
        args.nemesis,
        args.gap,
        args.hold,
        args.concurrent_faults,
        args.replication_factor,
        args.shards_per_index,
        args.coordinators,
        args.nodes,
        args.dimension,
        args.op_timeout
    );
    if args.target == TargetKind::Compose {
        line += &format!(" --target compose --image-tag {}", args.image_tag);
    }
    if args.attach {
        line += &format!(" --attach --cluster-dir {}", args.cluster_dir.display());
    }
    line
}

/// Starts a fresh local cluster in `args.cluster_dir` with `scripts/cluster.py`.
fn start_cluster(args: &ChaosArgs) -> anyhow::Result<()> {
    let binary = args
        .quiver_bin
        .as_ref()
        .context("--quiver-bin is needed to start a cluster")?;
    let dir = &args.cluster_dir;
    // Only a directory that holds a cluster (or nothing) is cleared: a mistyped path must not
    // cost anyone their files.
    let holds_cluster = dir.join("cluster.json").exists()
        || std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
    if dir.exists() && !holds_cluster {
        bail!(
            "{} is not empty and holds no cluster.json: refusing to clear it (pick another --cluster-dir)",
            dir.display()
        );
    }
    stop_cluster(args);
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("clearing {}", dir.display()))?;
    }
    let base = args.port_base;
    run_with_timeout(
        std::process::Command::new(&args.cluster_script)
            .arg("start")
            .arg("--dir")
            .arg(&args.cluster_dir)
            .arg("--binary")
            .arg(binary)
            .args(["--coordinators", &args.coordinators.to_string()])
            .args(["--nodes", &args.nodes.to_string()])
            .args(["--replication-factor", &args.replication_factor.to_string()])
            .args(["--shards-per-index", &args.shards_per_index.to_string()])
            .args(["--http-base", &base.to_string()])
            .args(["--cluster-base", &(base + 1000).to_string()])
            .args(["--node-base", &(base + 1100).to_string()])
            .args(["--node-http-base", &(base + 2000).to_string()]),
        START_TIMEOUT,
    )
    .context("scripts/cluster.py start")?;
    Ok(())
}

fn compose_cluster(args: &ChaosArgs) -> ComposeCluster {
    ComposeCluster::new(
        args.compose_file.clone(),
        args.compose_project.clone(),
        args.image_tag.clone(),
        args.port_base,
    )
}

/// Starts the cluster (unless --attach) and opens it.
fn open_target(args: &ChaosArgs) -> anyhow::Result<Box<dyn Target>> {
    Ok(match args.target {
        TargetKind::Local => {
            if !args.attach {
                start_cluster(args)?;
            }
            Box::new(LocalCluster::attach(
                &args.cluster_dir,
                args.quiver_bin.as_deref(),
                &args.cluster_script,
            )?)
        }
        TargetKind::Compose => {
            let cluster = compose_cluster(args);
            if !args.attach {
                cluster.up()?;
            }
            Box::new(cluster)
        }
    })
}

/// Stops a cluster this run started.
fn close_target(args: &ChaosArgs) {
    if args.attach {
        return;
    }
    match args.target {
        TargetKind::Local => stop_cluster(args),
        TargetKind::Compose => compose_cluster(args).down(),
    }
}

fn stop_cluster(args: &ChaosArgs) {
    if args.cluster_dir.join("cluster.json").exists() {
        let _ = run_with_timeout(
            std::process::Command::new(&args.cluster_script)
                .arg("stop")
                .arg("--dir")
                .arg(&args.cluster_dir),
            Duration::from_secs(60),
        );
    }
}

pub async fn run(args: ChaosArgs) -> anyhow::Result<bool> {
    if args.duration == 0 || args.duration > MAX_DURATION_S {
        bail!("--duration must be 1..={MAX_DURATION_S} seconds");
    }
    if args.clients == 0 || args.clients > 1024 || args.concurrent_faults == 0 {
        bail!("--clients must be 1..=1024 and --concurrent-faults at least 1");
    }
    let mix: Mix = args.nemesis.parse()?;
    let settings = ScheduleSettings {
        mix: mix.clone(),
        gap: range(&args.gap)?,
        hold: range(&args.hold)?,
    };
    if mix.0.iter().any(|(k, _)| k.needs_iptables()) && !target::iptables_usable() {
        bail!("the nemesis mix cuts the network, which needs iptables and root; drop partition, split, loss and partition-shard-leader from --nemesis");
    }
    if let Some(dir) = args.report.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let seed = args.seed.unwrap_or_else(rand::random);
    let reproduce = reproduce(&args, seed);
    println!("chaos: seed {seed}; reproduce with:\n  {reproduce}");

    let opened = {
        let args = args.clone();
        tokio::task::spawn_blocking(move || open_target(&args)).await?
    };
    let cluster: SharedTarget = match opened {
        Ok(cluster) => Arc::new(Mutex::new(cluster)),
        Err(e) => {
            let args = args.clone();
            tokio::task::spawn_blocking(move || close_target(&args)).await?;
            return Err(e.context("starting the cluster"));
        }
    };
    let outcome = drive(&args, seed, &settings, &reproduce, cluster.clone()).await;
    // Whatever happened: undo every fault, then stop a cluster this run started.
    let healed = {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            let mut cluster = cluster.lock().unwrap_or_else(|e| e.into_inner());
            cluster.heal_all().map(|()| cluster.rules().len())
        })
        .await?
    };
    {
        let args = args.clone();
        tokio::task::spawn_blocking(move || close_target(&args)).await?;
    }
    let passed = outcome?;
    match healed {
        Ok(0) => Ok(passed),
        Ok(left) => bail!("{left} iptables rules could not be removed"),
        Err(e) => Err(e.context("healing the cluster at the end")),
    }
}

/// Creates the index, runs clients and nemeses, heals, reads back and checks.
async fn drive(
    args: &ChaosArgs,
    seed: u64,
    settings: &ScheduleSettings,
    reproduce: &str,
    cluster: SharedTarget,
) -> anyhow::Result<bool> {
    let endpoints = cluster
        .lock()
        .map_err(|_| anyhow::anyhow!("cluster lock poisoned"))?
        .endpoints();
    let clients: Vec<S3VectorsClient> = endpoints
        .iter()
        .map(|e| {
            S3VectorsClient::new(
                e,
                DEV_ACCESS_KEY_ID,
                DEV_SECRET_ACCESS_KEY,
                DEV_REGION,
                args.clients as usize,
            )
        })
        .collect::<anyhow::Result<_>>()?;
    let run_id = format!("{:x}", seed % 0xff_ffff);
    let workload = Workload {
        bucket: format!("chaos-{run_id}"),
        index: "history".into(),
        dimension: args.dimension,
        seed,
        op_timeout: Duration::from_secs(args.op_timeout.max(1)),
    };
    create_index(&clients[0], &workload).await?;
    let shards = shard_count(&cluster, &workload)
        .await
        .unwrap_or(args.shards_per_index);

    let history_path = args.report.with_extension("history.jsonl");
    let svg_path = args.report.with_extension("svg");
    let start = Instant::now();
    let recorder = Arc::new(
        Recorder::create(&history_path, start)
            .with_context(|| format!("creating {}", history_path.display()))?,
    );
    let shared = Arc::new(Shared::new(workload, clients, recorder.clone()));
    let span = Duration::from_secs(args.duration);
    let schedules: Vec<Vec<Planned>> = (0..args.concurrent_faults)
        .map(|i| nemesis::schedule(settings, seed.wrapping_add(u64::from(i) * 0x9e37), span))
        .collect();

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let client_tasks: Vec<_> = (0..args.clients)
        .map(|id| tokio::spawn(clients::run_client(shared.clone(), id, stop_rx.clone())))
        .collect();
    let progress = ProgressBar::new(args.duration);
    progress.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} s {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let busy = Arc::new(Mutex::new(BTreeSet::new()));
    let skipped = Arc::new(Mutex::new(Vec::new()));
    let nemesis_tasks: Vec<_> = schedules
        .iter()
        .cloned()
        .map(|plan| {
            tokio::spawn(run_nemesis(
                plan,
                cluster.clone(),
                busy.clone(),
                recorder.clone(),
                skipped.clone(),
                progress.clone(),
                start + span,
            ))
        })
        .collect();
    let mut interrupted = false;
    while start.elapsed() < span {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = tokio::signal::ctrl_c() => {
                interrupted = true;
                break;
            }
        }
        progress.set_position(start.elapsed().as_secs().min(args.duration));
        let (done, failed) = recorder.counts();
        progress.set_message(format!("{done} ops, {failed} not ok"));
        // Keep the file copy of the history current, in case this run is killed.
        recorder.flush()?;
    }
    for task in nemesis_tasks {
        if interrupted {
            // Its fault in place is undone by the heal below.
            task.abort();
        }
        let _ = task.await;
    }
    progress.finish_and_clear();
    let _ = stop_tx.send(true);
    for task in client_tasks {
        task.await?;
    }
    // Heal everything (each nemesis healed its own faults; this is the safety net) and read.
    {
        let cluster = cluster.clone();
        tokio::task::spawn_blocking(move || {
            cluster
                .lock()
                .map_err(|_| anyhow::anyhow!("cluster lock poisoned"))?
                .heal_all()
        })
        .await??;
    }
    println!(
        "chaos: faults healed at {:.1} s; final reads",
        start.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(args.recovery_timeout);
    let (final_state, listed_all) =
        clients::final_reads(&shared, shards, deadline, args.final_probes).await;
    recorder.flush()?;
    if interrupted {
        println!("chaos: interrupted; the check covers the run so far");
    }
    let history = History {
        ops: recorder.ops(),
        faults: recorder.faults(),
        final_state,
    };
    let check = checker::check(&history, args.min_final_recall);
    let skipped = skipped.lock().map(|s| s.clone()).unwrap_or_default();
    print!("{}", report::render(&check, listed_all));
    if !skipped.is_empty() {
        println!("{} planned faults could not be injected:", skipped.len());
        for s in skipped.iter().take(10) {
            println!("  {s}");
        }
    }
    if let Err(e) = report::timeline_svg(
        &svg_path,
        &format!("quiver-chaos chaos, seed {seed}"),
        &history.ops,
        &history.faults,
    ) {
        eprintln!("chaos: timeline not drawn: {e:#}");
    }
    let json = ChaosReport {
        seed,
        reproduce: reproduce.to_owned(),
        duration_s: args.duration,
        replication_factor: args.replication_factor,
        clients: args.clients,
        nemesis: settings.mix.to_string(),
        schedule: &schedules,
        skipped_faults: &skipped,
        listed_all,
        by_kind: report::by_kind(&check),
        check: &check,
        history: history_path.clone(),
        timeline: svg_path.clone(),
    };
    write_json(&args.report, &json)?;
    println!(
        "report {}, history {}, timeline {}",
        args.report.display(),
        history_path.display(),
        svg_path.display()
    );
    if args.expect_lost {
        if check.lost.count == 0 {
            println!("FAILED: --expect-lost, but the checker found no lost write");
        }
        return Ok(check.lost.count > 0);
    }
    Ok(check.valid && listed_all)
}

fn write_json(path: &Path, value: &impl Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)
        .with_context(|| format!("writing {}", path.display()))
}

async fn create_index(client: &S3VectorsClient, w: &Workload) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let bucket = client.create_bucket(&w.bucket).await;
        let index = match bucket {
            Ok(()) => {
                client
                    .create_index(&w.bucket, &w.index, w.dimension, "euclidean")
                    .await
            }
            Err(e) => Err(e),
        };
        match index {
            Ok(()) => return Ok(()),
            Err(e) if e.error_type == "ConflictException" => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("creating the index: {}: {}", e.error_type, e.message)
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// How many shards the index has, from `quiver admin status`.
async fn shard_count(cluster: &SharedTarget, w: &Workload) -> Option<u32> {
    let cluster = cluster.clone();
    let status = tokio::task::spawn_blocking(move || cluster.lock().ok()?.status().ok())
        .await
        .ok()??;
    let count = status["shards"]
        .as_array()?
        .iter()
        .filter(|s| s["bucket"] == w.bucket.as_str() && s["index"] == w.index.as_str())
        .count();
    u32::try_from(count).ok().filter(|&n| n > 0)
}

/// One nemesis: its schedule's faults one after the other until `end`.
async fn run_nemesis(
    plan: Vec<Planned>,
    cluster: SharedTarget,
    busy: Arc<Mutex<BTreeSet<String>>>,
    recorder: Arc<Recorder>,
    skipped: Arc<Mutex<Vec<String>>>,
    progress: ProgressBar,
    end: Instant,
) {
    for planned in plan {
        tokio::time::sleep(planned.gap).await;
        if Instant::now() + planned.hold > end {
            break;
        }
        let injected = {
            let (cluster, busy, planned) = (cluster.clone(), busy.clone(), planned.clone());
            tokio::task::spawn_blocking(move || {
                let mut cluster = cluster.lock().unwrap_or_else(|e| e.into_inner());
                let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
                let active = nemesis::inject(cluster.as_mut(), &planned, &busy)?;
                busy.extend(active.holds.iter().cloned());
                Ok::<_, anyhow::Error>(active)
            })
            .await
        };
        let active = match injected {
            Ok(Ok(active)) => active,
            Ok(Err(e)) => {
                push(&skipped, format!("{}: {e:#}", planned.kind));
                continue;
            }
            Err(e) => {
                push(&skipped, format!("{}: {e}", planned.kind));
                continue;
            }
        };
        let start_ms = recorder.now_ms();
        let line = format!(
            "{:>7.1} s  {} {}",
            start_ms as f64 / 1000.0,
            active.kind,
            active.target
        );
        if progress.is_hidden() {
            println!("{line}");
        } else {
            progress.println(line);
        }
        tokio::time::sleep(planned.hold).await;
        let healed = {
            let (cluster, busy, active) = (cluster.clone(), busy.clone(), active.clone());
            tokio::task::spawn_blocking(move || {
                let mut cluster = cluster.lock().unwrap_or_else(|e| e.into_inner());
                let result = nemesis::heal(cluster.as_mut(), &active);
                let mut busy = busy.lock().unwrap_or_else(|e| e.into_inner());
                for name in &active.holds {
                    busy.remove(name);
                }
                result
            })
            .await
        };
        if let Ok(Err(e)) | Err(e) = healed.map_err(anyhow::Error::from) {
            push(&skipped, format!("healing {}: {e:#}", active.kind));
        }
        recorder.fault(Fault {
            kind: active.kind.to_string(),
            target: active.target.clone(),
            start_ms,
            end_ms: recorder.now_ms(),
        });
    }
}

fn push(list: &Mutex<Vec<String>>, item: String) {
    if let Ok(mut list) = list.lock() {
        list.push(item);
    }
}
