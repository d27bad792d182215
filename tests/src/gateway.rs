//! Running the `gateway` binary under test: its config, its process, and finding the binary.

use std::{
    fs,
    io::{BufRead as _, BufReader, IsTerminal as _, Read, Write as _},
    os::unix::{fs::FileTypeExt as _, net::UnixStream},
    path::{Path, PathBuf},
    process::{Child, ExitStatus, Stdio},
    sync::{Arc, Mutex, PoisonError},
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    netns::{Netns, kill},
    util::run_checked,
};

/// The directory that the example config puts its files in; [`write_gateway_config`] moves
/// everything under it into a private directory.
pub const DEMO_DIR: &str = "/tmp/gateway-demo/";
/// The flow log of the internet-gateway example config (`examples/igw-demo.toml`); the others
/// keep theirs under [`DEMO_DIR`] too.
pub const DEMO_FLOW_LOG: &str = "/tmp/gateway-demo/flow.log";
/// Where the controller listens when the config does not say.
pub const DEFAULT_CONTROL_SOCKET: &str = "/run/gateway/gateway.sock";

/// How long the gateway may take to load its programs and open its control socket.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a SIGINT-ed gateway may take to detach and flush before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Set to `nftables` to replace the gateway by an nftables 1:1 NAT with the same addresses: it
/// checks the topology and the tests themselves while the dataplane is not there (flow-log tests
/// then fail, as nothing writes a flow log).
pub const STANDIN_ENV: &str = "GATEWAY_E2E_STANDIN";

/// The files of one gateway instance.
#[derive(Debug, Clone)]
pub struct GatewayConfigFiles {
    /// The config file to pass to `gateway run --config`.
    pub config: PathBuf,
    /// Where the gateway writes its flow log.
    pub flow_log: PathBuf,
    /// The controller's unix socket.
    pub socket: PathBuf,
    /// The account id that flow-log records carry, as written in the config (if it has one).
    pub account_id: Option<String>,
}

/// Writes `example` into `dir/gateway.toml` with every path under [`DEMO_DIR`] (the flow log)
/// moved into `dir`, and `[controller] socket` set to `dir/gateway.sock`, so that parallel tests
/// never share a file. The example must write its flow log (`[flow_logs] path`) under
/// [`DEMO_DIR`].
pub fn write_gateway_config(example: &Path, dir: &Path) -> anyhow::Result<GatewayConfigFiles> {
    let text = fs::read_to_string(example)
        .with_context(|| format!("reading the example config {}", example.display()))?;
    let mut table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", example.display()))?;

    reroot_paths(&mut table, dir);
    let flow_log = table
        .get("flow_logs")
        .and_then(|logs| logs.get("path"))
        .and_then(|path| path.as_str())
        .map(PathBuf::from)
        .filter(|path| path.starts_with(dir))
        .with_context(|| {
            format!(
                "{} has no [flow_logs] path under {DEMO_DIR}",
                example.display()
            )
        })?;

    let socket = dir.join("gateway.sock");
    let controller = table
        .entry("controller")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .context("`controller` in the example config is not a table")?;
    controller.insert(
        "socket".to_owned(),
        toml::Value::String(path_str(&socket)?.to_owned()),
    );

    let account_id = find_account_id(&table);
    let config = dir.join("gateway.toml");
    let text = toml::to_string(&table).context("serialising the test config")?;
    fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
    Ok(GatewayConfigFiles {
        config,
        flow_log,
        socket,
        account_id,
    })
}

fn reroot_paths(table: &mut toml::Table, dir: &Path) {
    fn visit(value: &mut toml::Value, dir: &Path) {
        match value {
            toml::Value::String(s) => {
                if let Some(rest) = s.strip_prefix(DEMO_DIR) {
                    *s = dir.join(rest).to_string_lossy().into_owned();
                }
            }
            toml::Value::Array(items) => {
                for item in items {
                    visit(item, dir);
                }
            }
            toml::Value::Table(table) => {
                for (_, item) in table.iter_mut() {
                    visit(item, dir);
                }
            }
            _ => {}
        }
    }
    for (_, value) in table.iter_mut() {
        visit(value, dir);
    }
}

