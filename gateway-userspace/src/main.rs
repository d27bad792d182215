//! `gateway`: the controller of the XDP gateway.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::ExitCode,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use aya::programs::XdpMode;
use clap::{Parser, Subcommand, ValueEnum};
use gateway::{
    config::Config,
    control::{self, ConntrackRow, StatsReply},
    dataplane::timeouts_of,
    dataplane::{Dataplane, MapPlan, ifindex_of},
    dns64::{Dns64Counters, Dns64Service},
    flowlog_task::{self, FlowLogger, monotonic_coarse_ns},
};
use gateway_common::{
    Counter,
    conntrack::{ConnEntry, ConnKey, Timeouts, kind},
    maps::family,
};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

/// The AWS VPC gateways (internet gateway, NAT gateway with NAT44 and NAT64 + DNS64,
/// egress-only internet gateway) as an XDP dataplane on any Linux box.
///
/// `gateway run` reads a declarative, AWS-shaped configuration (subnets, route tables, gateways,
/// Elastic IPs, the interfaces to attach to), loads the XDP programs on every configured
/// interface, fills their maps, writes VPC-Flow-Log-style records and answers `gateway stats`
/// from other shells until it receives SIGINT or SIGTERM, when it detaches cleanly.
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load, attach and run the gateway until SIGINT/SIGTERM.
    ///
    /// The whole configuration is validated first, including that every configured interface
    /// exists; nothing is loaded into the kernel before it passes. Needs root (CAP_BPF,
    /// CAP_NET_ADMIN) and IP forwarding enabled for the fallback paths
    /// (net.ipv4.ip_forward=1, net.ipv6.conf.all.forwarding=1).
    Run {
        /// The configuration file (TOML; see examples/).
        #[arg(long, short)]
        config: PathBuf,
        /// How to attach XDP: `native` (driver mode, the fast path; veth supports it), `skb`
        /// (generic mode, for drivers without XDP support; slow), or `auto` (let the kernel pick).
        #[arg(long, value_enum, default_value_t = AttachMode::Native)]
        xdp_mode: AttachMode,
    },
    /// Validate a configuration file and print a summary; changes nothing.
    Check {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// List the live tracked flows of a running gateway (egress-only internet gateway, NAT44
    /// and NAT64 sessions of the NAT gateways): protocol, inside, public and remote endpoints,
    /// state, age, idle time, packets and bytes each way.
    Conntrack {
        /// The running gateway's control socket ([controller] socket in its config).
        #[arg(long, default_value = gateway::config::DEFAULT_CONTROLLER_SOCKET)]
        socket: PathBuf,
        /// Only entries whose inside or remote address is this one.
        #[arg(long)]
        address: Option<std::net::IpAddr>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print the dataplane's counters from a running gateway.
    Stats {
        /// The running gateway's control socket ([controller] socket in its config).
        #[arg(long, default_value = gateway::config::DEFAULT_CONTROLLER_SOCKET)]
        socket: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Also print counters that are zero.
        #[arg(long)]
        all: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum AttachMode {
    Native,
    Skb,
    Auto,
}

impl From<AttachMode> for XdpMode {
    fn from(mode: AttachMode) -> XdpMode {
        match mode {
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Skb => XdpMode::Skb,
            AttachMode::Auto => XdpMode::Default,
        }
    }
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config, xdp_mode } => run(config, xdp_mode.into()),
        Command::Check { config } => check(config),
        Command::Stats { socket, json, all } => stats(&socket, json, all),
        Command::Conntrack {
            socket,
            address,
            json,
        } => conntrack(&socket, address, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("gateway: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::from_file(&path)?;
    println!(
        "{}: valid: VPC {}, {} interface(s), {} subnet(s), {} route table(s), {} Elastic IP(s), flow logs {}",
        path.display(),
        config.vpc.id,
        config.interfaces.len(),
        config.subnets.len(),
        config.route_tables.len(),
        config
            .internet_gateway
            .as_ref()
            .map_or(0, |igw| igw.elastic_ips.len()),
        match &config.flow_logs {
            Some(logs) => format!("to {}", logs.path.display()),
            None => "off".to_string(),
        },
    );
    for nat in &config.nat_gateways {
        let public: Vec<String> = nat.public_ips.iter().map(ToString::to_string).collect();
        let nat64 = match nat.nat64_prefix {
            Some(prefix) => format!(
                ", NAT64 through {prefix}{}",
                if nat.dns64.is_some() {
                    " with DNS64"
                } else {
                    ""
                }
            ),
            None => String::new(),
        };
        println!("  NAT gateway {}: {}{nat64}", nat.id, public.join(", "));
    }
    Ok(())
}

fn stats(socket: &std::path::Path, json: bool, all: bool) -> anyhow::Result<()> {
    let reply = control::request(socket, "stats")?;
    if json {
        print!("{reply}");
        return Ok(());
    }
    let reply: StatsReply = serde_json::from_str(&reply).context("parsing the stats reply")?;
    println!(
        "uptime {} s, {} tracked flow(s)",
        reply.uptime_seconds, reply.tracked_flows
    );
    for (name, value) in &reply.counters {
        if *value == 0 && !all {
            continue;
        }
        let help = Counter::ALL
            .iter()
            .find(|counter| counter.name() == name)
            .map_or("", |counter| counter.help());
        println!("{name:<34} {value:>14}  {help}");
    }
    if !reply.nat.is_empty() {
        println!("NAT gateway (AWS CloudWatch names):");
        for (name, value) in &reply.nat {
            println!("  {name:<32} {value:>14}");
        }
    }
    if let Some(dns64) = &reply.dns64 {
        println!("DNS64:");
        for (name, value, help) in dns64.rows() {
            println!("  {name:<32} {value:>14}  {help}");
        }
    }
    Ok(())
}

fn conntrack(
    socket: &std::path::Path,
    address: Option<std::net::IpAddr>,
    json: bool,
) -> anyhow::Result<()> {
    let command = match address {
        Some(address) => format!("conntrack {address}"),
        None => "conntrack".to_string(),
    };
    let reply = control::request(socket, &command)?;
    if json {
        print!("{reply}");
        return Ok(());
    }
    let rows: Vec<ConntrackRow> =
        serde_json::from_str(&reply).context("parsing the conntrack reply")?;
    println!(
        "{:<7} {:<12} {:<44} {:<22} {:<44} {:<12} {:>7} {:>7} {:>10} {:>12} {:>10} {:>12}",
        "proto",
        "gateway",
        "inside",
        "public",
        "remote",
        "state",
        "age_s",
        "idle_s",
        "pkts_out",
        "bytes_out",
        "pkts_in",
        "bytes_in"
    );
    for row in &rows {
        println!(
            "{:<7} {:<12} {:<44} {:<22} {:<44} {:<12} {:>7} {:>7} {:>10} {:>12} {:>10} {:>12}",
            row.protocol,
            row.gateway,
            row.inside,
            row.public.as_deref().unwrap_or("-"),
            row.remote,
            row.state,
            row.age_seconds,
            row.idle_seconds,
            row.packets_out,
            row.bytes_out,
            row.packets_in,
            row.bytes_in
        );
    }
    println!(
        "{} entr{}",
        rows.len(),
        if rows.len() == 1 { "y" } else { "ies" }
    );
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn run(path: PathBuf, mode: XdpMode) -> anyhow::Result<()> {
    let config = Config::from_file(&path)?;
    let plan = MapPlan::new(&config, ifindex_of)
        .with_context(|| format!("{}: interfaces", path.display()))?;
    // Bound before anything is loaded: an address that cannot be bound stops the start with
    // nothing changed.
    let dns64 = Dns64Service::start(&config).await?;
    let dns64_counters = dns64.as_ref().map(Dns64Service::counters);
    let mut dataplane = Dataplane::load()?;
    dataplane.apply(&plan)?;
    dataplane.attach(&plan, mode)?;
    for interface in &config.interfaces {
        info!(interface = %interface.name, role = ?interface.role, "attached");
    }
    let dataplane = Arc::new(Mutex::new(dataplane));
    let started = Instant::now();

    let socket_path = config.controller.socket.clone();
    if let Some(parent) = socket_path.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::remove_file(&socket_path) {
        Ok(()) => warn!(socket = %socket_path.display(), "removed a stale control socket"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("removing {}", socket_path.display()));
        }
    }
    let listener = UnixListener::bind(&socket_path)
        .with_context(|| format!("binding the control socket {}", socket_path.display()))?;
    info!(socket = %socket_path.display(), "control socket ready");

    let flow_logger = match &config.flow_logs {
        Some(logs) => {
            let logger = Arc::new(Mutex::new(FlowLogger::new(&config, logs, &plan)?));
            info!(path = %logs.path.display(), interval = ?logs.aggregation_interval, "flow logs on");
            let task = tokio::spawn(flowlog_task::run(
                Arc::clone(&dataplane),
                Arc::clone(&logger),
                logs.aggregation_interval,
            ));
            Some((logger, task))
        }
        None => None,
    };

    let idle_timeouts = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mapping_logs: Vec<Option<PathBuf>> = config
        .nat_gateways
        .iter()
        .map(|nat| nat.mapping_log.clone())
        .collect();
    let sweeper = tokio::spawn(sweep_conntrack(
        Arc::clone(&dataplane),
        timeouts_of(&config.conntrack),
        Arc::clone(&idle_timeouts),
        mapping_logs,
    ));

    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    loop {
        tokio::select! {
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => { warn!(%error, "control socket accept failed"); continue; }
                };
                let dataplane = Arc::clone(&dataplane);
                let idle_timeouts = Arc::clone(&idle_timeouts);
                let dns64_counters = dns64_counters.clone();
                tokio::spawn(async move {
                    let result =
                        serve(stream, dataplane, started, idle_timeouts, dns64_counters).await;
                    if let Err(error) = result {
                        warn!(error = %format!("{error:#}"), "control request failed");
                    }
                });
            }
        }
    }
    info!("stopping");
    sweeper.abort();
    if let Some(dns64) = dns64 {
        dns64.shutdown().await;
    }
    if let Some((logger, task)) = flow_logger {
        task.abort();
        let _ = task.await;
        let result = logger
            .lock()
            .expect("flow logger lock poisoned")
            .flush(&dataplane);
        if let Err(error) = result {
            error!(error = %format!("{error:#}"), "final flow-log flush failed");
        }
    }
    let _ = std::fs::remove_file(&socket_path);
    let mut dataplane = dataplane.lock().expect("dataplane lock poisoned");
    dataplane.detach()?;
    info!("detached");
    Ok(())
}

async fn serve(
    stream: tokio::net::UnixStream,
    dataplane: Arc<Mutex<Dataplane>>,
    started: Instant,
    idle_timeouts: Arc<std::sync::atomic::AtomicU64>,
    dns64: Option<Arc<Dns64Counters>>,
) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(reader).read_line(&mut line),
    )
    .await
    .context("timed out waiting for a command")??;
    let mut words = line.split_whitespace();
    let reply = match words.next().unwrap_or("") {
        "conntrack" => {
            let filter = match words.next() {
                Some(text) => Some(
                    text.parse::<IpAddr>()
                        .with_context(|| format!("{text:?} is not an IP address"))?,
                ),
                None => None,
            };
            let entries = dataplane
                .lock()
                .expect("dataplane lock poisoned")
                .conntrack()?;
            let now = monotonic_coarse_ns();
            let mut rows: Vec<ConntrackRow> = entries
                .iter()
                .filter(|(key, _)| key.kind != kind::NAT44_IN)
                .filter(|(key, entry)| {
                    filter.is_none_or(|address| {
                        (is_nat_session(key)
                            && address_of(family::IPV4, &entry.translated_addr) == address)
                            || address_of(key.family, &key.inside_addr) == address
                            || address_of(remote_family(key), &key.remote_addr) == address
                    })
                })
                .map(|(key, entry)| conntrack_row(key, entry, now))
                .collect();
            rows.sort_by(|a, b| (&a.inside, &a.remote).cmp(&(&b.inside, &b.remote)));
            serde_json::to_string(&rows)?
        }
        "stats" => {
            let dataplane = dataplane.lock().expect("dataplane lock poisoned");
            let counters = dataplane.counters()?;
            let tracked_flows = dataplane.flows()?.len() as u64;
            let now = monotonic_coarse_ns();
            let timeouts = dataplane.timeouts()?;
            let active = dataplane
                .conntrack()?
                .iter()
                .filter(|(key, entry)| {
                    is_nat_session(key)
                        && !gateway::dataplane::is_expired(&timeouts, key, entry, now)
                })
                .count() as u64;
            let reply = StatsReply {
                counters: counters
                    .iter()
                    .map(|(counter, value)| (counter.name().to_string(), *value))
                    .collect(),
                tracked_flows,
                uptime_seconds: started.elapsed().as_secs(),
                nat: control::nat_metrics(
                    &counters,
                    active,
                    idle_timeouts.load(std::sync::atomic::Ordering::Relaxed),
                ),
                dns64: dns64.map(|counters| counters.snapshot()),
            };
            serde_json::to_string(&reply)?
        }
        other => format!("error: unknown command {other:?} (known: stats, conntrack)"),
    };
    writer.write_all(reply.as_bytes()).await?;
    writer.write_all(b"\n").await?;
    Ok(())
}

