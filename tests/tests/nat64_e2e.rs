//! End-to-end tests of the NAT gateway's NAT64 (RFC 6146, RFC 7915) with its DNS64 (RFC 6147):
//! real traffic between network namespaces through `gateway run` with
//! `examples/nat-gateway.toml`, extended for NAT64:
//!
//! - the instance is IPv6-only: 2001:db8:1000:1::10/64, default route via 2001:db8:1000:1::1 (the
//!   gateway), no IPv4 address besides loopback;
//! - its subnet's route table sends 2001:db8:64::/96 to the NAT gateway, whose `nat64_prefix` is
//!   that network-specific prefix (the internet side uses documentation IPv4 addresses, which the
//!   well-known prefix 64:ff9b::/96 must not carry) and whose public address is 203.0.113.20;
//! - the NAT gateway's DNS64 listens on [2001:db8:1000:1::1]:53 and forwards to the authoritative
//!   server of `gateway_tests::dns` on the internet host, 192.0.2.10, where `server.example.` has
//!   only the A record 192.0.2.10 (the internet host itself).
//!
//! The instance resolves `server.example.` through DNS64 and uses the AAAA it gets,
//! 2001:db8:64::c000:20a. Each test builds its own namespaces and files, so they run in parallel;
//! they need root. What decides comes from the far ends (the peer address the internet host's
//! `accept`/`recv_from` returned, captures on both sides, what the instance's kernel learned),
//! and from the gateway's `gateway stats`, `gateway conntrack` and flow log.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::Path,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use etherparse::{IcmpEchoHeader, Icmpv4Type, PacketBuilder};
use gateway::control::{ConntrackRow, StatsReply};
use gateway_tests::{
    Capture, GatewayConfigFiles, GatewayProcess, IgwTopology, Netns, addr,
    dns::{self, Transport, ZoneServer},
    example_path, gateway_binary, traffic, write_gateway_config,
};
use hickory_proto::{
    op::ResponseCode,
    rr::{RData, RecordType, rdata::AAAA},
};

/// The NAT gateway's network-specific NAT64 prefix.
const NAT64_PREFIX: &str = "2001:db8:64::/96";
/// The internet server's name: only an A record (192.0.2.10) in the upstream zone.
const SERVER_NAME: &str = "server.example.";
/// The NAT gateway's public address (`examples/nat-gateway.toml`).
const PUBLIC: Ipv4Addr = addr::NAT_PUBLIC_V4;
/// The id of the example's NAT gateway, the target of the NAT64 route.
const NAT_GATEWAY_ID: &str = "nat-demo";
const FOUR_MB: usize = 4 * 1024 * 1024;

/// `v4` in the NAT64 prefix (RFC 6052, /96: the last 32 bits), what DNS64 must answer and what
/// the instance's packets to the IPv4 host `v4` carry as destination.
fn in_prefix(v4: Ipv4Addr) -> Ipv6Addr {
    let [a, b, c, d] = v4.octets();
    Ipv6Addr::new(
        0x2001,
        0xdb8,
        0x64,
        0,
        0,
        0,
        u16::from_be_bytes([a, b]),
        u16::from_be_bytes([c, d]),
    )
}

fn ip(a: impl Into<IpAddr>) -> IpAddr {
    a.into()
}

/// The topology with the IPv6-only instance, the upstream zone server on the internet host and
/// the gateway with NAT64 and DNS64. Fields drop in order: the gateway stops (SIGINT) before the
/// zone server and the namespaces go away.
struct Nat64 {
    gateway: GatewayProcess,
    files: GatewayConfigFiles,
    zone: ZoneServer,
    net: IgwTopology,
}

impl Nat64 {
    fn start() -> Self {
        let net = IgwTopology::new().expect("building the topology");
        net.make_instance_ipv6_only()
            .expect("making the instance IPv6-only");
        let zone = ZoneServer::start(&net.internet, &[addr::INTERNET_V4.into()])
            .expect("starting the upstream zone server on the internet host");
        let files = write_gateway_config(&example_path("nat-gateway.toml"), net.dir())
            .expect("writing examples/nat-gateway.toml into the test directory");
        add_nat64_and_dns64(&files.config);
        let gateway = net
            .start_gateway(&files.config)
            .expect("starting the gateway with NAT64 and DNS64");
        Self {
            gateway,
            files,
            zone,
            net,
        }
    }

