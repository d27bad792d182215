//! From snapshots of the kernel's cumulative per-flow counters to per-interval records.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use gateway_common::maps::{FlowKey, FlowStats, action, direction, family, target};

use super::{
    record::{Action, DEFAULT_VERSION, Family, FlowDirection, FlowRecord, LogStatus},
    tcp::aws_tcp_flags,
};

const NANOS_PER_SEC: i128 = 1_000_000_000;
const PROTO_TCP: u8 = 6;
const PROTO_ICMP: u8 = 1;
const PROTO_ICMPV6: u8 = 58;
const TCP_SYN: u8 = 0x02;
const TCP_ACK: u8 = 0x10;

/// AWS `traffic-path` codes the gateway can produce.
const TRAFFIC_PATH_SAME_VPC: u8 = 1;
const TRAFFIC_PATH_INTERNET_GATEWAY: u8 = 8;

/// Maps the dataplane's monotonic timestamps (`bpf_ktime_get_coarse_ns`) to Unix time.
///
/// The caller recomputes it at each flush so that wall-clock steps (NTP) show in new records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// Unix time in nanoseconds = monotonic nanoseconds + this.
    pub unix_offset_ns: i128,
}

impl Clock {
    /// From one reading of each clock taken at (nearly) the same moment.
    pub fn from_readings(monotonic_ns: u64, unix: SystemTime) -> Clock {
        // Before the epoch only happens with a broken clock; count it as negative time.
        let nanos = |d: Duration| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX);
        let unix_ns = match unix.duration_since(UNIX_EPOCH) {
            Ok(d) => nanos(d),
            Err(e) => -nanos(e.duration()),
        };
        Clock {
            unix_offset_ns: unix_ns - i128::from(monotonic_ns),
        }
    }

    /// Unix seconds (rounded down, 0 at the least) of a monotonic timestamp.
    pub fn unix_secs(&self, monotonic_ns: u64) -> u64 {
        let unix_ns = i128::from(monotonic_ns) + self.unix_offset_ns;
        u64::try_from(unix_ns.max(0) / NANOS_PER_SEC).unwrap_or(u64::MAX)
    }
}

/// What the records say about where the flows are: the ids from the config.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowContext {
    pub account_id: String,
    pub vpc_id: String,
    /// `interface-id` by ifindex.
    pub interfaces: HashMap<u32, String>,
    /// `subnet-id` by the subnet index the dataplane stores (`SubnetInfo::subnet_index`).
    pub subnets: Vec<String>,
}

impl FlowContext {
    /// The configured id, or `eni-if{ifindex}` so that an unnamed interface still has a stable,
    /// recognisable id rather than `-`.
    pub fn interface_id(&self, ifindex: u32) -> String {
        self.interfaces
            .get(&ifindex)
            .cloned()
            .unwrap_or_else(|| format!("eni-if{ifindex}"))
    }

    /// `None` for `u32::MAX` (no subnet) and for an index the config no longer has.
    pub fn subnet_id(&self, subnet_index: u32) -> Option<String> {
        usize::try_from(subnet_index)
            .ok()
            .and_then(|i| self.subnets.get(i))
            .cloned()
    }
}

/// What one flush produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    /// One per flow with packets since the previous flush, ordered by start time then flow.
    pub records: Vec<FlowRecord>,
    /// Flows idle for longer than the limit: the caller deletes them from the kernel map. A packet
    /// that arrives between the snapshot and the delete is lost with the entry; the idle limit
    /// being well above the flush interval is what keeps that rare.
    pub idle: Vec<FlowKey>,
    /// Entries whose family or action is not a known value (a dataplane bug): no record can be
    /// made of them; the caller logs and deletes them.
    pub invalid: Vec<FlowKey>,
}

/// What was last reported for a flow.
#[derive(Clone, Copy, Debug, Default)]
struct Reported {
    packets: u64,
    bytes: u64,
    first_seen_ns: u64,
    last_seen_ns: u64,
    /// Raw OR of the flags, as the kernel keeps it.
    tcp_flags: u8,
}