/// Deletes expired connection-tracking entries every few seconds; counts NAT idle timeouts and
/// writes one mapping-log line per finished NAT session of a gateway that has a mapping log.
async fn sweep_conntrack(
    dataplane: Arc<Mutex<Dataplane>>,
    timeouts: Timeouts,
    idle_timeouts: Arc<std::sync::atomic::AtomicU64>,
    mapping_logs: Vec<Option<PathBuf>>,
) {
    // Often enough that an expired entry is gone soon after its timeout, rarely enough to cost
    // nothing: the shortest timeout over 4, between 1 and 5 seconds.
    let shortest = [
        timeouts.tcp_established_ns,
        timeouts.tcp_transitory_ns,
        timeouts.udp_ns,
        timeouts.icmp_ns,
        timeouts.other_ns,
    ]
    .into_iter()
    .min()
    .unwrap_or(u64::MAX);
    let period =
        Duration::from_nanos(shortest / 4).clamp(Duration::from_secs(1), Duration::from_secs(5));
    let mut ticker = tokio::time::interval(period);
    loop {
        ticker.tick().await;
        let now = monotonic_coarse_ns();
        let result = dataplane
            .lock()
            .expect("dataplane lock poisoned")
            .sweep_conntrack(&timeouts, now);
        match result {
            Ok(sweep) => {
                idle_timeouts.fetch_add(
                    sweep.nat_idle_timeouts,
                    std::sync::atomic::Ordering::Relaxed,
                );
                if sweep.deleted > 0 || sweep.mappings_deleted > 0 {
                    tracing::debug!(
                        deleted = sweep.deleted,
                        mappings = sweep.mappings_deleted,
                        "expired conntrack entries deleted"
                    );
                }
                if let Err(error) =
                    write_mapping_log(&mapping_logs, &sweep.finished_nat_sessions, now)
                {
                    warn!(error = %format!("{error:#}"), "mapping log write failed");
                }
            }
            Err(error) => warn!(error = %format!("{error:#}"), "conntrack sweep failed"),
        }
    }
}