    /// The instance asks the gateway's DNS64 for the AAAA of [`SERVER_NAME`] over UDP and returns
    /// the one address it gets, after checking it is the server's IPv4 address in the prefix and
    /// that the upstream was asked for the A record (the name has no AAAA).
    fn resolve_server(&self) -> Ipv6Addr {
        let server = SocketAddr::new(ip(addr::GATEWAY_VPC_V6), 53);
        let answer = dns::ask(
            &self.net.instance,
            server,
            &dns::query(SERVER_NAME, RecordType::AAAA),
            Transport::Udp,
        )
        .unwrap_or_else(|error| {
            panic!(
                "AAAA {SERVER_NAME} from the instance to {server}: {error:#}\ngateway output:\n{}",
                self.gateway.output()
            )
        });
        assert_eq!(
            answer.response_code,
            ResponseCode::NoError,
            "rcode of\n{answer}"
        );
        let addresses: Vec<Ipv6Addr> = answer
            .answers
            .iter()
            .filter_map(|record| match &record.data {
                RData::AAAA(AAAA(address)) => Some(*address),
                _ => None,
            })
            .collect();
        let expected = in_prefix(addr::INTERNET_V4);
        assert_eq!(
            addresses,
            vec![expected],
            "DNS64 synthesises 192.0.2.10 in {NAT64_PREFIX}:\n{answer}"
        );
        let asked_for_a = self
            .zone
            .received()
            .iter()
            .any(|query| query.name == SERVER_NAME && query.record_type == RecordType::A);
        assert!(
            asked_for_a,
            "the upstream was asked for the A record: {:?}",
            self.zone.received()
        );
        addresses[0]
    }

    /// Runs `gateway ARGS --socket SOCKET` (a client of the running gateway) and returns stdout.
    fn cli(&self, args: &[&str]) -> String {
        let binary = gateway_binary().expect("the gateway binary");
        let mut command = vec![binary.to_string_lossy().into_owned()];
        command.extend(args.iter().map(|arg| arg.to_string()));
        command.push("--socket".into());
        command.push(self.files.socket.to_string_lossy().into_owned());
        self.net.gateway.run(&command).unwrap_or_else(|error| {
            panic!(
                "gateway {args:?}: {error:#}\ngateway output:\n{}",
                self.gateway.output()
            )
        })
    }

    fn stats(&self) -> StatsReply {
        serde_json::from_str(&self.cli(&["stats", "--json"]))
            .unwrap_or_else(|error| panic!("parsing `gateway stats --json`: {error}"))
    }

    fn counters(&self) -> BTreeMap<String, u64> {
        self.stats().counters.into_iter().collect()
    }

    fn counter(&self, name: &str) -> u64 {
        *self
            .counters()
            .get(name)
            .unwrap_or_else(|| panic!("no counter {name} in `gateway stats`"))
    }

    fn conntrack(&self) -> Vec<ConntrackRow> {
        serde_json::from_str(&self.cli(&["conntrack", "--json"]))
            .unwrap_or_else(|error| panic!("parsing `gateway conntrack --json`: {error}"))
    }

    fn flow_log(&self) -> Vec<CustomRecord> {
        match fs::read_to_string(&self.files.flow_log) {
            Ok(text) => text
                .lines()
                .filter(|line| !line.trim().is_empty() && !line.starts_with("version "))
                .map(CustomRecord::parse)
                .collect(),
            Err(_) => Vec::new(),
        }
    }
}

/// Turns the NAT44 example into the NAT64 setup of the module docs: the VPC and the subnet get
/// their IPv6 CIDRs, the route table sends the NAT64 prefix to the NAT gateway, which gets the
/// prefix and a DNS64 on the gateway's VPC-side IPv6 address with the internet host as upstream.
fn add_nat64_and_dns64(config: &Path) {
    let text = fs::read_to_string(config).expect("reading the test config");
    let mut table: toml::Table = text.parse().expect("parsing the test config");
    let vpc = table["vpc"].as_table_mut().expect("[vpc] is a table");
    vpc.insert(
        "ipv6_cidrs".into(),
        toml::Value::Array(vec!["2001:db8:1000::/56".into()]),
    );
    let subnet = table["subnets"]
        .as_array_mut()
        .and_then(|subnets| subnets.first_mut())
        .and_then(toml::Value::as_table_mut)
        .expect("the example has a subnet");
    subnet.insert("ipv6_cidr".into(), "2001:db8:1000:1::/64".into());
    let routes = table["route_tables"]
        .as_array_mut()
        .and_then(|tables| tables.first_mut())
        .and_then(|route_table| route_table.get_mut("routes"))
        .and_then(toml::Value::as_array_mut)
        .expect("the example has a route table with routes");
    let mut nat64_route = toml::Table::new();
    nat64_route.insert("destination".into(), NAT64_PREFIX.into());
    nat64_route.insert("target".into(), NAT_GATEWAY_ID.into());
    routes.push(toml::Value::Table(nat64_route));
    let nat = table["nat_gateways"]
        .as_array_mut()
        .and_then(|gateways| gateways.first_mut())
        .and_then(toml::Value::as_table_mut)
        .expect("the example has a NAT gateway");
    assert_eq!(
        nat.get("id").and_then(toml::Value::as_str),
        Some(NAT_GATEWAY_ID),
        "the example's NAT gateway"
    );
    nat.insert("nat64_prefix".into(), NAT64_PREFIX.into());
    let mut dns64 = toml::Table::new();
    dns64.insert(
        "listen".into(),
        toml::Value::Array(vec![format!("[{}]:53", addr::GATEWAY_VPC_V6).into()]),
    );
    dns64.insert(
        "upstream".into(),
        toml::Value::Array(vec![addr::INTERNET_V4.to_string().into()]),
    );
    nat.insert("dns64".into(), toml::Value::Table(dns64));
    fs::write(
        config,
        toml::to_string(&table).expect("serialising the test config"),
    )
    .expect("writing the test config");
}

