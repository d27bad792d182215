//! End-to-end tests of DNS64 (RFC 6147): `gateway run` with `examples/nat-gateway.toml`, its NAT
//! gateway given the network-specific NAT64 prefix 2001:db8:64::/96 and a DNS64 resolver on the
//! gateway's VPC-side addresses (10.0.1.1 and 2001:db8:1000:1::1, port 53). The upstream is the
//! authoritative server of `gateway_tests::dns` on the internet host (192.0.2.10 and
//! 2001:db8:eeee::10), reached through the router like any other internet server. The instance
//! asks; the answers it gets, what the upstream received and `gateway stats` decide.
//!
//! Each test builds its own namespaces and files, so the tests run in parallel. They need root.

use std::{
    fs,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use gateway::{control::StatsReply, dns64::Dns64Stats};
use gateway_tests::{
    GatewayConfigFiles, GatewayProcess, IgwTopology, addr,
    dns::{self, NEGATIVE_TTL, RECORD_TTL, Received, Transport, ZoneServer},
    example_path, gateway_binary,
    util::wait_until,
    write_gateway_config,
};
use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};

/// The NAT gateway's network-specific NAT64 prefix: documentation IPv4 addresses may be
/// synthesised behind it (the Well-Known Prefix would refuse them).
const NAT64_PREFIX: &str = "2001:db8:64::/96";
/// Per-upstream timeout: short, so the failure test is quick.
const TIMEOUT_MS: i64 = 500;

/// The topology, the upstream zone server and the gateway with DNS64. Fields drop in order: the
/// gateway stops (SIGINT) before the zone server and the namespaces go away.
struct Dns64 {
    gateway: GatewayProcess,
    files: GatewayConfigFiles,
    zone: Option<ZoneServer>,
    net: IgwTopology,
}

impl Dns64 {
    fn start() -> Self {
        let net = IgwTopology::new().expect("building the topology");
        let zone = ZoneServer::start(
            &net.internet,
            &[addr::INTERNET_V4.into(), addr::INTERNET_V6.into()],
        )
        .expect("starting the upstream zone server on the internet host");
        let files = write_gateway_config(&example_path("nat-gateway.toml"), net.dir())
            .expect("writing examples/nat-gateway.toml into the test directory");
        add_dns64(&files.config);
        let gateway = net
            .start_gateway(&files.config)
            .expect("starting the gateway with DNS64");
        Self {
            gateway,
            files,
            zone: Some(zone),
            net,
        }
    }

    fn zone(&self) -> &ZoneServer {
        self.zone.as_ref().expect("the zone server runs")
    }

    /// The instance asks the gateway's DNS64 at `server`.
    fn ask_at(
        &self,
        server: SocketAddr,
        name: &str,
        record_type: RecordType,
        transport: Transport,
    ) -> Message {
        dns::ask(
            &self.net.instance,
            server,
            &dns::query(name, record_type),
            transport,
        )
        .unwrap_or_else(|error| {
            panic!(
                "{record_type} {name} to {server} over {transport:?}: {error:#}\ngateway output:\n{}",
                self.gateway.output()
            )
        })
    }

    /// The instance asks the gateway's DNS64 at 10.0.1.1 over UDP.
    fn ask(&self, name: &str, record_type: RecordType) -> Message {
        self.ask_at(dns64_v4(), name, record_type, Transport::Udp)
    }

    /// Runs `gateway ARGS --socket SOCKET` in the gateway namespace and returns stdout.
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

    fn dns64_stats(&self) -> Dns64Stats {
        let reply: StatsReply = serde_json::from_str(&self.cli(&["stats", "--json"]))
            .unwrap_or_else(|error| panic!("parsing `gateway stats --json`: {error}"));
        reply
            .dns64
            .expect("`gateway stats` has a dns64 object when DNS64 runs")
    }
}

/// The gateway's DNS64 on its IPv4 VPC-side address.
fn dns64_v4() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(addr::GATEWAY_VPC_V4), 53)
}

/// The gateway's DNS64 on its IPv6 VPC-side address.
fn dns64_v6() -> SocketAddr {
    SocketAddr::new(IpAddr::V6(addr::GATEWAY_VPC_V6), 53)
}

