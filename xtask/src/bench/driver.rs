//! The benchmark bench: topology, programs, the gateway under test, and the trial loop.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use aya::programs::{TestRun as _, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId};
use gateway::{
    config::Config,
    dataplane::{Dataplane, MapPlan, ifindex_of},
};

use super::{
    Options,
    frame::FrameSpec,
    inject::PacketSocket,
    nftables,
    perf::{self, CpuCycles},
    programs::{self, BenchPrograms},
    report::{PerfStatus, RatioRow, Throughput, VariantRun},
    stats::{Ratio, Summary},
    tayga,
    topology::{self, Topology},
};

/// Set by SIGINT/SIGTERM: loops stop and return an error, so that every guard runs and the
/// namespaces are deleted.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_signal: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Does nothing: SIGUSR1 only interrupts the generator's running BPF_PROG_RUN.
extern "C" fn interrupt(_signal: libc::c_int) {}

fn install_signal_handlers() {
    for (signal, handler) in [
        (libc::SIGINT, request_stop as extern "C" fn(libc::c_int)),
        (libc::SIGTERM, request_stop),
        (libc::SIGUSR1, interrupt),
    ] {
        // SAFETY: the handlers only touch an atomic (async-signal-safe); the sigaction struct is
        // plain data. No SA_RESTART: the interrupted syscall must return.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = handler as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

pub fn check_stop() -> anyhow::Result<()> {
    if STOP.load(Ordering::Relaxed) {
        bail!("interrupted");
    }
    Ok(())
}

/// What the gateway namespace runs between the two veths.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// The gateway's XDP program with maps filled from the benchmark config.
    Ours,
    /// `bench_fwd_limit`: static MAC rewrite + devmap redirect, the XDP ceiling of this hop.
    FwdLimit,
    /// No XDP on the gateway: the kernel's own forwarding, no rules.
    Kernel,
    /// No XDP on the gateway: the kernel's forwarding with the nftables ruleset of
    /// [`nftables::ruleset`] (conntrack, `ct state established,related accept`, policy drop).
    Nftables,
    /// `bench_drop` on the ingress interface: count and drop, what any XDP drop must at least do.
    Drop,
    /// No XDP on the gateway: the kernel's forwarding with conntrack and the source NAT rule of
    /// [`nftables::nat_ruleset`] (the NAT44 baseline; reported as "nftables").
    NftablesNat,
    /// No XDP on the gateway: TAYGA on a TUN device translates, nftables translates its pool to
    /// the public IPs, the kernel forwards (the NAT64 baseline, see [`tayga`]).
    Tayga,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::Ours => "ours",
            Variant::FwdLimit => "fwd_limit",
            Variant::Kernel => "kernel",
            Variant::Nftables => "nftables",
            Variant::Drop => "drop",
            Variant::NftablesNat => "nftables",
            Variant::Tayga => "tayga",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Variant::Ours => "the gateway's XDP program, maps filled from the benchmark config",
            Variant::FwdLimit => "bench_fwd_limit: static MAC rewrite and devmap redirect",
            Variant::Kernel => "no XDP on the gateway: Linux forwarding, no rules",
            Variant::Nftables => {
                "no XDP on the gateway: Linux forwarding with nftables conntrack filtering (ct \
                 state established,related accept; new only from the VPC side; policy drop)"
            }
            Variant::Drop => "bench_drop on the ingress interface: count and XDP_DROP",
            Variant::NftablesNat => {
                "no XDP on the gateway: Linux forwarding with conntrack and an nftables source NAT \
                 rule (snat to the NAT gateway's 8 public IPs on the internet interface)"
            }
            Variant::Tayga => {
                "no XDP on the gateway: TAYGA (stateless NAT64 on a TUN device, dynamic pool) \
                 with an nftables source NAT of its pool to the NAT gateway's 8 public IPs, \
                 Linux forwarding"
            }
        }
    }

    /// Whether the variant translates IPv6 to IPv4 in a NAT64 case (the static redirect does
    /// not).
    fn translates(self) -> bool {
        matches!(self, Variant::Ours | Variant::Tayga)
    }

    /// Whether the variant keeps per-flow state that must know the flows before a trial.
    fn tracks_flows(self) -> bool {
        matches!(
            self,
            Variant::Ours | Variant::Nftables | Variant::NftablesNat | Variant::Tayga
        )
    }
}

/// Which side the generator sends from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the VPC side (`gen0`) towards the internet; counted at `sink0`.
    Outbound,
    /// From the internet side (`sink0`) towards the VPC; counted at `gen0`.
    Inbound,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Outbound => "outbound",
            Direction::Inbound => "inbound",
        }
    }
}

/// What a trial counts as the work of the device under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Metric {
    /// Packets delivered at the far end.
    Delivered,
    /// Packets the device under test dropped (the gateway's `drop_` counters, `bench_drop`'s
    /// count, the nftables drop counter). Nothing may reach the far end.
    Dropped,
}

impl Metric {
    pub fn name(self) -> &'static str {
        match self {
            Metric::Delivered => "delivered",
            Metric::Dropped => "dropped",
        }
    }
}

/// Frames sent once per flow before every trial of a variant that tracks flows, so that its
/// connection tracking knows them all: first the VPC side's packet of each flow (from `gen0`),
/// then the internet's reply (from `sink0`).
pub struct Priming {
    pub outbound: Vec<Vec<u8>>,
    pub inbound: Vec<Vec<u8>>,
}

enum Attached {
    Nothing,
    Ours,
    /// One of the bench programs, by name.
    Bench(&'static str, XdpLinkId),
}

struct Gateway {
    dataplane: Dataplane,
    plan: MapPlan,
}

struct Ifindexes {
    generator: u32,
    vpc: u32,
    inet: u32,
    sink: u32,
}

/// One trial's counts.
#[derive(Clone, Copy, Debug)]
struct Sample {
    sent: u64,
    /// What the case's metric counts: delivered at the far end, or dropped by the device under
    /// test.
    delivered: u64,
    /// Delivered at the far end (the same as `delivered` for [`Metric::Delivered`]).
    reached_sink: u64,
    /// Frame bytes of what reached the far end.
    reached_sink_bytes: u64,
    seconds: f64,
}

impl Sample {
    fn delivered_mpps(&self) -> f64 {
        self.delivered as f64 / self.seconds / 1e6
    }

    fn sent_mpps(&self) -> f64 {
        self.sent as f64 / self.seconds / 1e6
    }