/// One record of the example's custom flow-log format: `version account-id interface-id srcaddr
/// dstaddr srcport dstport protocol packets bytes start end action log-status pkt-srcaddr
/// pkt-dstaddr flow-direction`.
#[derive(Debug, Clone)]
struct CustomRecord {
    srcaddr: String,
    dstaddr: String,
    protocol: String,
    action: String,
    pkt_srcaddr: String,
    pkt_dstaddr: String,
    flow_direction: String,
    line: String,
}

impl CustomRecord {
    fn parse(line: &str) -> Self {
        let fields: Vec<&str> = line.split(' ').collect();
        assert_eq!(
            fields.len(),
            17,
            "a flow-log line of the example's custom format has 17 fields: {line:?}"
        );
        Self {
            srcaddr: fields[3].to_owned(),
            dstaddr: fields[4].to_owned(),
            protocol: fields[7].to_owned(),
            action: fields[12].to_owned(),
            pkt_srcaddr: fields[14].to_owned(),
            pkt_dstaddr: fields[15].to_owned(),
            flow_direction: fields[16].to_owned(),
            line: line.to_owned(),
        }
    }
}

fn lines(records: &[CustomRecord]) -> String {
    records
        .iter()
        .map(|record| record.line.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_link_local_or_multicast(address: IpAddr) -> bool {
    match address {
        IpAddr::V6(v6) => v6.is_unicast_link_local() || v6.is_multicast() || v6.is_unspecified(),
        IpAddr::V4(_) => false,
    }
}

// --- Resolve, then TCP, UDP and ping.

#[test]
fn ipv6_only_instance_resolves_an_ipv4_only_server_through_dns64_and_reaches_it_over_tcp_udp_and_ping()
 {
    let nat64 = Nat64::start();
    let (instance, internet) = (&nat64.net.instance, &nat64.net.internet);
    let server = ip(nat64.resolve_server());

    // Started after the lookup: the DNS64's own queries to the upstream come from the gateway's
    // address, not through the NAT.
    let capture = Capture::start(internet, "eth0", "ip or ip6")
        .expect("starting tcpdump on the internet host");
    let (tcp, udp, ping) = thread::scope(|scope| {
        let tcp = scope.spawn(|| {
            traffic::tcp_exchange(
                internet,
                ip(addr::INTERNET_V4),
                instance,
                server,
                FOUR_MB,
                FOUR_MB,
            )
        });
        let udp = scope.spawn(|| {
            traffic::udp_echo(internet, ip(addr::INTERNET_V4), instance, server, 20, 1000)
        });
        let ping = scope.spawn(|| traffic::ping_output(instance, server, 5, None));
        (
            tcp.join().expect("TCP thread").unwrap_or_else(|error| {
                panic!(
                    "4 MB each way instance <-> {server}: {error:#}\ncounters: {:?}\ngateway \
                     output:\n{}",
                    nat64.counters(),
                    nat64.gateway.output()
                )
            }),
            udp.join()
                .expect("UDP thread")
                .unwrap_or_else(|error| panic!("UDP echo instance -> {server}: {error:#}")),
            ping.join()
                .expect("ping thread")
                .unwrap_or_else(|error| panic!("ping {server}: {error:#}")),
        )
    });
    let seen_outside = capture.stop().expect("stopping tcpdump");

    // TCP: every byte both ways, IPv6 on the instance's side, the public IPv4 on the server's.
    assert_eq!(
        (tcp.uploaded, tcp.downloaded),
        (FOUR_MB, FOUR_MB),
        "every byte both ways, verified ({tcp:?})"
    );
    assert_eq!(
        (tcp.client_local.ip(), tcp.client_saw_peer.ip()),
        (ip(addr::INSTANCE_V6), server),
        "the instance's connection is IPv6 end to end on its side ({tcp:?})"
    );
    assert_eq!(
        tcp.server_saw_peer.ip(),
        ip(PUBLIC),
        "the internet host's accept() reports the NAT gateway's public IPv4 ({tcp:?})"
    );
    // UDP: every datagram echoed, and only the public address seen by the server.
    assert_eq!(udp.echoed, 20, "every datagram echoed ({udp:?})");
    assert!(
        !udp.server_saw_peers.is_empty()
            && udp
                .server_saw_peers
                .iter()
                .all(|peer| peer.ip() == ip(PUBLIC)),
        "the UDP server saw only the public IPv4 ({udp:?})"
    );
    // Ping: ICMPv6 echo out, ICMPv4 echo on the internet, the reply back as ICMPv6.
    let ping_text = format!(
        "{}{}",
        String::from_utf8_lossy(&ping.stdout),
        String::from_utf8_lossy(&ping.stderr)
    );
    assert!(
        ping.status.success() && ping_text.contains(&format!("from {server}")),
        "ping {server} got echo replies from {server}:\n{ping_text}"
    );

    // On the internet host's link: IPv4 from the public address only, never an IPv6 address
    // (besides the router's link-local neighbour discovery).
    let sources: BTreeSet<IpAddr> = seen_outside
        .iter()
        .filter(|packet| packet.dst == ip(addr::INTERNET_V4))
        .map(|packet| packet.src)
        .collect();
    assert_eq!(
        sources,
        BTreeSet::from([ip(PUBLIC)]),
        "sources of what the internet host received"
    );
    let ipv6: Vec<&str> = seen_outside
        .iter()
        .filter(|packet| {
            (packet.src.is_ipv6() && !is_link_local_or_multicast(packet.src))
                || (packet.dst.is_ipv6() && !is_link_local_or_multicast(packet.dst))
        })
        .map(|packet| packet.line.as_str())
        .collect();
    assert!(
        ipv6.is_empty(),
        "IPv6 crossed the internet host's link:\n{}",
        ipv6.join("\n")
    );
    let echo_requests = seen_outside
        .iter()
        .filter(|packet| {
            packet.src == ip(PUBLIC)
                && packet.dst == ip(addr::INTERNET_V4)
                && packet.line.contains("ICMP echo request")
        })
        .count();
    assert!(
        echo_requests >= 1,
        "the ping arrived as ICMPv4 echo requests from 203.0.113.20: {echo_requests}"
    );

    // `gateway stats`: the NAT64 counters moved, no NAT64 drop, DNS64 synthesised.
    let stats = nat64.stats();
    let counters: BTreeMap<String, u64> = stats.counters.iter().cloned().collect();
    for name in ["forward_nat64_outbound", "forward_nat64_inbound"] {
        assert!(
            counters.get(name).copied().unwrap_or(0) > 100,
            "{name} counted the transfers: {counters:?}"
        );
    }
    assert!(
        counters["nat_bytes_out_to_destination"] >= FOUR_MB as u64
            && counters["nat_bytes_out_to_source"] >= FOUR_MB as u64,
        "the transfers went through the NAT gateway: {counters:?}"
    );
    let nat64_drops: BTreeMap<&String, &u64> = counters
        .iter()
        .filter(|(name, value)| name.starts_with("drop_nat64") && **value > 0)
        .collect();
    assert!(nat64_drops.is_empty(), "NAT64 drops: {nat64_drops:?}");
    let dns64 = stats.dns64.expect("`gateway stats` has DNS64 counters");
    assert!(dns64.synthesised >= 1, "DNS64 synthesised: {dns64:?}");

    // `gateway conntrack`: NAT64 sessions from the client's IPv6 to the public IPv4.
    let rows = nat64.conntrack();
    let shown = format!("{rows:#?}");
    let tcp_row = rows
        .iter()
        .find(|row| row.protocol == "tcp" && row.inside == tcp.client_local.to_string())
        .unwrap_or_else(|| panic!("no TCP session of {} in {shown}", tcp.client_local));
    assert_eq!(
        (
            tcp_row.gateway.as_str(),
            tcp_row.public.clone(),
            tcp_row.remote.clone()
        ),
        (
            "nat64",
            Some(tcp.server_saw_peer.to_string()),
            SocketAddr::new(ip(addr::INTERNET_V4), tcp.client_saw_peer.port()).to_string()
        ),
        "the TCP session: private IPv6 client, public IPv4 endpoint, IPv4 server: {tcp_row:?}"
    );
    assert!(
        tcp_row.packets_out > 100 && tcp_row.bytes_out > FOUR_MB as u64 && tcp_row.packets_in > 100,
        "the TCP session counted the transfer: {tcp_row:?}"
    );
    let client = format!("[{}]:", addr::INSTANCE_V6);
    for peer in &udp.server_saw_peers {
        let udp_row = rows
            .iter()
            .find(|row| row.protocol == "udp" && row.public == Some(peer.to_string()))
            .unwrap_or_else(|| panic!("no UDP session for {peer} in {shown}"));
        assert!(
            udp_row.gateway == "nat64"
                && udp_row.inside.starts_with(&client)
                && udp_row.packets_out > 0
                && udp_row.packets_in > 0,
            "the UDP session of {peer}: {udp_row:?}"
        );
    }
    assert!(
        rows.iter().any(|row| row.protocol.starts_with("icmp")
            && row.gateway == "nat64"
            && row.inside.starts_with(&client)
            && row
                .public
                .as_deref()
                .is_some_and(|public| public.starts_with("203.0.113.20:"))
            && row.packets_in > 0),
        "an ICMP echo session from the instance in {shown}"
    );
    let filtered: Vec<ConntrackRow> = serde_json::from_str(&nat64.cli(&[
        "conntrack",
        "--json",
        "--address",
        &addr::INSTANCE_V6.to_string(),
    ]))
    .expect("parsing the filtered conntrack");
    assert!(
        !filtered.is_empty() && filtered.iter().all(|row| row.inside.starts_with(&client)),
        "--address {} keeps the instance's sessions: {filtered:#?}",
        addr::INSTANCE_V6
    );

    // Flow log (1 s aggregation): outbound, the client's IPv6 in pkt-srcaddr and the public IPv4
    // in srcaddr; inbound, the server's IPv4 as it arrived and the addresses the client got.
    let client_v6 = addr::INSTANCE_V6.to_string();
    let server_v6 = server.to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let records = nat64.flow_log();
        let outbound = |protocols: &[&str]| {
            records.iter().any(|record| {
                record.pkt_srcaddr == client_v6
                    && record.pkt_dstaddr == server_v6
                    && record.srcaddr == PUBLIC.to_string()
                    && record.dstaddr == addr::INTERNET_V4.to_string()
                    && protocols.contains(&record.protocol.as_str())
                    && record.action == "ACCEPT"
                    && record.flow_direction == "egress"
            })
        };
        let inbound = |protocol: &str| {
            records.iter().any(|record| {
                record.pkt_srcaddr == addr::INTERNET_V4.to_string()
                    && record.pkt_dstaddr == PUBLIC.to_string()
                    && record.srcaddr == server_v6
                    && record.dstaddr == client_v6
                    && record.protocol == protocol
                    && record.action == "ACCEPT"
                    && record.flow_direction == "ingress"
            })
        };
        if outbound(&["6"]) && outbound(&["17"]) && outbound(&["58", "1"]) && inbound("6") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "flow-log records of the instance's TCP, UDP and ICMP with {client_v6} in \
             pkt-srcaddr and 203.0.113.20 in srcaddr, and of the TCP replies from 192.0.2.10 \
             to {client_v6}:\n{}",
            lines(&records)
        );
        thread::sleep(Duration::from_millis(250));
    }
}

