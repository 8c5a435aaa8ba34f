//! The `quiver-chaos` binary: `load` and `bench`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "quiver-chaos",
    version,
    about = "Quiver test-harness tools: load generator and benchmark"
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
        }
    })?;
    if !passed {
        std::process::exit(1);
    }
    Ok(())
}