/// The first `account_id`/`account-id` key anywhere in the config (string or integer).
fn find_account_id(table: &toml::Table) -> Option<String> {
    for (key, value) in table {
        if key == "account_id" || key == "account-id" {
            match value {
                toml::Value::String(s) => return Some(s.clone()),
                toml::Value::Integer(n) => return Some(format!("{n:012}")),
                _ => {}
            }
        }
        if let Some(found) = value.as_table().and_then(find_account_id) {
            return Some(found);
        }
    }
    None
}

/// The control socket a config file asks for (`[controller] socket`, else the default).
pub fn control_socket_of(config: &Path) -> anyhow::Result<PathBuf> {
    let text =
        fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing {}", config.display()))?;
    Ok(table
        .get("controller")
        .and_then(|c| c.get("socket"))
        .and_then(|s| s.as_str())
        .map_or_else(|| PathBuf::from(DEFAULT_CONTROL_SOCKET), PathBuf::from))
}

/// The `gateway` binary: `$GATEWAY_BIN` if set, else `gateway` in the directory above the running
/// executable (test binaries live in `target/<profile>/deps/`, the gateway in `target/<profile>/`).
pub fn gateway_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("GATEWAY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe().context("locating the running executable")?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .with_context(|| format!("{} has no grandparent directory", exe.display()))?
        .join("gateway");
    if !bin.exists() {
        bail!(
            "{} does not exist: build it first (`cargo build -p gateway-userspace --bins`, which \
             `cargo xtask test` does) or set GATEWAY_BIN",
            bin.display()
        );
    }
    Ok(bin)
}

/// A running `gateway run`, stopped with SIGINT on drop (killed if it does not exit in 5 s).
#[derive(Debug)]
pub struct GatewayProcess {
    child: Option<Child>,
    /// Everything the gateway printed so far (stdout and stderr interleaved by line).
    output: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    socket: PathBuf,
    /// Set when the nftables stand-in runs instead of the binary: the namespace to clean.
    standin: Option<String>,
}

impl GatewayProcess {
    /// Starts `BIN run --config CONFIG` in `ns` and waits until its control socket exists.
    pub fn start(ns: &Netns, bin: &Path, config: &Path) -> anyhow::Result<Self> {
        Self::start_inner(ns, bin, config, false)
    }

    /// Like [`GatewayProcess::start`] but also copies the gateway's output to our stderr, prefixed
    /// with `gateway | `, as it comes (for the demo).
    pub fn start_echoing(ns: &Netns, bin: &Path, config: &Path) -> anyhow::Result<Self> {
        Self::start_inner(ns, bin, config, true)
    }

