//! `cargo xtask bench`: packet rates of the gateway against the kernel and against what XDP itself
//! can do on this machine, measured in one run (issue 5).
//!
//! The generator is an XDP program run through `BPF_PROG_RUN` in live-frames mode in a namespace of
//! its own; its frames cross the gateway namespace (the device under test, which runs the real
//! gateway program, the static `fwd_limit` hop, or nothing but Linux forwarding) and are counted
//! and dropped by a sink program in a third namespace. Every number is a median over interleaved
//! trials; results go to `bench/results/latest.{json,md,svg}` (`--quick`: `bench/results/quick/`).
//!
//! The driver loads the dataplane in-process, so it needs the `gateway` library, whose build
//! compiles the XDP programs. That dependency sits behind the `bench` feature so that xtask itself
//! builds before `cargo xtask setup` has installed bpf-linker; without the feature, `run`
//! re-invokes xtask through cargo with it.

// The pure parts, unit-tested in every build; the rest needs the dataplane.
#[cfg(any(feature = "bench", test))]
mod frame;
#[cfg(any(feature = "bench", test))]
mod report;
#[cfg(any(feature = "bench", test))]
mod stats;

#[cfg(feature = "bench")]
mod driver;
#[cfg(feature = "bench")]
mod inject;
#[cfg(feature = "bench")]
mod netns;
#[cfg(feature = "bench")]
mod nftables;
#[cfg(feature = "bench")]
mod perf;
#[cfg(feature = "bench")]
mod programs;
#[cfg(feature = "bench")]
mod scenarios;
#[cfg(feature = "bench")]
mod tayga;
#[cfg(feature = "bench")]
mod topology;

use std::path::PathBuf;
#[cfg(any(feature = "bench", test))]
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Transport protocol of the generated traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Udp,
    Tcp,
}

/// Run the benchmarks (needs root; takes a few minutes, `--quick` under a minute).
#[derive(clap::Args, Debug, Clone)]
pub struct BenchArgs {
    /// A short smoke run for CI: 2 short trials per variant, one flow count, results in
    /// bench/results/quick/. Fails only if a scenario delivered no packets; never judges speed.
    #[arg(long)]
    pub quick: bool,
    /// Seconds per trial [default: 1, quick: 0.25].
    #[arg(long)]
    pub trial_seconds: Option<f64>,
    /// Trials per variant, interleaved A B C A B C ... [default: 5, quick: 2].
    #[arg(long)]
    pub trials: Option<usize>,
    /// Flow counts of S3, powers of two; k and M suffixes allowed [default: 1,1k,64k,1M; quick: 1k].
    #[arg(long, value_delimiter = ',', value_parser = parse_flows)]
    pub flows: Option<Vec<u32>>,
    /// Frame length in bytes without FCS (raised to the headers' length when smaller).
    #[arg(long, default_value_t = 64)]
    pub packet_size: usize,
    /// Transport protocol of the generated traffic.
    #[arg(long, value_enum, default_value_t = Protocol::Udp)]
    pub protocol: Protocol,
    /// Only these scenarios (e.g. S0,S5) [default: all].
    #[arg(long, value_delimiter = ',')]
    pub scenarios: Option<Vec<String>>,
    /// Where to write latest.{json,md,svg} [default: bench/results, quick: bench/results/quick].
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// "1", "1k" (1024), "64k", "1M" (2^20), or a plain number; must be a power of two.
fn parse_flows(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let (digits, unit) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1u64 << 10),
        Some('m' | 'M') => (&text[..text.len() - 1], 1u64 << 20),
        _ => (text, 1),
    };
    let flows = digits
        .parse::<u64>()
        .map_err(|error| format!("{text:?}: {error}"))?
        .checked_mul(unit)
        .filter(|flows| flows.is_power_of_two() && *flows <= 1 << 24)
        .ok_or_else(|| format!("{text:?}: flow counts are powers of two up to 16M"))?;
    Ok(flows as u32)
}

/// The resolved settings of a run.
#[cfg(any(feature = "bench", test))]
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub trial: Duration,
    pub warmup: Duration,
    pub trials: usize,
    pub flows: Vec<u32>,
    pub packet_size: usize,
    pub protocol: Protocol,
    pub scenarios: Option<Vec<String>>,
    pub out: PathBuf,
}

