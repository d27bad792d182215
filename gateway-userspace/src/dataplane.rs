//! The kernel side as the controller sees it: load the XDP object, turn a validated [`Config`]
//! into map contents (a [`MapPlan`], pure and testable), write them, attach to interfaces, and
//! read counters and flows back.

use std::{collections::HashMap as StdHashMap, ffi::CString};

use anyhow::{Context as _, anyhow, bail};
use aya::{
    Ebpf,
    maps::{
        Array, DevMapHash, HashMap, MapData, PerCpuArray, PerCpuHashMap, ProgramArray,
        lpm_trie::{Key, LpmTrie},
    },
    programs::{Xdp, XdpMode, xdp::XdpLinkId},
};
use gateway_common::{
    Counter,
    conntrack::{ConnEntry, ConnKey, Timeouts, kind},
    maps::{
        FlowKey, FlowStats, InterfaceInfo, RouteKeyV4, RouteKeyV6, RouteTarget, SubnetInfo,
        XDP_PROGRAM, family, names, role, tail, target,
    },
    nat::{
        MAX_NAT_GATEWAYS, MAX_PUBLIC_IPS, NatGatewayInfo, NatMapping, NatMappingKey, mapping,
        mapping_mode, udp_zero_checksum,
    },
};
use ipnet::IpNet;

use crate::config::{self, Config, InterfaceRole};

/// Everything the maps will hold for one configuration, computed before any map is touched.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct MapPlan {
    /// (ifindex, info) of every attached interface.
    pub interfaces: Vec<(u32, InterfaceInfo)>,
    pub subnets_v4: Vec<(u32, [u8; 4], SubnetInfo)>,
    pub subnets_v6: Vec<(u32, [u8; 16], SubnetInfo)>,
    /// (LPM prefix length including the route-table bits, key, target).
    pub routes_v4: Vec<(u32, RouteKeyV4, RouteTarget)>,
    pub routes_v6: Vec<(u32, RouteKeyV6, RouteTarget)>,
    /// (private, public) Elastic IP associations.
    pub elastic_ips: Vec<([u8; 4], [u8; 4])>,
    /// Connection-tracking idle timeouts.
    pub timeouts: Timeouts,
    /// The NAT gateways' settings, by index.
    pub nat_gateways: Vec<NatGatewayInfo>,
    /// (public address, NAT gateway index).
    pub nat_public_ips: Vec<([u8; 4], u32)>,
}

/// The kernel's form of a NAT gateway's settings.
pub fn nat_gateway_info(nat: &config::NatGateway) -> NatGatewayInfo {
    let mut info = NatGatewayInfo {
        public_ip_count: nat.public_ips.len().min(MAX_PUBLIC_IPS) as u8,
        mapping: match nat.mapping {
            config::NatMappingMode::EndpointIndependent => mapping_mode::ENDPOINT_INDEPENDENT,
            config::NatMappingMode::EndpointDependent => mapping_mode::ENDPOINT_DEPENDENT,
        },
        rst_on_idle_timeout: nat.rst_on_idle_timeout as u8,
        port_min: nat.port_range.0,
        port_max: nat.port_range.1,
        ..NatGatewayInfo::default()
    };
    for (slot, address) in info.public_ips.iter_mut().zip(&nat.public_ips) {
        *slot = address.octets();
    }
    if let Some(prefix) = nat.nat64_prefix {
        info.nat64_prefix = prefix.network().octets();
        info.nat64_prefix_len = prefix.prefix_len();
    }
    info.nat64_udp_zero_checksum = match nat.nat64_udp_zero_checksum {
        config::UdpZeroChecksum::Compute => udp_zero_checksum::COMPUTE,
        config::UdpZeroChecksum::Drop => udp_zero_checksum::DROP,
    };
    info
}

