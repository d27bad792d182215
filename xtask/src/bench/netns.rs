//! A minimal network namespace guard for the benchmark (the test harness's guard lives in the
//! `tests` crate, which xtask does not depend on).
//!
//! Names carry the driver's pid (`gwbench-<pid>-<role>`), so a run killed before its guards ran
//! leaves namespaces that the next run recognises (their pid is gone) and deletes.

use std::{
    ffi::OsStr,
    fs,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

const PREFIX: &str = "gwbench-";

/// A named network namespace, deleted on drop (which also destroys its veths, and with them
/// every XDP program attached to them).
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    pub fn new(role: &str) -> anyhow::Result<Netns> {
        let name = format!("{PREFIX}{}-{role}", std::process::id());
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name}"))?;
        let netns = Netns { name };
        netns.ip(["link", "set", "lo", "up"])?;
        Ok(netns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// `ip -n NAME args...`, failing unless it exits 0.
    pub fn ip<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> anyhow::Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// `ip -n NAME -batch -` with `commands` (one `ip` command a line) on its standard input.
    pub fn ip_batch(&self, commands: &str) -> anyhow::Result<String> {
        run_with_input(
            Command::new("ip").args(["-n", &self.name, "-batch", "-"]),
            commands,
        )
    }

    /// `ip netns exec NAME args...` with `input` on its standard input, failing unless it exits 0.
    pub fn exec_with_input<S: AsRef<OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
        input: &str,
    ) -> anyhow::Result<String> {
        run_with_input(
            Command::new("ip")
                .args(["netns", "exec", &self.name])
                .args(args),
            input,
        )
    }

    /// `ip netns exec NAME args...`, failing unless it exits 0.
    pub fn exec<S: AsRef<OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> anyhow::Result<String> {
        run(Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args))
    }

    /// Writes a sysctl of this namespace (dotted key).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let file = Path::new("/proc/sys").join(key.replace('.', "/"));
        // /proc/sys/net resolves against the network namespace of the thread that opens it.
        self.enter(|| {
            fs::write(&file, value).with_context(|| format!("writing {}", file.display()))
        })
        .with_context(|| format!("setting {key}={value} in {}", self.name))
    }

    /// Moves the calling thread into this namespace (for threads the caller manages itself).
    pub fn enter_this_thread(&self) -> anyhow::Result<()> {
        enter_on_this_thread(&self.path())
    }

    /// Runs `f` on a scoped thread that has entered this namespace (setns changes only the
    /// calling thread), and returns its result.
    pub fn enter<T: Send>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let path = self.path();
        std::thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter_on_this_thread(&path)?;
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(error) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: deleting namespace {}: {error:#}", self.name);
        }
    }
}

fn enter_on_this_thread(path: &Path) -> anyhow::Result<()> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: plain syscall on a valid fd; it changes only this thread's network namespace.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        bail!(
            "setns({}): {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Deletes the namespaces of earlier runs whose driver is gone (killed before cleaning up).
pub fn remove_stale() -> anyhow::Result<()> {
    let Ok(entries) = fs::read_dir("/run/netns") else {
        return Ok(());
    };
    for entry in entries {
        let name = entry.context("listing /run/netns")?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = name
            .strip_prefix(PREFIX)
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            eprintln!("removing namespace {name} left by an earlier run");
            run(Command::new("ip").args(["netns", "del", name]))?;
        }
    }
    Ok(())
}

/// Runs a command with `input` on its stdin; fails with its stderr unless it exits 0; returns
/// stdout.
pub fn run_with_input(command: &mut Command, input: &str) -> anyhow::Result<String> {
    use std::io::Write as _;

    let shown = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {shown}"))?;
    let written = child
        .stdin
        .take()
        .context("no stdin pipe")
        .and_then(|mut stdin| {
            stdin
                .write_all(input.as_bytes())
                .with_context(|| format!("writing the input of {shown}"))
        });
    // Waited for even when writing failed: no zombie is left behind.
    let output = child
        .wait_with_output()
        .with_context(|| format!("waiting for {shown}"))?;
    // A command that failed usually stopped reading: its own error says why.
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    written?;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Runs a command with stdin closed; fails with its stderr unless it exits 0; returns stdout.
pub fn run(command: &mut Command) -> anyhow::Result<String> {
    let shown = format!("{command:?}");
    let output = command
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {shown}"))?;
    if !output.status.success() {
        bail!(
            "{shown} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