#[cfg(any(feature = "bench", test))]
fn results_dir() -> PathBuf {
    workspace_root().join("bench/results")
}

fn workspace_root() -> PathBuf {
    // xtask/ is one level below the workspace root.
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), PathBuf::from)
}

#[cfg(any(feature = "bench", test))]
impl Options {
    pub fn from_args(args: &BenchArgs) -> anyhow::Result<Options> {
        let quick = args.quick;
        let seconds = args.trial_seconds.unwrap_or(if quick { 0.25 } else { 1.0 });
        if !(0.01..=60.0).contains(&seconds) {
            bail!("--trial-seconds {seconds}: between 0.01 and 60");
        }
        let trials = args.trials.unwrap_or(if quick { 2 } else { 5 });
        if trials == 0 {
            bail!("--trials must be at least 1");
        }
        let results = results_dir();
        Ok(Options {
            quick,
            trial: Duration::from_secs_f64(seconds),
            warmup: Duration::from_secs_f64((seconds / 2.0).min(0.5)),
            trials,
            flows: args.flows.clone().unwrap_or_else(|| {
                if quick {
                    vec![1 << 10]
                } else {
                    vec![1, 1 << 10, 1 << 16, 1 << 20]
                }
            }),
            packet_size: args.packet_size,
            protocol: args.protocol,
            scenarios: args.scenarios.clone(),
            out: args.out.clone().unwrap_or_else(|| {
                if quick {
                    results.join("quick")
                } else {
                    results
                }
            }),
        })
    }
}

/// Runs the benchmark (see the module documentation).
pub fn run(args: BenchArgs) -> anyhow::Result<()> {
    #[cfg(feature = "bench")]
    {
        run_in_process(Options::from_args(&args)?)
    }
    #[cfg(not(feature = "bench"))]
    {
        // The arguments are parsed again, and checked, by the run with the feature.
        let _ = args;
        rerun_with_feature()
    }
}

/// Runs this same command again through cargo, with the `bench` feature on.
#[cfg(not(feature = "bench"))]
fn rerun_with_feature() -> anyhow::Result<()> {
    const GUARD: &str = "GATEWAY_XTASK_BENCH_RERUN";
    if std::env::var_os(GUARD).is_some() {
        bail!("xtask was re-run for the benchmark but the `bench` feature is still off");
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = std::process::Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--features",
            "bench",
            "--",
        ])
        .args(std::env::args_os().skip(1))
        .env(GUARD, "1")
        .status()
        .context("running cargo to build the benchmark driver")?;
    if !status.success() {
        bail!("the benchmark failed ({status})");
    }
    Ok(())
}