/// Appends one line per finished NAT session: `time protocol private public destination start
/// end` (Unix seconds), to its gateway's mapping log.
fn write_mapping_log(
    logs: &[Option<PathBuf>],
    sessions: &[(ConnKey, ConnEntry)],
    now: u64,
) -> anyhow::Result<()> {
    use std::io::Write as _;
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let unix = |monotonic: u64| wall.saturating_sub(now.saturating_sub(monotonic) / 1_000_000_000);
    for (key, entry) in sessions {
        let Some(Some(path)) = logs.get(entry.gateway as usize) else {
            continue;
        };
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening the mapping log {}", path.display()))?;
        let row = conntrack_row(key, entry, now);
        writeln!(
            file,
            "{wall} {} {} {} {} {} {}",
            row.protocol,
            row.inside,
            row.public.as_deref().unwrap_or("-"),
            row.remote,
            unix(entry.created_ns),
            unix(entry.last_seen_ns)
        )?;
    }
    Ok(())
}

/// The OUT half of a NAT44 or NAT64 session (the one `gateway conntrack` shows).
fn is_nat_session(key: &ConnKey) -> bool {
    key.kind == kind::NAT44_OUT || key.kind == kind::NAT64_OUT
}

/// The family of a key's remote address: IPv4 for NAT64 sessions (the IPv6 client talks to an
/// IPv4 host), the key's own otherwise.
fn remote_family(key: &ConnKey) -> u8 {
    if key.kind == kind::NAT64_OUT {
        family::IPV4
    } else {
        key.family
    }
}

