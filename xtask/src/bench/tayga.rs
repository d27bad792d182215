//! The NAT64 baseline of scenario S6: TAYGA (the Debian package) on a TUN device in the gateway
//! namespace, the way its documentation sets up stateful NAT64. TAYGA itself is stateless: it maps
//! every IPv6 client to an address of its dynamic pool and translates the headers; nftables then
//! translates the pool's addresses to the NAT gateway's public IPs (stateful NAT44). The kernel
//! routes the NAT64 prefix into the TUN device, TAYGA reads each packet, translates it and writes
//! it back, and the kernel forwards the IPv4 packet out of the internet interface.
//!
//! TAYGA runs in the foreground as a child of the driver, pinned to the gateway's CPU like the
//! other baselines' receive processing. [`Tayga`] is the guard: dropping it kills TAYGA, deletes
//! its TUN device and the nftables table, and removes its temporary directory; the child also
//! dies with the driver's thread (PR_SET_PDEATHSIG) if the driver is killed before the guard runs.

use std::{
    fs,
    net::Ipv4Addr,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{netns::Netns, topology};

/// TAYGA's TUN device in the gateway namespace.
pub const TUN: &str = "gwb-nat64";
/// TAYGA's dynamic pool: one address per IPv6 client, room for S6's instances; shared address
/// space (RFC 6598), never seen outside the namespace.
pub const POOL: &str = "100.64.0.0/20";
/// TAYGA's own IPv4 address (the source of the ICMP errors it makes), taken out of the pool.
const TAYGA_IPV4: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
/// The nftables table of the pool's source NAT.
const NFT_TABLE: &str = "gwbench_nat64";
/// How long TAYGA may take to attach to its TUN device.
const START_TIMEOUT: Duration = Duration::from_secs(5);

/// The file `tayga -c` reads.
pub fn config(data_dir: &Path) -> String {
    format!(
        "tun-device {TUN}
ipv4-addr {TAYGA_IPV4}
prefix {prefix}/{length}
dynamic-pool {POOL}
data-dir {data_dir}
",
        prefix = topology::NAT64_PREFIX,
        length = topology::NAT64_PREFIX_LEN,
        data_dir = data_dir.display(),
    )
}

/// The pool's source NAT to the NAT gateway's public IPs, as `nft -f` reads it (the same addresses
/// the NAT44 baseline and the gateway's NAT gateway use).
pub fn nat_ruleset() -> String {
    let first = topology::FIRST_NAT_PUBLIC;
    let last = Ipv4Addr::from(u32::from(first) + topology::NAT_PUBLIC_IPS - 1);
    format!(
        "table ip {NFT_TABLE} {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr {POOL} oifname \"{inet}\" snat ip to {first}-{last}
    }}
}}
",
        inet = topology::INET_IF,
    )
}

/// The installed TAYGA's Debian package version (TAYGA has no --version), for the report.
pub fn version() -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "tayga"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|version| !version.is_empty())
        .unwrap_or_else(|| "(version unknown)".into())
}

/// A running TAYGA and everything set up for it; dropping it takes all of it down.
pub struct Tayga {
    /// `ip netns exec` execs TAYGA in place: this is TAYGA's own process.
    child: Option<Child>,
    netns: String,
    dir: PathBuf,
}

impl Tayga {
    /// Sets up the TUN device, its routes and the source NAT in `netns`, starts TAYGA pinned to
    /// `cpu`, and waits until it has attached to the device.
    pub fn start(netns: &Netns, cpu: Option<usize>) -> anyhow::Result<Tayga> {
        let dir = std::env::temp_dir().join(format!("gwbench-{}-tayga", std::process::id()));
        // The guard exists before anything is made, so that a failure half-way undoes the rest.
        let mut tayga = Tayga {
            child: None,
            netns: netns.name().to_string(),
            dir: dir.clone(),
        };
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
        }
        let data_dir = dir.join("data");
        fs::create_dir_all(&data_dir)
            .with_context(|| format!("creating {}", data_dir.display()))?;
        let config_path = dir.join("tayga.conf");
        fs::write(&config_path, config(&data_dir))
            .with_context(|| format!("writing {}", config_path.display()))?;
        let config_arg = config_path.to_string_lossy().into_owned();
        // A persistent device, configured before TAYGA starts: no packet meets a half-made path.
        netns
            .exec(["tayga", "--mktun", "-c", &config_arg])
            .context("creating TAYGA's TUN device (is the tayga package installed?)")?;
        netns.ip(["link", "set", TUN, "up"])?;
        netns.ip(["route", "add", POOL, "dev", TUN])?;
        let prefix = format!("{}/{}", topology::NAT64_PREFIX, topology::NAT64_PREFIX_LEN);
        netns.ip(["-6", "route", "add", &prefix, "dev", TUN])?;
        netns
            .exec_with_input(["nft", "-f", "-"], &nat_ruleset())
            .context("installing the source NAT of TAYGA's pool")?;

