//! The benchmark's own XDP programs (gateway-ebpf/src/bench.rs), loaded from the gateway's object
//! into an `Ebpf` instance of their own, and the userspace mirrors of their map values.

use std::net::IpAddr;

use anyhow::{Context as _, bail};
use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, DevMap, MapData, PerCpuArray},
    programs::{TestRun as _, TestRunAttrs, TestRunOptions, Xdp, XdpMode, xdp::XdpLinkId},
};

use super::{Protocol, frame::FrameSpec};

pub const GENERATOR: &str = "bench_generator";
pub const SINK: &str = "bench_sink";
pub const FWD_LIMIT: &str = "bench_fwd_limit";
pub const DROP: &str = "bench_drop";
pub const EMPTY: &str = "bench_empty";
const ALL: [&str; 5] = [GENERATOR, SINK, FWD_LIMIT, DROP, EMPTY];

/// XDP verdicts (uapi `enum xdp_action`).
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

pub use gateway_common::bench::{FwdLimitConfig, GeneratorConfig};

/// The generator's map value for frames described by `spec`.
pub fn generator_config(spec: &FrameSpec) -> GeneratorConfig {
    let (ip_check, l4_check) = spec.template_checksums();
    let mut config = GeneratorConfig {
        flows_mask: spec.flows - 1,
        addr_bits: spec.addr_bits,
        protocol: u32::from(spec.protocol.number()),
        src_port: super::frame::FIRST_SOURCE_PORT,
        dst_port: super::frame::BENCH_PORT,
        ttl: spec.ttl,
        ip_check,
        l4_check,
        ..GeneratorConfig::default()
    };
    config.macs[..6].copy_from_slice(&spec.dst_mac);
    config.macs[6..].copy_from_slice(&spec.src_mac);
    match (spec.src, spec.dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            config.family = 4;
            config.src[..4].copy_from_slice(&src.octets());
            config.dst[..4].copy_from_slice(&dst.octets());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            config.family = 6;
            config.src = src.octets();
            config.dst = dst.octets();
        }
        _ => unreachable!("FrameSpec::validate rejects mixed families"),
    }
    config
}

/// The kernel's `struct xdp_md` as `BPF_PROG_RUN` takes it: the frame's length and the interface
/// it arrives on (live frames also leave through it on XDP_TX).
pub fn xdp_md(frame_len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let fields = [0, frame_len as u32, 0, ingress_ifindex, 0, 0];
    let mut bytes = [0u8; 24];
    for (chunk, field) in bytes.chunks_mut(4).zip(fields) {
        chunk.copy_from_slice(&field.to_ne_bytes());
    }
    bytes
}

pub struct BenchPrograms {
    ebpf: Ebpf,
}