/// Gives the example's NAT gateway the NAT64 prefix and DNS64, and the VPC the IPv6 CIDR that
/// holds the gateway's IPv6 listen address.
fn add_dns64(config: &std::path::Path) {
    let text = fs::read_to_string(config).expect("reading the test config");
    let mut table: toml::Table = text.parse().expect("parsing the test config");
    let vpc = table["vpc"].as_table_mut().expect("[vpc] is a table");
    vpc.insert(
        "ipv6_cidrs".into(),
        toml::Value::Array(vec!["2001:db8:1000::/56".into()]),
    );
    let nat = table["nat_gateways"]
        .as_array_mut()
        .and_then(|gateways| gateways.first_mut())
        .and_then(toml::Value::as_table_mut)
        .expect("the example has a NAT gateway");
    nat.insert("nat64_prefix".into(), NAT64_PREFIX.into());
    let mut dns64 = toml::Table::new();
    dns64.insert(
        "listen".into(),
        toml::Value::Array(vec![
            addr::GATEWAY_VPC_V4.to_string().into(),
            format!("[{}]:53", addr::GATEWAY_VPC_V6).into(),
        ]),
    );
    dns64.insert(
        "upstream".into(),
        toml::Value::Array(vec![
            addr::INTERNET_V4.to_string().into(),
            format!("[{}]:53", addr::INTERNET_V6).into(),
        ]),
    );
    dns64.insert("timeout_ms".into(), TIMEOUT_MS.into());
    nat.insert("dns64".into(), toml::Value::Table(dns64));
    fs::write(
        config,
        toml::to_string(&table).expect("serialising the test config"),
    )
    .expect("writing the test config");
}

fn row(owner: &str, ttl: u32, record_type: &str, data: &str) -> (String, u32, String, String) {
    (owner.into(), ttl, record_type.into(), data.into())
}

#[track_caller]
fn assert_answer(message: &Message, expected: &[(String, u32, String, String)]) {
    assert_eq!(
        message.response_code,
        ResponseCode::NoError,
        "rcode of\n{message}"
    );
    assert_eq!(dns::answer_rows(message), expected, "answer of\n{message}");
}