/// Turns periodic snapshots of the kernel's `FLOWS` map into flow-log records.
///
/// The kernel counts from the flow's first packet and never resets; the aggregator remembers what
/// it reported per flow and emits the difference, so each record covers one interval as AWS's do.
///
/// A flow is considered new, and counted from zero, when its counters went backwards or its first
/// packet is later than the one remembered: the entry was deleted (idle expiry, LRU eviction) and
/// created again. That check is also why the memory of an idle flow is kept until the flow is
/// gone from a snapshot: if the caller's delete failed, the next flush neither counts the flow
/// twice nor loses it.
#[derive(Debug)]
pub struct FlowAggregator {
    idle_timeout_ns: u64,
    /// `now` of the previous flush: the earliest a packet counted in this one can be from.
    last_flush_ns: u64,
    reported: HashMap<FlowKey, Reported>,
}

impl FlowAggregator {
    /// `idle_timeout`: a flow whose last packet is older than this is returned for deletion. A
    /// couple of aggregation intervals keeps a flow's entry across short pauses.
    pub fn new(idle_timeout: Duration) -> FlowAggregator {
        FlowAggregator {
            idle_timeout_ns: u64::try_from(idle_timeout.as_nanos()).unwrap_or(u64::MAX),
            last_flush_ns: 0,
            reported: HashMap::new(),
        }
    }

    /// How many flows it remembers.
    pub fn tracked(&self) -> usize {
        self.reported.len()
    }

    /// Takes one snapshot of `FLOWS`, already summed over CPUs, taken at `now_monotonic_ns`.
    pub fn flush(
        &mut self,
        flows: &[(FlowKey, FlowStats)],
        now_monotonic_ns: u64,
        clock: &Clock,
        ctx: &FlowContext,
    ) -> Flush {
        let mut present = HashSet::with_capacity(flows.len());
        let mut records = Vec::new();
        let mut idle = Vec::new();
        let mut invalid = Vec::new();

        for (key, stats) in flows {
            // Iterating a hash map that the kernel is changing can return a key twice.
            if !present.insert(*key) {
                continue;
            }
            let base = match self.reported.get(key) {
                Some(prev) if !is_restart(prev, stats) => *prev,
                _ => Reported::default(),
            };
            let is_idle =
                now_monotonic_ns.saturating_sub(stats.last_seen_ns) > self.idle_timeout_ns;

            match Interval::new(key, stats, &base, self.last_flush_ns) {
                Err(Invalid) => {
                    invalid.push(*key);
                    self.reported.remove(key);
                    continue;
                }
                Ok(Some(interval)) => {
                    records.push((interval.start_ns, *key, interval.record(clock, ctx)));
                }
                Ok(None) => {}
            }
            self.reported.insert(
                *key,
                Reported {
                    packets: stats.packets,
                    bytes: stats.bytes,
                    first_seen_ns: stats.first_seen_ns,
                    last_seen_ns: stats.last_seen_ns,
                    tcp_flags: stats.tcp_flags,
                },
            );
            if is_idle {
                idle.push(*key);
            }
        }

        // A flow missing from the snapshot was deleted, or skipped by the iteration. Forget it once
        // it is idle anyway: until then, remembering it keeps a skipped flow from being counted
        // twice, and a deleted one that comes back is recognised as new by its first packet.
        let idle_timeout_ns = self.idle_timeout_ns;
        self.reported.retain(|key, prev| {
            present.contains(key)
                || now_monotonic_ns.saturating_sub(prev.last_seen_ns) <= idle_timeout_ns
        });
        self.last_flush_ns = now_monotonic_ns;

        records.sort_by_key(|(start_ns, key, _)| (*start_ns, key_order(key)));
        idle.sort_by_key(key_order);
        invalid.sort_by_key(key_order);
        Flush {
            records: records.into_iter().map(|(_, _, record)| record).collect(),
            idle,
            invalid,
        }
    }
}

/// Whether the kernel entry is not the one `prev` was read from.
fn is_restart(prev: &Reported, stats: &FlowStats) -> bool {
    stats.packets < prev.packets
        || stats.bytes < prev.bytes
        || stats.first_seen_ns > prev.first_seen_ns
}