// --- Path MTU discovery across the family change.

#[test]
fn fragmentation_needed_from_an_ipv4_router_reaches_the_client_as_packet_too_big_and_large_transfers_complete()
 {
    let nat64 = Nat64::start();
    let (instance, router, internet) =
        (&nat64.net.instance, &nat64.net.router, &nat64.net.internet);
    let server = ip(nat64.resolve_server());

    // The router's link to the internet host carries 1400 bytes. The internet host advertises
    // MSS 1460 all the same (as a server does whose own link is larger than the path), so the
    // instance's full-size segments (1500 bytes of IPv6, 1480 of IPv4 with DF once translated)
    // make the router answer "fragmentation needed, MTU 1400" to 203.0.113.20. Only that error,
    // translated to ICMPv6 Packet Too Big (MTU 1420) for the instance, lets the upload complete.
    // The internet host's own segments fit its link (1400): the download needs no error.
    router
        .ip(["link", "set", "rtr-inet", "mtu", "1400"])
        .expect("MTU 1400 on the router's internet link");
    internet
        .ip(["link", "set", "eth0", "mtu", "1400"])
        .expect("MTU 1400 on the internet host's link");
    internet
        .ip([
            "-4",
            "route",
            "replace",
            "default",
            "via",
            &addr::ROUTER_INET_V4.to_string(),
            "dev",
            "eth0",
            "advmss",
            "1460",
        ])
        .expect("advertising MSS 1460 from the internet host");

    let too_big_inside = Capture::start(instance, "eth0", "icmp6 and ip6[40] == 2")
        .expect("starting tcpdump inside");
    let frag_needed_outside = Capture::start(router, "rtr-gw", "icmp and icmp[0] == 3")
        .expect("starting tcpdump on the router's gateway link");
    const EIGHT_MB: usize = 8 * 1024 * 1024;
    let transfer = traffic::tcp_exchange(
        internet,
        ip(addr::INTERNET_V4),
        instance,
        server,
        EIGHT_MB,
        FOUR_MB,
    );
    let too_big = too_big_inside.stop().expect("stopping tcpdump inside");
    let frag_needed = frag_needed_outside
        .stop()
        .expect("stopping tcpdump on the router");

    // Along the way first, so that a stalled transfer says where the error got lost.
    assert!(
        frag_needed
            .iter()
            .any(|packet| packet.src == ip(addr::ROUTER_GW_V4)
                && packet.dst == ip(PUBLIC)
                && packet.line.contains("mtu 1400")),
        "the router sent fragmentation needed (MTU 1400) to 203.0.113.20: {frag_needed:?}"
    );
    let router_in_prefix = ip(in_prefix(addr::ROUTER_GW_V4));
    assert!(
        too_big.iter().any(|packet| packet.src == router_in_prefix
            && packet.dst == ip(addr::INSTANCE_V6)
            && packet.line.contains("mtu 1420")),
        "the router's error reached the instance as Packet Too Big, MTU 1420, from \
         {router_in_prefix}: {too_big:?}\ncounters: {:?}",
        nat64.counters()
    );
    assert!(
        nat64.counter("nat64_icmp_error_translated_inbound") > 0,
        "the gateway counted the translated error: {:?}",
        nat64.counters()
    );
    let route = instance
        .ip(["-6", "route", "get", &server.to_string()])
        .expect("ip route get");
    assert!(
        route.contains("mtu 1420"),
        "the instance learned the path MTU 1420 towards {server}: {route}"
    );

    let seen = transfer.unwrap_or_else(|error| {
        panic!(
            "8 MB up and 4 MB down over a 1400-byte IPv4 hop: {error:#}\ncounters: {:?}\ngateway \
             output:\n{}",
            nat64.counters(),
            nat64.gateway.output()
        )
    });
    assert_eq!(
        (seen.uploaded, seen.downloaded),
        (EIGHT_MB, FOUR_MB),
        "every byte both ways, verified ({seen:?})"
    );
    assert_eq!(
        seen.server_saw_peer.ip(),
        ip(PUBLIC),
        "the internet host saw the public IPv4 ({seen:?})"
    );
}