#[test]
fn aaaa_is_synthesised_for_ipv4_only_names_and_real_answers_pass_through() {
    let dns64 = Dns64::start();
    // TTL of a synthesised record: the A record's, capped by the negative AAAA answer's SOA
    // minimum (RFC 6147 s5.1.7).
    let synthesised_ttl = RECORD_TTL.min(NEGATIVE_TTL);

    let answer = dns64.ask("v4only.example.", RecordType::AAAA);
    assert_answer(
        &answer,
        &[row(
            "v4only.example.",
            synthesised_ttl,
            "AAAA",
            "2001:db8:64::c633:640a",
        )],
    );
    assert!(!answer.authentic_data, "synthesised data is never AD");

    // The CNAME chain is kept; the AAAA is synthesised for the chain's end.
    assert_answer(
        &dns64.ask("alias.example.", RecordType::AAAA),
        &[
            row("alias.example.", RECORD_TTL, "CNAME", "v4only.example."),
            row(
                "v4only.example.",
                synthesised_ttl,
                "AAAA",
                "2001:db8:64::c633:640a",
            ),
        ],
    );

    // A real AAAA is returned as is.
    assert_answer(
        &dns64.ask("dual.example.", RecordType::AAAA),
        &[row(
            "dual.example.",
            RECORD_TTL,
            "AAAA",
            "2001:db8:ffff::11",
        )],
    );

    // An IPv4-mapped AAAA (excluded by default) counts as absent. Its answer was not negative (no
    // SOA), so the A record's TTL stands below the 600 s cap.
    assert_answer(
        &dns64.ask("mapped.example.", RecordType::AAAA),
        &[row(
            "mapped.example.",
            RECORD_TTL,
            "AAAA",
            "2001:db8:64::c633:640c",
        )],
    );

    // NXDOMAIN is returned as is.
    let missing = dns64.ask("missing.example.", RecordType::AAAA);
    assert_eq!(missing.response_code, ResponseCode::NXDomain, "{missing}");
    assert!(missing.answers.is_empty(), "{missing}");

    // Other types pass through.
    assert_answer(
        &dns64.ask("v4only.example.", RecordType::A),
        &[row("v4only.example.", RECORD_TTL, "A", "198.51.100.10")],
    );
    assert_answer(
        &dns64.ask("dual.example.", RecordType::A),
        &[row("dual.example.", RECORD_TTL, "A", "198.51.100.11")],
    );

    // Over TCP, and on the IPv6 listen address.
    let expected_v4only = [row(
        "v4only.example.",
        synthesised_ttl,
        "AAAA",
        "2001:db8:64::c633:640a",
    )];
    assert_answer(
        &dns64.ask_at(
            dns64_v4(),
            "v4only.example.",
            RecordType::AAAA,
            Transport::Tcp,
        ),
        &expected_v4only,
    );
    assert_answer(
        &dns64.ask_at(
            dns64_v6(),
            "v4only.example.",
            RecordType::AAAA,
            Transport::Udp,
        ),
        &expected_v4only,
    );
    assert_answer(
        &dns64.ask_at(
            dns64_v6(),
            "dual.example.",
            RecordType::AAAA,
            Transport::Tcp,
        ),
        &[row(
            "dual.example.",
            RECORD_TTL,
            "AAAA",
            "2001:db8:ffff::11",
        )],
    );

    // The upstream truncates every UDP answer for this name: the gateway asks again over TCP,
    // for the AAAA and for the A query alike.
    assert_answer(
        &dns64.ask("truncated.example.", RecordType::AAAA),
        &[row(
            "truncated.example.",
            synthesised_ttl,
            "AAAA",
            "2001:db8:64::c633:640d",
        )],
    );
    let truncated: Vec<Received> = dns64
        .zone()
        .received()
        .into_iter()
        .filter(|received| received.name == "truncated.example.")
        .collect();
    let expected: Vec<Received> = [
        (RecordType::AAAA, Transport::Udp),
        (RecordType::AAAA, Transport::Tcp),
        (RecordType::A, Transport::Udp),
        (RecordType::A, Transport::Tcp),
    ]
    .into_iter()
    .map(|(record_type, transport)| Received {
        name: "truncated.example.".into(),
        record_type,
        transport,
    })
    .collect();
    assert_eq!(truncated, expected, "what the upstream received");

    assert_eq!(
        dns64.dns64_stats(),
        Dns64Stats {
            queries: 11,
            answered_real_aaaa: 2,
            synthesised: 6,
            upstream_failures: 0,
            malformed_dropped: 0,
        }
    );
    let text = dns64.cli(&["stats"]);
    assert!(
        text.contains("DNS64:")
            && text
                .lines()
                .any(|line| line.split_whitespace().take(2).eq(["synthesised", "6"])),
        "`gateway stats` shows the DNS64 counters:\n{text}"
    );
}

#[test]
fn malformed_queries_are_dropped_and_a_dead_upstream_gives_servfail() {
    let mut dns64 = Dns64::start();

    // Not a DNS message: dropped, counted, no answer.
    dns::send_udp(
        &dns64.net.instance,
        dns64_v4(),
        b"\x12\x34not a dns message",
    )
    .expect("sending garbage to the DNS64");
    wait_until(
        Duration::from_secs(5),
        "the malformed query to be counted",
        || Ok(dns64.dns64_stats().malformed_dropped == 1),
    )
    .unwrap_or_else(|error| panic!("{error:#}\ngateway output:\n{}", dns64.gateway.output()));

    // The upstream goes away: SERVFAIL, counted, and a warning in the log.
    drop(dns64.zone.take());
    let answer = dns64.ask("v4only.example.", RecordType::AAAA);
    assert_eq!(answer.response_code, ResponseCode::ServFail, "{answer}");
    assert_eq!(
        answer.queries,
        dns::query("v4only.example.", RecordType::AAAA).queries
    );
    let answer = dns64.ask("v4only.example.", RecordType::A);
    assert_eq!(answer.response_code, ResponseCode::ServFail, "{answer}");
    let stats = dns64.dns64_stats();
    assert_eq!(
        (
            stats.queries,
            stats.upstream_failures,
            stats.malformed_dropped
        ),
        (2, 2, 1),
        "{stats:?}"
    );
    let output = dns64.gateway.output();
    assert_eq!(
        output.matches("no upstream answered").count(),
        1,
        "one warning for two failures within 10 s:\n{output}"
    );
}