#[cfg(feature = "bench")]
fn run_in_process(options: Options) -> anyhow::Result<()> {
    use std::time::{Instant, SystemTime, UNIX_EPOCH};

    use report::{Machine, Method, Report};

    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark needs root (network namespaces, XDP, BPF_PROG_RUN)");
    }
    let started = Instant::now();
    let load_average_start = report::load_average();
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let wanted = |id: &str| {
        options
            .scenarios
            .as_ref()
            .is_none_or(|list| list.iter().any(|wanted| wanted.eq_ignore_ascii_case(id)))
    };
    if let Some(list) = &options.scenarios {
        for id in list {
            if !scenarios::SCENARIOS
                .iter()
                .any(|scenario| scenario.id.eq_ignore_ascii_case(id))
            {
                bail!("unknown scenario {id} (known: S0..S6)");
            }
        }
    }
    let out = options.out.clone();
    let mode = if options.quick { "quick" } else { "full" };
    eprintln!(
        "bench ({mode}): {} trial(s) of {:.2} s per variant, flows {:?}",
        options.trials,
        options.trial.as_secs_f64(),
        options.flows
    );
    let mut bench = driver::Bench::new(options.clone())?;
    let mut findings = scenarios::Findings::default();
    for scenario in scenarios::SCENARIOS {
        if !wanted(scenario.id) {
            continue;
        }
        eprintln!("{}: {}", scenario.id, scenario.title);
        let scenario_started = Instant::now();
        (scenario.run)(&mut bench, &mut findings)
            .with_context(|| format!("scenario {}", scenario.id))?;
        eprintln!(
            "{} took {:.1} s",
            scenario.id,
            scenario_started.elapsed().as_secs_f64()
        );
    }
    let frame_len = |ipv4: bool| {
        frame::FrameSpec {
            dst_mac: [0; 6],
            src_mac: [0; 6],
            src: if ipv4 {
                topology::v4(topology::FIRST_PRIVATE)
            } else {
                topology::v6(topology::FIRST_SOURCE_V6)
            },
            dst: if ipv4 {
                topology::v4(topology::INTERNET_HOST)
            } else {
                topology::v6(topology::INTERNET_HOST_V6)
            },
            protocol: options.protocol,
            size: options.packet_size,
            ttl: 64,
            tcp_flags: frame::TCP_ACK,
            flows: 1,
            addr_bits: 0,
        }
        .frame_len()
    };
    let mut notes = vec![
        "Live-frame pages are recycled without re-initialisation: the generator rewrites MACs, \
         addresses, TTL/hop limit, ports and checksums of every frame."
            .to_string(),
        "Loss is expected: the generator offers more than the gateway's CPU can take, and the \
         excess is dropped at the gateway's veth ring; the delivered rate is the capacity."
            .to_string(),
        "The \"ours\" trials check the gateway's counters: the packets must have been forwarded by \
         the XDP program, not handed to the kernel."
            .to_string(),
    ];
    if findings.throughput.iter().any(|row| row.scenario == "S1")
        || findings.new_connections.is_some()
    {
        notes.push(
            "S1/S2 (NAT44): the gateway config gains a second VPC CIDR whose subnet's default \
             route is a NAT gateway with 8 public IPs (default port range and mapping); the \
             nftables baseline is Linux forwarding with conntrack and `snat ip to` the same 8 \
             addresses on the internet interface. S1 primes every flow before each trial of the \
             stateful variants (one packet per flow, sent one at a time and checked to arrive: \
             it creates the session in the gateway and in the kernel's conntrack alike) and \
             stops at 64k flows (1M sessions exceed the default table). S1 and S2 are always UDP \
             (a UDP session exists once its first packet is through; TCP would need a \
             handshake the generator cannot answer)."
                .to_string(),
        );
    }
    notes.push(
        "S4 (egress-only): the gateway config has an IPv6-only subnet whose default route is an \
         egress-only internet gateway. S4a primes every flow before each trial of the stateful \
         variants (ours, nftables): the instance's packet from the VPC side, then the internet's \
         reply, sent one at a time through packet sockets and each checked to arrive, so both \
         conntrack tables know the flow as established; the trial then sends from the VPC side \
         (outbound) or from the internet side (replies, the generator runs in the sink namespace \
         and the generator's namespace counts). S4a stops at 64k flows (priming 1M flows before \
         every trial would dominate the run). nftables: Linux forwarding with `ct state \
         established,related accept`, new connections only from the VPC side, policy drop."
            .to_string(),
    );
    notes.push(
        "S4b floods the egress-only subnet from the internet side with TCP SYNs from 64k source \
         addresses (then ports); the rate is what each variant dropped per second by its own \
         count (the gateway's drop counters, bench_drop's count, the nftables drop counter), and \
         every trial checks that nothing reached the VPC side."
            .to_string(),
    );
    if findings.throughput.iter().any(|row| row.scenario == "S6") {
        notes.push(format!(
            "S6 (NAT64): the gateway config gains an IPv6-only subnet ({subnet}) whose route \
             table sends the NAT64 prefix {prefix}/{length} (network-specific, RFC 6052: the \
             well-known 64:ff9b::/96 must not carry the benchmark's non-global IPv4 addresses) to \
             the NAT gateway of S1, which gets that nat64_prefix. The generator sends IPv6 UDP \
             from the subnet's instances to the internet host's address in the prefix ({dst}); \
             ours and TAYGA deliver IPv4 frames 20 bytes shorter (checked at the sink for every \
             trial), fwd_limit the IPv6 frames as sent. TAYGA {version}: stateless NAT64 on a TUN \
             device in the gateway namespace, dynamic pool {pool} (one address per instance), \
             nftables `snat ip to` the NAT gateway's 8 public IPs for the pool, Linux forwarding; \
             TAYGA runs in the foreground, pinned to the gateway's CPU{pinned} with the same priority \
             as the gateway's receive thread. That thread, busy with the generator's overload, \
             keeps taking frames that TAYGA's TUN queue then drops, and TAYGA, which sleeps and \
             wakes per packet, gets only part of the CPU (receive livelock): its rate falls as the \
             offered rate rises. The cost table gives TAYGA's CPU time per translated packet \
             (its translation plus the kernel forwarding what it writes back) and its share of \
             the CPU; 10^9 / that time is what TAYGA could reach with a CPU to itself. Flows are primed as in S1; they \
             spread over {clients} instances, then ports (TAYGA's dynamic pool cannot take S1's \
             64k instances: it finds a free address by walking a list); S6 stops at 64k flows as \
             S1 does.",
            subnet = topology::NAT64_SUBNET,
            prefix = topology::NAT64_PREFIX,
            length = topology::NAT64_PREFIX_LEN,
            dst = topology::nat64_address(topology::INTERNET_HOST),
            version = tayga::version(),
            pool = tayga::POOL,
            clients = topology::NAT64_CLIENTS,
            pinned = if bench.gateway_cpu.is_some() {
                ""
            } else {
                " (no CPU of its own here: it shares the generator's)"
            },
        ));
    }
    if bench.gateway_cpu.is_some() {
        notes.push(
            "With 2 vCPUs the sink's counting program shares the gateway's CPU, so every variant \
             carries its cost."
                .into(),
        );
    }
    let report = Report {
        schema: 3,
        mode: mode.into(),
        started_unix,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        machine: Machine::detect(load_average_start),
        method: Method {
            trial_seconds: options.trial.as_secs_f64(),
            trials_per_variant: options.trials,
            frame_len_ipv4: frame_len(true),
            frame_len_ipv6: frame_len(false),
            protocol: programs::protocol_name(options.protocol).into(),
            generator_batch: driver::GENERATOR_BATCH,
            generator_cpu: bench.generator_cpu,
            gateway_cpu: bench.gateway_cpu,
            notes,
        },
        throughput: findings.throughput,
        program_cost: findings.program_cost,
        new_connections: findings.new_connections,
        not_measured: findings.not_measured,
        perf: std::mem::replace(
            &mut bench.perf,
            report::PerfStatus {
                supported: false,
                note: String::new(),
            },
        ),
        warnings: std::mem::take(&mut bench.warnings),
    };
    // Namespaces and programs go before the files are written: nothing is left behind even if
    // writing fails.
    drop(bench);
    report.write(&out)?;
    println!("{}", report.markdown());
    eprintln!("results written to {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_counts_parse() {
        assert_eq!(parse_flows("1"), Ok(1));
        assert_eq!(parse_flows("1k"), Ok(1024));
        assert_eq!(parse_flows("64k"), Ok(65536));
        assert_eq!(parse_flows("1M"), Ok(1 << 20));
        assert!(parse_flows("1000").is_err());
        assert!(parse_flows("x").is_err());
        assert!(parse_flows("32M").is_err());
    }

    #[test]
    fn quick_defaults() {
        use clap::Parser as _;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let cli = Cli::parse_from(["xtask", "--quick"]);
        let options = Options::from_args(&cli.bench).unwrap();
        assert!(options.quick);
        assert_eq!(options.trials, 2);
        assert_eq!(options.trial, Duration::from_millis(250));
        assert!(options.warmup <= options.trial);
        assert_eq!(options.flows, vec![1024]);
        assert_eq!(options.packet_size, 64);
        assert_eq!(options.scenarios, None);
        assert!(options.out.ends_with("bench/results/quick"));
        let cli = Cli::parse_from(["xtask", "--flows", "1,1M", "--protocol", "tcp"]);
        let options = Options::from_args(&cli.bench).unwrap();
        assert_eq!(options.flows, vec![1, 1 << 20]);
        assert_eq!(options.trials, 5);
        assert_eq!(options.protocol, Protocol::Tcp);
    }
}