    fn loss(&self) -> f64 {
        if self.sent == 0 {
            0.0
        } else {
            1.0 - self.delivered as f64 / self.sent as f64
        }
    }
}

/// What a profiling trial measured besides the rate (see [`Bench::profile`]).
struct Profile {
    /// The device under test's XDP program, ns per run.
    program_ns: Option<f64>,
    /// The gateway CPU's cycles per delivered packet.
    cycles_per_packet: Option<f64>,
    /// A translating process's (TAYGA's) CPU time per delivered packet (ns) and its share of
    /// the trial's wall-clock time.
    process: Option<(f64, f64)>,
}

/// A throughput case: one frame stream, several variants, ratios to report.
pub struct Case {
    pub scenario: &'static str,
    pub case: String,
    pub label: String,
    pub spec: FrameSpec,
    pub direction: Direction,
    pub metric: Metric,
    /// Sent before every trial of the variants that track flows.
    pub priming: Option<Priming>,
    pub variants: Vec<Variant>,
    /// (numerator, denominator, target).
    pub ratios: Vec<(Variant, Variant, Option<f64>)>,
    /// IPv6 frames to the NAT64 prefix: the variants that translate ([`Variant::translates`])
    /// must deliver IPv4 frames 20 bytes shorter, the others the frames as sent (checked at the
    /// sink by the bytes per packet of every trial).
    pub nat64: bool,
}

/// Frames per live-frames batch: the kernel's maximum, which also sizes the generator's page
/// pool; frames freed on the gateway's CPU are recycled only while they fit in it, and every frame
/// that is not costs a fresh page and its initialisation.
pub const GENERATOR_BATCH: u32 = 256;
/// Frames per generator call: seconds' worth, so the dispatcher swap of each call is rare; the
/// call is interrupted once the measurement window is taken.
const GENERATOR_REPEAT: u32 = 1 << 26;

pub struct Bench {
    // Fields drop in declaration order: programs and the gateway detach before the namespaces go.
    gateway: Option<Gateway>,
    /// TAYGA, once a case has used it: it keeps running (idle while another variant is on, since
    /// XDP then takes every frame before the kernel sees it) so that its mappings and the
    /// kernel's conntrack entries stay primed, until [`Bench::stop_tayga`].
    tayga: Option<tayga::Tayga>,
    attached: Attached,
    /// What the gateway namespace runs now, and for which direction.
    current: (Variant, Direction),
    programs: BenchPrograms,
    ifindex: Ifindexes,
    pub generator_cpu: usize,
    pub gateway_cpu: Option<usize>,
    pub perf: PerfStatus,
    pub warnings: Vec<String>,
    pub options: Options,
    pub topology: Topology,
}

impl Bench {
    pub fn new(options: Options) -> anyhow::Result<Bench> {
        install_signal_handlers();
        super::netns::remove_stale()?;
        tayga::remove_stale();
        let topology = Topology::create()?;
        let resolve = |name: &'static str| {
            move || ifindex_of(name).with_context(|| format!("no interface {name}"))
        };
        let ifindex = Ifindexes {
            generator: topology.generator.enter(resolve(topology::GEN_IF))?,
            vpc: topology.gateway.enter(resolve(topology::VPC_IF))?,
            inet: topology.gateway.enter(resolve(topology::INET_IF))?,
            sink: topology.sink.enter(resolve(topology::SINK_IF))?,
        };
        let mut programs = BenchPrograms::load()?;
        // The sink's program stays attached at both ends for the whole run (the egress-only
        // scenario also sends from the internet side); it goes with the namespaces.
        topology
            .sink
            .enter(|| programs.attach(programs::SINK, ifindex.sink))?;
        topology
            .generator
            .enter(|| programs.attach(programs::SINK, ifindex.generator))?;

        let mut warnings = Vec::new();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let generator_cpu = 0;
        let gateway_cpu = if cores >= 2 {
            match topology.isolate_gateway_rx(1) {
                Ok(threads) if threads > 0 => Some(1),
                Ok(_) => {
                    warnings.push(
                        "no NAPI thread found for the gateway's ingress veth: the generator and \
                         the gateway share a CPU"
                            .into(),
                    );
                    None
                }
                Err(error) => {
                    warnings.push(format!(
                        "threaded NAPI unavailable ({error:#}): the generator and the gateway \
                         share a CPU"
                    ));
                    None
                }
            }
        } else {
            warnings.push("one CPU: the generator and the gateway share it".into());
            None
        };
        let perf = match (perf::cycles_supported(), gateway_cpu) {
            (Ok(()), Some(_)) => PerfStatus {
                supported: true,
                note: "perf stat -e cycles on the gateway's CPU".into(),
            },
            (Ok(()), None) => PerfStatus {
                supported: false,
                note: "the gateway has no CPU of its own to count".into(),
            },
            (Err(reason), _) => PerfStatus {
                supported: false,
                note: reason,
            },
        };
        Ok(Bench {
            gateway: None,
            tayga: None,
            attached: Attached::Nothing,
            current: (Variant::Kernel, Direction::Outbound),
            programs,
            ifindex,
            generator_cpu,
            gateway_cpu,
            perf,
            warnings,
            options,
            topology,
        })
    }

    /// Loads the gateway afresh (empty flow table) with the benchmark config.
    pub fn fresh_gateway(&mut self) -> anyhow::Result<()> {
        self.fresh_gateway_with(&topology::gateway_config())
    }

    /// Loads the gateway afresh (empty tables) with the config `text`.
    pub fn fresh_gateway_with(&mut self, text: &str) -> anyhow::Result<()> {
        self.set_variant(Variant::Kernel, self.current.1)?;
        self.gateway = None;
        let config = Config::parse(text, "bench.toml")
            .map_err(|error| anyhow::anyhow!("{error}"))
            .context("the benchmark's gateway config")?;
        let mut dataplane = Dataplane::load()?;
        let plan = self.topology.gateway.enter(|| {
            let plan = MapPlan::new(&config, ifindex_of)?;
            dataplane.apply(&plan)?;
            Ok(plan)
        })?;
        self.gateway = Some(Gateway { dataplane, plan });
        Ok(())
    }

    /// Stops TAYGA and takes down its device, routes and rules (the next case that uses it starts
    /// from empty tables).
    pub fn stop_tayga(&mut self) -> anyhow::Result<()> {
        if self.current.0 == Variant::Tayga {
            self.set_variant(Variant::Kernel, self.current.1)?;
        }
        self.tayga = None;
        Ok(())
    }

    fn gateway(&mut self) -> anyhow::Result<&mut Gateway> {
        self.gateway
            .as_mut()
            .context("the gateway is not loaded (fresh_gateway first)")
    }

