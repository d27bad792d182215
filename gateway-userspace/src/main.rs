//! `gateway`: the controller of the XDP gateway.

use std::{
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
    control::{self, StatsReply},
    dataplane::{Dataplane, MapPlan, ifindex_of},
    flowlog_task::{self, FlowLogger},
};
use gateway_common::Counter;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::UnixListener,
    signal::unix::{SignalKind, signal},
};
use tracing::{error, info, warn};

/// The AWS VPC gateways (internet gateway, NAT gateway, egress-only internet gateway) as an XDP
/// dataplane on any Linux box.
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
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn run(path: PathBuf, mode: XdpMode) -> anyhow::Result<()> {
    let config = Config::from_file(&path)?;
    let plan = MapPlan::new(&config, ifindex_of)
        .with_context(|| format!("{}: interfaces", path.display()))?;
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
                tokio::spawn(async move {
                    if let Err(error) = serve(stream, dataplane, started).await {
                        warn!(error = %format!("{error:#}"), "control request failed");
                    }
                });
            }
        }
    }
    info!("stopping");
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
) -> anyhow::Result<()> {
    let (reader, mut writer) = stream.into_split();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        BufReader::new(reader).read_line(&mut line),
    )
    .await
    .context("timed out waiting for a command")??;
    let reply = match line.trim() {
        "stats" => {
            let dataplane = dataplane.lock().expect("dataplane lock poisoned");
            let counters = dataplane.counters()?;
            let tracked_flows = dataplane.flows()?.len() as u64;
            let reply = StatsReply {
                counters: counters
                    .iter()
                    .map(|(counter, value)| (counter.name().to_string(), *value))
                    .collect(),
                tracked_flows,
                uptime_seconds: started.elapsed().as_secs(),
            };
            serde_json::to_string(&reply)?
        }
        other => format!("error: unknown command {other:?} (known: stats)"),
    };
    writer.write_all(reply.as_bytes()).await?;
    writer.write_all(b"\n").await?;
    Ok(())
}