impl BenchPrograms {
    /// Loads the five programs. The object also holds the gateway's maps; they are shrunk to one
    /// entry here since this instance never runs the gateway.
    pub fn load() -> anyhow::Result<BenchPrograms> {
        let mut loader = EbpfLoader::new();
        for name in [
            "FLOWS",
            "CONNTRACK",
            "ELASTIC_IP_BY_PRIVATE",
            "ELASTIC_IP_BY_PUBLIC",
        ] {
            loader.map_max_entries(name, 1);
        }
        let mut ebpf = loader
            .load(gateway::EBPF_OBJECT)
            .context("loading the eBPF object for the benchmark programs")?;
        for name in ALL {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("{name} missing from the eBPF object"))?
                .try_into()
                .with_context(|| format!("{name} is not XDP"))?;
            program
                .load()
                .with_context(|| format!("the kernel refused {name} (verifier)"))?;
        }
        Ok(BenchPrograms { ebpf })
    }

    pub fn program(&self, name: &str) -> anyhow::Result<&Xdp> {
        Ok(self
            .ebpf
            .program(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?)
    }

    fn program_mut(&mut self, name: &str) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(name)
            .with_context(|| format!("{name} missing"))?
            .try_into()?)
    }

    /// Attaches `name` in native mode to `ifindex` (resolved in the calling thread's namespace).
    pub fn attach(&mut self, name: &str, ifindex: u32) -> anyhow::Result<XdpLinkId> {
        self.program_mut(name)?
            .attach_to_if_index(ifindex, XdpMode::Driver)
            .with_context(|| format!("attaching {name} to ifindex {ifindex} (native XDP)"))
    }

    pub fn detach(&mut self, name: &str, link: XdpLinkId) -> anyhow::Result<()> {
        self.program_mut(name)?
            .detach(link)
            .with_context(|| format!("detaching {name}"))
    }

    pub fn set_generator(&mut self, config: &GeneratorConfig) -> anyhow::Result<()> {
        let mut map: Array<_, GeneratorConfig> = Array::try_from(
            self.ebpf
                .map_mut("BENCH_GENERATOR")
                .context("BENCH_GENERATOR missing")?,
        )?;
        map.set(0, config, 0)
            .context("writing the generator config")
    }

    /// The static hop: write these MACs and redirect to `egress_ifindex` (resolved in the calling
    /// thread's namespace).
    pub fn set_fwd_limit(
        &mut self,
        dst_mac: [u8; 6],
        src_mac: [u8; 6],
        egress_ifindex: u32,
    ) -> anyhow::Result<()> {
        let mut config = FwdLimitConfig::default();
        config.macs[..6].copy_from_slice(&dst_mac);
        config.macs[6..].copy_from_slice(&src_mac);
        let mut map: Array<_, FwdLimitConfig> = Array::try_from(
            self.ebpf
                .map_mut("BENCH_FWD_LIMIT")
                .context("BENCH_FWD_LIMIT missing")?,
        )?;
        map.set(0, config, 0)
            .context("writing the fwd_limit config")?;
        let mut devices = DevMap::try_from(
            self.ebpf
                .map_mut("BENCH_FWD_LIMIT_DEVICE")
                .context("BENCH_FWD_LIMIT_DEVICE missing")?,
        )?;
        devices
            .set(0, egress_ifindex, None, 0)
            .with_context(|| format!("adding ifindex {egress_ifindex} to the fwd_limit devmap"))
    }

    fn per_cpu_sum(&self, map: &str, index: u32) -> anyhow::Result<u64> {
        let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(
            self.ebpf
                .map(map)
                .with_context(|| format!("{map} missing"))?,
        )?;
        Ok(array
            .get(&index, 0)
            .with_context(|| format!("reading {map}[{index}]"))?
            .iter()
            .sum())
    }

    /// Frames `bench_drop` has dropped so far.
    pub fn dropped(&self) -> anyhow::Result<u64> {
        self.per_cpu_sum("BENCH_DROPPED", 0)
    }

    /// Frames the generator has produced so far.
    pub fn generated(&self) -> anyhow::Result<u64> {
        self.per_cpu_sum("BENCH_GENERATED", 0)
    }

    /// (generator packets, their bytes, other frames) counted by the sink so far.
    pub fn sink(&self) -> anyhow::Result<(u64, u64, u64)> {
        Ok((
            self.per_cpu_sum("BENCH_SINK", 0)?,
            self.per_cpu_sum("BENCH_SINK", 1)?,
            self.per_cpu_sum("BENCH_SINK", 2)?,
        ))
    }

    /// Runs the generator once without live frames and returns the frame it wrote, to check it
    /// against the frame built in userspace.
    pub fn generate_one(&self, template: &[u8]) -> anyhow::Result<Vec<u8>> {
        let mut out = vec![0u8; template.len()];
        let result = self
            .program(GENERATOR)?
            .test_run(TestRunOptions {
                data_in: Some(template),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .context("BPF_PROG_TEST_RUN of the generator")?;
        if result.return_value != XDP_TX {
            bail!(
                "the generator returned {} instead of XDP_TX: is its config written?",
                result.return_value
            );
        }
        out.truncate(result.data_size_out as usize);
        Ok(out)
    }

    /// Sends `repeat` frames in live-frames mode out of `ifindex` (must be called from a thread
    /// in the generator's namespace).
    /// Runs the generator once in live-frames mode. `Ok(false)`: a signal interrupted the run
    /// (EINTR) — the driver's own stop signal, or any other one the process received; the caller
    /// decides whether to stop or to go on.
    pub fn generate_live(
        &self,
        template: &[u8],
        ctx: &[u8; 24],
        repeat: u32,
        batch: u32,
    ) -> anyhow::Result<bool> {
        // Live mode reports no verdict: the caller checks the generated and delivered counts.
        let result = self.program(GENERATOR)?.test_run(TestRunOptions {
            data_in: Some(template),
            ctx_in: Some(ctx),
            repeat,
            attrs: TestRunAttrs::new().xdp_live_frames(batch),
            ..TestRunOptions::default()
        });
        match result {
            Ok(_) => Ok(true),
            Err(aya::programs::ProgramError::SyscallError(aya::sys::SyscallError {
                io_error,
                ..
            })) if io_error.raw_os_error() == Some(libc::EINTR) => Ok(false),
            Err(error) => Err(error).context("BPF_PROG_RUN of the generator in live-frames mode"),
        }
    }
}

/// Protocol of a generator config, for the report.
pub fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Udp => "UDP",
        Protocol::Tcp => "TCP",
    }
}