    /// Makes the gateway namespace run `variant` for traffic in `direction`.
    fn set_variant(&mut self, variant: Variant, direction: Direction) -> anyhow::Result<()> {
        if self.current == (variant, direction) {
            return Ok(());
        }
        match std::mem::replace(&mut self.attached, Attached::Nothing) {
            Attached::Nothing => {}
            Attached::Ours => {
                let gateway = self
                    .gateway
                    .as_mut()
                    .context("the gateway is not loaded (fresh_gateway first)")?;
                self.topology.gateway.enter(|| gateway.dataplane.detach())?;
            }
            Attached::Bench(name, link) => {
                let programs = &mut self.programs;
                self.topology
                    .gateway
                    .enter(|| programs.detach(name, link))?;
            }
        }
        match self.current.0 {
            Variant::Nftables => nftables::remove(&self.topology.gateway)?,
            Variant::NftablesNat => nftables::remove_nat(&self.topology.gateway)?,
            _ => {}
        }
        self.current = (Variant::Kernel, direction);
        let (ingress, egress, macs) = match direction {
            Direction::Outbound => (
                self.ifindex.vpc,
                self.ifindex.inet,
                (topology::SINK_MAC, topology::INET_MAC),
            ),
            Direction::Inbound => (
                self.ifindex.inet,
                self.ifindex.vpc,
                (topology::GEN_MAC, topology::VPC_MAC),
            ),
        };
        match variant {
            Variant::Kernel => {}
            Variant::Nftables => nftables::install(&self.topology.gateway)?,
            Variant::NftablesNat => nftables::install_nat(&self.topology.gateway)?,
            Variant::Tayga => {
                if self.tayga.is_none() {
                    self.tayga = Some(tayga::Tayga::start(
                        &self.topology.gateway,
                        self.gateway_cpu,
                    )?);
                }
            }
            Variant::Ours => {
                let gateway = self
                    .gateway
                    .as_mut()
                    .context("the gateway is not loaded (fresh_gateway first)")?;
                self.topology
                    .gateway
                    .enter(|| gateway.dataplane.attach(&gateway.plan, XdpMode::Driver))?;
                self.attached = Attached::Ours;
            }
            Variant::FwdLimit | Variant::Drop => {
                let name = if variant == Variant::Drop {
                    programs::DROP
                } else {
                    programs::FWD_LIMIT
                };
                let programs = &mut self.programs;
                let link = self.topology.gateway.enter(|| {
                    if variant == Variant::FwdLimit {
                        programs.set_fwd_limit(macs.0, macs.1, egress)?;
                    }
                    programs.attach(name, ingress)
                })?;
                self.attached = Attached::Bench(name, link);
            }
        }
        self.current = (variant, direction);
        // Attaching can restart a veth's NAPI instance; keep its thread on the gateway's CPU.
        if let Some(cpu) = self.gateway_cpu {
            for interface in [topology::VPC_IF, topology::INET_IF] {
                topology::pin_napi_threads(interface, cpu)?;
            }
        }
        Ok(())
    }