fn nanos(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

/// The kernel's form of the configured timeouts.
pub fn timeouts_of(conntrack: &config::Conntrack) -> Timeouts {
    Timeouts {
        tcp_established_ns: nanos(conntrack.tcp_established_idle),
        tcp_transitory_ns: nanos(conntrack.tcp_transitory_idle),
        udp_ns: nanos(conntrack.udp_idle),
        icmp_ns: nanos(conntrack.icmp_idle),
        other_ns: nanos(conntrack.other_idle),
    }
}

/// Resolves an interface name to its ifindex in the current network namespace.
pub fn ifindex_of(name: &str) -> Option<u32> {
    let name = CString::new(name).ok()?;
    // SAFETY: valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    (index != 0).then_some(index)
}

fn target_of(route_target: config::RouteTarget) -> RouteTarget {
    let (kind, gateway_index) = match route_target {
        config::RouteTarget::Local => (target::LOCAL, 0),
        config::RouteTarget::Blackhole => (target::BLACKHOLE, 0),
        config::RouteTarget::InternetGateway => (target::INTERNET_GATEWAY, 0),
        config::RouteTarget::NatGateway(index) => (target::NAT_GATEWAY, index as u32),
        config::RouteTarget::EgressOnlyInternetGateway(index) => {
            (target::EGRESS_ONLY_INTERNET_GATEWAY, index as u32)
        }
    };
    RouteTarget {
        kind,
        gateway_index,
    }
}

impl MapPlan {
    /// Builds the plan. `resolve` maps an interface name to its ifindex; an interface that does
    /// not exist is an error naming the config line.
    pub fn new(config: &Config, resolve: impl Fn(&str) -> Option<u32>) -> anyhow::Result<MapPlan> {
        let mut plan = MapPlan {
            timeouts: timeouts_of(&config.conntrack),
            ..MapPlan::default()
        };
        for interface in &config.interfaces {
            let ifindex = resolve(&interface.name).ok_or_else(|| {
                anyhow!(
                    "line {}: interfaces: interface {:?} does not exist in this network namespace",
                    interface.line,
                    interface.name
                )
            })?;
            let role = match interface.role {
                InterfaceRole::Vpc => role::VPC,
                InterfaceRole::Internet => role::INTERNET,
            };
            plan.interfaces
                .push((ifindex, InterfaceInfo { role, _reserved: 0 }));
        }
        for (index, subnet) in config.subnets.iter().enumerate() {
            let info = SubnetInfo {
                route_table: subnet.route_table as u32,
                subnet_index: index as u32,
            };
            if let Some(cidr) = subnet.ipv4_cidr {
                plan.subnets_v4
                    .push((cidr.prefix_len() as u32, cidr.network().octets(), info));
            }
            if let Some(cidr) = subnet.ipv6_cidr {
                plan.subnets_v6
                    .push((cidr.prefix_len() as u32, cidr.network().octets(), info));
            }
        }
        for (table_index, table) in config.route_tables.iter().enumerate() {
            let route_table = (table_index as u32).to_be_bytes();
            for route in &table.routes {
                let target = target_of(route.target);
                match route.destination {
                    IpNet::V4(net) => plan.routes_v4.push((
                        32 + net.prefix_len() as u32,
                        RouteKeyV4 {
                            route_table,
                            destination: net.network().octets(),
                        },
                        target,
                    )),
                    IpNet::V6(net) => plan.routes_v6.push((
                        32 + net.prefix_len() as u32,
                        RouteKeyV6 {
                            route_table,
                            destination: net.network().octets(),
                        },
                        target,
                    )),
                }
            }
        }
        if config.nat_gateways.len() > MAX_NAT_GATEWAYS as usize {
            bail!(
                "{} NAT gateways configured; this dataplane supports {MAX_NAT_GATEWAYS}",
                config.nat_gateways.len()
            );
        }
        for (index, nat) in config.nat_gateways.iter().enumerate() {
            plan.nat_gateways.push(nat_gateway_info(nat));
            for address in &nat.public_ips {
                plan.nat_public_ips.push((address.octets(), index as u32));
            }
        }
        if let Some(igw) = &config.internet_gateway {
            for eip in &igw.elastic_ips {
                plan.elastic_ips
                    .push((eip.private.octets(), eip.public.octets()));
            }
        }
        Ok(plan)
    }
}

/// The loaded XDP object.
pub struct Dataplane {
    ebpf: Ebpf,
    links: Vec<XdpLinkId>,
    /// Held open: the kernel empties a program array once user space closes it.
    _tail_programs: ProgramArray<MapData>,
}

fn map_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> anyhow::Result<&'a mut aya::maps::Map> {
    ebpf.map_mut(name)
        .with_context(|| format!("map {name} missing from the eBPF object"))
}

