//! A network namespace as an RAII guard.
//!
//! Every namespace gets a name unique to this process, thread and run, so tests can build their own
//! topologies in parallel without sharing any kernel state. Commands run in it through
//! `ip netns exec`; Rust code runs in it on a dedicated thread that `setns(2)`-ed into it (a network
//! namespace switch only affects the calling thread, so the rest of the process is untouched).

use std::{
    ffi::OsStr,
    fs,
    os::{fd::AsRawFd as _, unix::fs::MetadataExt as _},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, MutexGuard, PoisonError},
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::util::{display_command, run_checked, unique_suffix, wait_until};

/// `ip netns add` makes `/run/netns` a shared mount on first use; two first calls racing can leave
/// it half set up. Serialising add/del inside the process avoids that (and costs nothing: they are
/// fast).
fn netns_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A named network namespace, deleted (with every process still inside it) on drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
    /// Processes started through [`Netns::spawn`], killed on drop if still running in here.
    spawned: Mutex<Vec<u32>>,
}

impl Netns {
    /// Creates a namespace named `<prefix>-<pid>-<counter>-<random>`.
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}-{}", unique_suffix());
        {
            let _guard = netns_lock();
            run_checked(Command::new("ip").args(["netns", "add", &name]))
                .with_context(|| format!("creating network namespace {name}"))?;
        }
        let ns = Self {
            name,
            spawned: Mutex::new(Vec::new()),
        };
        // Loopback is down in a new namespace; local sockets (and the gateway's control plane)
        // expect it up.
        ns.ip(["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bind-mounted namespace file that `setns(2)` and `ip netns` use.
    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// A `Command` that runs `args` inside the namespace (`ip netns exec NAME args...`).
    pub fn command<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).args(args);
        cmd
    }

    /// Runs `args` inside the namespace and returns its output whatever the exit status.
    pub fn exec<S: AsRef<OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> anyhow::Result<Output> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null());
        cmd.output()
            .with_context(|| format!("running `{}`", display_command(&cmd)))
    }

    /// Runs `args` inside the namespace, fails unless it exits 0, returns its stdout.
    pub fn run<S: AsRef<OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> anyhow::Result<String> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null());
        let output = run_checked(&mut cmd)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Runs `ip -n NAME args...` (cheaper than `exec`: no extra mount namespace), fails unless it
    /// exits 0, returns its stdout.
    pub fn ip<S: AsRef<OsStr>>(&self, args: impl IntoIterator<Item = S>) -> anyhow::Result<String> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", &self.name]).args(args).stdin(Stdio::null());
        let output = run_checked(&mut cmd)?;
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    /// Starts `args` inside the namespace with stdin closed and stdout/stderr piped. The process
    /// is killed when the namespace is dropped, if the caller has not ended it before.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> anyhow::Result<Child> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        self.spawn_command(&mut cmd)
    }

    /// Starts a command built with [`Netns::command`] (so the caller chooses its stdio), and
    /// records it for killing on drop.
    pub fn spawn_command(&self, cmd: &mut Command) -> anyhow::Result<Child> {
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{}`", display_command(cmd)))?;
        self.spawned
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(child.id());
        Ok(child)
    }

    /// Runs `f` on a new thread that has entered the namespace, and waits for it. Sockets that
    /// `f` opens live in the namespace.
    pub fn enter<T: Send>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        let path = self.path();
        thread::scope(|scope| {
            scope
                .spawn(move || {
                    enter_on_this_thread(&path)?;
                    f()
                })
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// Like [`Netns::enter`] but returns at once; join the handle for the result.
    pub fn spawn_thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
    ) -> JoinHandle<anyhow::Result<T>> {
        let path = self.path();
        thread::spawn(move || {
            enter_on_this_thread(&path)?;
            f()
        })
    }

    /// Writes a sysctl of this namespace (`key` in dotted form, e.g. `net.ipv4.ip_forward`).
    pub fn sysctl(&self, key: &str, value: &str) -> anyhow::Result<()> {
        let file = Path::new("/proc/sys").join(key.replace('.', "/"));
        // /proc/sys/net resolves against the network namespace of the thread that opens it.
        self.enter(|| {
            fs::write(&file, value)
                .with_context(|| format!("writing {value} to {}", file.display()))
        })
        .with_context(|| format!("setting {key}={value} in {}", self.name))
    }

    /// The processes currently inside the namespace (what `ip netns pids` reports).
    pub fn pids(&self) -> anyhow::Result<Vec<u32>> {
        let ino = fs::metadata(self.path())
            .with_context(|| format!("stat {}", self.path().display()))?
            .ino();
        let wanted = format!("net:[{ino}]");
        let mut pids = Vec::new();
        for entry in fs::read_dir("/proc").context("listing /proc")? {
            let Ok(entry) = entry else { continue };
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            // Processes come and go while we look: a failed readlink just means "not ours now".
            if fs::read_link(entry.path().join("ns/net"))
                .is_ok_and(|link| link.as_os_str() == wanted.as_str())
            {
                pids.push(pid);
            }
        }
        Ok(pids)
    }

    fn kill_everything_inside(&self) {
        let spawned =
            std::mem::take(&mut *self.spawned.lock().unwrap_or_else(PoisonError::into_inner));
        let launcher_prefix = format!("ip\0netns\0exec\0{}\0", self.name);
        for pid in spawned {
            // A spawned process is either already in the namespace (found below) or still the
            // `ip netns exec` launcher about to enter it; anything else is a reused pid that is not
            // ours, so it is left alone.
            if fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.starts_with(launcher_prefix.as_bytes()))
            {
                kill(pid, libc::SIGKILL);
            }
        }
        // Everything inside is ours: the namespace name is unique to this guard. Grandchildren
        // (socat forks, shells) would otherwise keep running, detached from the deleted name.
        let result = wait_until(
            Duration::from_secs(3),
            "processes to leave the namespace",
            || {
                let pids = self.pids()?;
                for &pid in &pids {
                    kill(pid, libc::SIGKILL);
                }
                Ok(pids.is_empty())
            },
        );
        if let Err(err) = result {
            eprintln!("warning: namespace {}: {err:#}", self.name);
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.kill_everything_inside();
        let _guard = netns_lock();
        if let Err(err) = run_checked(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("warning: deleting namespace {}: {err:#}", self.name);
        }
    }
}

fn enter_on_this_thread(path: &Path) -> anyhow::Result<()> {
    let file = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: plain syscall on a valid fd; it changes only this thread's network namespace.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns({}) failed: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Sends `signal` to `pid`, ignoring "no such process" (it ended by itself).
pub(crate) fn kill(pid: u32, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) with a pid we started (callers guarantee it); no memory is involved.
    unsafe {
        libc::kill(pid, signal);
    }
}
