//! `[nat_gateways.dns64]`: the DNS64 resolver (RFC 6147) that a NAT gateway with a NAT64 prefix
//! can run for its VPC. Read and validated here, on its own, so the NAT gateway code only hands
//! the table over.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use ipnet::Ipv6Net;

use super::{
    Vpc,
    reader::{At, Sink, TableReader},
};

/// The port of `listen` and `upstream` entries written as a bare address.
pub const DNS_PORT: u16 = 53;
/// The per-upstream timeout when `timeout_ms` is not set.
pub const DEFAULT_DNS64_TIMEOUT_MS: u64 = 2000;
/// The range of `timeout_ms`.
pub const DNS64_TIMEOUT_MS: std::ops::RangeInclusive<u64> = 1..=60_000;
/// The AAAA records treated as absent when `exclude_aaaa` is not set: IPv4-mapped addresses, which
/// an IPv6-only host cannot reach (RFC 6147 section 5.1.4).
pub const DEFAULT_EXCLUDE_AAAA: &str = "::ffff:0:0/96";

/// The keys of `[nat_gateways.dns64]`.
pub(super) const KEYS: [&str; 4] = ["listen", "upstream", "exclude_aaaa", "timeout_ms"];

/// A NAT gateway's DNS64 resolver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dns64Config {
    /// Where it answers, over UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// The resolvers it forwards to, tried in order.
    pub upstream: Vec<SocketAddr>,
    /// AAAA records inside these prefixes count as absent: synthesis happens as if there were none.
    pub exclude_aaaa: Vec<Ipv6Net>,
    /// How long to wait for one upstream before trying the next.
    pub timeout: Duration,
}

/// `[nat_gateways.dns64]` as written.
pub(super) struct RawDns64 {
    field: String,
    line: usize,
    listen: Option<At<Vec<At<String>>>>,
    upstream: Option<At<Vec<At<String>>>>,
    exclude_aaaa: Option<At<Vec<At<String>>>>,
    timeout_ms: Option<At<i64>>,
}

impl RawDns64 {
    pub(super) fn read(table: &TableReader<'_, '_>, sink: &mut Sink) -> Self {
        Self {
            field: table.field().to_owned(),
            line: table.line(),
            listen: table.string_array(sink, "listen"),
            upstream: table.string_array(sink, "upstream"),
            exclude_aaaa: table.string_array(sink, "exclude_aaaa"),
            timeout_ms: table.integer(sink, "timeout_ms"),
        }
    }
}

/// The listen addresses already taken, with the field and line that took them: one socket cannot
/// serve two gateways.
pub(super) type ListenAddresses = HashMap<SocketAddr, (String, usize)>;

/// Validates one gateway's DNS64 table. `has_nat64_prefix`: whether the gateway sets
/// `nat64_prefix` (valid or not; a bad prefix is reported on its own field).
pub(super) fn validate_dns64(
    raw: RawDns64,
    has_nat64_prefix: bool,
    vpc: &Vpc,
    taken: &mut ListenAddresses,
    sink: &mut Sink,
) -> Dns64Config {
    if !has_nat64_prefix {
        sink.report(
            raw.line,
            raw.field.clone(),
            "DNS64 synthesises addresses inside the gateway's NAT64 prefix: set nat64_prefix on \
             this NAT gateway (e.g. \"64:ff9b::/96\")",
        );
    }
    let listen = socket_addresses(sink, &raw.field, raw.line, "listen", raw.listen);
    for (text, address) in &listen {
        check_listen_address(sink, text, *address, vpc, taken);
    }
    let upstream = socket_addresses(sink, &raw.field, raw.line, "upstream", raw.upstream);
    for (text, address) in &upstream {
        if address.ip().is_unspecified() {
            sink.report_at(
                text,
                format!("upstream {} is not a resolver's address", address.ip()),
            );
        }
    }
    let exclude_aaaa = match raw.exclude_aaaa {
        Some(texts) => texts
            .value
            .iter()
            .filter_map(|text| super::parse_ipv6_prefix(sink, text))
            .collect(),
        None => vec![
            DEFAULT_EXCLUDE_AAAA
                .parse()
                .expect("the default exclusion is a valid prefix"),
        ],
    };
    let timeout_ms = match raw.timeout_ms {
        None => DEFAULT_DNS64_TIMEOUT_MS,
        Some(at) => match u64::try_from(at.value) {
            Ok(ms) if DNS64_TIMEOUT_MS.contains(&ms) => ms,
            _ => {
                sink.report_at(
                    &at,
                    format!(
                        "timeout_ms {} is out of range; expected {} to {} milliseconds",
                        at.value,
                        DNS64_TIMEOUT_MS.start(),
                        DNS64_TIMEOUT_MS.end()
                    ),
                );
                DEFAULT_DNS64_TIMEOUT_MS
            }
        },
    };
    Dns64Config {
        listen: listen.into_iter().map(|(_, address)| address).collect(),
        upstream: upstream.into_iter().map(|(_, address)| address).collect(),
        exclude_aaaa,
        timeout: Duration::from_millis(timeout_ms),
    }
}