    /// Sends the priming frames (see [`Priming`]) through packet sockets, a window at a time so
    /// that the gateway's veth ring never overflows, and checks that every frame reached the far
    /// end (the sink programs count them). A round that lost frames is sent again: repeating a
    /// flow's packets changes nothing that matters.
    fn prime(&self, priming: &Priming) -> anyhow::Result<()> {
        for (frames, netns, ifindex, side) in [
            (
                &priming.outbound,
                &self.topology.generator,
                self.ifindex.generator,
                "VPC",
            ),
            (
                &priming.inbound,
                &self.topology.sink,
                self.ifindex.sink,
                "internet",
            ),
        ] {
            if frames.is_empty() {
                continue;
            }
            let socket = netns.enter(|| PacketSocket::open(ifindex))?;
            let (programs, cpu) = (&self.programs, self.generator_cpu);
            // On a thread of the generator's CPU, away from the gateway's.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| -> anyhow::Result<()> {
                        topology::pin(0, cpu).context("pinning the priming thread")?;
                        send_all(programs, &socket, frames)
                            .with_context(|| format!("priming from the {side} side"))
                    })
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })?;
        }
        Ok(())
    }

    /// Runs the generator on its own CPU and measures a steady-state window of `duration` while
    /// it runs.
    ///
    /// Each `BPF_PROG_RUN` call swaps the program into the XDP dispatcher and out again, which
    /// waits for RCU grace periods: tens of milliseconds on a busy VM, during which no frame
    /// flows. So the generator makes long calls, the window is taken from the counters while one
    /// is running, and the call is then interrupted with a signal (the kernel's test loop stops
    /// on a pending signal).
    fn trial(
        &mut self,
        variant: Variant,
        how: (Direction, Metric),
        template: &[u8],
        duration: Duration,
    ) -> anyhow::Result<Sample> {
        let (direction, metric) = how;
        self.set_variant(variant, direction)?;
        let (netns, ifindex) = match direction {
            Direction::Outbound => (&self.topology.generator, self.ifindex.generator),
            Direction::Inbound => (&self.topology.sink, self.ifindex.sink),
        };
        let ctx = programs::xdp_md(template.len(), ifindex);
        let (programs, cpu) = (&self.programs, self.generator_cpu);
        let stop = AtomicBool::new(false);
        let (thread_tx, thread_rx) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let generator = scope.spawn(|| -> anyhow::Result<()> {
                netns.enter_this_thread()?;
                topology::pin(0, cpu).context("pinning the generator thread")?;
                topology::boost(0).context("raising the generator's priority")?;
                // SAFETY: pthread_self has no preconditions.
                let _ = thread_tx.send(unsafe { libc::pthread_self() });
                // An interrupted run (EINTR) is the stop signal once the window is taken; any
                // other signal that lands on this thread before then just restarts the run.
                while !stop.load(Ordering::Relaxed) {
                    programs.generate_live(template, &ctx, GENERATOR_REPEAT, GENERATOR_BATCH)?;
                }
                Ok(())
            });
            let measured = (|| -> anyhow::Result<Sample> {
                let thread = thread_rx
                    .recv()
                    .context("the generator thread ended before starting")?;
                let window = self.window(variant, metric, duration, &generator);
                stop.store(true, Ordering::Relaxed);
                // Repeated: a signal that lands between two calls interrupts nothing.
                while !generator.is_finished() {
                    // SAFETY: the thread is alive (not finished, and joined only below).
                    unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
                    std::thread::sleep(Duration::from_millis(2));
                }
                window
            })();
            stop.store(true, Ordering::Relaxed);
            let generated = generator
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            // The generator's own error says why a window failed when it stopped early.
            generated.context("the generator failed")?;
            measured
        })
    }

    /// Waits for the generator's frames to flow, then counts what is sent and delivered over
    /// `duration`.
    fn window(
        &self,
        variant: Variant,
        metric: Metric,
        duration: Duration,
        generator: &std::thread::ScopedJoinHandle<'_, anyhow::Result<()>>,
    ) -> anyhow::Result<Sample> {
        let started = self.programs.generated()?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.programs.generated()? == started {
            check_stop()?;
            ensure!(!generator.is_finished(), "the generator stopped");
            ensure!(Instant::now() < deadline, "the generator sends nothing");
            std::thread::sleep(Duration::from_millis(1));
        }
        // Lets the rings fill and the device under test reach its steady state.
        std::thread::sleep(Duration::from_millis(20));
        let read = |bench: &Bench| -> anyhow::Result<(u64, u64, (u64, u64), Instant)> {
            let sent = bench.programs.generated()?;
            let (reached_sink, reached_sink_bytes, _) = bench.programs.sink()?;
            let counted = match metric {
                Metric::Delivered => reached_sink,
                Metric::Dropped => bench.dropped(variant)?,
            };
            Ok((
                sent,
                counted,
                (reached_sink, reached_sink_bytes),
                Instant::now(),
            ))
        };
        let (sent0, delivered0, sink0, t0) = read(self)?;
        let end = t0 + duration;
        while Instant::now() < end {
            check_stop()?;
            ensure!(
                !generator.is_finished(),
                "the generator stopped during the window"
            );
            std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
        }
        let (sent1, delivered1, sink1, t1) = read(self)?;
        Ok(Sample {
            sent: sent1 - sent0,
            delivered: delivered1 - delivered0,
            reached_sink: sink1.0 - sink0.0,
            reached_sink_bytes: sink1.1 - sink0.1,
            seconds: (t1 - t0).as_secs_f64(),
        })
    }

    /// Packets `variant` has dropped so far, by its own count.
    fn dropped(&self, variant: Variant) -> anyhow::Result<u64> {
        match variant {
            Variant::Ours => {
                let gateway = self.gateway.as_ref().context("the gateway is not loaded")?;
                Ok(gateway
                    .dataplane
                    .counters()?
                    .iter()
                    .filter(|(counter, _)| counter.name().starts_with("drop_"))
                    .map(|(_, value)| value)
                    .sum())
            }
            Variant::Drop => self.programs.dropped(),
            Variant::Nftables => nftables::dropped(&self.topology.gateway),
            Variant::Kernel | Variant::FwdLimit | Variant::NftablesNat | Variant::Tayga => {
                bail!("{} keeps no drop count", variant.name())
            }
        }
    }

    pub fn gateway_counters(&mut self) -> anyhow::Result<BTreeMap<String, u64>> {
        Ok(self
            .gateway()?
            .dataplane
            .counters()?
            .into_iter()
            .map(|(counter, value)| (counter.name().to_string(), value))
            .collect())
    }

    /// The cost of the device under test's program per packet inside a live run (BPF run-time
    /// statistics, which slow every program down a little, so they are on only here), and the
    /// cycles per packet of the gateway's CPU where perf counts them.
    fn profile(
        &mut self,
        variant: Variant,
        how: (Direction, Metric),
        template: &[u8],
        duration: Duration,
    ) -> anyhow::Result<Profile> {
        self.set_variant(variant, how.0)?;
        let program_totals = |bench: &mut Bench| -> anyhow::Result<Option<(Duration, u64)>> {
            let program: &Xdp = match variant {
                Variant::Kernel | Variant::Nftables | Variant::NftablesNat | Variant::Tayga => {
                    return Ok(None);
                }
                Variant::Ours => bench.gateway()?.dataplane.program()?,
                Variant::FwdLimit => bench.programs.program(programs::FWD_LIMIT)?,
                Variant::Drop => bench.programs.program(programs::DROP)?,
            };
            let info = program.info().context("reading program info")?;
            Ok(Some((info.run_time(), info.run_count())))
        };
        let stats = aya::sys::enable_stats(aya::sys::Stats::RunTime)
            .context("enabling BPF run-time statistics")?;
        let before = program_totals(self)?;
        let cycles = match (self.perf.supported, self.gateway_cpu) {
            (true, Some(cpu)) => Some(CpuCycles::start(cpu)?),
            _ => None,
        };
        let process_before = self.tayga_cpu_time(variant)?;
        let sample = self.trial(variant, how, template, duration)?;
        let process_after = self.tayga_cpu_time(variant)?;
        let cycles = cycles.map(CpuCycles::stop).transpose()?;
        let after = program_totals(self)?;
        drop(stats);
        let program_ns = match (before, after) {
            (Some((time0, count0)), Some((time1, count1))) if count1 > count0 => {
                Some((time1 - time0).as_nanos() as f64 / (count1 - count0) as f64)
            }
            _ => None,
        };
        let cycles_per_packet = cycles
            .filter(|_| sample.delivered > 0)
            .map(|cycles| cycles as f64 / sample.delivered as f64);
        let process = match (process_before, process_after) {
            (Some(before), Some(after)) if sample.delivered > 0 => {
                let busy = (after - before).as_nanos() as f64;
                Some((
                    busy / sample.delivered as f64,
                    busy / 1e9 / duration.as_secs_f64(),
                ))
            }
            _ => None,
        };
        Ok(Profile {
            program_ns,
            cycles_per_packet,
            process,
        })
    }

    /// TAYGA's CPU time so far when `variant` is TAYGA (the translation runs in a process there,
    /// out of the XDP statistics' sight).
    fn tayga_cpu_time(&self, variant: Variant) -> anyhow::Result<Option<Duration>> {
        match (variant, &self.tayga) {
            (Variant::Tayga, Some(tayga)) => tayga.cpu_time().map(Some),
            _ => Ok(None),
        }
    }

    /// Checks the generator's real output against the frames built in userspace.
    fn self_test(&self, spec: &FrameSpec, template: &[u8]) -> anyhow::Result<()> {
        for _ in 0..3 {
            let out = self.programs.generate_one(template)?;
            super::frame::verify_checksums(&out, spec.protocol)
                .map_err(|reason| anyhow::anyhow!("generator wrote a bad {reason}"))?;
            let index = flow_index_of(spec, &out).context("generator wrote an unknown flow")?;
            ensure!(
                out == spec.frame(index),
                "the generator's frame for flow {index} differs from the one built in userspace"
            );
        }
        Ok(())
    }

    /// Primes the flows of `case` for `variant`, if both call for it (the variant set first, so
    /// that the priming frames meet the state keeper that the trial will).
    fn prime_for(&mut self, variant: Variant, case: &Case) -> anyhow::Result<()> {
        let Some(priming) = case.priming.as_ref().filter(|_| variant.tracks_flows()) else {
            return Ok(());
        };
        self.set_variant(variant, case.direction)?;
        self.prime(priming)
            .with_context(|| format!("priming the flows for {}", variant.name()))
    }

    /// Measures a case: warm-up, then interleaved trials (A B C A B C ...), then a profiling
    /// trial per variant.
    pub fn measure(&mut self, case: &Case) -> anyhow::Result<Throughput> {
        self.measure_with_trials(case, self.options.trials)
    }

    /// [`Bench::measure`] with `trials` trials per variant instead of the run's setting.
    pub fn measure_with_trials(
        &mut self,
        case: &Case,
        trials: usize,
    ) -> anyhow::Result<Throughput> {
        let spec = &case.spec;
        spec.validate()?;
        let template = spec.frame(0);
        self.programs
            .set_generator(&programs::generator_config(spec))?;
        self.self_test(spec, &template)
            .with_context(|| format!("{} {}: generator self-test", case.scenario, case.case))?;
        let trial = self.options.trial;
        let warmup = self.options.warmup;
        let how = (case.direction, case.metric);
        let what = || format!("{} {} ({} flows)", case.scenario, case.case, spec.flows);
        for variant in &case.variants {
            // Fills the flow table and the caches, so the trials see established flows.
            self.prime_for(*variant, case).with_context(what)?;
            self.trial(*variant, how, &template, warmup)?;
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); case.variants.len()];
        let mut counters: BTreeMap<String, u64> = BTreeMap::new();
        for round in 0..trials {
            for (slot, variant) in case.variants.iter().enumerate() {
                self.prime_for(*variant, case).with_context(what)?;
                let before = match variant {
                    Variant::Ours => Some(self.gateway_counters()?),
                    _ => None,
                };
                let sample = self.trial(*variant, how, &template, trial)?;
                if let Some(before) = before {
                    for (name, value) in self.gateway_counters()? {
                        let delta = value - before.get(&name).copied().unwrap_or(0);
                        if delta > 0 {
                            *counters.entry(name).or_default() += delta;
                        }
                    }
                }
                eprintln!(
                    "  {} {} flows={} {:<9} trial {}: {:6.3} Mpps {}, {:6.3} Mpps sent",
                    case.scenario,
                    case.case,
                    spec.flows,
                    variant.name(),
                    round + 1,
                    sample.delivered_mpps(),
                    case.metric.name(),
                    sample.sent_mpps()
                );
                match case.metric {
                    Metric::Delivered => ensure!(
                        sample.delivered > 0,
                        "{}, {}: no packet reached the sink ({} sent)",
                        what(),
                        variant.name(),
                        sample.sent
                    ),
                    Metric::Dropped => {
                        ensure!(
                            sample.delivered > 0,
                            "{}, {}: nothing was dropped ({} sent)",
                            what(),
                            variant.name(),
                            sample.sent
                        );
                        ensure!(
                            sample.reached_sink == 0,
                            "{}, {}: {} unsolicited packets reached the sink",
                            what(),
                            variant.name(),
                            sample.reached_sink
                        );
                    }
                }
                if case.nat64 && sample.reached_sink > 0 {
                    // NAT64 takes the 40-byte IPv6 header off and puts a 20-byte IPv4 one on.
                    let expected = if variant.translates() {
                        spec.frame_len() - 20
                    } else {
                        spec.frame_len()
                    };
                    // The sink's two counters are read one after the other while frames
                    // arrive: the quotient is a hair off, never by a byte.
                    let bytes_per_packet =
                        sample.reached_sink_bytes as f64 / sample.reached_sink as f64;
                    ensure!(
                        (bytes_per_packet - expected as f64).abs() < 0.5,
                        "{}, {}: {bytes_per_packet:.1} bytes per frame at the sink instead of \
                         {expected}",
                        what(),
                        variant.name()
                    );
                }
                samples[slot].push(sample);
            }
        }
        if case.variants.contains(&Variant::Ours) {
            match case.metric {
                Metric::Delivered => check_gateway_handled(&counters),
                Metric::Dropped => check_gateway_dropped(&counters),
            }
            .with_context(what)?;
        }
        let mut variants = Vec::new();
        for (slot, variant) in case.variants.iter().enumerate() {
            self.prime_for(*variant, case).with_context(what)?;
            let profile = self.profile(*variant, how, &template, trial)?;
            let of = |f: fn(&Sample) -> f64| {
                Summary::of(&samples[slot].iter().map(f).collect::<Vec<_>>()).unwrap_or_default()
            };
            variants.push(VariantRun {
                name: variant.name().into(),
                description: variant.description().into(),
                delivered_mpps: of(Sample::delivered_mpps),
                delivered_mpps_trials: samples[slot].iter().map(Sample::delivered_mpps).collect(),
                sent_mpps: of(Sample::sent_mpps),
                loss: of(Sample::loss),
                program_ns_per_packet: profile.program_ns,
                cycles_per_packet: profile.cycles_per_packet,
                process_ns_per_packet: profile.process.map(|(ns, _)| ns),
                process_cpu_share: profile.process.map(|(_, share)| share),
            });
        }
        let mut ratios = Vec::new();
        for (numerator, denominator, target) in &case.ratios {
            let trials = |wanted: &Variant| -> Vec<f64> {
                case.variants
                    .iter()
                    .position(|variant| variant == wanted)
                    .map(|slot| samples[slot].iter().map(Sample::delivered_mpps).collect())
                    .unwrap_or_default()
            };
            if let Some(ratio) = Ratio::of(&trials(numerator), &trials(denominator)) {
                ratios.push(RatioRow {
                    numerator: numerator.name().into(),
                    denominator: denominator.name().into(),
                    ratio,
                    target: *target,
                    met: target.map(|target| ratio.of_medians >= target),
                });
            }
        }
        Ok(Throughput {
            scenario: case.scenario.into(),
            case: case.case.clone(),
            label: case.label.clone(),
            direction: case.direction.name().into(),
            metric: case.metric.name().into(),
            flows: spec.flows,
            frame_len: spec.frame_len(),
            variants,
            ratios,
            gateway_counters: counters,
        })
    }

    /// Mean kernel-measured run time (ns) of `program` on `frame` arriving on `ingress` (in the
    /// gateway namespace), checking the verdict: `calls` calls of one run each when `repeat` is
    /// 1, else one call that runs it `repeat` times (only for paths that leave the frame as it
    /// was: the kernel does not restore it between repeats).
    pub fn run_cost(
        &self,
        program: &Xdp,
        frame: &[u8],
        ingress: u32,
        verdict: u32,
        calls: u32,
        repeat: u32,
    ) -> anyhow::Result<f64> {
        let ctx = programs::xdp_md(frame.len(), ingress);
        self.topology.gateway.enter(|| {
            let calls = if repeat > 1 { 1 } else { calls };
            let mut total = Duration::ZERO;
            for _ in 0..calls {
                let result = program.test_run(TestRunOptions {
                    data_in: Some(frame),
                    ctx_in: Some(&ctx),
                    repeat,
                    ..TestRunOptions::default()
                })?;
                ensure!(
                    result.return_value == verdict,
                    "verdict {} instead of {verdict}",
                    result.return_value
                );
                total += result.duration;
            }
            Ok(total.as_nanos() as f64 / f64::from(calls))
        })
    }

    /// Runs the gateway's program once on `frame` arriving on `ingress` (in the gateway
    /// namespace), checks the verdict, and returns the frame as the program left it (translations
    /// change its size). A wrong verdict is reported with the counters that the run moved, which
    /// say why.
    pub fn run_gateway_once(
        &mut self,
        frame: &[u8],
        ingress: u32,
        verdict: u32,
    ) -> anyhow::Result<Vec<u8>> {
        let before = self.gateway_counters()?;
        let result = self.with_gateway_program(|bench, gateway| {
            bench.run_once(gateway, frame, ingress, verdict)
        });
        if result.is_err() {
            let moved: BTreeMap<String, u64> = self
                .gateway_counters()?
                .into_iter()
                .filter_map(|(name, value)| {
                    let delta = value - before.get(&name).copied().unwrap_or(0);
                    (delta > 0).then_some((name, delta))
                })
                .collect();
            return result.with_context(|| format!("gateway counters moved: {moved:?}"));
        }
        result
    }

    /// Runs `program` once on `frame` arriving on `ingress` (in the gateway namespace), checks
    /// the verdict, and returns the frame as the program left it (translations change its size).
    pub fn run_once(
        &self,
        program: &Xdp,
        frame: &[u8],
        ingress: u32,
        verdict: u32,
    ) -> anyhow::Result<Vec<u8>> {
        let ctx = programs::xdp_md(frame.len(), ingress);
        self.topology.gateway.enter(|| {
            // Room for any header the program may push in front.
            let mut out = vec![0u8; frame.len() + 256];
            let result = program.test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx),
                ..TestRunOptions::default()
            })?;
            ensure!(
                result.return_value == verdict,
                "verdict {} instead of {verdict}",
                result.return_value
            );
            out.truncate(result.data_size_out as usize);
            Ok(out)
        })
    }

    pub fn ifindex_vpc(&self) -> u32 {
        self.ifindex.vpc
    }

    pub fn ifindex_inet(&self) -> u32 {
        self.ifindex.inet
    }

    pub fn programs(&self) -> &BenchPrograms {
        &self.programs
    }

    /// The public endpoint (address, port) of the gateway's NAT44 session whose private side is
    /// `private`, from the session's IN half in CONNTRACK.
    pub fn nat_public_endpoint(
        &mut self,
        private: (std::net::Ipv4Addr, u16),
    ) -> anyhow::Result<(std::net::Ipv4Addr, u16)> {
        use gateway_common::conntrack::kind;
        let entries = self.gateway()?.dataplane.conntrack()?;
        let out = entries
            .iter()
            .find(|(key, _)| {
                key.kind == kind::NAT44_OUT
                    && key.inside_addr[..4] == private.0.octets()
                    && key.inside_port == private.1
            })
            .map(|(key, _)| key)
            .with_context(|| format!("no NAT44 session of {}:{}", private.0, private.1))?;
        // The IN half shares the destination; its inside endpoint is the public one.
        let public = entries
            .iter()
            .find(|(key, _)| {
                key.kind == kind::NAT44_IN
                    && key.remote_addr == out.remote_addr
                    && key.remote_port == out.remote_port
                    && key.protocol == out.protocol
            })
            .map(|(key, _)| key)
            .context("the NAT44 session has no IN half")?;
        let addr: [u8; 4] = public.inside_addr[..4]
            .try_into()
            .context("a 4-byte address")?;
        Ok((addr.into(), public.inside_port))
    }

    /// The loaded gateway program and the bench (for [`Bench::run_cost`]).
    pub fn with_gateway_program<T>(
        &mut self,
        f: impl FnOnce(&Bench, &Xdp) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        self.set_variant(Variant::Kernel, Direction::Outbound)?;
        let mut gateway = self.gateway.take().context("the gateway is not loaded")?;
        let result = gateway
            .dataplane
            .program()
            .and_then(|program| f(self, program));
        self.gateway = Some(gateway);
        result
    }
}