        let log_path = dir.join("tayga.log");
        let log = fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new("ip");
        command
            .args([
                "netns",
                "exec",
                netns.name(),
                "tayga",
                "-d",
                "-c",
                &config_arg,
            ])
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .context("duplicating the log's descriptor")?,
            )
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches nothing of the parent's.
        unsafe {
            command.pre_exec(|| {
                // TAYGA must not outlive the driver (it would keep the namespace alive).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().context("starting tayga")?;
        let pid = child.id() as libc::pid_t;
        tayga.child = Some(child);
        if let Some(cpu) = cpu {
            // TAYGA is single-threaded; the kernel's forwarding of what it writes back runs in its
            // context, on the same CPU.
            topology::pin(pid, cpu).context("pinning tayga")?;
            topology::boost(pid).context("raising tayga's priority")?;
        }
        tayga.wait_attached(netns)?;
        Ok(tayga)
    }

    /// Waits until TAYGA holds its TUN device (the device has a carrier only while a process has
    /// it open), failing with TAYGA's log if it exits first.
    fn wait_attached(&mut self, netns: &Netns) -> anyhow::Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .context("tayga is not running")?
                .try_wait()
                .context("checking on tayga")?
            {
                bail!("tayga exited ({status}): {}", self.log_tail());
            }
            let link = netns.ip(["link", "show", TUN])?;
            if link.contains("LOWER_UP") {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "tayga did not attach to {TUN} within {START_TIMEOUT:?}: {}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// TAYGA's time on a CPU so far (the scheduler's own account, /proc/PID/schedstat): its
    /// translation, and the kernel's forwarding of what it writes back, which runs in its
    /// context.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        let pid = self.child.as_ref().context("tayga is not running")?.id();
        let path = format!("/proc/{pid}/schedstat");
        let text = fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let nanoseconds = text
            .split_whitespace()
            .next()
            .and_then(|field| field.parse().ok())
            .with_context(|| format!("{path}: {text:?}"))?;
        Ok(Duration::from_nanos(nanoseconds))
    }

    /// The end of TAYGA's log, for error messages.
    fn log_tail(&self) -> String {
        let text = fs::read_to_string(self.dir.join("tayga.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join(" | ")
    }
}

impl Drop for Tayga {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Killed, not asked to stop: nothing it would write on the way out is wanted.
            let _ = child.kill();
            let _ = child.wait();
        }
        // Each step on its own: whatever was made before a failed start is undone. A namespace
        // that is already gone took the device and the table with it.
        let ip = |args: &[&str]| {
            Command::new("ip")
                .args(["-n", &self.netns])
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
        };
        let _ = ip(&["link", "del", TUN]);
        let _ = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.netns,
                "nft",
                "delete",
                "table",
                "ip",
                NFT_TABLE,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Err(error) = fs::remove_dir_all(&self.dir)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: removing {}: {error}", self.dir.display());
        }
    }
}

/// Removes the temporary directories of earlier runs whose driver is gone (their TAYGA died with
/// the driver, their device and table with the driver's namespaces).
pub fn remove_stale() {
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix("gwbench-"))
            .and_then(|rest| rest.strip_suffix("-tayga"))
            .and_then(|pid| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_prefix_and_the_pool() {
        let text = config(Path::new("/tmp/x/data"));
        assert!(text.contains("tun-device gwb-nat64\n"));
        assert!(text.contains("ipv4-addr 100.64.0.1\n"));
        assert!(text.contains("prefix 2001:db8:64::/96\n"));
        assert!(text.contains("dynamic-pool 100.64.0.0/20\n"));
        assert!(text.contains("data-dir /tmp/x/data\n"));
    }

    #[test]
    fn pool_holds_the_most_clients() {
        let length: u32 = POOL.split('/').nth(1).unwrap().parse().unwrap();
        // The pool's first address is reserved, TAYGA's own is taken out.
        assert!((1u32 << (32 - length)) - 2 >= topology::NAT64_CLIENTS);
    }

    #[test]
    fn ruleset_translates_the_pool_to_the_public_ips() {
        let rules = nat_ruleset();
        assert!(rules.contains(
            "ip saddr 100.64.0.0/20 oifname \"gwb-inet\" snat ip to 198.18.16.0-198.18.16.7"
        ));
    }
}