/// A total order on keys, so that output does not depend on hash-map iteration.
fn key_order(key: &FlowKey) -> impl Ord + use<> {
    (
        key.family,
        key.src,
        key.dst,
        key.protocol,
        key.src_port,
        key.dst_port,
        key.ingress_ifindex,
        key.action,
    )
}

/// The entry cannot be decoded.
struct Invalid;

/// One flow's new traffic since the previous flush, decoded.
struct Interval<'a> {
    key: &'a FlowKey,
    stats: &'a FlowStats,
    family: Family,
    action: Action,
    packets: u64,
    bytes: u64,
    tcp_flags: u8,
    start_ns: u64,
}

impl<'a> Interval<'a> {
    /// `None` when there is nothing new to report.
    fn new(
        key: &'a FlowKey,
        stats: &'a FlowStats,
        base: &Reported,
        last_flush_ns: u64,
    ) -> Result<Option<Interval<'a>>, Invalid> {
        let family = match key.family {
            family::IPV4 => Family::Ipv4,
            family::IPV6 => Family::Ipv6,
            _ => return Err(Invalid),
        };
        let action = match key.action {
            action::ACCEPT => Action::Accept,
            action::REJECT => Action::Reject,
            _ => return Err(Invalid),
        };
        let packets = stats.packets - base.packets;
        if packets == 0 {
            return Ok(None);
        }
        Ok(Some(Interval {
            key,
            stats,
            family,
            action,
            packets,
            bytes: stats.bytes - base.bytes,
            tcp_flags: interval_tcp_flags(key.protocol, base.tcp_flags, stats.tcp_flags),
            // A flow that started before the previous flush was certainly counted there up to
            // then; what is new here started at that flush at the earliest.
            start_ns: stats.first_seen_ns.max(last_flush_ns),
        }))
    }

    fn record(&self, clock: &Clock, ctx: &FlowContext) -> FlowRecord {
        let (key, stats) = (self.key, self.stats);
        let (srcaddr, dstaddr, mut srcport, mut dstport) = translated(key, stats, self.family);
        // ICMP keeps type and code (or the echo identifier) in the ports; AWS writes 0.
        if matches!(key.protocol, PROTO_ICMP | PROTO_ICMPV6) {
            srcport = 0;
            dstport = 0;
        }
        let flow_direction = match stats.direction {
            direction::EGRESS | direction::INTERNAL => FlowDirection::Egress,
            // INGRESS, and a packet rejected before its direction was known: it came in.
            _ => FlowDirection::Ingress,
        };
        // AWS fills traffic-path for egress traffic only.
        let traffic_path = match (flow_direction, stats.route_target) {
            (FlowDirection::Egress, target::INTERNET_GATEWAY) => {
                Some(TRAFFIC_PATH_INTERNET_GATEWAY)
            }
            (FlowDirection::Egress, target::LOCAL) => Some(TRAFFIC_PATH_SAME_VPC),
            _ => None,
        };
        let end = clock.unix_secs(stats.last_seen_ns);
        FlowRecord {
            version: DEFAULT_VERSION,
            account_id: ctx.account_id.clone(),
            vpc_id: ctx.vpc_id.clone(),
            interface_id: ctx.interface_id(key.ingress_ifindex),
            subnet_id: ctx.subnet_id(stats.subnet_index),
            srcaddr,
            dstaddr,
            pkt_srcaddr: addr(&key.src, self.family),
            pkt_dstaddr: addr(&key.dst, self.family),
            srcport,
            dstport,
            protocol: key.protocol,
            packets: self.packets,
            bytes: self.bytes,
            // The clocks are coarse and the snapshot not atomic: never let start pass end.
            start: clock.unix_secs(self.start_ns).min(end),
            end,
            action: self.action,
            log_status: LogStatus::Ok,
            flow_direction,
            traffic_path,
            tcp_flags: self.tcp_flags,
            family: self.family,
        }
    }
}