impl Dataplane {
    /// Loads the embedded object and the XDP program into the kernel (runs the verifier).
    pub fn load() -> anyhow::Result<Dataplane> {
        let mut ebpf = Ebpf::load(crate::EBPF_OBJECT).context("loading the eBPF object")?;
        let program: &mut Xdp = ebpf
            .program_mut(XDP_PROGRAM)
            .context("XDP program missing from the object")?
            .try_into()
            .context("program is not XDP")?;
        program
            .load()
            .context("the kernel refused the XDP program (verifier)")?;
        let mut tail_programs = ProgramArray::try_from(
            ebpf.take_map(names::TAIL_PROGRAMS)
                .context("map TAIL_PROGRAMS missing from the eBPF object")?,
        )?;
        for (slot, name) in tail::PROGRAMS.iter().enumerate() {
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .with_context(|| format!("XDP program {name} missing from the object"))?
                .try_into()
                .with_context(|| format!("program {name} is not XDP"))?;
            program
                .load()
                .with_context(|| format!("the kernel refused XDP program {name} (verifier)"))?;
            tail_programs
                .set(slot as u32, program.fd()?, 0)
                .with_context(|| format!("installing XDP program {name}"))?;
        }
        Ok(Dataplane {
            ebpf,
            links: Vec::new(),
            _tail_programs: tail_programs,
        })
    }

    /// The XDP program, for attaching or `BPF_PROG_TEST_RUN`.
    pub fn program(&mut self) -> anyhow::Result<&mut Xdp> {
        Ok(self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .context("XDP program missing from the object")?
            .try_into()?)
    }

