//! `cargo xtask <command>`: the project's tasks.
//!
//! - `bench`: packet rates of the gateway against the kernel and XDP baselines (issue 5).

mod bench;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Tasks of the gateway project", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the benchmarks (needs root); `--quick` for a smoke run.
    Bench(bench::BenchArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Bench(args) => bench::run(args),
    }
}