/// Sends `frames` out of `socket` (see [`Bench::prime`]), at most a window ahead of what the
/// sinks have counted; a round that loses frames is sent again, up to a few times.
fn send_all(
    programs: &BenchPrograms,
    socket: &PacketSocket,
    frames: &[Vec<u8>],
) -> anyhow::Result<()> {
    const WINDOW: u64 = 128;
    const ROUNDS: usize = 5;
    // Everything the sinks count: the generator's port or not.
    let at_sinks = || -> anyhow::Result<u64> {
        let (packets, _, other) = programs.sink()?;
        Ok(packets + other)
    };
    let total = frames.len() as u64;
    'rounds: for _ in 0..ROUNDS {
        check_stop()?;
        let start = at_sinks()?;
        let arrived = || -> anyhow::Result<u64> { Ok(at_sinks()?.saturating_sub(start)) };
        for (sent, frame) in frames.iter().enumerate() {
            let sent = sent as u64;
            if sent.is_multiple_of(32)
                && wait_until(sent.saturating_sub(WINDOW), arrived)? + WINDOW < sent
            {
                // Frames were lost: this round cannot complete.
                continue 'rounds;
            }
            socket
                .send(frame)
                .with_context(|| format!("sending frame {sent} of {total}"))?;
        }
        if wait_until(total, arrived)? >= total {
            return Ok(());
        }
    }
    bail!("{total} frames did not all arrive at the far end in {ROUNDS} rounds")
}