    /// Writes the plan into the maps (which must be empty: a fresh load).
    pub fn apply(&mut self, plan: &MapPlan) -> anyhow::Result<()> {
        {
            let mut interfaces: HashMap<_, u32, InterfaceInfo> =
                HashMap::try_from(map_mut(&mut self.ebpf, names::INTERFACES)?)?;
            for (ifindex, info) in &plan.interfaces {
                interfaces.insert(ifindex, info, 0)?;
            }
        }
        {
            let mut devices =
                DevMapHash::try_from(map_mut(&mut self.ebpf, names::REDIRECT_DEVICES)?)?;
            for (ifindex, _) in &plan.interfaces {
                devices
                    .insert(*ifindex, *ifindex, None, 0)
                    .with_context(|| format!("adding ifindex {ifindex} to the redirect map"))?;
            }
        }
        {
            let mut subnets: LpmTrie<_, [u8; 4], SubnetInfo> =
                LpmTrie::try_from(map_mut(&mut self.ebpf, names::SUBNETS_V4)?)?;
            for (len, prefix, info) in &plan.subnets_v4 {
                subnets.insert(&Key::new(*len, *prefix), info, 0)?;
            }
        }
        {
            let mut subnets: LpmTrie<_, [u8; 16], SubnetInfo> =
                LpmTrie::try_from(map_mut(&mut self.ebpf, names::SUBNETS_V6)?)?;
            for (len, prefix, info) in &plan.subnets_v6 {
                subnets.insert(&Key::new(*len, *prefix), info, 0)?;
            }
        }
        {
            let mut routes: LpmTrie<_, RouteKeyV4, RouteTarget> =
                LpmTrie::try_from(map_mut(&mut self.ebpf, names::ROUTES_V4)?)?;
            for (len, key, target) in &plan.routes_v4 {
                routes.insert(&Key::new(*len, *key), target, 0)?;
            }
        }
        {
            let mut routes: LpmTrie<_, RouteKeyV6, RouteTarget> =
                LpmTrie::try_from(map_mut(&mut self.ebpf, names::ROUTES_V6)?)?;
            for (len, key, target) in &plan.routes_v6 {
                routes.insert(&Key::new(*len, *key), target, 0)?;
            }
        }
        {
            let mut by_private: HashMap<_, [u8; 4], [u8; 4]> =
                HashMap::try_from(map_mut(&mut self.ebpf, names::ELASTIC_IP_BY_PRIVATE)?)?;
            for (private, public) in &plan.elastic_ips {
                by_private.insert(private, public, 0)?;
            }
        }
        {
            let mut timeouts: Array<_, Timeouts> =
                Array::try_from(map_mut(&mut self.ebpf, names::CONNTRACK_TIMEOUTS)?)?;
            timeouts.set(0, plan.timeouts, 0)?;
        }
        {
            let mut gateways: Array<_, NatGatewayInfo> =
                Array::try_from(map_mut(&mut self.ebpf, names::NAT_GATEWAYS)?)?;
            for (index, info) in plan.nat_gateways.iter().enumerate() {
                gateways.set(index as u32, *info, 0)?;
            }
        }
        {
            let mut public_ips: HashMap<_, [u8; 4], u32> =
                HashMap::try_from(map_mut(&mut self.ebpf, names::NAT_PUBLIC_IPS)?)?;
            for (address, index) in &plan.nat_public_ips {
                public_ips.insert(address, index, 0)?;
            }
        }
        {
            let mut by_public: HashMap<_, [u8; 4], [u8; 4]> =
                HashMap::try_from(map_mut(&mut self.ebpf, names::ELASTIC_IP_BY_PUBLIC)?)?;
            for (private, public) in &plan.elastic_ips {
                by_public.insert(public, private, 0)?;
            }
        }
        Ok(())
    }

    /// Attaches the program to every interface of the plan.
    pub fn attach(&mut self, plan: &MapPlan, mode: XdpMode) -> anyhow::Result<()> {
        for (ifindex, _) in &plan.interfaces {
            let link = self
                .program()?
                .attach_to_if_index(*ifindex, mode)
                .with_context(|| format!("attaching XDP to ifindex {ifindex} ({mode:?} mode)"))?;
            self.links.push(link);
        }
        Ok(())
    }

    /// Detaches from every interface.
    pub fn detach(&mut self) -> anyhow::Result<()> {
        let links = std::mem::take(&mut self.links);
        for link in links {
            self.program()?.detach(link)?;
        }
        Ok(())
    }

    /// Every counter summed over the CPUs, in [`Counter::ALL`] order.
    pub fn counters(&self) -> anyhow::Result<Vec<(Counter, u64)>> {
        let map = self
            .ebpf
            .map(names::COUNTERS)
            .context("COUNTERS map missing")?;
        let counters: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map)?;
        Counter::ALL
            .iter()
            .map(|counter| {
                let values = counters.get(&(*counter as u32), 0)?;
                Ok((*counter, values.iter().sum()))
            })
            .collect()
    }

    /// A snapshot of the flow table with the CPUs' values combined.
    pub fn flows(&self) -> anyhow::Result<Vec<(FlowKey, FlowStats)>> {
        let map = self.ebpf.map(names::FLOWS).context("FLOWS map missing")?;
        let flows: PerCpuHashMap<&MapData, FlowKey, FlowStats> = PerCpuHashMap::try_from(map)?;
        let mut snapshot = Vec::new();
        for entry in flows.iter() {
            let (key, per_cpu) = match entry {
                Ok(entry) => entry,
                // Deleted between listing the key and reading it.
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(error) => return Err(error.into()),
            };
            if let Some(combined) = combine(per_cpu.iter()) {
                snapshot.push((key, combined));
            }
        }
        Ok(snapshot)
    }

    /// Deletes flows (idle ones, after they were logged).
    pub fn remove_flows(&mut self, keys: &[FlowKey]) -> anyhow::Result<()> {
        let mut flows: PerCpuHashMap<_, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(map_mut(&mut self.ebpf, names::FLOWS)?)?;
        for key in keys {
            match flows.remove(key) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                Err(error) => bail!("deleting a flow entry: {error}"),
            }
        }
        Ok(())
    }
}