/// Parses a list of `address` (port 53) or `address:port` / `[address]:port` entries, which must
/// not be empty; returns the ones that parse, with their text.
fn socket_addresses(
    sink: &mut Sink,
    table_field: &str,
    table_line: usize,
    key: &str,
    texts: Option<At<Vec<At<String>>>>,
) -> Vec<(At<String>, SocketAddr)> {
    let (texts, line, field) = match texts {
        Some(texts) => (texts.value, texts.line, texts.field),
        None => (Vec::new(), table_line, format!("{table_field}.{key}")),
    };
    if texts.is_empty() {
        let what = if key == "listen" {
            "the addresses DNS64 answers on"
        } else {
            "the resolvers DNS64 forwards to"
        };
        sink.report(
            line,
            field,
            format!("{key} must list at least one address: {what}"),
        );
    }
    texts
        .into_iter()
        .filter_map(|text| {
            let address = parse_socket_address(&text.value);
            match address {
                Ok(address) => Some((text, address)),
                Err(message) => {
                    sink.report_at(&text, message);
                    None
                }
            }
        })
        .collect()
}

fn parse_socket_address(text: &str) -> Result<SocketAddr, String> {
    let address = text
        .parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .or_else(|_| text.parse::<SocketAddr>())
        .map_err(|_| {
            format!(
                "{text:?} is not an address (\"192.0.2.53\", \"2001:db8::53\", port 53) or an \
                 address with a port (\"192.0.2.53:5353\", \"[2001:db8::53]:5353\")"
            )
        })?;
    if address.port() == 0 {
        return Err(format!("{text:?}: port 0 is not a DNS port"));
    }
    Ok(address)
}

/// A listen address must face the VPC only: a wildcard or an outside address would make the
/// gateway an open resolver on the internet side (DNS amplification). Loopback is allowed, for
/// local tools.
fn check_listen_address(
    sink: &mut Sink,
    text: &At<String>,
    address: SocketAddr,
    vpc: &Vpc,
    taken: &mut ListenAddresses,
) {
    let ip = address.ip();
    let in_vpc = match ip {
        IpAddr::V4(v4) => vpc.ipv4_cidrs.iter().any(|cidr| cidr.contains(&v4)),
        IpAddr::V6(v6) => vpc.ipv6_cidrs.iter().any(|cidr| cidr.contains(&v6)),
    };
    if !in_vpc && !ip.is_loopback() {
        sink.report_at(
            text,
            format!(
                "listen address {ip} is outside the VPC's CIDRs; DNS64 answers the VPC only (a \
                 wildcard or public address would make it an open resolver)"
            ),
        );
        return;
    }
    if let Some((other_field, other_line)) = taken.get(&address) {
        // Reported on the one further down in the file.
        let (line, field, first) = if *other_line <= text.line {
            (text.line, text.field.clone(), other_field.clone())
        } else {
            (*other_line, other_field.clone(), text.field.clone())
        };
        sink.report(
            line,
            field,
            format!("listen address {address} is already used by {first}"),
        );
        return;
    }
    taken.insert(address, (text.field.clone(), text.line));
}

