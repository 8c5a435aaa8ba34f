//! The `quiver-chaos` binary: `load`, `bench`, `chaos`, `check` and `siege`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quiver-chaos",
    version,
    about = "Quiver test-harness tools: load generator, benchmark and chaos checker"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Drive a Quiver server with many concurrent SigV4-signed clients and report latency,
    /// throughput, errors by type and recall.
    Load(quiver_chaos::load::LoadArgs),
    /// Compare raw in-process FAISS with Quiver end to end on the same data.
    Bench(quiver_chaos::bench::BenchArgs),
    /// Break a local cluster on a seeded schedule under load, record the history and check
    /// that nothing acknowledged was lost, resurrected, invented or read stale.
    Chaos(quiver_chaos::chaos::ChaosArgs),
    /// Run the chaos checker again on a recorded history.
    Check(quiver_chaos::chaos::CheckArgs),
    /// Hold hostile connections open against a process's HTTP and QUIC ports (idle, trickling,
    /// stalled mid-request, strangers' handshakes) while real clients are measured.
    Siege(quiver_chaos::siege::SiegeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("quiver-chaos")
        .build()?;
    let passed = runtime.block_on(async move {
        match cli.command {
            Command::Load(args) => quiver_chaos::load::run(args).await,
            Command::Bench(args) => quiver_chaos::bench::run(args).await,
            Command::Chaos(args) => quiver_chaos::chaos::run(args).await,
            Command::Check(args) => quiver_chaos::chaos::check_history(&args),
            Command::Siege(args) => quiver_chaos::siege::run(args).await,
        }
    })?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}