impl Dataplane {
    /// The timeouts the dataplane runs with.
    pub fn timeouts(&self) -> anyhow::Result<Timeouts> {
        let map = self
            .ebpf
            .map(names::CONNTRACK_TIMEOUTS)
            .context("CONNTRACK_TIMEOUTS map missing")?;
        let timeouts: Array<&MapData, Timeouts> = Array::try_from(map)?;
        Ok(timeouts.get(&0, 0)?)
    }

    /// A snapshot of the connection-tracking table.
    pub fn conntrack(&self) -> anyhow::Result<Vec<(ConnKey, ConnEntry)>> {
        let map = self
            .ebpf
            .map(names::CONNTRACK)
            .context("CONNTRACK map missing")?;
        let table: HashMap<&MapData, ConnKey, ConnEntry> = HashMap::try_from(map)?;
        let mut entries = Vec::new();
        for entry in table.iter() {
            match entry {
                Ok(entry) => entries.push(entry),
                Err(aya::maps::MapError::KeyNotFound) => continue,
                Err(error) => return Err(error.into()),
            }
        }
        Ok(entries)
    }

    /// Deletes the entries idle for longer than their timeout at `now` (the dataplane's clock),
    /// re-reading each one just before deleting it so that a flow refreshed in between stays.
    /// A NAT session's two halves go together; an IN half whose OUT half no longer points back
    /// (replaced by a newer session) goes after a grace period; an endpoint-independent mapping
    /// goes when no session uses it any more and it has not been used for the grace period.
    pub fn sweep_conntrack(&mut self, timeouts: &Timeouts, now: u64) -> anyhow::Result<Sweep> {
        let snapshot = self.conntrack()?;
        let entries: StdHashMap<ConnKey, ConnEntry> = snapshot.iter().copied().collect();
        let mut table: HashMap<_, ConnKey, ConnEntry> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::CONNTRACK)?)?;
        let mut sweep = Sweep::default();
        for (key, entry) in &snapshot {
            let delete = match key.kind {
                kind::NAT44_IN => {
                    let out = nat_peer_key(key, entry);
                    let points_back = entries.get(&out).is_some_and(|session| {
                        session.translated_addr == key.inside_addr
                            && session.translated_port == key.inside_port
                    });
                    !points_back && now.saturating_sub(entry.created_ns) > NAT_GRACE_NS
                }
                _ => is_expired(timeouts, key, entry, now),
            };
            if !delete {
                continue;
            }
            match table.get(key, 0) {
                Ok(current)
                    if key.kind == kind::NAT44_IN || is_expired(timeouts, key, &current, now) => {}
                _ => continue,
            }
            if is_nat_out(key.kind) {
                let in_key = nat_peer_key(key, entry);
                if let Ok(peer) = table.get(&in_key, 0)
                    && peer.translated_addr == key.inside_addr
                    && peer.translated_port == key.inside_port
                {
                    let _ = table.remove(&in_key);
                }
                sweep.nat_idle_timeouts += 1;
                sweep.finished_nat_sessions.push((*key, *entry));
            }
            match table.remove(key) {
                Ok(()) => sweep.deleted += 1,
                Err(aya::maps::MapError::KeyNotFound) => {}
                Err(error) => bail!("deleting a conntrack entry: {error}"),
            }
        }
        // Mappings still used by a session.
        let in_use: std::collections::HashSet<(u8, [u8; 16], u16, u8)> = snapshot
            .iter()
            .filter(|(key, entry)| is_nat_out(key.kind) && !is_expired(timeouts, key, entry, now))
            .map(|(key, entry)| {
                (
                    key.protocol,
                    key.inside_addr,
                    key.inside_port,
                    entry.gateway,
                )
            })
            .collect();
        let mut mappings: HashMap<_, NatMappingKey, NatMapping> =
            HashMap::try_from(map_mut(&mut self.ebpf, names::NAT_MAPPINGS)?)?;
        let stale: Vec<(NatMappingKey, NatMapping)> = mappings
            .iter()
            .filter_map(Result::ok)
            .filter(|(key, value)| {
                key.kind == mapping::PRIVATE
                    && !in_use.contains(&(key.protocol, key.addr, key.port, key.gateway))
                    && now.saturating_sub(value.last_used_ns) > NAT_GRACE_NS
            })
            .collect();
        for (key, value) in stale {
            let public = NatMappingKey {
                addr: value.addr,
                port: value.port,
                kind: mapping::PUBLIC,
                ..key
            };
            if let Ok(reverse) = mappings.get(&public, 0)
                && reverse.addr == key.addr
                && reverse.port == key.port
            {
                let _ = mappings.remove(&public);
            }
            let _ = mappings.remove(&key);
            sweep.mappings_deleted += 1;
        }
        Ok(sweep)
    }
}