/// The flags first seen in this interval, in AWS form.
///
/// The kernel ORs flags over the flow's whole life; repeating its SYN in every record of a long
/// connection would make each look like a new one, so only bits not reported before are kept.
fn interval_tcp_flags(protocol: u8, reported_raw: u8, now_raw: u8) -> u8 {
    if protocol != PROTO_TCP {
        return 0;
    }
    let new = aws_tcp_flags(now_raw) & !aws_tcp_flags(reported_raw);
    // ACK is only ever reported as part of SYN-ACK (18).
    if new & TCP_ACK != 0 {
        new | TCP_SYN
    } else {
        new
    }
}

fn addr(bytes: &[u8; 16], family: Family) -> IpAddr {
    match family {
        Family::Ipv4 => IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3])),
        Family::Ipv6 => IpAddr::V6(Ipv6Addr::from(*bytes)),
    }
}

/// Addresses and ports as the packet left.
///
/// All-zero translated addresses mean the dataplane never got to translating (a packet rejected
/// early): the packet left as it came, so the key's values are used.
///
/// `FlowStats` does not say which family the translated addresses are, which only differs from the
/// key's with NAT64. Until it does, the family is inferred: an IPv6 flow through a NAT gateway can
/// only be NAT64 (a NAT gateway has no NAT66), so it left as IPv4; and an address of an IPv4 flow
/// with anything past its first 4 bytes cannot be IPv4 (whose rest is zero), so it is the IPv6 side
/// of a NAT64 reply.
fn translated(key: &FlowKey, stats: &FlowStats, key_family: Family) -> (IpAddr, IpAddr, u16, u16) {
    if stats.translated_src == [0; 16] && stats.translated_dst == [0; 16] {
        return (
            addr(&key.src, key_family),
            addr(&key.dst, key_family),
            key.src_port,
            key.dst_port,
        );
    }
    let family_of = |bytes: &[u8; 16]| match key_family {
        Family::Ipv6 if stats.route_target == target::NAT_GATEWAY => Family::Ipv4,
        Family::Ipv4 if bytes[4..].iter().any(|b| *b != 0) => Family::Ipv6,
        other => other,
    };
    (
        addr(&stats.translated_src, family_of(&stats.translated_src)),
        addr(&stats.translated_dst, family_of(&stats.translated_dst)),
        stats.translated_src_port,
        stats.translated_dst_port,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flowlog::format::LogFormat;

    const SEC: u64 = 1_000_000_000;
    /// Monotonic 0 is this Unix second in the tests.
    const BOOT_UNIX: u64 = 1_709_627_000;
    const VPC_IF: u32 = 3;
    const TCP_FIN: u8 = 0x01;
    const TCP_PSH: u8 = 0x08;

    fn clock() -> Clock {
        Clock {
            unix_offset_ns: i128::from(BOOT_UNIX) * NANOS_PER_SEC,
        }
    }

    fn ctx() -> FlowContext {
        FlowContext {
            account_id: "123456789012".into(),
            vpc_id: "vpc-0f1e2d3c".into(),
            interfaces: HashMap::from([(VPC_IF, "eni-vpc0".to_owned())]),
            subnets: vec!["subnet-0aa11bb2".into(), "subnet-0cc33dd4".into()],
        }
    }

    fn v4(a: [u8; 4]) -> [u8; 16] {
        let mut bytes = [0; 16];
        bytes[..4].copy_from_slice(&a);
        bytes
    }

    /// 10.0.1.5:40000 -> 198.51.100.7:443 from subnet 0, out through the internet gateway as
    /// 203.0.113.10.
    fn nat_flow() -> (FlowKey, FlowStats) {
        let key = FlowKey {
            src: v4([10, 0, 1, 5]),
            dst: v4([198, 51, 100, 7]),
            src_port: 40000,
            dst_port: 443,
            ingress_ifindex: VPC_IF,
            protocol: PROTO_TCP,
            family: family::IPV4,
            action: action::ACCEPT,
            _pad: 0,
        };
        let stats = FlowStats {
            packets: 10,
            bytes: 1000,
            first_seen_ns: 100 * SEC,
            last_seen_ns: 130 * SEC,
            translated_src: v4([203, 0, 113, 10]),
            translated_dst: v4([198, 51, 100, 7]),
            translated_src_port: 40000,
            translated_dst_port: 443,
            route_target: target::INTERNET_GATEWAY,
            subnet_index: 0,
            tcp_flags: TCP_SYN | TCP_ACK,
            direction: direction::EGRESS,
            drop_reason: 0,
            ..FlowStats::default()
        };
        (key, stats)
    }

    fn aggregator() -> FlowAggregator {
        FlowAggregator::new(Duration::from_secs(120))
    }

    fn flush(agg: &mut FlowAggregator, flows: &[(FlowKey, FlowStats)], now_secs: u64) -> Flush {
        agg.flush(flows, now_secs * SEC, &clock(), &ctx())
    }

    #[test]
    fn clock_maps_monotonic_to_unix_seconds() {
        assert_eq!(clock().unix_secs(0), BOOT_UNIX);
        assert_eq!(clock().unix_secs(5 * SEC + SEC / 2), BOOT_UNIX + 5);
        let c = Clock::from_readings(7 * SEC, UNIX_EPOCH + Duration::from_secs(BOOT_UNIX + 7));
        assert_eq!(c, clock());
        // Before the epoch cannot be written: 0 rather than a wrapped huge number.
        let early = Clock {
            unix_offset_ns: -10 * NANOS_PER_SEC,
        };
        assert_eq!(early.unix_secs(SEC), 0);
    }

    #[test]
    fn translated_ipv4_flow_becomes_a_record() {
        let mut agg = aggregator();
        let out = flush(&mut agg, &[nat_flow()], 140);
        assert_eq!(
            out.records,
            vec![FlowRecord {
                version: 2,
                account_id: "123456789012".into(),
                vpc_id: "vpc-0f1e2d3c".into(),
                interface_id: "eni-vpc0".into(),
                subnet_id: Some("subnet-0aa11bb2".into()),
                srcaddr: "203.0.113.10".parse().unwrap(),
                dstaddr: "198.51.100.7".parse().unwrap(),
                pkt_srcaddr: "10.0.1.5".parse().unwrap(),
                pkt_dstaddr: "198.51.100.7".parse().unwrap(),
                srcport: 40000,
                dstport: 443,
                protocol: 6,
                packets: 10,
                bytes: 1000,
                start: BOOT_UNIX + 100,
                end: BOOT_UNIX + 130,
                action: Action::Accept,
                log_status: LogStatus::Ok,
                flow_direction: FlowDirection::Egress,
                traffic_path: Some(8),
                tcp_flags: 18,
                family: Family::Ipv4,
            }]
        );
        assert!(out.idle.is_empty());
        assert!(out.invalid.is_empty());
        assert_eq!(agg.tracked(), 1);
    }

    #[test]
    fn aws_example_line_end_to_end() {
        let key = FlowKey {
            src: "2406:da14::d062".parse::<Ipv6Addr>().unwrap().octets(),
            dst: "2406:da14::bb58".parse::<Ipv6Addr>().unwrap().octets(),
            // Echo request, identifier 0x1234 in both ports: AWS writes 0 0.
            src_port: 0x1234,
            dst_port: 0x1234,
            ingress_ifindex: 9,
            protocol: PROTO_ICMPV6,
            family: family::IPV6,
            action: action::ACCEPT,
            _pad: 0,
        };
        let stats = FlowStats {
            packets: 17,
            bytes: 1768,
            first_seen_ns: 80 * SEC + 3,
            last_seen_ns: 199 * SEC + SEC / 2,
            translated_src: key.src,
            translated_dst: key.dst,
            translated_src_port: key.src_port,
            translated_dst_port: key.dst_port,
            route_target: target::INTERNET_GATEWAY,
            subnet_index: u32::MAX,
            tcp_flags: 0,
            direction: direction::EGRESS,
            drop_reason: 0,
            ..FlowStats::default()
        };
        let mut context = ctx();
        context.interfaces.insert(9, "eni-0a1b2c3d".into());
        let out = aggregator().flush(&[(key, stats)], 200 * SEC, &clock(), &context);
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.records[0].subnet_id, None);
        assert_eq!(
            LogFormat::default_v2().render(&out.records[0]),
            "2 123456789012 eni-0a1b2c3d 2406:da14::d062 2406:da14::bb58 0 0 58 17 1768 \
             1709627080 1709627199 ACCEPT OK"
        );
    }

    #[test]
    fn deltas_across_flushes() {
        let mut agg = aggregator();
        let (key, mut stats) = nat_flow();
        assert_eq!(flush(&mut agg, &[(key, stats)], 140).records.len(), 1);

        stats.packets = 25;
        stats.bytes = 2600;
        stats.last_seen_ns = 190 * SEC;
        let out = flush(&mut agg, &[(key, stats)], 200);
        let [record] = out.records.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!((record.packets, record.bytes), (15, 1600));
        // The flow began before the previous flush: this interval starts at that flush.
        assert_eq!(
            (record.start, record.end),
            (BOOT_UNIX + 140, BOOT_UNIX + 190)
        );
        // SYN-ACK was reported in the first interval already.
        assert_eq!(record.tcp_flags, 0);
    }

    #[test]
    fn no_record_without_new_packets() {
        let mut agg = aggregator();
        let flow = nat_flow();
        assert_eq!(flush(&mut agg, &[flow], 140).records.len(), 1);
        let out = flush(&mut agg, &[flow], 150);
        assert_eq!(out, Flush::default());
        assert_eq!(agg.tracked(), 1);
    }

    #[test]
    fn counter_going_backwards_is_a_new_flow() {
        let mut agg = aggregator();
        let (key, mut stats) = nat_flow();
        flush(&mut agg, &[(key, stats)], 140);

        // Deleted and recreated between two flushes: fewer packets than already reported.
        stats.packets = 3;
        stats.bytes = 180;
        stats.first_seen_ns = 150 * SEC;
        stats.last_seen_ns = 155 * SEC;
        let out = flush(&mut agg, &[(key, stats)], 160);
        let [record] = out.records.as_slice() else {
            panic!("{out:?}")
        };
        assert_eq!((record.packets, record.bytes), (3, 180));
        assert_eq!(record.start, BOOT_UNIX + 150);
        // Counted from zero again, flags included.
        assert_eq!(record.tcp_flags, 18);

        // Bytes alone going back also means a new entry, never a wrapped delta.
        stats.packets = 4;
        stats.bytes = 100;
        stats.last_seen_ns = 165 * SEC;
        let out = flush(&mut agg, &[(key, stats)], 170);
        assert_eq!((out.records[0].packets, out.records[0].bytes), (4, 100));
    }

    #[test]
    fn recreated_entry_with_more_packets_is_a_new_flow() {
        let mut agg = aggregator();
        let (key, mut stats) = nat_flow();
        flush(&mut agg, &[(key, stats)], 140);

        // More packets than before, but the first packet is later than the one remembered.
        stats.packets = 40;
        stats.bytes = 4000;
        stats.first_seen_ns = 150 * SEC;
        stats.last_seen_ns = 158 * SEC;
        let out = flush(&mut agg, &[(key, stats)], 160);
        assert_eq!((out.records[0].packets, out.records[0].bytes), (40, 4000));
    }

    #[test]
    fn idle_flows_are_returned_then_forgotten() {
        let mut agg = aggregator();
        let (key, stats) = nat_flow();
        // last_seen 130 s: idle past 250 s with a 120 s limit.
        assert!(flush(&mut agg, &[(key, stats)], 250).idle.is_empty());
        let out = flush(&mut agg, &[(key, stats)], 251);
        assert_eq!(out.idle, vec![key]);
        assert!(out.records.is_empty());

        // The caller deleted it: gone from the next snapshot, so gone from memory.
        assert_eq!(flush(&mut agg, &[], 260), Flush::default());
        assert_eq!(agg.tracked(), 0);

        // The same 5-tuple again starts from zero.
        let mut again = stats;
        again.packets = 2;
        again.bytes = 120;
        again.first_seen_ns = 300 * SEC;
        again.last_seen_ns = 301 * SEC;
        let out = flush(&mut agg, &[(key, again)], 310);
        assert_eq!((out.records[0].packets, out.records[0].bytes), (2, 120));
    }

    #[test]
    fn idle_flow_whose_delete_failed_is_not_counted_twice() {
        let mut agg = aggregator();
        let flow = nat_flow();
        assert_eq!(flush(&mut agg, &[flow], 140).records.len(), 1);
        assert_eq!(flush(&mut agg, &[flow], 300).idle, vec![flow.0]);
        let out = flush(&mut agg, &[flow], 310);
        assert!(out.records.is_empty());
        assert_eq!(out.idle, vec![flow.0]);
    }

    #[test]
    fn flow_skipped_by_one_snapshot_is_not_counted_twice() {
        let mut agg = aggregator();
        let (key, mut stats) = nat_flow();
        flush(&mut agg, &[(key, stats)], 140);
        // Not idle, merely missing from this snapshot.
        assert_eq!(flush(&mut agg, &[], 150), Flush::default());
        stats.packets = 12;
        stats.bytes = 1200;
        stats.last_seen_ns = 155 * SEC;
        let out = flush(&mut agg, &[(key, stats)], 160);
        assert_eq!((out.records[0].packets, out.records[0].bytes), (2, 200));
    }

    #[test]
    fn duplicate_keys_in_a_snapshot_count_once() {
        let mut agg = aggregator();
        let flow = nat_flow();
        let out = flush(&mut agg, &[flow, flow], 140);
        assert_eq!(out.records.len(), 1);
        assert_eq!(out.records[0].packets, 10);
    }

    #[test]
    fn tcp_flags_are_those_new_in_the_interval() {
        let mut agg = aggregator();
        let (key, mut stats) = nat_flow();
        stats.tcp_flags = TCP_SYN;
        assert_eq!(
            flush(&mut agg, &[(key, stats)], 140).records[0].tcp_flags,
            2
        );

        stats.packets += 5;
        stats.tcp_flags |= TCP_PSH | TCP_FIN;
        assert_eq!(
            flush(&mut agg, &[(key, stats)], 150).records[0].tcp_flags,
            1
        );

        stats.packets += 1;
        stats.tcp_flags |= TCP_ACK;
        // ACK is only reported as part of SYN-ACK.
        assert_eq!(
            flush(&mut agg, &[(key, stats)], 160).records[0].tcp_flags,
            18
        );

        assert_eq!(interval_tcp_flags(17, 0, 0xff), 0, "UDP has no TCP flags");
    }

    #[test]
    fn icmp_ports_are_zero() {
        let (mut key, mut stats) = nat_flow();
        key.protocol = PROTO_ICMP;
        key.src_port = 8;
        stats.translated_src_port = 0x4242;
        stats.translated_dst_port = 0x4242;
        stats.tcp_flags = 0;
        let out = flush(&mut aggregator(), &[(key, stats)], 140);
        let record = &out.records[0];
        assert_eq!(
            (record.srcport, record.dstport, record.tcp_flags),
            (0, 0, 0)
        );
    }

    #[test]
    fn direction_and_traffic_path() {
        let cases = [
            (
                direction::EGRESS,
                target::INTERNET_GATEWAY,
                FlowDirection::Egress,
                Some(8),
            ),
            (
                direction::INTERNAL,
                target::LOCAL,
                FlowDirection::Egress,
                Some(1),
            ),
            (
                direction::EGRESS,
                target::NAT_GATEWAY,
                FlowDirection::Egress,
                None,
            ),
            (
                direction::INGRESS,
                target::INTERNET_GATEWAY,
                FlowDirection::Ingress,
                None,
            ),
            (
                direction::INGRESS,
                target::LOCAL,
                FlowDirection::Ingress,
                None,
            ),
            (0, 0, FlowDirection::Ingress, None),
        ];
        for (dir, route, want_dir, want_path) in cases {
            let (key, mut stats) = nat_flow();
            stats.direction = dir;
            stats.route_target = route;
            let out = flush(&mut aggregator(), &[(key, stats)], 140);
            let record = &out.records[0];
            assert_eq!(
                (record.flow_direction, record.traffic_path),
                (want_dir, want_path),
                "direction {dir}, target {route}"
            );
        }
    }

    #[test]
    fn rejected_before_translation_keeps_the_packet_addresses() {
        let (mut key, mut stats) = nat_flow();
        key.action = action::REJECT;
        key.ingress_ifindex = 42;
        stats.translated_src = [0; 16];
        stats.translated_dst = [0; 16];
        stats.translated_src_port = 0;
        stats.translated_dst_port = 0;
        stats.subnet_index = u32::MAX;
        let out = flush(&mut aggregator(), &[(key, stats)], 140);
        let r = &out.records[0];
        assert_eq!(r.action, Action::Reject);
        assert_eq!((r.srcaddr, r.dstaddr), (r.pkt_srcaddr, r.pkt_dstaddr));
        assert_eq!((r.srcport, r.dstport), (40000, 443));
        assert_eq!(r.interface_id, "eni-if42");
        assert_eq!(r.subnet_id, None);
    }

    #[test]
    fn nat64_addresses_are_decoded_in_the_other_family() {
        let (mut key, mut stats) = nat_flow();
        key.family = family::IPV6;
        key.src = "2600:1f14::5".parse::<Ipv6Addr>().unwrap().octets();
        key.dst = "64:ff9b::c633:6407".parse::<Ipv6Addr>().unwrap().octets();
        stats.route_target = target::NAT_GATEWAY;
        let out = flush(&mut aggregator(), &[(key, stats)], 140);
        let r = &out.records[0];
        assert_eq!(r.srcaddr, "203.0.113.10".parse::<IpAddr>().unwrap());
        assert_eq!(r.dstaddr, "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(r.pkt_srcaddr, "2600:1f14::5".parse::<IpAddr>().unwrap());
        assert_eq!(r.family, Family::Ipv6);

        // The reply: IPv4 in, IPv6 out.
        let (mut key, mut stats) = nat_flow();
        key.src = v4([198, 51, 100, 7]);
        key.dst = v4([203, 0, 113, 10]);
        stats.translated_src = "64:ff9b::c633:6407".parse::<Ipv6Addr>().unwrap().octets();
        stats.translated_dst = "2600:1f14::5".parse::<Ipv6Addr>().unwrap().octets();
        stats.route_target = target::NAT_GATEWAY;
        stats.direction = direction::INGRESS;
        let out = flush(&mut aggregator(), &[(key, stats)], 140);
        let r = &out.records[0];
        assert_eq!(r.srcaddr, "64:ff9b::c633:6407".parse::<IpAddr>().unwrap());
        assert_eq!(r.dstaddr, "2600:1f14::5".parse::<IpAddr>().unwrap());
        assert_eq!(r.family, Family::Ipv4);
    }

    #[test]
    fn undecodable_entries_are_reported_not_logged() {
        let mut agg = aggregator();
        let (mut bad_family, stats) = nat_flow();
        bad_family.family = 5;
        let (mut bad_action, _) = nat_flow();
        bad_action.action = 0;
        let out = flush(&mut agg, &[(bad_family, stats), (bad_action, stats)], 140);
        assert!(out.records.is_empty());
        assert_eq!(out.invalid.len(), 2);
        assert_eq!(agg.tracked(), 0);
    }

    #[test]
    fn records_are_ordered_by_start_then_flow() {
        // Source ports tell the flows apart, in the records too.
        let flow = |src_port: u16, first_seen_secs: u64| {
            let (mut key, mut stats) = nat_flow();
            key.src_port = src_port;
            stats.translated_src_port = src_port;
            stats.first_seen_ns = first_seen_secs * SEC;
            (key, stats)
        };
        let flows = [
            flow(40000, 120),
            flow(2000, 100),
            flow(50000, 110),
            flow(1000, 100),
        ];
        let out = flush(&mut aggregator(), &flows, 140);
        let order: Vec<u16> = out.records.iter().map(|r| r.srcport).collect();
        assert_eq!(order, vec![1000, 2000, 50000, 40000]);
    }
}
