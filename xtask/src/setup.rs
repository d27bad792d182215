//! `cargo xtask setup`: everything building and testing need, installed only when missing, so a
//! second run takes a second or two. One line per step: `ok` or what was installed.
//!
//! The eBPF crate is built with nightly (`-Z build-std=core` needs rust-src) and linked by
//! bpf-linker, which links against LLVM. We use the libLLVM that ships with the nightly toolchain
//! rather than a distribution LLVM: its major version is the one rustc emits bitcode for. cargo
//! install finds it through `LLVM_PREFIX/lib/libLLVM.so`, so we keep a small prefix directory of
//! symlinks into the toolchain.

use std::{
    fs,
    os::unix,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::cmd::{probe, run, stdout_of};

/// Debian packages used by the tests and the demo.
const DEBIAN_PACKAGES: &[&str] = &[
    "iproute2",
    "iputils-ping",
    "ethtool",
    "tcpdump",
    "nftables",
    "iperf3",
    "socat",
    "traceroute",
    "netcat-openbsd",
    "procps",
    // The NAT64 baseline of `cargo xtask bench` (scenario S6), which runs its own instance in a
    // namespace; the package's system service is not used.
    "tayga",
];

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn setup() -> anyhow::Result<()> {
    debian_packages().context("setup: Debian packages")?;
    rust_components().context("setup: rust toolchains")?;
    let llvm = llvm_prefix().context("setup: LLVM prefix for bpf-linker")?;
    bpf_linker(&llvm).context("setup: bpf-linker")?;
    Ok(())
}

fn step(name: &str, result: &str) {
    println!("setup: {name:<24} {result}");
}

fn debian_packages() -> anyhow::Result<()> {
    let output = probe(
        Command::new("dpkg-query")
            .arg("-W")
            .arg("-f=${Package} ${Status}\\n")
            .args(DEBIAN_PACKAGES),
    )
    .context("dpkg-query not found: `setup` supports Debian-based systems")?;
    // dpkg-query exits 1 when some package is unknown but still lists the others.
    let listed = String::from_utf8_lossy(&output.stdout);
    let installed: Vec<&str> = listed
        .lines()
        .filter(|line| line.ends_with(" install ok installed"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed.contains(p))
        .collect();
    if missing.is_empty() {
        step("debian packages", "ok");
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    ensure!(
        root,
        "missing packages {missing:?}; run `cargo xtask setup` as root to install them"
    );
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing))?;
    step(
        "debian packages",
        &format!("installed {}", missing.join(" ")),
    );
    Ok(())
}

/// The stable toolchain (running us) needs clippy and rustfmt; nightly needs rust-src (for
/// `-Z build-std=core`) and clippy (for the BPF-target lint).
fn rust_components() -> anyhow::Result<()> {
    let toolchains = stdout_of(Command::new("rustup").args(["toolchain", "list"]))?;
    let mut installed = Vec::new();
    if !toolchains.lines().any(|line| line.starts_with("nightly")) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src,clippy,rustfmt",
        ]))?;
        installed.push("nightly".to_owned());
    }
    for (toolchain, wanted) in [
        (None, &["clippy", "rustfmt"][..]),
        (Some("nightly"), &["rust-src", "clippy"][..]),
    ] {
        let mut list = Command::new("rustup");
        list.args(["component", "list", "--installed"]);
        if let Some(toolchain) = toolchain {
            list.args(["--toolchain", toolchain]);
        }
        let have = stdout_of(&mut list)?;
        // Installed components are listed as `rust-src` or `clippy-x86_64-unknown-linux-gnu`.
        let missing: Vec<&str> = wanted
            .iter()
            .copied()
            .filter(|c| {
                !have
                    .lines()
                    .any(|line| line == *c || line.starts_with(&format!("{c}-")))
            })
            .collect();
        if missing.is_empty() {
            continue;
        }
        let mut add = Command::new("rustup");
        add.args(["component", "add"]);
        if let Some(toolchain) = toolchain {
            add.args(["--toolchain", toolchain]);
        }
        run(add.args(&missing))?;
        let name = toolchain.unwrap_or("default");
        installed.extend(missing.iter().map(|c| format!("{c} ({name})")));
    }
    if installed.is_empty() {
        step("rust toolchains", "ok");
    } else {
        step(
            "rust toolchains",
            &format!("installed {}", installed.join(", ")),
        );
    }
    Ok(())
}