#[test]
fn port_unreachable_from_the_client_reaches_the_ipv4_server_as_icmpv4_from_the_public_address() {
    let nat64 = Nat64::start();
    let (instance, internet) = (&nat64.net.instance, &nat64.net.internet);
    let server_v6 = ip(nat64.resolve_server());
    let server_socket = internet
        .enter(|| {
            let socket = UdpSocket::bind((addr::INTERNET_V4, 0))?;
            socket.set_read_timeout(Some(Duration::from_secs(2)))?;
            Ok(socket)
        })
        .expect("a UDP socket on the internet host");
    let server_port = server_socket
        .local_addr()
        .expect("the server's port")
        .port();

    // A session from a client socket that then closes: the server's next datagram reaches a
    // closed port, and the instance answers with ICMPv6 port unreachable.
    instance
        .enter(move || {
            let client = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))?;
            client.send_to(b"hello", SocketAddr::new(server_v6, server_port))?;
            Ok(())
        })
        .expect("sending from the instance");
    let mut buf = [0u8; 64];
    let (length, public) = server_socket
        .recv_from(&mut buf)
        .unwrap_or_else(|error| panic!("the internet host got nothing from the instance: {error}"));
    assert_eq!(
        (&buf[..length], public.ip()),
        (&b"hello"[..], ip(PUBLIC)),
        "the datagram arrived from the public IPv4"
    );
    // Connected, the socket reports the ICMP error of its peer as ECONNREFUSED.
    server_socket
        .connect(public)
        .expect("connecting to the peer");
    let capture = Capture::start(internet, "eth0", "icmp").expect("starting tcpdump outside");
    server_socket
        .send(b"late")
        .expect("answering the closed port");
    let answer = server_socket.recv(&mut buf);
    let errors = capture.stop().expect("stopping tcpdump");

    assert!(
        errors.iter().any(|packet| packet.src == ip(PUBLIC)
            && packet.dst == ip(addr::INTERNET_V4)
            && packet.line.contains("port")
            && packet.line.contains("unreachable")),
        "ICMPv4 port unreachable from 203.0.113.20 reached the internet host: {errors:?}\n\
         counters: {:?}",
        nat64.counters()
    );
    assert_eq!(
        answer.map_err(|error| error.kind()),
        Err(std::io::ErrorKind::ConnectionRefused),
        "the internet host's socket learned that the port is closed"
    );
    assert!(
        nat64.counter("nat64_icmp_error_translated_outbound") > 0,
        "the gateway counted the translated error: {:?}",
        nat64.counters()
    );
}