/// How long a NAT half or mapping without a session is kept (a session being made on another
/// CPU may still be about to use it).
pub const NAT_GRACE_NS: u64 = 10_000_000_000;

/// What one sweep did.
#[derive(Debug, Default, Clone)]
pub struct Sweep {
    /// Conntrack entries deleted (NAT IN halves deleted with their session not counted).
    pub deleted: usize,
    /// NAT sessions deleted because they were idle (AWS IdleTimeoutCount).
    pub nat_idle_timeouts: u64,
    /// Endpoint-independent mappings deleted.
    pub mappings_deleted: usize,
    /// The NAT sessions that ended (their OUT half), for the mapping log.
    pub finished_nat_sessions: Vec<(ConnKey, ConnEntry)>,
}

/// Whether `kind` is the OUT half of a NAT session (NAT44 or NAT64), which holds its state.
pub fn is_nat_out(kind: u8) -> bool {
    kind == kind::NAT44_OUT || kind == kind::NAT64_OUT
}

/// The key of the other half of a NAT session. The IN half is always IPv4 (the public side);
/// the OUT half is IPv6 when the IN half's private side is (NAT64).
pub fn nat_peer_key(key: &ConnKey, entry: &ConnEntry) -> ConnKey {
    let (peer_kind, peer_family) = if is_nat_out(key.kind) {
        (kind::NAT44_IN, family::IPV4)
    } else if entry.translated_family == family::IPV6 {
        (kind::NAT64_OUT, family::IPV6)
    } else {
        (kind::NAT44_OUT, family::IPV4)
    };
    ConnKey {
        inside_addr: entry.translated_addr,
        inside_port: entry.translated_port,
        kind: peer_kind,
        family: peer_family,
        ..*key
    }
}

/// Whether an entry has been idle for longer than its state's timeout.
pub fn is_expired(timeouts: &Timeouts, key: &ConnKey, entry: &ConnEntry, now: u64) -> bool {
    now.saturating_sub(entry.last_seen_ns) > timeouts.for_entry(key.protocol, entry.state)
}

/// Combines the per-CPU values of one flow: counts add up, times span all CPUs, flags OR.
pub fn combine<'a>(values: impl Iterator<Item = &'a FlowStats>) -> Option<FlowStats> {
    let mut combined: Option<FlowStats> = None;
    for value in values.filter(|value| value.packets > 0) {
        match &mut combined {
            None => combined = Some(*value),
            Some(total) => {
                total.packets += value.packets;
                total.bytes += value.bytes;
                total.first_seen_ns = total.first_seen_ns.min(value.first_seen_ns);
                total.last_seen_ns = total.last_seen_ns.max(value.last_seen_ns);
                total.tcp_flags |= value.tcp_flags;
            }
        }
    }
    combined
}