fn address_of(family: u8, bytes: &[u8; 16]) -> IpAddr {
    if family == gateway_common::maps::family::IPV4 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(*bytes))
    }
}

fn conntrack_row(key: &ConnKey, entry: &ConnEntry, now: u64) -> ConntrackRow {
    let protocol = match key.protocol {
        6 => "tcp".to_string(),
        17 => "udp".to_string(),
        1 => "icmp".to_string(),
        58 => "icmpv6".to_string(),
        other => other.to_string(),
    };
    let gateway = match key.kind {
        kind::EGRESS_ONLY => "egress-only",
        kind::NAT44_OUT => "nat",
        kind::NAT44_IN => "nat-in",
        kind::NAT64_OUT => "nat64",
        _ => "unknown",
    };
    let endpoint = |family: u8, bytes: &[u8; 16], port: u16| match address_of(family, bytes) {
        IpAddr::V4(address) => format!("{address}:{port}"),
        IpAddr::V6(address) => format!("[{address}]:{port}"),
    };
    ConntrackRow {
        protocol,
        gateway: gateway.to_string(),
        public: is_nat_session(key)
            .then(|| endpoint(family::IPV4, &entry.translated_addr, entry.translated_port)),
        inside: endpoint(key.family, &key.inside_addr, key.inside_port),
        remote: endpoint(remote_family(key), &key.remote_addr, key.remote_port),
        state: gateway_common::conntrack::state::name(entry.state).to_string(),
        age_seconds: now.saturating_sub(entry.created_ns) / 1_000_000_000,
        idle_seconds: now.saturating_sub(entry.last_seen_ns) / 1_000_000_000,
        packets_out: entry.packets_out,
        bytes_out: entry.bytes_out,
        packets_in: entry.packets_in,
        bytes_in: entry.bytes_in,
    }
}