// --- Nothing gets in.

const PROBED_TCP_PORT: u16 = 7777;
const PROBED_UDP_PORT: u16 = 7778;
const SCAN_TCP_PORTS: std::ops::RangeInclusive<u16> = 1..=1024;
const SCAN_UDP_PORTS: std::ops::RangeInclusive<u16> = 1..=200;

fn from_internet_to_public() -> etherparse::PacketBuilderStep<etherparse::IpHeaders> {
    PacketBuilder::ipv4(addr::INTERNET_V4.octets(), PUBLIC.octets(), 64)
}

fn build(
    builder: impl FnOnce(&mut Vec<u8>) -> Result<(), etherparse::err::packet::BuildWriteError>,
) -> Vec<u8> {
    let mut out = Vec::new();
    builder(&mut out).unwrap_or_else(|error| panic!("building a scan packet: {error}"));
    out
}

fn syn(sport: u16, dport: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to_public()
            .tcp(sport, dport, 0x7a7a_0000, 64240)
            .syn()
            .write(out, &[])
    })
}

fn ack(sport: u16, dport: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to_public()
            .tcp(sport, dport, 0x7a7a_0000, 64240)
            .ack(0x0102_0304)
            .write(out, &[])
    })
}

fn udp_probe(sport: u16, dport: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to_public()
            .udp(sport, dport)
            .write(out, b"probe")
    })
}