/// Polls `arrived` until it reaches `target` or has not grown for 20 ms (what is missing is lost);
/// returns its last value.
fn wait_until(
    target: u64,
    mut arrived: impl FnMut() -> anyhow::Result<u64>,
) -> anyhow::Result<u64> {
    let mut last = arrived()?;
    let mut since = Instant::now();
    while last < target && since.elapsed() < Duration::from_millis(20) {
        std::thread::sleep(Duration::from_micros(100));
        let now = arrived()?;
        if now != last {
            last = now;
            since = Instant::now();
        }
    }
    Ok(last)
}

/// The flow index of a generated frame, from its source address and port.
fn flow_index_of(spec: &FrameSpec, frame: &[u8]) -> Option<u32> {
    let (src_low, port_at) = match spec.src {
        IpAddr::V4(_) => (u32::from_be_bytes(frame.get(26..30)?.try_into().ok()?), 34),
        IpAddr::V6(_) => (u32::from_be_bytes(frame.get(34..38)?.try_into().ok()?), 54),
    };
    let base_low = match spec.src {
        IpAddr::V4(addr) => u32::from(addr),
        IpAddr::V6(addr) => u128::from(addr) as u32,
    };
    let port = u16::from_be_bytes(frame.get(port_at..port_at + 2)?.try_into().ok()?);
    let addr_index = src_low.wrapping_sub(base_low);
    let port_index = u32::from(port.wrapping_sub(super::frame::FIRST_SOURCE_PORT));
    let index = addr_index | (port_index << spec.addr_bits);
    (index < spec.flows).then_some(index)
}

/// The gateway must have forwarded the packets itself: if it handed them to the kernel, the
/// kernel forwarded them (untranslated) and the numbers would be the kernel's.
fn check_gateway_handled(counters: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    let received = counters.get("rx_packets").copied().unwrap_or(0);
    let handed: u64 = counters
        .iter()
        .filter(|(name, _)| name.starts_with("pass_"))
        .map(|(_, value)| value)
        .sum();
    let dropped: u64 = counters
        .iter()
        .filter(|(name, _)| name.starts_with("drop_"))
        .map(|(_, value)| value)
        .sum();
    ensure!(received > 0, "the gateway program saw no packet");
    ensure!(
        (handed + dropped) * 100 <= received,
        "the gateway did not forward the benchmark traffic itself: {counters:?}"
    );
    Ok(())
}