/// Where the nightly libLLVM is exposed for bpf-linker, and its major version.
struct Llvm {
    prefix: PathBuf,
    major: u32,
}

/// Keeps `<cache>/gateway-llvm/lib/` holding `libLLVM.so` (what the linker of `cargo install`
/// looks for) and `libLLVM.so.<soname>` (what the built bpf-linker loads at run time through its
/// rpath, which points at this directory), both symlinks to nightly's libLLVM.
fn llvm_prefix() -> anyhow::Result<Llvm> {
    let version = stdout_of(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let major: u32 = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|major| major.parse().ok())
        .with_context(|| format!("no LLVM version in `rustc +nightly -vV`:\n{version}"))?;
    let sysroot = stdout_of(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let toolchain_lib = Path::new(sysroot.trim()).join("lib");
    let wanted_prefix = format!("libLLVM.so.{major}");
    let library = fs::read_dir(&toolchain_lib)
        .with_context(|| format!("listing {}", toolchain_lib.display()))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| {
            path.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&wanted_prefix))
        })
        .with_context(|| {
            format!(
                "no {wanted_prefix}* in {} (is the nightly toolchain complete?)",
                toolchain_lib.display()
            )
        })?;
    let soname = library
        .file_name()
        .context("libLLVM path has no file name")?
        .to_owned();

    let prefix = cache_dir()?.join("gateway-llvm");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("creating {}", lib.display()))?;
    let mut changed = false;
    for name in [Path::new("libLLVM.so"), Path::new(&soname)] {
        changed |= ensure_symlink(&lib.join(name), &library)?;
    }
    // Links left by an older nightly would shadow nothing but confuse whoever looks here.
    for entry in fs::read_dir(&lib)?.filter_map(Result::ok) {
        let name = entry.file_name();
        if name != "libLLVM.so" && name != soname.as_os_str() {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing stale {}", entry.path().display()))?;
        }
    }
    step(
        "llvm prefix",
        &if changed {
            format!("installed {} -> {}", lib.display(), library.display())
        } else {
            "ok".to_owned()
        },
    );
    Ok(Llvm { prefix, major })
}

/// Makes `link` a symlink to `target`; returns whether anything changed.
fn ensure_symlink(link: &Path, target: &Path) -> anyhow::Result<bool> {
    if fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(false);
    }
    if fs::symlink_metadata(link).is_ok() {
        fs::remove_file(link).with_context(|| format!("removing {}", link.display()))?;
    }
    unix::fs::symlink(target, link)
        .with_context(|| format!("linking {} -> {}", link.display(), target.display()))?;
    Ok(true)
}

fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    Ok(PathBuf::from(home).join(".cache"))
}

fn bpf_linker(llvm: &Llvm) -> anyhow::Result<()> {
    if bpf_linker_version().is_some_and(|v| v.contains(BPF_LINKER_VERSION)) {
        step("bpf-linker", "ok");
        return Ok(());
    }
    // --force: a bpf-linker of the right version that no longer loads (nightly moved to another
    // libLLVM) must be rebuilt, and cargo install would otherwise call it up to date.
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{}", llvm.major),
            "--force",
        ])
        .env("LLVM_PREFIX", &llvm.prefix))?;
    match bpf_linker_version() {
        Some(version) if version.contains(BPF_LINKER_VERSION) => {
            step("bpf-linker", &format!("installed {}", version.trim()));
            Ok(())
        }
        Some(version) => {
            bail!("installed bpf-linker reports {version:?}, not {BPF_LINKER_VERSION}")
        }
        None => bail!("bpf-linker was installed but does not run; is ~/.cargo/bin on PATH?"),
    }
}

/// `bpf-linker --version`, or `None` when it is missing or does not start (e.g. its libLLVM is
/// gone).
fn bpf_linker_version() -> Option<String> {
    let output = probe(Command::new(bpf_linker_path()).arg("--version")).ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `bpf-linker` from PATH, else where cargo install puts it (PATH may lack ~/.cargo/bin under
/// sudo).
fn bpf_linker_path() -> PathBuf {
    let from_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("bpf-linker"))
            .find(|candidate| candidate.is_file())
    });
    from_path.unwrap_or_else(|| {
        let cargo_home = std::env::var_os("CARGO_HOME").map_or_else(
            || PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo"),
            PathBuf::from,
        );
        cargo_home.join("bin/bpf-linker")
    })
}