#[cfg(test)]
mod tests {
    use super::{
        super::{
            Config,
            tests::{assert_problem, plus, problems},
        },
        *,
    };

    /// A NAT gateway with a NAT64 prefix and `dns64` (TOML lines) as its DNS64 table.
    fn gateway_with(dns64: &str) -> String {
        plus(&format!(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
             nat64_prefix = \"64:ff9b::/96\"\n[nat_gateways.dns64]\n{dns64}"
        ))
    }

    const MINIMAL: &str = "listen = [\"10.0.1.2\"]\nupstream = [\"192.0.2.53\"]\n";

    fn dns64_of(text: &str) -> Dns64Config {
        Config::parse(text, "t").unwrap().nat_gateways[0]
            .dns64
            .clone()
            .expect("the gateway has DNS64")
    }

    #[test]
    fn defaults_and_address_forms() {
        let dns64 = dns64_of(&gateway_with(MINIMAL));
        assert_eq!(dns64.listen, ["10.0.1.2:53".parse().unwrap()]);
        assert_eq!(dns64.upstream, ["192.0.2.53:53".parse().unwrap()]);
        assert_eq!(dns64.exclude_aaaa, ["::ffff:0:0/96".parse().unwrap()]);
        assert_eq!(dns64.timeout, Duration::from_millis(2000));

        let dns64 = dns64_of(&gateway_with(
            "listen = [\"10.0.1.2\", \"2001:db8:1000:1::2\", \"[2001:db8:1000:1::3]:5353\", \
             \"127.0.0.1:5353\"]\n\
             upstream = [\"198.51.100.53\", \"[2001:db8:ffff::53]:53\"]\n\
             exclude_aaaa = []\ntimeout_ms = 500\n",
        ));
        assert_eq!(
            dns64.listen,
            [
                "10.0.1.2:53".parse().unwrap(),
                "[2001:db8:1000:1::2]:53".parse().unwrap(),
                "[2001:db8:1000:1::3]:5353".parse().unwrap(),
                "127.0.0.1:5353".parse().unwrap(),
            ]
        );
        assert_eq!(
            dns64.upstream,
            [
                "198.51.100.53:53".parse().unwrap(),
                "[2001:db8:ffff::53]:53".parse().unwrap()
            ]
        );
        assert!(dns64.exclude_aaaa.is_empty());
        assert_eq!(dns64.timeout, Duration::from_millis(500));
    }