/// For a flood: the gateway itself must have dropped the packets as unsolicited, not handed
/// them to the kernel or dropped them for another reason.
fn check_gateway_dropped(counters: &BTreeMap<String, u64>) -> anyhow::Result<()> {
    let received = counters.get("rx_packets").copied().unwrap_or(0);
    let unsolicited: u64 = counters
        .iter()
        .filter(|(name, _)| name.starts_with("drop_eigw_unsolicited_"))
        .map(|(_, value)| value)
        .sum();
    ensure!(received > 0, "the gateway program saw no packet");
    ensure!(
        unsolicited * 100 >= received * 99,
        "the gateway did not drop the flood as unsolicited: {counters:?}"
    );
    Ok(())
}

/// What one variant of S2 did (see [`Bench::new_connections`]).
pub struct NewConnectionsFound {
    pub variant: Variant,
    /// New connections per second, millions, per trial.
    pub mcps_trials: Vec<f64>,
    pub reached: u64,
    pub limit: u64,
    /// How long the generator ran to fill the table.
    pub fill_seconds: f64,
    pub capacity_note: String,
    pub slab_bytes_per_connection: Option<f64>,
    pub table_bytes_per_connection: Option<f64>,
    pub memory_note: String,
    /// Non-zero gateway counters over the ours trials.
    pub counters: BTreeMap<String, u64>,
}

/// Bytes in slab caches now: active objects x object size, over every cache of /proc/slabinfo.
fn slab_bytes() -> anyhow::Result<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").context("reading /proc/slabinfo")?;
    Ok(slab_bytes_in(&text))
}

/// [`slab_bytes`] of a /proc/slabinfo text (two header lines, then `name active_objs num_objs
/// objsize ...`).
fn slab_bytes_in(text: &str) -> u64 {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let mut fields = line.split_whitespace().skip(1);
            let active: u64 = fields.next()?.parse().ok()?;
            let _total = fields.next()?;
            let size: u64 = fields.next()?.parse().ok()?;
            Some(active * size)
        })
        .sum()
}

/// The object size of one slab cache in /proc/slabinfo.
fn slab_object_size(cache: &str) -> anyhow::Result<Option<u64>> {
    let text = std::fs::read_to_string("/proc/slabinfo").context("reading /proc/slabinfo")?;
    Ok(slab_object_size_in(&text, cache))
}

fn slab_object_size_in(text: &str, cache: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        (fields.next()? == cache)
            .then(|| fields.nth(2)?.parse().ok())
            .flatten()
    })
}

/// `memlock` of every map the gateway program uses (fdinfo: what the kernel charges for the
/// map; for maps that are not preallocated it grows with the entries), and CONNTRACK's max
/// entries.
fn gateway_map_memory(program: &Xdp) -> anyhow::Result<(u64, Option<u32>)> {
    use std::os::fd::{AsFd as _, AsRawFd as _};
    let ids = program
        .info()
        .context("reading the gateway program's info")?
        .map_ids()
        .context("reading the gateway program's map ids")?
        .unwrap_or_default();
    let mut total = 0;
    let mut conntrack_max = None;
    for id in ids {
        let info = aya::maps::MapInfo::from_id(id).with_context(|| format!("map {id}"))?;
        if info.name_as_str() == Some("CONNTRACK") {
            conntrack_max = Some(info.max_entries());
        }
        let fd = info.fd().with_context(|| format!("an fd of map {id}"))?;
        let path = format!("/proc/self/fdinfo/{}", fd.as_fd().as_raw_fd());
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        total += text
            .lines()
            .find_map(|line| line.strip_prefix("memlock:"))
            .and_then(|value| value.trim().parse::<u64>().ok())
            .with_context(|| format!("no memlock in {path}"))?;
    }
    Ok((total, conntrack_max))
}

impl Bench {
    /// Empties the connection table of `variant` (ours: a fresh gateway with `config`; nftables:
    /// a conntrack flush in the gateway namespace).
    fn empty_table(&mut self, variant: Variant, config: &str) -> anyhow::Result<()> {
        match variant {
            Variant::Ours => self.fresh_gateway_with(config),
            Variant::NftablesNat => {
                // The ruleset on and off first: it loads conntrack and NAT where they are
                // modules, so that the flush and the counts below find them.
                self.set_variant(Variant::NftablesNat, Direction::Outbound)?;
                self.set_variant(Variant::Kernel, Direction::Outbound)?;
                self.topology
                    .gateway
                    .enter(nftables::flush_conntrack)
                    .context("flushing the gateway namespace's conntrack")?;
                let (count, _) = nftables::conntrack_count(&self.topology.gateway)?;
                ensure!(count == 0, "{count} conntrack entries left after the flush");
                Ok(())
            }
            _ => bail!("{} has no connection table", variant.name()),
        }
    }

    /// A cheap count of the connections `variant` made or holds (ours: NAT mappings created, one
    /// per session with endpoint-independent mapping).
    fn connections_so_far(&mut self, variant: Variant) -> anyhow::Result<u64> {
        match variant {
            Variant::Ours => Ok(self
                .gateway_counters()?
                .get("nat_mapping_created")
                .copied()
                .unwrap_or(0)),
            _ => Ok(self.connections(variant)?.0),
        }
    }

    /// Connections `variant` holds now, and its limit.
    fn connections(&mut self, variant: Variant) -> anyhow::Result<(u64, u64)> {
        match variant {
            Variant::Ours => {
                let gateway = self.gateway()?;
                let entries = gateway.dataplane.conntrack()?.len() as u64;
                let (_, max) = gateway_map_memory(gateway.dataplane.program()?)?;
                Ok((entries / 2, u64::from(max.unwrap_or(0)) / 2))
            }
            Variant::NftablesNat => nftables::conntrack_count(&self.topology.gateway),
            _ => bail!("{} has no connection table", variant.name()),
        }
    }