fn echo_request(id: u16) -> Vec<u8> {
    build(|out| {
        from_internet_to_public()
            .icmpv4(Icmpv4Type::EchoRequest(IcmpEchoHeader { id, seq: 1 }))
            .write(out, b"probe")
    })
}

/// TCP and UDP services listening on every IPv6 address of `host`; they must never hear from the
/// internet.
fn services(
    host: &Netns,
) -> (
    mpsc::Sender<()>,
    thread::JoinHandle<anyhow::Result<Vec<String>>>,
) {
    let (ready_tx, ready_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let handle = host.spawn_thread(move || {
        let tcp = TcpListener::bind((Ipv6Addr::UNSPECIFIED, PROBED_TCP_PORT))?;
        let udp = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, PROBED_UDP_PORT))?;
        tcp.set_nonblocking(true)?;
        udp.set_nonblocking(true)?;
        ready_tx.send(())?;
        let _ = done_rx.recv_timeout(Duration::from_secs(120));
        let mut heard = Vec::new();
        while let Ok((_, peer)) = tcp.accept() {
            heard.push(format!("TCP connection from {peer}"));
        }
        let mut buf = [0u8; 2048];
        while let Ok((_, peer)) = udp.recv_from(&mut buf) {
            heard.push(format!("UDP datagram from {peer}"));
        }
        Ok(heard)
    });
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .unwrap_or_else(|_| panic!("the services in {} did not start", host.name()));
    (done_tx, handle)
}

/// What the capture inside must never see: any IPv4, or IPv6 from the NAT64 prefix (the internet
/// translated).
const INSIDE_FILTER: &str = "ip or (ip6 and src net 2001:db8:64::/96)";