    #[test]
    fn without_dns64_table_there_is_none() {
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
             nat64_prefix = \"64:ff9b::/96\"\n",
        );
        assert_eq!(
            Config::parse(&text, "t").unwrap().nat_gateways[0].dns64,
            None
        );
    }

    #[test]
    fn needs_the_nat64_prefix() {
        let text = plus(&format!(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
             [nat_gateways.dns64]\n{MINIMAL}"
        ));
        assert_problem(
            &text,
            "[nat_gateways.dns64]",
            "nat_gateways[0].dns64",
            "DNS64 synthesises addresses inside the gateway's NAT64 prefix: set nat64_prefix on \
             this NAT gateway",
        );
    }

    #[test]
    fn an_invalid_nat64_prefix_is_reported_once() {
        let text = gateway_with(MINIMAL).replace("64:ff9b::/96", "64:ff9b::/80");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].field, "nat_gateways[0].nat64_prefix");
    }

    #[test]
    fn listen_is_required() {
        let text = gateway_with("upstream = [\"192.0.2.53\"]\n");
        assert_problem(
            &text,
            "[nat_gateways.dns64]",
            "nat_gateways[0].dns64.listen",
            "listen must list at least one address: the addresses DNS64 answers on",
        );
    }

    #[test]
    fn upstream_must_not_be_empty() {
        let text = gateway_with("listen = [\"10.0.1.2\"]\nupstream = []\n");
        assert_problem(
            &text,
            "upstream = []",
            "nat_gateways[0].dns64.upstream",
            "upstream must list at least one address: the resolvers DNS64 forwards to",
        );
    }

    #[test]
    fn malformed_address() {
        let text = gateway_with("listen = [\"10.0.1.2\"]\nupstream = [\"resolver.example\"]\n");
        assert_problem(
            &text,
            "upstream = [",
            "nat_gateways[0].dns64.upstream[0]",
            "\"resolver.example\" is not an address (\"192.0.2.53\", \"2001:db8::53\", port 53) \
             or an address with a port",
        );
    }

    #[test]
    fn port_zero() {
        let text = gateway_with("listen = [\"10.0.1.2:0\"]\nupstream = [\"192.0.2.53\"]\n");
        assert_problem(
            &text,
            "listen = [",
            "nat_gateways[0].dns64.listen[0]",
            "\"10.0.1.2:0\": port 0 is not a DNS port",
        );
    }

    #[test]
    fn unspecified_upstream() {
        let text = gateway_with("listen = [\"10.0.1.2\"]\nupstream = [\"0.0.0.0\"]\n");
        assert_problem(
            &text,
            "upstream = [",
            "nat_gateways[0].dns64.upstream[0]",
            "upstream 0.0.0.0 is not a resolver's address",
        );
    }

    #[test]
    fn listen_outside_the_vpc() {
        let text = gateway_with("listen = [\"0.0.0.0\"]\nupstream = [\"192.0.2.53\"]\n");
        assert_problem(
            &text,
            "listen = [",
            "nat_gateways[0].dns64.listen[0]",
            "listen address 0.0.0.0 is outside the VPC's CIDRs; DNS64 answers the VPC only",
        );
    }

    #[test]
    fn listen_address_on_two_gateways() {
        let text = gateway_with(MINIMAL)
            + "[[nat_gateways]]\nid = \"nat-b\"\npublic_ips = [\"198.51.100.2\"]\n\
               nat64_prefix = \"64:ff9b::/96\"\n[nat_gateways.dns64]\n\
               listen = [\"10.0.1.3\", \"10.0.1.2:53\"]\nupstream = [\"192.0.2.53\"]\n";
        assert_problem(
            &text,
            "listen = [\"10.0.1.3\"",
            "nat_gateways[1].dns64.listen[1]",
            "listen address 10.0.1.2:53 is already used by nat_gateways[0].dns64.listen[0]",
        );
    }

    #[test]
    fn exclude_aaaa_takes_ipv6_prefixes() {
        let text = gateway_with(&format!("{MINIMAL}exclude_aaaa = [\"10.0.0.0/8\"]\n"));
        assert_problem(
            &text,
            "exclude_aaaa",
            "nat_gateways[0].dns64.exclude_aaaa[0]",
            "10.0.0.0/8 is an IPv4 prefix, but this field takes IPv6 prefixes",
        );
    }

    #[test]
    fn timeout_out_of_range() {
        let text = gateway_with(&format!("{MINIMAL}timeout_ms = 0\n"));
        assert_problem(
            &text,
            "timeout_ms",
            "nat_gateways[0].dns64.timeout_ms",
            "timeout_ms 0 is out of range; expected 1 to 60000 milliseconds",
        );
    }

    #[test]
    fn unknown_key() {
        let text = gateway_with(&format!("{MINIMAL}forwarders = [\"192.0.2.53\"]\n"));
        assert_problem(
            &text,
            "forwarders",
            "nat_gateways[0].dns64.forwarders",
            "unknown key; expected one of: listen, upstream, exclude_aaaa, timeout_ms",
        );
    }
}