    /// S2: every generated packet is a new flow (`spec` has more flows than a trial sends).
    /// Interleaved trials from an empty table give the new connections per second; then one
    /// longer run per variant fills the table, for the capacity reached and the memory it took.
    pub fn new_connections(
        &mut self,
        spec: &FrameSpec,
        config: &str,
        variants: &[Variant],
        window: Duration,
        (fill, max_fills): (Duration, usize),
    ) -> anyhow::Result<Vec<NewConnectionsFound>> {
        spec.validate()?;
        let template = spec.frame(0);
        self.programs
            .set_generator(&programs::generator_config(spec))?;
        self.self_test(spec, &template)
            .context("S2: generator self-test")?;
        let how = (Direction::Outbound, Metric::Delivered);
        let mut found: Vec<NewConnectionsFound> = variants
            .iter()
            .map(|variant| NewConnectionsFound {
                variant: *variant,
                mcps_trials: Vec::new(),
                reached: 0,
                limit: 0,
                fill_seconds: 0.0,
                capacity_note: String::new(),
                slab_bytes_per_connection: None,
                table_bytes_per_connection: None,
                memory_note: String::new(),
                counters: BTreeMap::new(),
            })
            .collect();
        // Quick runs only prove that it works: one round (every round reloads the gateway).
        let rounds = if self.options.quick {
            1
        } else {
            self.options.trials
        };
        for round in 0..rounds {
            for slot in 0..variants.len() {
                let variant = variants[slot];
                self.empty_table(variant, config)?;
                let generated = self.programs.generated()?;
                let before = match variant {
                    Variant::Ours => Some(self.gateway_counters()?),
                    _ => None,
                };
                let sample = self.trial(variant, how, &template, window)?;
                let used = self.programs.generated()? - generated;
                ensure!(
                    used < u64::from(spec.flows),
                    "S2: the generator sent {used} frames in one trial, more than its {} flows",
                    spec.flows
                );
                if let Some(before) = before {
                    for (name, value) in self.gateway_counters()? {
                        let delta = value - before.get(&name).copied().unwrap_or(0);
                        if delta > 0 {
                            *found[slot].counters.entry(name).or_default() += delta;
                        }
                    }
                }
                ensure!(
                    sample.delivered > 0,
                    "S2, {}: no packet reached the sink ({} sent)",
                    variant.name(),
                    sample.sent
                );
                eprintln!(
                    "  S2 new connections {:<9} trial {}: {:6.3} M/s, {:6.3} Mpps sent",
                    variant.name(),
                    round + 1,
                    sample.delivered_mpps(),
                    sample.sent_mpps()
                );
                found[slot].mcps_trials.push(sample.delivered_mpps());
            }
        }
        if let Some(ours) = found.iter().find(|run| run.variant == Variant::Ours) {
            check_gateway_handled(&ours.counters).context("S2")?;
            let created = ours
                .counters
                .get("nat_mapping_created")
                .copied()
                .unwrap_or(0);
            ensure!(
                created > 0,
                "S2: the gateway created no NAT mapping: {:?}",
                ours.counters
            );
        }
        for run in &mut found {
            let variant = run.variant;
            self.empty_table(variant, config)?;
            let slab0 = slab_bytes()?;
            let map0 = match variant {
                Variant::Ours => Some(gateway_map_memory(self.gateway()?.dataplane.program()?)?.0),
                _ => None,
            };
            let counters0 = match variant {
                Variant::Ours => Some(self.gateway_counters()?),
                _ => None,
            };
            // Runs of `fill` until the table stops growing (less than 1% more in a run), at most
            // `max_fills`.
            let mut filled = Duration::ZERO;
            let mut last = 0;
            for _ in 0..max_fills {
                check_stop()?;
                self.trial(variant, how, &template, fill)?;
                filled += fill;
                let now = self.connections_so_far(variant)?;
                if now <= last + last / 100 {
                    break;
                }
                last = now;
            }
            self.set_variant(Variant::Kernel, Direction::Outbound)?;
            let slab1 = slab_bytes()?;
            let (reached, limit) = self.connections(variant)?;
            run.reached = reached;
            run.limit = limit;
            run.fill_seconds = filled.as_secs_f64();
            run.slab_bytes_per_connection =
                (reached > 0).then(|| (slab1 as f64 - slab0 as f64) / reached as f64);
            match (variant, map0, counters0) {
                (Variant::Ours, Some(map0), Some(counters0)) => {
                    let map1 = gateway_map_memory(self.gateway()?.dataplane.program()?)?.0;
                    run.table_bytes_per_connection =
                        (reached > 0).then(|| (map1 as f64 - map0 as f64) / reached as f64);
                    let counters1 = self.gateway_counters()?;
                    let delta = |name: &str| {
                        counters1.get(name).copied().unwrap_or(0)
                            - counters0.get(name).copied().unwrap_or(0)
                    };
                    run.capacity_note = format!(
                        "{reached} sessions ({} entries of CONNTRACK, two per session) after {:.1} s \
                         of new flows; refused meanwhile: {} for a full table \
                         (drop_conntrack_full), {} for want of a free public port within the probe \
                         bound (nat_error_port_allocation; 8 public IPs x 64512 ports, one \
                         destination).",
                        reached * 2,
                        filled.as_secs_f64(),
                        delta("drop_conntrack_full"),
                        delta("nat_error_port_allocation"),
                    );
                    run.memory_note = "Table bytes: growth of the gateway maps' fdinfo memlock \
                                       (key + value + hash-table element overhead of the two \
                                       CONNTRACK halves and the two NAT_MAPPINGS entries per \
                                       session, not preallocated), without the fixed bucket \
                                       arrays."
                        .into();
                }
                _ => {
                    let object = slab_object_size("nf_conntrack")?;
                    run.table_bytes_per_connection = object.map(|size| size as f64);
                    run.capacity_note = format!(
                        "{reached} connections in the namespace's conntrack after {:.1} s of new \
                         flows (nf_conntrack_max {limit}; at the limit the kernel evicts \
                         unreplied connections to admit new ones).",
                        filled.as_secs_f64(),
                    );
                    run.memory_note = format!(
                        "Table bytes: one nf_conntrack slab object ({}), without its extensions \
                         (NAT, kmalloc'd) and the fixed hash buckets.",
                        object.map_or("not in /proc/slabinfo".into(), |size| format!(
                            "{size} bytes"
                        ))
                    );
                }
            }
            eprintln!(
                "  S2 fill {:<9}: {reached} connections (limit {limit}), slab {:?} B/connection",
                variant.name(),
                run.slab_bytes_per_connection.map(|bytes| bytes.round())
            );
        }
        // The next scenario starts from clean tables.
        self.topology
            .gateway
            .enter(nftables::flush_conntrack)
            .context("flushing the gateway namespace's conntrack")?;
        Ok(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLABINFO: &str = "slabinfo - version: 2.1
# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> <sharedavail>
nf_conntrack       66656  66656    256   16    1 : tunables    0    0    0 : slabdata   4166   4166      0
kmalloc-64          1000   1024     64   64    1 : tunables    0    0    0 : slabdata     16     16      0
";

    #[test]
    fn reads_slabinfo() {
        assert_eq!(slab_bytes_in(SLABINFO), 66656 * 256 + 1000 * 64);
        assert_eq!(slab_object_size_in(SLABINFO, "nf_conntrack"), Some(256));
        assert_eq!(slab_object_size_in(SLABINFO, "kmalloc-64"), Some(64));
        assert_eq!(slab_object_size_in(SLABINFO, "nf_conntrack_expect"), None);
    }
}
