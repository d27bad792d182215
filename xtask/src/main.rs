//! `cargo xtask <command>`: the project's tasks, in Rust so they run the same everywhere.
//!
//! - `setup`: install what building and testing need (Debian packages, nightly rust-src, the LLVM
//!   that bpf-linker links against, bpf-linker). Idempotent and quick when done.
//! - `build`: setup, then the release `gateway` binary (its build.rs compiles the XDP programs).
//! - `test`: setup, fmt, clippy (host, BPF target, bench driver), build, every test of the
//!   workspace, and a quick benchmark smoke run.
//! - `demo`: the internet gateway between four namespaces, with real traffic and a verdict.
//! - `bench`: packet rates of the gateway against the kernel and XDP baselines (issue 5).

mod bench;
mod cmd;
mod demo;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::bail;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Tasks of the gateway project", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the build and test dependencies (quick when already installed).
    Setup,
    /// Setup, then build the release `gateway` binary.
    Build,
    /// Setup, fmt check, clippy (host and bpfel), build, and run every test (needs root).
    Test {
        /// Passed to the test binaries after `--`, e.g. a test name filter or `--nocapture`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        test_args: Vec<String>,
    },
    /// Run the internet gateway between network namespaces with real traffic (needs root).
    Demo,
    /// Run the benchmarks (needs root); `--quick` for a smoke run.
    Bench(bench::BenchArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `{:#}` prints the context chain on one line; returning the error from main would print its
    // Debug form, with a backtrace whenever RUST_BACKTRACE is set.
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Setup => setup::setup(),
        Command::Build => {
            setup::setup()?;
            let bin = cmd::build_gateway(true)?;
            println!("built {}", bin.display());
            Ok(())
        }
        Command::Test { test_args } => test(&test_args),
        Command::Demo => demo::demo(),
        Command::Bench(args) => bench::run(args),
    }
}

/// Every check CI runs. A failing step does not stop the later ones (a formatting slip should not
/// hide a failing test); the run fails at the end if any step failed.
fn test(test_args: &[String]) -> anyhow::Result<()> {
    setup::setup()?;
    let mut test_cmd = vec![
        "test",
        "--workspace",
        "--exclude",
        "gateway-ebpf",
        // Run every test binary even when an earlier one fails, for the full picture.
        "--no-fail-fast",
    ];
    if !test_args.is_empty() {
        test_cmd.push("--");
        test_cmd.extend(test_args.iter().map(String::as_str));
    }
    let steps: [(&str, &dyn Fn() -> anyhow::Result<()>); 7] = [
        ("fmt", &|| cmd::cargo(&["fmt", "--all", "--", "--check"])),
        // gateway-ebpf only builds for the BPF target (no_std, its own panic handler), so the
        // host-side commands leave it out and the nightly clippy below checks it.
        ("clippy", &|| {
            cmd::cargo(&[
                "clippy",
                "--workspace",
                "--exclude",
                "gateway-ebpf",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ])
        }),
        ("clippy (bpfel)", &|| {
            cmd::cargo(&[
                "+nightly",
                "clippy",
                "-p",
                "gateway-ebpf",
                "--target",
                "bpfel-unknown-none",
                "-Z",
                "build-std=core",
                "--",
                "-D",
                "warnings",
            ])
        }),
        // The benchmark driver is behind a feature (see xtask/Cargo.toml): lint it with it on.
        ("clippy (bench driver)", &|| {
            cmd::cargo(&[
                "clippy",
                "-p",
                "xtask",
                "--all-targets",
                "--features",
                "bench",
                "--",
                "-D",
                "warnings",
            ])
        }),
        // The end-to-end tests start this binary; cargo only builds the binaries of the package
        // under test, and it lives in another package.
        ("build gateway", &|| cmd::build_gateway(false).map(drop)),
        ("test", &|| cmd::cargo(&test_cmd)),
        // Proves the benchmark harness still runs end to end; it judges no speed.
        ("bench --quick", &|| {
            cmd::cargo(&["xtask", "bench", "--quick"])
        }),
    ];
    let mut failed = Vec::new();
    for (name, step) in steps {
        eprintln!("\n==> {name}");
        if let Err(err) = step() {
            eprintln!("==> {name} FAILED: {err:#}");
            failed.push(name);
        }
    }
    if failed.is_empty() {
        eprintln!("\n==> all checks passed");
        Ok(())
    } else {
        bail!("failed: {}", failed.join(", "))
    }
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