#[test]
fn unsolicited_ipv4_connections_and_a_port_scan_to_the_public_address_reach_nothing_inside() {
    let nat64 = Nat64::start();
    let (instance, internet) = (&nat64.net.instance, &nat64.net.internet);
    let server = ip(nat64.resolve_server());
    // A live NAT64 session first: a public mapping exists, and still only its own peer gets in.
    let udp = traffic::udp_echo(internet, ip(addr::INTERNET_V4), instance, server, 3, 100)
        .expect("UDP echo from the instance");
    assert_eq!(udp.echoed, 3, "{udp:?}");
    let mapped = udp
        .server_saw_peers
        .iter()
        .next()
        .expect("the UDP server saw a peer")
        .port();

    let (done, listening) = services(instance);
    let before = nat64.counters();
    let capture = Capture::start(instance, "eth0", INSIDE_FILTER).expect("starting tcpdump inside");

    // The scan: SYNs to every well-known port, to the services' port and to the live mapping's
    // public port, stray ACKs, UDP (also to the mapping, from another source port of the same
    // host), and pings.
    let mut syns: Vec<Vec<u8>> = SCAN_TCP_PORTS.map(|port| syn(40000, port)).collect();
    syns.push(syn(40000, PROBED_TCP_PORT));
    syns.push(syn(40000, mapped));
    let acks: Vec<Vec<u8>> = [PROBED_TCP_PORT, 22, 80, 443, mapped]
        .into_iter()
        .map(|port| ack(41000, port))
        .collect();
    let mut udps: Vec<Vec<u8>> = SCAN_UDP_PORTS.map(|port| udp_probe(42000, port)).collect();
    udps.push(udp_probe(42000, PROBED_UDP_PORT));
    udps.push(udp_probe(42000, mapped));
    let pings: Vec<Vec<u8>> = (1..=10).map(echo_request).collect();
    let sent = [
        ("drop_nat_unsolicited_tcp_syn", syns.len() as u64),
        ("drop_nat_unsolicited_tcp", acks.len() as u64),
        ("drop_nat_unsolicited_udp", udps.len() as u64),
        ("drop_nat_unsolicited_icmp", pings.len() as u64),
    ];
    for packets in [syns, acks, udps, pings] {
        traffic::send_raw(internet, packets)
            .unwrap_or_else(|error| panic!("sending from {}: {error:#}", internet.name()));
    }
    // A real connection attempt (the kernel's SYN and its retransmission) and a real ping.
    let target = SocketAddr::new(ip(PUBLIC), PROBED_TCP_PORT);
    let connected = internet
        .enter(move || {
            Ok(TcpStream::connect_timeout(
                &target,
                Duration::from_millis(1500),
            ))
        })
        .expect("connect attempt");
    assert!(
        connected.is_err(),
        "a connection from the internet to {target} succeeded"
    );
    let ping = traffic::ping_output(internet, ip(PUBLIC), 3, None).expect("ping");
    assert!(
        !ping.status.success(),
        "ping from the internet to 203.0.113.20 got a reply:\n{}",
        String::from_utf8_lossy(&ping.stdout)
    );
    thread::sleep(Duration::from_millis(500));

    let inside = capture.stop().expect("stopping tcpdump inside");
    assert!(
        inside.is_empty(),
        "{} packets from the internet reached the instance:\n{}",
        inside.len(),
        inside
            .iter()
            .map(|packet| packet.line.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = done.send(());
    let heard = listening
        .join()
        .expect("services thread")
        .unwrap_or_else(|error| panic!("the services in the instance: {error:#}"));
    assert!(heard.is_empty(), "the instance's services heard: {heard:?}");

    let after = nat64.counters();
    let moved =
        |name: &str| after.get(name).copied().unwrap_or(0) - before.get(name).copied().unwrap_or(0);
    for (counter, at_least) in sent {
        assert!(
            moved(counter) >= at_least,
            "{counter} moved by {}, expected at least {at_least}: {after:?}",
            moved(counter)
        );
    }
    assert_eq!(
        moved("forward_nat64_inbound") + moved("nat64_icmp_error_translated_inbound"),
        0,
        "nothing was let in: {after:?}"
    );
    let rows = nat64.conntrack();
    assert!(
        rows.iter().all(|row| row.gateway == "nat64"
            && row.protocol == "udp"
            && row.inside.starts_with(&format!("[{}]:", addr::INSTANCE_V6))),
        "the scan created no state (only the UDP echo's session is there): {rows:#?}"
    );

    // The capture works: the answer to a ping from inside is seen inside.
    let control = Capture::start(instance, "eth0", INSIDE_FILTER).expect("starting tcpdump");
    assert!(traffic::ping(instance, server, 2), "ping {server}");
    let seen = control.stop().expect("stopping tcpdump");
    assert!(
        seen.iter().any(|packet| packet.src == server),
        "the capture inside sees the echo replies (control): {seen:?}"
    );
}