    fn start_inner(ns: &Netns, bin: &Path, config: &Path, echo: bool) -> anyhow::Result<Self> {
        let socket = control_socket_of(config)?;
        if std::env::var(STANDIN_ENV).is_ok_and(|v| v == "nftables") {
            return start_nftables_standin(ns, socket);
        }
        remove_stale_socket(&socket)?;

        let mut cmd = ns.command([bin.as_os_str()]);
        cmd.arg("run")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // Its output goes through a pipe into error messages (or our stderr): colour codes only
        // belong there when that stderr is a terminal.
        if !(echo && std::io::stderr().is_terminal()) {
            cmd.env("NO_COLOR", "1");
        }
        let mut child = ns.spawn_command(&mut cmd)?;
        let output = Arc::new(Mutex::new(String::new()));
        let readers = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(|stream| collect_lines(stream, Arc::clone(&output), echo))
        .collect();
        let mut gateway = Self {
            child: Some(child),
            output,
            readers,
            socket,
            standin: None,
        };

        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = gateway.child.as_mut()
                && let Some(status) = child.try_wait().context("polling the gateway process")?
            {
                gateway.child = None;
                gateway.join_readers();
                bail!(
                    "the gateway exited ({status}) before opening its control socket {}; its \
                     output:\n{}",
                    gateway.socket.display(),
                    gateway.output()
                );
            }
            if fs::symlink_metadata(&gateway.socket).is_ok_and(|m| m.file_type().is_socket()) {
                return Ok(gateway);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the gateway did not open its control socket {} within {START_TIMEOUT:?}; its \
                     output:\n{}",
                    gateway.socket.display(),
                    gateway.output()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The controller's unix socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The gateway's output so far.
    pub fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sends SIGINT and waits for the exit (killing it after 5 s); returns its exit status, or
    /// `None` for the nftables stand-in.
    pub fn stop(mut self) -> anyhow::Result<Option<ExitStatus>> {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> anyhow::Result<Option<ExitStatus>> {
        if let Some(ns) = self.standin.take() {
            // The namespace is deleted with the topology; removing the table makes an explicit
            // stop behave like a stopped gateway.
            run_checked(std::process::Command::new("ip").args([
                "netns",
                "exec",
                &ns,
                "nft",
                "delete",
                "table",
                "ip",
                "igw_standin",
            ]))?;
            return Ok(None);
        }
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        kill(child.id(), libc::SIGINT);
        let deadline = Instant::now() + STOP_TIMEOUT;
        let status = loop {
            if let Some(status) = child.try_wait().context("waiting for the gateway")? {
                break status;
            }
            if Instant::now() >= deadline {
                eprintln!("warning: the gateway ignored SIGINT for {STOP_TIMEOUT:?}; killing it");
                child.kill().context("killing the gateway")?;
                break child.wait().context("reaping the gateway")?;
            }
            thread::sleep(Duration::from_millis(20));
        };
        self.join_readers();
        Ok(Some(status))
    }

    fn join_readers(&mut self) {
        for reader in self.readers.drain(..) {
            // A reader only ends with the pipe; a panic inside it has nothing left to report.
            let _ = reader.join();
        }
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Err(err) = self.stop_inner() {
            eprintln!("warning: stopping the gateway: {err:#}");
        }
    }
}

fn collect_lines(
    stream: Box<dyn Read + Send>,
    sink: Arc<Mutex<String>>,
    echo: bool,
) -> JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if echo {
                eprintln!("gateway | {line}");
            }
            let mut sink = sink.lock().unwrap_or_else(PoisonError::into_inner);
            sink.push_str(&line);
            sink.push('\n');
        }
    })
}

/// A socket file left by a gateway that crashed would make the start look instant. Remove it only
/// if nobody listens on it: a live one belongs to a running gateway that we must not disturb.
fn remove_stale_socket(socket: &Path) -> anyhow::Result<()> {
    if fs::symlink_metadata(socket).is_err() {
        return Ok(());
    }
    if UnixStream::connect(socket).is_ok() {
        bail!(
            "another gateway is already listening on {}; stop it first",
            socket.display()
        );
    }
    fs::remove_file(socket).with_context(|| format!("removing stale socket {}", socket.display()))
}

fn start_nftables_standin(ns: &Netns, socket: PathBuf) -> anyhow::Result<GatewayProcess> {
    // The same 1:1 mapping as examples/igw-demo.toml, done by conntrack NAT in the kernel.
    const RULES: &str = "table ip igw_standin {
        chain prerouting { type nat hook prerouting priority dstnat; \
            ip daddr 203.0.113.10 dnat to 10.0.1.10; }
        chain postrouting { type nat hook postrouting priority srcnat; \
            oifname \"gw-inet\" ip saddr 10.0.1.10 snat to 203.0.113.10; }
    }";
    let mut cmd = ns.command(["nft", "-f", "-"]);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().context("starting nft")?;
    child
        .stdin
        .take()
        .context("nft stdin")?
        .write_all(RULES.as_bytes())
        .context("writing the stand-in rules to nft")?;
    let output = child.wait_with_output().context("waiting for nft")?;
    if !output.status.success() {
        bail!(
            "loading the nftables stand-in failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(GatewayProcess {
        child: None,
        output: Arc::new(Mutex::new(String::from("(nftables stand-in)\n"))),
        readers: Vec::new(),
        socket,
        standin: Some(ns.name().to_owned()),
    })
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str()
        .with_context(|| format!("{} is not UTF-8", path.display()))
}
