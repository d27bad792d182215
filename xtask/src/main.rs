//! `cargo xtask <command>`: the project's tasks, in Rust so they run the same everywhere.
//!
//! - `setup`: install what building and testing need (Debian packages, nightly rust-src, the LLVM
//!   that bpf-linker links against, bpf-linker). Idempotent and quick when done.
//! - `build`: setup, then the release `gateway` binary (its build.rs compiles the XDP programs).
//! - `test`: setup, fmt, clippy (host and BPF target), build, every test of the workspace.
//! - `demo`: the internet gateway between four namespaces, with real traffic and a verdict.

mod cmd;
mod demo;
mod setup;

use std::{
    path::{Path, PathBuf},
    process::ExitCode,
};

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
    }
}

/// Every check CI runs, in order of cost, stopping at the first failure.
fn test(test_args: &[String]) -> anyhow::Result<()> {
    setup::setup()?;
    cmd::cargo(&["fmt", "--all", "--", "--check"])?;
    // gateway-ebpf only builds for the BPF target (it is no_std with its own panic handler), so
    // the host-side commands leave it out and the nightly clippy below checks it.
    cmd::cargo(&[
        "clippy",
        "--workspace",
        "--exclude",
        "gateway-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
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
    ])?;
    // The end-to-end tests start this binary; cargo only builds binaries of the package under
    // test, and it lives in another package.
    cmd::build_gateway(false)?;
    let mut args = vec!["test", "--workspace", "--exclude", "gateway-ebpf"];
    if !test_args.is_empty() {
        args.push("--");
        args.extend(test_args.iter().map(String::as_str));
    }
    cmd::cargo(&args)
}

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}
