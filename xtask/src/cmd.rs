//! Running commands: shown before they run, output streamed, failures with context.

use std::{
    io::{BufRead as _, BufReader},
    path::PathBuf,
    process::{Command, Output, Stdio},
};

use anyhow::{Context as _, bail, ensure};

use crate::workspace_root;

/// Renders a command as a user would type it.
pub fn display(cmd: &Command) -> String {
    std::iter::once(cmd.get_program())
        .chain(cmd.get_args())
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `cmd` with inherited stdio (the user sees its output as it comes); fails unless it
/// exits 0.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let shown = display(cmd);
    eprintln!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("starting `{shown}`"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    Ok(())
}

/// Runs `cmd` quietly and returns its output whatever the exit status (for probes such as
/// "is this installed?").
pub fn probe(cmd: &mut Command) -> anyhow::Result<Output> {
    let shown = display(cmd);
    cmd.stdin(Stdio::null())
        .output()
        .with_context(|| format!("running `{shown}`"))
}

/// Runs `cmd` quietly, fails unless it exits 0, returns its stdout.
pub fn stdout_of(cmd: &mut Command) -> anyhow::Result<String> {
    let shown = display(cmd);
    let output = probe(cmd)?;
    if !output.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8(output.stdout).with_context(|| format!("output of `{shown}` is not UTF-8"))
}

/// `cargo ARGS` in the workspace root, streamed.
pub fn cargo(args: &[&str]) -> anyhow::Result<()> {
    run(Command::new("cargo")
        .args(args)
        .current_dir(workspace_root()))
}

/// Builds the `gateway` binary (release or debug) and returns its path, as cargo reports it (so a
/// custom `CARGO_TARGET_DIR` is honoured without guessing).
pub fn build_gateway(release: bool) -> anyhow::Result<PathBuf> {
    let mut cmd = Command::new("cargo");
    cmd.args(["build", "-p", "gateway-userspace", "--bins"]);
    if release {
        cmd.arg("--release");
    }
    // Diagnostics still go to stderr rendered for humans; stdout carries one JSON message per
    // artifact, from which we take the binary's path.
    cmd.arg("--message-format=json-render-diagnostics")
        .current_dir(workspace_root())
        .stdout(Stdio::piped());
    let shown = display(&cmd);
    eprintln!("+ {shown}");
    let mut child = cmd.spawn().with_context(|| format!("starting `{shown}`"))?;
    let stdout = child.stdout.take().context("cargo stdout")?;
    let mut executable = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's JSON messages")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact"
            && message["target"]["name"] == "gateway"
            && message["target"]["kind"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "bin"))
            && let Some(path) = message["executable"].as_str()
        {
            executable = Some(PathBuf::from(path));
        }
    }
    let status = child
        .wait()
        .with_context(|| format!("waiting for `{shown}`"))?;
    ensure!(status.success(), "`{shown}` failed ({status})");
    executable.with_context(|| format!("`{shown}` reported no `gateway` executable"))
}
