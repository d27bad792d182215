//! A private network namespace for one test thread.
//!
//! [`NetNs::enter`] creates a named namespace (`ip netns add`), moves the *calling thread* into it
//! (`setns` is per thread, so tests running in parallel on other threads are not affected), and on
//! drop — including during a panic — moves the thread back and deletes the namespace.

use std::{
    fs::File,
    os::fd::AsRawFd as _,
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

/// Runs `program args...`, panicking with the command line and its stderr when it fails.
pub fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|error| panic!("running {program} {args:?}: {error}"));
    assert!(
        output.status.success(),
        "{program} {} failed ({}): {}",
        args.join(" "),
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
}

fn setns(namespace: &File, what: &str) {
    // SAFETY: a valid namespace file descriptor; only the calling thread changes namespace.
    let rc = unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(
        rc,
        0,
        "setns into {what}: {}",
        std::io::Error::last_os_error()
    );
}

/// The calling thread's stay in a fresh network namespace.
pub struct NetNs {
    name: String,
    /// The namespace the thread came from; `None` until the thread has left it.
    original: Option<File>,
}

impl NetNs {
    /// Creates `gw-packet-<pid>-<n>` and moves the calling thread into it.
    pub fn enter() -> NetNs {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "gw-packet-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        run("ip", &["netns", "add", &name]);
        // From here on, drop deletes the namespace.
        let mut netns = NetNs {
            name,
            original: None,
        };
        let original = File::open("/proc/thread-self/ns/net")
            .unwrap_or_else(|error| panic!("opening this thread's network namespace: {error}"));
        let target = File::open(format!("/run/netns/{}", netns.name))
            .unwrap_or_else(|error| panic!("opening /run/netns/{}: {error}", netns.name));
        setns(&target, &netns.name);
        netns.original = Some(original);
        netns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <namespace> args...`.
    pub fn ip(&self, args: &str) {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend(args.split_whitespace());
        run("ip", &full);
    }

    /// Sets a sysctl inside the namespace.
    pub fn sysctl(&self, setting: &str) {
        run(
            "ip",
            &["netns", "exec", &self.name, "sysctl", "-q", "-w", setting],
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Some(original) = self.original.take() {
            // SAFETY: as in `setns`; failing to return would leave this thread in a namespace
            // about to be deleted, so report it (without a second panic while unwinding).
            let rc = unsafe { libc::setns(original.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc != 0 {
                eprintln!(
                    "leaving network namespace {}: {}",
                    self.name,
                    std::io::Error::last_os_error()
                );
            }
        }
        let deleted = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        if !matches!(deleted, Ok(status) if status.success()) {
            eprintln!("ip netns del {}: {deleted:?}", self.name);
        }
    }
}
