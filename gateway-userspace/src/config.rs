//! The declarative, AWS-shaped configuration file (TOML) and its validation.
//!
//! [`Config::parse`] reads the whole file and checks everything before anything is loaded: every
//! problem found is reported at once, each with its line and field path, e.g.
//! `gateway.toml:12: subnets[0].ipv4_cidr: 10.0.1.5/24 has host bits set; did you mean
//! 10.0.1.0/24?`
//!
//! The result is a [`Config`] whose cross-references are resolved to indices (a subnet's route
//! table, a route's NAT gateway, an elastic IP's subnet), and whose route tables hold the
//! implicit `local` routes for the VPC CIDRs, as AWS adds them.

mod dns64;
mod reader;

use std::{
    collections::HashMap,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

pub use self::dns64::Dns64Config;
use self::reader::{At, Sink, TableReader};

/// Where `gateway stats` finds the controller when `[controller] socket` is not set.
pub const DEFAULT_CONTROLLER_SOCKET: &str = "/run/gateway/gateway.sock";
/// The flow log aggregation interval when `aggregation_interval_seconds` is not set.
pub const DEFAULT_AGGREGATION_INTERVAL_SECONDS: u64 = 60;
/// The range of `aggregation_interval_seconds`.
pub const AGGREGATION_INTERVAL_SECONDS: std::ops::RangeInclusive<u64> = 1..=600;
/// The NAT gateway source port range when `port_range` is not set.
pub const DEFAULT_NAT_PORT_RANGE: (u16, u16) = (1024, 65535);
/// How many public IPs a NAT gateway may have.
pub const NAT_PUBLIC_IPS: std::ops::RangeInclusive<usize> = 1..=8;
/// The NAT64 prefix lengths of RFC 6052, section 2.2.
pub const NAT64_PREFIX_LENGTHS: [u8; 6] = [32, 40, 48, 56, 64, 96];
/// The longest Linux interface name (IFNAMSIZ - 1).
pub const MAX_INTERFACE_NAME_LEN: usize = 15;

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub vpc: Vpc,
    pub controller: Controller,
    pub interfaces: Vec<Interface>,
    pub subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    pub internet_gateway: Option<InternetGateway>,
    pub nat_gateways: Vec<NatGateway>,
    pub egress_only_internet_gateways: Vec<EgressOnlyInternetGateway>,
    /// `None`: flow logs are disabled.
    pub flow_logs: Option<FlowLogs>,
    /// Idle timeouts of tracked flows (egress-only gateway, NAT gateway).
    pub conntrack: Conntrack,
}

/// Idle timeouts of connection tracking, by protocol and TCP state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Conntrack {
    pub tcp_established_idle: Duration,
    /// SYN sent, FIN seen, reset.
    pub tcp_transitory_idle: Duration,
    pub udp_idle: Duration,
    pub icmp_idle: Duration,
    pub other_idle: Duration,
}

/// The `[conntrack]` keys, their defaults in seconds (AWS's NAT gateway: 350 s established TCP;
/// RFC minimums elsewhere) and what each sets.
pub const CONNTRACK_TIMEOUT_KEYS: [(&str, u64); 5] = [
    ("tcp_established_idle_seconds", 350),
    ("tcp_transitory_idle_seconds", 240),
    ("udp_idle_seconds", 300),
    ("icmp_idle_seconds", 60),
    ("other_idle_seconds", 300),
];

/// The range allowed for every conntrack timeout: one second to one week.
pub const CONNTRACK_TIMEOUT_SECONDS: std::ops::RangeInclusive<u64> = 1..=604_800;

impl Default for Conntrack {
    fn default() -> Self {
        let [established, transitory, udp, icmp, other] =
            CONNTRACK_TIMEOUT_KEYS.map(|(_, seconds)| Duration::from_secs(seconds));
        Conntrack {
            tcp_established_idle: established,
            tcp_transitory_idle: transitory,
            udp_idle: udp,
            icmp_idle: icmp,
            other_idle: other,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vpc {
    pub id: String,
    /// 12 digits; written in flow logs.
    pub account_id: String,
    pub ipv4_cidrs: Vec<Ipv4Net>,
    pub ipv6_cidrs: Vec<Ipv6Net>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    /// The unix socket `gateway stats` talks to.
    pub socket: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InterfaceRole {
    /// Faces the subnets.
    Vpc,
    /// Faces the internet.
    Internet,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// The Linux interface name.
    pub name: String,
    pub role: InterfaceRole,
    /// The flow log `interface-id`.
    pub id: String,
    /// The line of `name` in the file, for later errors such as "interface does not exist".
    pub line: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub ipv4_cidr: Option<Ipv4Net>,
    pub ipv6_cidr: Option<Ipv6Net>,
    /// Index into [`Config::route_tables`].
    pub route_table: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteTable {
    pub id: String,
    /// Starts with the implicit `local` route of every VPC CIDR (IPv4 first), then the routes of
    /// the file in their order.
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: IpNet,
    pub target: RouteTarget,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteTarget {
    /// Delivered inside the VPC.
    Local,
    /// Dropped.
    Blackhole,
    /// The (only) internet gateway.
    InternetGateway,
    /// Index into [`Config::nat_gateways`].
    NatGateway(usize),
    /// Index into [`Config::egress_only_internet_gateways`].
    EgressOnlyInternetGateway(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternetGateway {
    pub id: String,
    pub elastic_ips: Vec<ElasticIp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElasticIp {
    pub private: Ipv4Addr,
    pub public: Ipv4Addr,
    /// Index into [`Config::subnets`]: the subnet holding `private`.
    pub subnet: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatGateway {
    pub id: String,
    pub public_ips: Vec<Ipv4Addr>,
    /// Inclusive source port range used for translation.
    pub port_range: (u16, u16),
    pub nat64_prefix: Option<Ipv6Net>,
    /// NAT64: what to do with an IPv4 UDP datagram without a checksum (IPv6 requires one).
    pub nat64_udp_zero_checksum: UdpZeroChecksum,
    /// How public endpoints are chosen (`mapping = "endpoint-independent"`, the default).
    pub mapping: NatMappingMode,
    /// AWS's behaviour: a packet from inside on a timed-out TCP connection gets a RST back.
    pub rst_on_idle_timeout: bool,
    /// Where to append one line per finished mapping (abuse tracing); `None`: no log.
    pub mapping_log: Option<PathBuf>,
    /// `[nat_gateways.dns64]`: the DNS64 resolver for this gateway's NAT64 prefix; `None`: off.
    pub dns64: Option<Dns64Config>,
}

/// NAT64, IPv4 to IPv6: an unfragmented UDP datagram sent without a checksum (RFC 7915 s4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpZeroChecksum {
    /// Compute the checksum over the datagram (the default).
    #[default]
    Compute,
    /// Drop the datagram and count it.
    Drop,
}

/// The NAT gateway's mapping behaviour (RFC 4787 section 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NatMappingMode {
    /// One public endpoint per private endpoint, whatever the destination (RFC 4787 REQ-1).
    #[default]
    EndpointIndependent,
    /// A public port is reused towards different destinations (AWS's model: more capacity).
    EndpointDependent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressOnlyInternetGateway {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowLogs {
    pub path: PathBuf,
    pub aggregation_interval: Duration,
    /// A custom format, fields written `${name}` separated by single spaces; `None`: the default
    /// format.
    pub format: Option<String>,
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem is about the whole file (it could not be read).
    pub line: usize,
    /// The field path, like `route_tables[0].routes[1].target`; empty for TOML syntax errors and
    /// unreadable files.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line != 0 {
            write!(f, "{}:", self.line)?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", self.field)?;
        }
        write!(f, " {}", self.message)
    }
}

/// A configuration file that cannot be used, with everything wrong in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", render_problems(origin, problems))]
pub struct ConfigError {
    /// Where the text came from (the file path).
    pub origin: String,
    /// In line order; never empty.
    pub problems: Vec<Problem>,
}

/// One problem per line: `{origin}:{line}: {field}: {message}`.
fn render_problems(origin: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|problem| format!("{origin}:{problem}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Reads and validates the configuration file at `path`.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &origin),
            Err(error) => Err(ConfigError {
                origin,
                problems: vec![Problem {
                    line: 0,
                    field: String::new(),
                    message: format!("cannot read the configuration file: {error}"),
                }],
            }),
        }
    }

    /// Parses and validates a configuration; `origin` names it in the errors (the file path).
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        let mut sink = Sink::new(text);
        let config = match toml::de::DeTable::parse(text) {
            Ok(document) => {
                let raw = RawConfig::read(&document, &mut sink);
                Some(validate(raw, &mut sink))
            }
            Err(error) => {
                let line = sink.line(error.span().map_or(0, |span| span.start));
                let message = format!("TOML syntax error: {}", error.message().trim_end());
                sink.report(line, "", message);
                None
            }
        };
        let mut problems = sink.problems;
        match config {
            Some(config) if problems.is_empty() => Ok(config),
            _ => {
                problems.sort_by_key(|problem| problem.line);
                Err(ConfigError {
                    origin: origin.to_owned(),
                    problems,
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reading: the document as written, with lines and field paths, type-checked but not validated.

struct RawConfig {
    vpc: Option<RawVpc>,
    controller: Option<RawController>,
    interfaces: Vec<RawInterface>,
    subnets: Vec<RawSubnet>,
    route_tables: Vec<RawRouteTable>,
    internet_gateway: Option<RawInternetGateway>,
    nat_gateways: Vec<RawNatGateway>,
    egress_only_internet_gateways: Vec<RawEgressOnlyInternetGateway>,
    flow_logs: Option<RawFlowLogs>,
    conntrack: Option<Vec<(String, At<i64>)>>,
}

struct RawVpc {
    field: String,
    line: usize,
    id: Option<At<String>>,
    account_id: Option<At<String>>,
    ipv4_cidrs: Vec<At<String>>,
    ipv6_cidrs: Vec<At<String>>,
}

struct RawController {
    socket: Option<At<String>>,
}

struct RawInterface {
    name: Option<At<String>>,
    role: Option<At<String>>,
    id: Option<At<String>>,
}

struct RawSubnet {
    field: String,
    line: usize,
    id: Option<At<String>>,
    ipv4_cidr: Option<At<String>>,
    ipv6_cidr: Option<At<String>>,
    route_table: Option<At<String>>,
}

struct RawRouteTable {
    id: Option<At<String>>,
    routes: Vec<RawRoute>,
}

struct RawRoute {
    destination: Option<At<String>>,
    target: Option<At<String>>,
}

struct RawInternetGateway {
    id: Option<At<String>>,
    elastic_ips: Vec<RawElasticIp>,
}

struct RawElasticIp {
    private: Option<At<String>>,
    public: Option<At<String>>,
}

struct RawNatGateway {
    field: String,
    line: usize,
    id: Option<At<String>>,
    public_ips: Option<At<Vec<At<String>>>>,
    port_range: Option<At<String>>,
    nat64_prefix: Option<At<String>>,
    nat64_udp_zero_checksum: Option<At<String>>,
    mapping: Option<At<String>>,
    rst_on_idle_timeout: Option<At<bool>>,
    mapping_log: Option<At<String>>,
    dns64: Option<dns64::RawDns64>,
}

struct RawEgressOnlyInternetGateway {
    id: Option<At<String>>,
}

struct RawFlowLogs {
    path: Option<At<String>>,
    aggregation_interval_seconds: Option<At<i64>>,
    format: Option<At<String>>,
}

impl RawConfig {
    fn read(document: &toml::Spanned<toml::de::DeTable<'_>>, sink: &mut Sink) -> Self {
        let root = TableReader::root(
            document,
            sink,
            &[
                "vpc",
                "controller",
                "interfaces",
                "subnets",
                "route_tables",
                "internet_gateway",
                "nat_gateways",
                "egress_only_internet_gateways",
                "flow_logs",
                "conntrack",
            ],
        );
        let vpc = root.table(
            sink,
            "vpc",
            &["id", "account_id", "ipv4_cidrs", "ipv6_cidrs"],
        );
        if vpc.is_none() && !sink.problems.iter().any(|problem| problem.field == "vpc") {
            sink.report(1, "vpc", "the required section [vpc] is missing");
        }
        let vpc = vpc.map(|table| RawVpc {
            field: table.field().to_owned(),
            line: table.line(),
            id: table.required_string(sink, "id"),
            account_id: table.required_string(sink, "account_id"),
            ipv4_cidrs: table
                .string_array(sink, "ipv4_cidrs")
                .map(|at| at.value)
                .unwrap_or_default(),
            ipv6_cidrs: table
                .string_array(sink, "ipv6_cidrs")
                .map(|at| at.value)
                .unwrap_or_default(),
        });
        let controller = root
            .table(sink, "controller", &["socket"])
            .map(|table| RawController {
                socket: table.string(sink, "socket"),
            });
        let interfaces = root
            .table_array(sink, "interfaces", &["name", "role", "id"])
            .into_iter()
            .map(|table| RawInterface {
                name: table.required_string(sink, "name"),
                role: table.required_string(sink, "role"),
                id: table.string(sink, "id"),
            })
            .collect();
        let subnets = root
            .table_array(
                sink,
                "subnets",
                &["id", "ipv4_cidr", "ipv6_cidr", "route_table"],
            )
            .into_iter()
            .map(|table| RawSubnet {
                field: table.field().to_owned(),
                line: table.line(),
                id: table.required_string(sink, "id"),
                ipv4_cidr: table.string(sink, "ipv4_cidr"),
                ipv6_cidr: table.string(sink, "ipv6_cidr"),
                route_table: table.required_string(sink, "route_table"),
            })
            .collect();
        let route_tables = root
            .table_array(sink, "route_tables", &["id", "routes"])
            .into_iter()
            .map(|table| RawRouteTable {
                id: table.required_string(sink, "id"),
                routes: table
                    .table_array(sink, "routes", &["destination", "target"])
                    .into_iter()
                    .map(|route| RawRoute {
                        destination: route.required_string(sink, "destination"),
                        target: route.required_string(sink, "target"),
                    })
                    .collect(),
            })
            .collect();
        let internet_gateway = root
            .table(sink, "internet_gateway", &["id", "elastic_ips"])
            .map(|table| RawInternetGateway {
                id: table.required_string(sink, "id"),
                elastic_ips: table
                    .table_array(sink, "elastic_ips", &["private", "public"])
                    .into_iter()
                    .map(|eip| RawElasticIp {
                        private: eip.required_string(sink, "private"),
                        public: eip.required_string(sink, "public"),
                    })
                    .collect(),
            });
        let nat_gateways = root
            .table_array(
                sink,
                "nat_gateways",
                &[
                    "id",
                    "public_ips",
                    "port_range",
                    "nat64_prefix",
                    "nat64_udp_zero_checksum",
                    "mapping",
                    "rst_on_idle_timeout",
                    "mapping_log",
                    "dns64",
                ],
            )
            .into_iter()
            .map(|table| RawNatGateway {
                field: table.field().to_owned(),
                line: table.line(),
                id: table.required_string(sink, "id"),
                public_ips: table.string_array(sink, "public_ips"),
                port_range: table.string(sink, "port_range"),
                nat64_prefix: table.string(sink, "nat64_prefix"),
                nat64_udp_zero_checksum: table.string(sink, "nat64_udp_zero_checksum"),
                mapping: table.string(sink, "mapping"),
                rst_on_idle_timeout: table.boolean(sink, "rst_on_idle_timeout"),
                mapping_log: table.string(sink, "mapping_log"),
                dns64: table
                    .table(sink, "dns64", &dns64::KEYS)
                    .map(|dns64| dns64::RawDns64::read(&dns64, sink)),
            })
            .collect();
        let egress_only_internet_gateways = root
            .table_array(sink, "egress_only_internet_gateways", &["id"])
            .into_iter()
            .map(|table| RawEgressOnlyInternetGateway {
                id: table.required_string(sink, "id"),
            })
            .collect();
        let flow_logs = root
            .table(
                sink,
                "flow_logs",
                &["path", "aggregation_interval_seconds", "format"],
            )
            .map(|table| RawFlowLogs {
                path: table.required_string(sink, "path"),
                aggregation_interval_seconds: table.integer(sink, "aggregation_interval_seconds"),
                format: table.string(sink, "format"),
            });
        let conntrack_keys = CONNTRACK_TIMEOUT_KEYS.map(|(key, _)| key);
        let conntrack = root.table(sink, "conntrack", &conntrack_keys).map(|table| {
            conntrack_keys
                .iter()
                .filter_map(|key| Some((key.to_string(), table.integer(sink, key)?)))
                .collect()
        });
        Self {
            conntrack,
            vpc,
            controller,
            interfaces,
            subnets,
            route_tables,
            internet_gateway,
            nat_gateways,
            egress_only_internet_gateways,
            flow_logs,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Validation: builds the `Config`, reporting every problem. Invalid parts are left out or replaced
// by placeholders so that the other checks can go on; the `Config` is only returned when no
// problem was found.

/// What a gateway id names, to resolve route targets.
#[derive(Clone, Copy)]
enum GatewayKind {
    Internet,
    Nat(usize),
    EgressOnly(usize),
}

struct GatewayIds {
    /// Each id with what it names, and its line and field.
    by_id: HashMap<String, (GatewayKind, usize, String)>,
}

impl GatewayIds {
    /// Records a gateway id, reporting a duplicate across all kinds of gateways (on the one
    /// further down in the file).
    fn add(&mut self, sink: &mut Sink, id: &At<String>, kind: GatewayKind) {
        let Some((_, other_line, other_field)) = self.by_id.get(&id.value) else {
            self.by_id
                .insert(id.value.clone(), (kind, id.line, id.field.clone()));
            return;
        };
        let (line, field, first_line) = if *other_line <= id.line {
            (id.line, id.field.clone(), *other_line)
        } else {
            // The first one in the file is the one that counts (for route targets).
            let later = (*other_line, other_field.clone(), id.line);
            self.by_id
                .insert(id.value.clone(), (kind, id.line, id.field.clone()));
            later
        };
        sink.report(
            line,
            field,
            format!(
                "duplicate gateway id {:?} (first defined at line {first_line}); gateway ids must \
                 be unique across internet, NAT and egress-only internet gateways",
                id.value
            ),
        );
    }
}

fn validate(raw: RawConfig, sink: &mut Sink) -> Config {
    let vpc = validate_vpc(raw.vpc, sink);
    let controller = validate_controller(raw.controller, sink);
    let interfaces = validate_interfaces(raw.interfaces, sink);

    let mut gateway_ids = GatewayIds {
        by_id: HashMap::new(),
    };
    // Public addresses of elastic IPs and NAT gateways, to find duplicates.
    let mut public_addresses = HashMap::new();
    let nat_gateways = validate_nat_gateways(
        raw.nat_gateways,
        &vpc,
        &mut gateway_ids,
        &mut public_addresses,
        sink,
    );
    let egress_only_internet_gateways = validate_egress_only_internet_gateways(
        raw.egress_only_internet_gateways,
        &mut gateway_ids,
        sink,
    );
    let internet_gateway_id = raw.internet_gateway.as_ref().and_then(|igw| {
        let id = igw.id.as_ref()?;
        check_gateway_id(sink, id, "igw-", "an internet gateway");
        gateway_ids.add(sink, id, GatewayKind::Internet);
        Some(id.value.clone())
    });

    let nat64_prefixes: Vec<Option<Ipv6Net>> =
        nat_gateways.iter().map(|nat| nat.nat64_prefix).collect();
    let route_tables =
        validate_route_tables(raw.route_tables, &vpc, &gateway_ids, &nat64_prefixes, sink);
    let subnets = validate_subnets(raw.subnets, &vpc, &route_tables, sink);
    let internet_gateway = raw.internet_gateway.map(|igw| InternetGateway {
        id: internet_gateway_id.unwrap_or_default(),
        elastic_ips: validate_elastic_ips(
            igw.elastic_ips,
            &vpc,
            &subnets,
            &mut public_addresses,
            sink,
        ),
    });
    let flow_logs = raw
        .flow_logs
        .map(|flow_logs| validate_flow_logs(flow_logs, sink));
    let conntrack = validate_conntrack(raw.conntrack.unwrap_or_default(), sink);

    Config {
        conntrack,
        vpc,
        controller,
        interfaces,
        subnets,
        route_tables: route_tables.into_iter().map(|(table, _)| table).collect(),
        internet_gateway,
        nat_gateways,
        egress_only_internet_gateways,
        flow_logs,
    }
}

/// Ids end up in flow logs, whose fields are separated by spaces.
fn check_id(sink: &mut Sink, id: &At<String>) {
    if id.value.is_empty() {
        sink.report_at(id, "must not be empty");
    } else if id.value.chars().any(char::is_whitespace) {
        sink.report_at(id, format!("{:?} must not contain whitespace", id.value));
    }
}

fn check_gateway_id(sink: &mut Sink, id: &At<String>, prefix: &str, what: &str) {
    if id.value.len() <= prefix.len() || !id.value.starts_with(prefix) {
        sink.report_at(
            id,
            format!(
                "{:?} is not valid for {what}: its id must start with {prefix:?}, followed by a \
                 name",
                id.value
            ),
        );
    } else {
        check_id(sink, id);
    }
}

/// Reports duplicates among ids of one kind (`what`, like "subnet").
fn check_unique_ids<'a>(
    sink: &mut Sink,
    ids: impl IntoIterator<Item = &'a At<String>>,
    what: &str,
) {
    let mut first_lines = HashMap::new();
    for id in ids {
        if let Some(first_line) = first_lines.get(&id.value) {
            sink.report_at(
                id,
                format!(
                    "duplicate {what} id {:?} (first defined at line {first_line})",
                    id.value
                ),
            );
        } else {
            first_lines.insert(&id.value, id.line);
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn name(self) -> &'static str {
        match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        }
    }

    fn of(net: &IpNet) -> Self {
        match net {
            IpNet::V4(_) => Family::V4,
            IpNet::V6(_) => Family::V6,
        }
    }
}

/// Parses a prefix, of the given family if any, refusing host bits.
fn parse_prefix(sink: &mut Sink, text: &At<String>, family: Option<Family>) -> Option<IpNet> {
    let kind = family.map_or(String::new(), |family| format!("{} ", family.name()));
    let Ok(net) = text.value.parse::<IpNet>() else {
        sink.report_at(
            text,
            format!(
                "{:?} is not a valid {kind}prefix (expected address/length)",
                text.value
            ),
        );
        return None;
    };
    if let Some(family) = family
        && Family::of(&net) != family
    {
        sink.report_at(
            text,
            format!(
                "{net} is an {} prefix, but this field takes {} prefixes",
                Family::of(&net).name(),
                family.name()
            ),
        );
        return None;
    }
    if net.trunc() != net {
        sink.report_at(
            text,
            format!("{net} has host bits set; did you mean {}?", net.trunc()),
        );
        return None;
    }
    Some(net)
}

fn parse_ipv6_prefix(sink: &mut Sink, text: &At<String>) -> Option<Ipv6Net> {
    match parse_prefix(sink, text, Some(Family::V6))? {
        IpNet::V6(net) => Some(net),
        IpNet::V4(_) => None,
    }
}

fn parse_ipv4_address(sink: &mut Sink, text: &At<String>) -> Option<Ipv4Addr> {
    match text.value.parse() {
        Ok(address) => Some(address),
        Err(_) => {
            sink.report_at(
                text,
                format!("{:?} is not a valid IPv4 address", text.value),
            );
            None
        }
    }
}

fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

fn validate_vpc(raw: Option<RawVpc>, sink: &mut Sink) -> Vpc {
    let Some(raw) = raw else {
        return Vpc {
            id: String::new(),
            account_id: String::new(),
            ipv4_cidrs: Vec::new(),
            ipv6_cidrs: Vec::new(),
        };
    };
    if let Some(id) = &raw.id {
        check_id(sink, id);
    }
    if let Some(account_id) = &raw.account_id
        && (account_id.value.len() != 12
            || !account_id.value.bytes().all(|byte| byte.is_ascii_digit()))
    {
        sink.report_at(
            account_id,
            format!(
                "account ID {:?} must be exactly 12 digits",
                account_id.value
            ),
        );
    }
    if raw.ipv4_cidrs.is_empty() && raw.ipv6_cidrs.is_empty() {
        sink.report(
            raw.line,
            raw.field.clone(),
            "the VPC needs at least one CIDR, in ipv4_cidrs or ipv6_cidrs",
        );
    }
    let mut cidrs: Vec<(IpNet, &At<String>)> = Vec::new();
    for (text, family) in raw
        .ipv4_cidrs
        .iter()
        .map(|text| (text, Family::V4))
        .chain(raw.ipv6_cidrs.iter().map(|text| (text, Family::V6)))
    {
        let Some(net) = parse_prefix(sink, text, Some(family)) else {
            continue;
        };
        if let Some((other, other_text)) = cidrs.iter().find(|(other, _)| overlaps(&net, other)) {
            sink.report_at(
                text,
                format!(
                    "VPC CIDR {net} overlaps VPC CIDR {other} ({})",
                    other_text.field
                ),
            );
            continue;
        }
        cidrs.push((net, text));
    }
    Vpc {
        id: raw.id.map(|id| id.value).unwrap_or_default(),
        account_id: raw.account_id.map(|id| id.value).unwrap_or_default(),
        ipv4_cidrs: cidrs
            .iter()
            .filter_map(|(net, _)| match net {
                IpNet::V4(net) => Some(*net),
                IpNet::V6(_) => None,
            })
            .collect(),
        ipv6_cidrs: cidrs
            .iter()
            .filter_map(|(net, _)| match net {
                IpNet::V6(net) => Some(*net),
                IpNet::V4(_) => None,
            })
            .collect(),
    }
}

/// The address families whose VPC CIDRs were all read without problem. Checks that a prefix is
/// inside the VPC are only made for those: otherwise they would echo the VPC CIDR's problem.
fn vpc_families_known(sink: &Sink) -> Vec<Family> {
    if sink.problems.iter().any(|problem| problem.field == "vpc") {
        return Vec::new();
    }
    [
        (Family::V4, "vpc.ipv4_cidrs"),
        (Family::V6, "vpc.ipv6_cidrs"),
    ]
    .into_iter()
    .filter(|(_, field)| !sink.has_problem_in(field))
    .map(|(family, _)| family)
    .collect()
}

fn vpc_cidrs(vpc: &Vpc) -> impl Iterator<Item = IpNet> + '_ {
    vpc.ipv4_cidrs
        .iter()
        .map(|net| IpNet::V4(*net))
        .chain(vpc.ipv6_cidrs.iter().map(|net| IpNet::V6(*net)))
}

fn validate_conntrack(raw: Vec<(String, At<i64>)>, sink: &mut Sink) -> Conntrack {
    let mut conntrack = Conntrack::default();
    for (key, seconds) in raw {
        let value = match u64::try_from(seconds.value) {
            Ok(value) if CONNTRACK_TIMEOUT_SECONDS.contains(&value) => value,
            _ => {
                sink.report_at(
                    &seconds,
                    format!(
                        "a conntrack timeout must be between 1 and 604800 seconds (one week), \
                         found {}",
                        seconds.value
                    ),
                );
                continue;
            }
        };
        let duration = Duration::from_secs(value);
        match key.as_str() {
            "tcp_established_idle_seconds" => conntrack.tcp_established_idle = duration,
            "tcp_transitory_idle_seconds" => conntrack.tcp_transitory_idle = duration,
            "udp_idle_seconds" => conntrack.udp_idle = duration,
            "icmp_idle_seconds" => conntrack.icmp_idle = duration,
            _ => conntrack.other_idle = duration,
        }
    }
    conntrack
}

fn validate_controller(raw: Option<RawController>, sink: &mut Sink) -> Controller {
    let socket = match raw.and_then(|raw| raw.socket) {
        Some(socket) if socket.value.is_empty() => {
            sink.report_at(&socket, "the controller socket path must not be empty");
            PathBuf::new()
        }
        Some(socket) => PathBuf::from(socket.value),
        None => PathBuf::from(DEFAULT_CONTROLLER_SOCKET),
    };
    Controller { socket }
}

fn check_interface_name(sink: &mut Sink, name: &At<String>) {
    let text = &name.value;
    if text.is_empty() {
        sink.report_at(name, "the interface name must not be empty");
    } else if text.len() > MAX_INTERFACE_NAME_LEN {
        sink.report_at(
            name,
            format!(
                "interface name {text:?} is {} bytes long; Linux allows at most \
                 {MAX_INTERFACE_NAME_LEN}",
                text.len()
            ),
        );
    } else if text == "."
        || text == ".."
        || text.contains(['/', ':'])
        || text.chars().any(char::is_whitespace)
    {
        sink.report_at(
            name,
            format!(
                "{text:?} is not a valid Linux interface name: it must not contain '/', ':' or \
                 whitespace, nor be \".\" or \"..\""
            ),
        );
    }
}

fn validate_interfaces(raw: Vec<RawInterface>, sink: &mut Sink) -> Vec<Interface> {
    let first_line = raw
        .iter()
        .find_map(|interface| interface.name.as_ref().or(interface.role.as_ref()))
        .map_or(1, |at| at.line);
    let mut interfaces = Vec::new();
    let mut names = HashMap::new();
    let mut roles_seen = Vec::new();
    for interface in raw {
        let role = interface.role.and_then(|role| match role.value.as_str() {
            "vpc" => Some(InterfaceRole::Vpc),
            "internet" => Some(InterfaceRole::Internet),
            other => {
                sink.report_at(
                    &role,
                    format!("unknown interface role {other:?}; expected \"vpc\" or \"internet\""),
                );
                None
            }
        });
        // An interface whose role is wrong still counts, to avoid a second, confusing message.
        roles_seen.push(role);
        let Some(name) = interface.name else {
            continue;
        };
        check_interface_name(sink, &name);
        if let Some(first_line) = names.get(&name.value) {
            sink.report_at(
                &name,
                format!(
                    "duplicate interface name {:?} (first defined at line {first_line})",
                    name.value
                ),
            );
            continue;
        }
        names.insert(name.value.clone(), name.line);
        let id = match interface.id {
            Some(id) => {
                check_id(sink, &id);
                id.value
            }
            None => format!("eni-{}", name.value),
        };
        if let Some(role) = role {
            interfaces.push(Interface {
                name: name.value,
                role,
                id,
                line: name.line,
            });
        }
    }
    let has = |wanted| {
        roles_seen
            .iter()
            .any(|role| role.is_none_or(|role| role == wanted))
    };
    if !has(InterfaceRole::Vpc) {
        sink.report(
            first_line,
            "interfaces",
            "no interface has role \"vpc\"; at least one must face the VPC's subnets",
        );
    }
    if !has(InterfaceRole::Internet) {
        sink.report(
            first_line,
            "interfaces",
            "no interface has role \"internet\"; at least one must face the internet",
        );
    }
    interfaces
}

fn parse_port_range(sink: &mut Sink, text: &At<String>) -> Option<(u16, u16)> {
    let parsed = text.value.split_once('-').and_then(|(first, last)| {
        Some((
            first.trim().parse::<u32>().ok()?,
            last.trim().parse::<u32>().ok()?,
        ))
    });
    let Some((first, last)) = parsed else {
        sink.report_at(
            text,
            format!(
                "port range {:?} is not of the form \"first-last\", like \"1024-65535\"",
                text.value
            ),
        );
        return None;
    };
    match (u16::try_from(first), u16::try_from(last)) {
        (Ok(first), Ok(last)) if 1 <= first && first <= last => Some((first, last)),
        _ => {
            sink.report_at(
                text,
                format!(
                    "port range {:?} must satisfy 1 <= first <= last <= 65535",
                    text.value
                ),
            );
            None
        }
    }
}

/// RFC 6052, section 2.2: the prefix is one of six lengths, and bits 64 to 71 are zero.
fn check_nat64_prefix(sink: &mut Sink, text: &At<String>) -> Option<Ipv6Net> {
    let prefix = parse_ipv6_prefix(sink, text)?;
    if !NAT64_PREFIX_LENGTHS.contains(&prefix.prefix_len()) {
        sink.report_at(
            text,
            format!(
                "NAT64 prefix length /{} is not allowed; RFC 6052 allows /32, /40, /48, /56, /64 \
                 or /96",
                prefix.prefix_len()
            ),
        );
        return None;
    }
    if prefix.prefix_len() > 64 && prefix.network().octets()[8] != 0 {
        sink.report_at(
            text,
            format!(
                "bits 64 to 71 (the \"u\" octet) of NAT64 prefix {prefix} must be zero (RFC 6052)"
            ),
        );
        return None;
    }
    Some(prefix)
}

/// Checks a public address: outside the VPC, and used once among elastic IPs and NAT gateways.
fn check_public_address(
    sink: &mut Sink,
    text: &At<String>,
    address: Ipv4Addr,
    vpc: &Vpc,
    public_addresses: &mut HashMap<Ipv4Addr, (String, usize)>,
) -> bool {
    if let Some(cidr) = vpc.ipv4_cidrs.iter().find(|cidr| cidr.contains(&address)) {
        sink.report_at(
            text,
            format!("public address {address} is inside the VPC CIDR {cidr}"),
        );
        return false;
    }
    if let Some((other_field, other_line)) = public_addresses.get(&address) {
        // Reported on the one further down in the file, whichever was checked first.
        let (line, field, first) = if *other_line <= text.line {
            (text.line, text.field.clone(), other_field.clone())
        } else {
            (*other_line, other_field.clone(), text.field.clone())
        };
        sink.report(
            line,
            field,
            format!("public address {address} is already used by {first}"),
        );
        return false;
    }
    public_addresses.insert(address, (text.field.clone(), text.line));
    true
}

fn validate_nat_gateways(
    raw: Vec<RawNatGateway>,
    vpc: &Vpc,
    gateway_ids: &mut GatewayIds,
    public_addresses: &mut HashMap<Ipv4Addr, (String, usize)>,
    sink: &mut Sink,
) -> Vec<NatGateway> {
    let mut nat_gateways = Vec::new();
    let mut dns64_listen_addresses = dns64::ListenAddresses::new();
    for (index, nat) in raw.into_iter().enumerate() {
        if let Some(id) = &nat.id {
            check_gateway_id(sink, id, "nat-", "a NAT gateway");
            gateway_ids.add(sink, id, GatewayKind::Nat(index));
        }
        let mut public_ips = Vec::new();
        let (count, line, field) = match &nat.public_ips {
            Some(ips) => (ips.value.len(), ips.line, ips.field.clone()),
            None => (0, nat.line, format!("{}.public_ips", nat.field)),
        };
        if !NAT_PUBLIC_IPS.contains(&count) {
            sink.report(
                line,
                field,
                format!("a NAT gateway needs 1 to 8 public IPs, found {count}"),
            );
        }
        for text in nat.public_ips.iter().flat_map(|ips| &ips.value) {
            if let Some(address) = parse_ipv4_address(sink, text)
                && check_public_address(sink, text, address, vpc, public_addresses)
            {
                public_ips.push(address);
            }
        }
        let port_range = nat
            .port_range
            .and_then(|text| parse_port_range(sink, &text))
            .unwrap_or(DEFAULT_NAT_PORT_RANGE);
        let has_nat64_prefix = nat.nat64_prefix.is_some();
        let nat64_prefix = nat
            .nat64_prefix
            .and_then(|text| check_nat64_prefix(sink, &text));
        let nat64_udp_zero_checksum = match nat
            .nat64_udp_zero_checksum
            .as_ref()
            .map(|text| text.value.as_str())
        {
            None | Some("compute") => UdpZeroChecksum::Compute,
            Some("drop") => UdpZeroChecksum::Drop,
            Some(other) => {
                if let Some(text) = &nat.nat64_udp_zero_checksum {
                    sink.report_at(
                        text,
                        format!(
                            "unknown nat64_udp_zero_checksum {other:?}; expected \"compute\" \
                             (the default) or \"drop\""
                        ),
                    );
                }
                UdpZeroChecksum::Compute
            }
        };
        let dns64 = nat.dns64.map(|raw| {
            dns64::validate_dns64(
                raw,
                has_nat64_prefix,
                vpc,
                &mut dns64_listen_addresses,
                sink,
            )
        });
        let mapping = match nat.mapping.as_ref().map(|text| text.value.as_str()) {
            None | Some("endpoint-independent") => NatMappingMode::EndpointIndependent,
            Some("endpoint-dependent") => NatMappingMode::EndpointDependent,
            Some(other) => {
                if let Some(text) = &nat.mapping {
                    sink.report_at(
                        text,
                        format!(
                            "unknown mapping {other:?}; expected \"endpoint-independent\" \
                             (the default, RFC 4787) or \"endpoint-dependent\""
                        ),
                    );
                }
                NatMappingMode::EndpointIndependent
            }
        };
        let mapping_log = nat.mapping_log.and_then(|text| {
            if text.value.is_empty() || !text.value.starts_with('/') {
                sink.report_at(
                    &text,
                    format!("mapping_log {:?} must be an absolute path", text.value),
                );
                None
            } else {
                Some(PathBuf::from(text.value))
            }
        });
        nat_gateways.push(NatGateway {
            id: nat.id.map(|id| id.value).unwrap_or_default(),
            public_ips,
            port_range,
            nat64_prefix,
            nat64_udp_zero_checksum,
            mapping,
            rst_on_idle_timeout: nat.rst_on_idle_timeout.is_some_and(|flag| flag.value),
            mapping_log,
            dns64,
        });
    }
    nat_gateways
}

fn validate_egress_only_internet_gateways(
    raw: Vec<RawEgressOnlyInternetGateway>,
    gateway_ids: &mut GatewayIds,
    sink: &mut Sink,
) -> Vec<EgressOnlyInternetGateway> {
    raw.into_iter()
        .enumerate()
        .map(|(index, eigw)| {
            if let Some(id) = &eigw.id {
                check_gateway_id(sink, id, "eigw-", "an egress-only internet gateway");
                gateway_ids.add(sink, id, GatewayKind::EgressOnly(index));
            }
            EgressOnlyInternetGateway {
                id: eigw.id.map(|id| id.value).unwrap_or_default(),
            }
        })
        .collect()
}

/// An IPv6 route to a NAT gateway is its NAT64 prefix (or a part of it): the only IPv6 the
/// gateway translates (it does no NAT66).
fn nat64_route_problem(id: &str, destination: Ipv6Net, prefix: Option<Ipv6Net>) -> Option<String> {
    match prefix {
        None => Some(format!(
            "target {id} is a NAT gateway without nat64_prefix: it translates IPv4 only; give it \
             nat64_prefix = \"64:ff9b::/96\" for NAT64, or route IPv6 through an internet or \
             egress-only internet gateway"
        )),
        Some(prefix) if !prefix.contains(&destination) => Some(format!(
            "{destination} is outside {id}'s NAT64 prefix {prefix}: a NAT gateway translates only \
             IPv6 destinations inside its NAT64 prefix"
        )),
        Some(_) => None,
    }
}

fn resolve_target(
    sink: &mut Sink,
    target: &At<String>,
    gateway_ids: &GatewayIds,
) -> Option<RouteTarget> {
    let resolved = match target.value.as_str() {
        "local" => RouteTarget::Local,
        "blackhole" => RouteTarget::Blackhole,
        id => match gateway_ids.by_id.get(id) {
            Some((GatewayKind::Internet, ..)) => RouteTarget::InternetGateway,
            Some((GatewayKind::Nat(index), ..)) => RouteTarget::NatGateway(*index),
            Some((GatewayKind::EgressOnly(index), ..)) => {
                RouteTarget::EgressOnlyInternetGateway(*index)
            }
            None => {
                sink.report_at(
                    target,
                    format!(
                        "unknown route target {id:?}; expected \"local\", \"blackhole\" or the id of \
                         a gateway defined in this file"
                    ),
                );
                return None;
            }
        },
    };
    Some(resolved)
}

/// What checking a route needs to know.
struct RouteContext<'a> {
    vpc: &'a Vpc,
    /// See [`vpc_families_known`].
    known: &'a [Family],
    gateway_ids: &'a GatewayIds,
    /// Each NAT gateway's NAT64 prefix, by index.
    nat64_prefixes: &'a [Option<Ipv6Net>],
}

/// A route's destination; `destinations` holds the table's earlier ones, with their fields.
fn route_destination(
    sink: &mut Sink,
    text: &At<String>,
    context: &RouteContext<'_>,
    destinations: &mut HashMap<IpNet, String>,
) -> Option<IpNet> {
    let destination = parse_prefix(sink, text, None)?;
    if let Some(first) = destinations.get(&destination) {
        sink.report_at(
            text,
            format!("destination {destination} is already routed by {first}"),
        );
        return None;
    }
    destinations.insert(destination, text.field.clone());
    if vpc_cidrs(context.vpc).any(|cidr| cidr == destination) {
        sink.report_at(
            text,
            format!(
                "the local route for {destination} is implicit (it is a VPC CIDR); remove this \
                 route"
            ),
        );
        return None;
    }
    Some(destination)
}

/// A route's target, checked against its destination (when that one is valid).
fn route_target(
    sink: &mut Sink,
    text: &At<String>,
    context: &RouteContext<'_>,
    destination: Option<IpNet>,
) -> Option<RouteTarget> {
    let target = resolve_target(sink, text, context.gateway_ids)?;
    let mut allowed = true;
    if let Some(destination) = destination {
        let family = Family::of(&destination);
        if target == RouteTarget::Local
            && context.known.contains(&family)
            && !vpc_cidrs(context.vpc).any(|cidr| cidr.contains(&destination))
        {
            sink.report_at(
                text,
                format!(
                    "target \"local\" only applies inside the VPC; {destination} is not inside \
                     any VPC CIDR"
                ),
            );
            allowed = false;
        }
        if matches!(target, RouteTarget::EgressOnlyInternetGateway(_)) && family == Family::V4 {
            sink.report_at(
                text,
                format!(
                    "{} cannot take {destination}: egress-only internet gateways carry IPv6 only",
                    text.value
                ),
            );
            allowed = false;
        }
    }
    if let (RouteTarget::NatGateway(index), Some(IpNet::V6(destination))) = (target, destination)
        && let Some(message) = nat64_route_problem(
            &text.value,
            destination,
            context.nat64_prefixes.get(index).copied().flatten(),
        )
    {
        sink.report_at(text, message);
        allowed = false;
    }
    allowed.then_some(target)
}

/// Each validated table, with its id as written (for the subnets' references).
fn validate_route_tables(
    raw: Vec<RawRouteTable>,
    vpc: &Vpc,
    gateway_ids: &GatewayIds,
    nat64_prefixes: &[Option<Ipv6Net>],
    sink: &mut Sink,
) -> Vec<(RouteTable, Option<At<String>>)> {
    check_unique_ids(
        sink,
        raw.iter().filter_map(|table| table.id.as_ref()),
        "route table",
    );
    let local_routes: Vec<Route> = vpc_cidrs(vpc)
        .map(|destination| Route {
            destination,
            target: RouteTarget::Local,
        })
        .collect();
    let known = vpc_families_known(sink);
    let context = RouteContext {
        vpc,
        known: &known,
        gateway_ids,
        nat64_prefixes,
    };
    let mut tables = Vec::new();
    for table in raw {
        if let Some(id) = &table.id {
            check_id(sink, id);
        }
        let mut routes = local_routes.clone();
        let mut destinations = HashMap::new();
        for route in table.routes {
            let destination = route
                .destination
                .as_ref()
                .and_then(|text| route_destination(sink, text, &context, &mut destinations));
            let target = route
                .target
                .as_ref()
                .and_then(|text| route_target(sink, text, &context, destination));
            if let (Some(destination), Some(target)) = (destination, target) {
                routes.push(Route {
                    destination,
                    target,
                });
            }
        }
        let id = table
            .id
            .as_ref()
            .map(|id| id.value.clone())
            .unwrap_or_default();
        tables.push((RouteTable { id, routes }, table.id));
    }
    tables
}

fn validate_subnets(
    raw: Vec<RawSubnet>,
    vpc: &Vpc,
    route_tables: &[(RouteTable, Option<At<String>>)],
    sink: &mut Sink,
) -> Vec<Subnet> {
    check_unique_ids(
        sink,
        raw.iter().filter_map(|subnet| subnet.id.as_ref()),
        "subnet",
    );
    let table_ids: Vec<&str> = route_tables
        .iter()
        .filter_map(|(_, id)| id.as_ref().map(|id| id.value.as_str()))
        .collect();
    let known = vpc_families_known(sink);
    let mut subnets = Vec::new();
    // Accepted CIDRs with their subnet's id, to find overlaps.
    let mut taken: Vec<(IpNet, String)> = Vec::new();
    for subnet in raw {
        let id = subnet
            .id
            .as_ref()
            .map(|id| id.value.clone())
            .unwrap_or_default();
        if let Some(id) = &subnet.id {
            check_id(sink, id);
        }
        if subnet.ipv4_cidr.is_none() && subnet.ipv6_cidr.is_none() {
            sink.report(
                subnet.line,
                subnet.field.clone(),
                "the subnet has neither ipv4_cidr nor ipv6_cidr; it needs at least one",
            );
        }
        let mut check_cidr = |text: &At<String>, family: Family| -> Option<IpNet> {
            let net = parse_prefix(sink, text, Some(family))?;
            let vpc_cidrs: Vec<IpNet> = vpc_cidrs(vpc)
                .filter(|cidr| Family::of(cidr) == family)
                .collect();
            if known.contains(&family) && !vpc_cidrs.iter().any(|cidr| cidr.contains(&net)) {
                let list = if vpc_cidrs.is_empty() {
                    "it has none".to_owned()
                } else {
                    vpc_cidrs
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                };
                sink.report_at(
                    text,
                    format!(
                        "subnet CIDR {net} is not inside any of the VPC's {} CIDRs ({list})",
                        family.name()
                    ),
                );
                return None;
            }
            if let Some((other, other_id)) = taken.iter().find(|(other, _)| overlaps(&net, other)) {
                sink.report_at(
                    text,
                    format!("subnet {id} ({net}) overlaps subnet {other_id} ({other})"),
                );
                return None;
            }
            taken.push((net, id.clone()));
            Some(net)
        };
        let ipv4_cidr =
            subnet
                .ipv4_cidr
                .as_ref()
                .and_then(|text| match check_cidr(text, Family::V4)? {
                    IpNet::V4(net) => Some(net),
                    IpNet::V6(_) => None,
                });
        let ipv6_cidr =
            subnet
                .ipv6_cidr
                .as_ref()
                .and_then(|text| match check_cidr(text, Family::V6)? {
                    IpNet::V6(net) => Some(net),
                    IpNet::V4(_) => None,
                });
        let route_table = subnet.route_table.as_ref().and_then(|name| {
            let found = route_tables
                .iter()
                .position(|(_, id)| id.as_ref().is_some_and(|id| id.value == name.value));
            if found.is_none() {
                let defined = if table_ids.is_empty() {
                    "no route tables are defined".to_owned()
                } else {
                    format!("defined: {}", table_ids.join(", "))
                };
                sink.report_at(
                    name,
                    format!("unknown route table {:?} ({defined})", name.value),
                );
            }
            found
        });
        subnets.push(Subnet {
            id,
            ipv4_cidr,
            ipv6_cidr,
            route_table: route_table.unwrap_or_default(),
        });
    }
    subnets
}

fn validate_elastic_ips(
    raw: Vec<RawElasticIp>,
    vpc: &Vpc,
    subnets: &[Subnet],
    public_addresses: &mut HashMap<Ipv4Addr, (String, usize)>,
    sink: &mut Sink,
) -> Vec<ElasticIp> {
    // A subnet with a problem may be the one holding an address: do not echo its problem.
    let subnets_known = !sink.has_problem_in("subnets");
    let mut elastic_ips = Vec::new();
    let mut private_addresses: HashMap<Ipv4Addr, String> = HashMap::new();
    for eip in raw {
        let private = eip.private.as_ref().and_then(|text| {
            let address = parse_ipv4_address(sink, text)?;
            let Some(subnet) = subnets
                .iter()
                .position(|subnet| subnet.ipv4_cidr.is_some_and(|cidr| cidr.contains(&address)))
            else {
                if subnets_known {
                    sink.report_at(
                        text,
                        format!("elastic IP private address {address} is outside every subnet"),
                    );
                }
                return None;
            };
            if let Some(first) = private_addresses.get(&address) {
                sink.report_at(
                    text,
                    format!("private address {address} already has an elastic IP, at {first}"),
                );
                return None;
            }
            private_addresses.insert(address, text.field.clone());
            Some((address, subnet))
        });
        let public = eip.public.as_ref().and_then(|text| {
            let address = parse_ipv4_address(sink, text)?;
            check_public_address(sink, text, address, vpc, public_addresses).then_some(address)
        });
        if let (Some((private, subnet)), Some(public)) = (private, public) {
            elastic_ips.push(ElasticIp {
                private,
                public,
                subnet,
            });
        }
    }
    elastic_ips
}

fn validate_flow_logs(raw: RawFlowLogs, sink: &mut Sink) -> FlowLogs {
    let path = match raw.path {
        Some(path) if path.value.is_empty() => {
            sink.report_at(&path, "the flow log path must not be empty");
            PathBuf::new()
        }
        Some(path) => PathBuf::from(path.value),
        None => PathBuf::new(),
    };
    let seconds = match raw.aggregation_interval_seconds {
        Some(seconds) => match u64::try_from(seconds.value) {
            Ok(value) if AGGREGATION_INTERVAL_SECONDS.contains(&value) => value,
            _ => {
                sink.report_at(
                    &seconds,
                    format!(
                        "the aggregation interval must be between 1 and 600 seconds, found {}",
                        seconds.value
                    ),
                );
                DEFAULT_AGGREGATION_INTERVAL_SECONDS
            }
        },
        None => DEFAULT_AGGREGATION_INTERVAL_SECONDS,
    };
    if let Some(format) = &raw.format
        && let Err(message) = crate::flowlog::validate_format(&format.value)
    {
        sink.report_at(format, message);
    }
    FlowLogs {
        path,
        aggregation_interval: Duration::from_secs(seconds),
        format: raw.format.map(|format| format.value),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small valid configuration that the tests modify.
    const BASE: &str = r#"
[vpc]
id = "vpc-0test"
account_id = "123456789012"
ipv4_cidrs = ["10.0.0.0/16"]
ipv6_cidrs = ["2001:db8:1000::/56"]

[[interfaces]]
name = "gw-vpc"
role = "vpc"

[[interfaces]]
name = "gw-inet"
role = "internet"

[[subnets]]
id = "subnet-a"
ipv4_cidr = "10.0.1.0/24"
ipv6_cidr = "2001:db8:1000:1::/64"
route_table = "rtb-a"

[[route_tables]]
id = "rtb-a"
routes = [
  { destination = "0.0.0.0/0", target = "igw-main" },
  { destination = "::/0", target = "igw-main" },
]

[internet_gateway]
id = "igw-main"
elastic_ips = [{ private = "10.0.1.10", public = "203.0.113.10" }]
"#;

    /// `BASE` with `from` replaced by `to` (which must be there).
    fn with(from: &str, to: &str) -> String {
        assert!(BASE.contains(from), "BASE does not contain {from:?}");
        BASE.replacen(from, to, 1)
    }

    /// `BASE` with more text at the end.
    pub(super) fn plus(extra: &str) -> String {
        format!("{BASE}{extra}")
    }

    /// The 1-based line of the first occurrence of `needle`.
    fn line_of(text: &str, needle: &str) -> usize {
        let at = text
            .find(needle)
            .unwrap_or_else(|| panic!("{needle:?} not in the text"));
        text[..at].matches('\n').count() + 1
    }

    pub(super) fn problems(text: &str) -> Vec<Problem> {
        match Config::parse(text, "test.toml") {
            Ok(config) => panic!("expected problems, the config is valid: {config:#?}"),
            Err(error) => {
                assert_eq!(error.origin, "test.toml");
                assert!(!error.problems.is_empty());
                error.problems
            }
        }
    }

    /// Asserts that `text` has exactly one problem, at the line of `line_needle`, on `field`, with
    /// a message containing `message`.
    #[track_caller]
    pub(super) fn assert_problem(text: &str, line_needle: &str, field: &str, message: &str) {
        let found = problems(text);
        let expected_line = line_of(text, line_needle);
        assert!(
            found.len() == 1
                && found[0].line == expected_line
                && found[0].field == field
                && found[0].message.contains(message),
            "expected one problem at line {expected_line}, field {field:?}, message containing \
             {message:?}; found {found:#?}"
        );
    }

    #[test]
    fn base_is_valid() {
        let config = Config::parse(BASE, "test.toml").expect("BASE is valid");
        assert_eq!(
            config.controller.socket,
            PathBuf::from(DEFAULT_CONTROLLER_SOCKET)
        );
        assert_eq!(config.flow_logs, None);
        assert_eq!(config.interfaces[1].id, "eni-gw-inet");
        assert_eq!(
            config.interfaces[1].line,
            line_of(BASE, "name = \"gw-inet\"")
        );
    }

    #[test]
    fn every_example_validates() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut count = 0;
        for entry in std::fs::read_dir(&dir).expect("examples/ is readable") {
            let path = entry.expect("examples/ is readable").path();
            if path
                .extension()
                .is_some_and(|extension| extension == "toml")
            {
                if let Err(error) = Config::from_file(&path) {
                    panic!("{error}");
                }
                count += 1;
            }
        }
        assert!(
            count >= 2,
            "expected the example configs in {}",
            dir.display()
        );
    }

    #[test]
    fn demo_example_is_what_the_demo_expects() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/igw-demo.toml");
        let config = Config::from_file(&path).expect("the demo config is valid");
        let v4 = |text: &str| text.parse::<Ipv4Net>().unwrap();
        let v6 = |text: &str| text.parse::<Ipv6Net>().unwrap();
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        assert_eq!(
            config,
            Config {
                conntrack: Conntrack::default(),
                vpc: Vpc {
                    id: "vpc-0demo".into(),
                    account_id: "123456789012".into(),
                    ipv4_cidrs: vec![v4("10.0.0.0/16")],
                    ipv6_cidrs: vec![v6("2001:db8:1000::/56")],
                },
                controller: Controller {
                    socket: DEFAULT_CONTROLLER_SOCKET.into()
                },
                interfaces: vec![
                    Interface {
                        name: "gw-vpc".into(),
                        role: InterfaceRole::Vpc,
                        id: "eni-gw-vpc".into(),
                        line: 11,
                    },
                    Interface {
                        name: "gw-inet".into(),
                        role: InterfaceRole::Internet,
                        id: "eni-gw-inet".into(),
                        line: 15,
                    },
                ],
                subnets: vec![Subnet {
                    id: "subnet-public".into(),
                    ipv4_cidr: Some(v4("10.0.1.0/24")),
                    ipv6_cidr: Some(v6("2001:db8:1000:1::/64")),
                    route_table: 0,
                }],
                route_tables: vec![RouteTable {
                    id: "rtb-public".into(),
                    routes: vec![
                        Route {
                            destination: net("10.0.0.0/16"),
                            target: RouteTarget::Local
                        },
                        Route {
                            destination: net("2001:db8:1000::/56"),
                            target: RouteTarget::Local
                        },
                        Route {
                            destination: net("0.0.0.0/0"),
                            target: RouteTarget::InternetGateway
                        },
                        Route {
                            destination: net("::/0"),
                            target: RouteTarget::InternetGateway
                        },
                    ],
                }],
                internet_gateway: Some(InternetGateway {
                    id: "igw-demo".into(),
                    elastic_ips: vec![ElasticIp {
                        private: Ipv4Addr::new(10, 0, 1, 10),
                        public: Ipv4Addr::new(203, 0, 113, 10),
                        subnet: 0,
                    }],
                }),
                nat_gateways: vec![],
                egress_only_internet_gateways: vec![],
                flow_logs: Some(FlowLogs {
                    path: "/tmp/gateway-demo/flow.log".into(),
                    aggregation_interval: Duration::from_secs(1),
                    format: None,
                }),
            }
        );
    }

    #[test]
    fn reference_example_resolves_everything() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/full-reference.toml");
        let config = Config::from_file(&path).expect("the reference config is valid");
        assert_eq!(config.subnets[1].route_table, 1);
        assert_eq!(config.internet_gateway.unwrap().elastic_ips[1].subnet, 0);
        assert_eq!(config.interfaces[0].id, "eni-0vpc");
        assert_eq!(
            config.nat_gateways[0],
            NatGateway {
                id: "nat-main".into(),
                public_ips: vec![
                    Ipv4Addr::new(198, 51, 100, 20),
                    Ipv4Addr::new(198, 51, 100, 21)
                ],
                port_range: (1024, 65535),
                nat64_prefix: Some("64:ff9b::/96".parse().unwrap()),
                nat64_udp_zero_checksum: UdpZeroChecksum::Compute,
                mapping: NatMappingMode::EndpointIndependent,
                rst_on_idle_timeout: false,
                mapping_log: None,
                dns64: Some(Dns64Config {
                    listen: vec![
                        "10.0.1.2:53".parse().unwrap(),
                        "[2001:db8:1000:1::2]:53".parse().unwrap()
                    ],
                    upstream: vec![
                        "198.51.100.53:53".parse().unwrap(),
                        "[2001:db8:ffff::53]:53".parse().unwrap()
                    ],
                    exclude_aaaa: vec!["::ffff:0:0/96".parse().unwrap()],
                    timeout: Duration::from_millis(2000),
                }),
            }
        );
        assert_eq!(config.egress_only_internet_gateways[0].id, "eigw-main");
        // Three implicit local routes, then the file's.
        let routes = &config.route_tables[0].routes;
        assert_eq!(routes.len(), 6);
        assert!(
            routes[..3]
                .iter()
                .all(|route| route.target == RouteTarget::Local)
        );
        assert_eq!(routes[5].target, RouteTarget::Blackhole);
    }

    #[test]
    fn reports_every_problem_in_line_order_one_per_display_line() {
        let text = with("account_id = \"123456789012\"", "account_id = \"42\"")
            .replace("10.0.1.0/24", "10.0.1.5/24")
            .replace(
                "role = \"internet\"",
                "role = \"outside\"\ncolour = \"blue\"",
            );
        let error = Config::parse(&text, "gw.toml").unwrap_err();
        let lines: Vec<usize> = error.problems.iter().map(|problem| problem.line).collect();
        assert_eq!(error.problems.len(), 4, "{error}");
        assert!(lines.is_sorted(), "{lines:?}");
        let rendered = error.to_string();
        assert_eq!(rendered.lines().count(), 4);
        let account_line = line_of(&text, "account_id");
        assert!(
            rendered.contains(&format!(
                "gw.toml:{account_line}: vpc.account_id: account ID \"42\" must be exactly 12 digits"
            )),
            "{rendered}"
        );
        assert!(rendered.contains(&format!(
            "gw.toml:{}: subnets[0].ipv4_cidr: 10.0.1.5/24 has host bits set; did you mean 10.0.1.0/24?",
            line_of(&text, "10.0.1.5/24")
        )));
        // The subnet's bad CIDR is not echoed as "the elastic IP is outside every subnet".
        assert!(!rendered.contains("outside every subnet"), "{rendered}");
    }

    // --- Reading the TOML --------------------------------------------------------------------

    #[test]
    fn syntax_error_is_one_problem_with_its_line() {
        let text = with("role = \"vpc\"", "role = vpc");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, line_of(&text, "role = vpc"));
        assert_eq!(found[0].field, "");
        assert!(
            found[0].message.starts_with("TOML syntax error: "),
            "{found:#?}"
        );
        let rendered = ConfigError {
            origin: "f.toml".into(),
            problems: found.clone(),
        }
        .to_string();
        assert_eq!(
            rendered,
            format!("f.toml:{}: {}", found[0].line, found[0].message)
        );
    }

    #[test]
    fn unknown_keys_are_reported_everywhere() {
        let text = with(
            "target = \"igw-main\" },",
            "target = \"igw-main\", via = \"x\" },",
        )
        .replace("[vpc]", "colour = 1\n[vpc]");
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(
            (found[0].line, found[0].field.as_str()),
            (line_of(&text, "colour"), "colour")
        );
        assert!(
            found[0]
                .message
                .starts_with("unknown key; expected one of: vpc, controller")
        );
        assert_eq!(
            (found[1].line, found[1].field.as_str()),
            (line_of(&text, "via"), "route_tables[0].routes[0].via")
        );
        assert_eq!(
            found[1].message,
            "unknown key; expected one of: destination, target"
        );
    }

    #[test]
    fn missing_key() {
        let text = with("route_table = \"rtb-a\"\n", "");
        assert_problem(
            &text,
            "[[subnets]]",
            "subnets[0].route_table",
            "required key is missing",
        );
    }

    #[test]
    fn wrong_type() {
        let text = with("id = \"vpc-0test\"", "id = 7");
        assert_problem(
            &text,
            "id = 7",
            "vpc.id",
            "expected a string, found an integer",
        );
    }

    #[test]
    fn integer_too_large() {
        let text = plus(
            "[flow_logs]\npath = \"/f\"\naggregation_interval_seconds = 99999999999999999999\n",
        );
        assert_problem(
            &text,
            "aggregation_interval_seconds",
            "flow_logs.aggregation_interval_seconds",
            "integer 99999999999999999999 is too large",
        );
    }

    #[test]
    fn table_instead_of_array_of_tables() {
        let text = plus("[egress_only_internet_gateways]\nid = \"eigw-x\"\n");
        assert_problem(
            &text,
            "[egress_only_internet_gateways]",
            "egress_only_internet_gateways",
            "expected an array of tables (write [[egress_only_internet_gateways]]), found a table",
        );
    }

    #[test]
    fn missing_vpc_section() {
        let text = BASE.replace("[vpc]", "[vpc_typo]");
        let found = problems(&text);
        assert!(found.iter().any(|problem| problem.line == 1
            && problem.field == "vpc"
            && problem.message == "the required section [vpc] is missing"));
    }

    #[test]
    fn unreadable_file() {
        let error = Config::from_file(Path::new("/nonexistent/gateway.toml")).unwrap_err();
        assert_eq!(error.problems.len(), 1);
        assert!(
            error
                .to_string()
                .starts_with("/nonexistent/gateway.toml: cannot read the configuration file: "),
            "{error}"
        );
    }

    // --- Ids -------------------------------------------------------------------------------------

    #[test]
    fn empty_id() {
        let text = with("id = \"vpc-0test\"", "id = \"\"");
        assert_problem(&text, "id = \"\"", "vpc.id", "must not be empty");
    }

    #[test]
    fn id_with_whitespace() {
        let text = with("id = \"subnet-a\"", "id = \"subnet a\"");
        assert_problem(
            &text,
            "\"subnet a\"",
            "subnets[0].id",
            "\"subnet a\" must not contain whitespace",
        );
    }

    #[test]
    fn account_id_not_12_digits() {
        let text = with("\"123456789012\"", "\"12345678901x\"");
        assert_problem(
            &text,
            "account_id",
            "vpc.account_id",
            "account ID \"12345678901x\" must be exactly 12 digits",
        );
    }

    #[test]
    fn internet_gateway_id_prefix() {
        let text = BASE.replace("igw-main", "gw-main");
        let found = problems(&text);
        let igw_line = line_of(&text, "id = \"gw-main\"");
        let id_problem = found
            .iter()
            .find(|problem| problem.field == "internet_gateway.id")
            .unwrap();
        assert_eq!(id_problem.line, igw_line);
        assert_eq!(
            id_problem.message,
            "\"gw-main\" is not valid for an internet gateway: its id must start with \"igw-\", followed by a name"
        );
    }

    #[test]
    fn nat_and_egress_only_gateway_id_prefixes() {
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-\"\npublic_ips = [\"198.51.100.1\"]\n[[egress_only_internet_gateways]]\nid = \"igw-x\"\n",
        );
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        assert_eq!(found[0].field, "nat_gateways[0].id");
        assert!(
            found[0]
                .message
                .contains("NAT gateway: its id must start with \"nat-\"")
        );
        assert_eq!(found[1].field, "egress_only_internet_gateways[0].id");
        assert!(
            found[1]
                .message
                .contains("egress-only internet gateway: its id must start with \"eigw-\"")
        );
    }

    #[test]
    fn duplicate_gateway_id() {
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
             [[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.2\"]\n",
        );
        let second = text.rfind("id = \"nat-a\"").unwrap();
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, text[..second].matches('\n').count() + 1);
        assert_eq!(found[0].field, "nat_gateways[1].id");
        assert_eq!(
            found[0].message,
            format!(
                "duplicate gateway id \"nat-a\" (first defined at line {}); gateway ids must be \
                 unique across internet, NAT and egress-only internet gateways",
                line_of(&text, "id = \"nat-a\"")
            )
        );
    }

    #[test]
    fn duplicate_gateway_id_across_kinds() {
        // The NAT gateway is checked before the internet gateway above it: the problem is still
        // reported on the second one in the file, along with its wrong prefix.
        let text = plus("[[nat_gateways]]\nid = \"igw-main\"\npublic_ips = [\"198.51.100.1\"]\n");
        let second = text.rfind("id = \"igw-main\"").unwrap();
        let found = problems(&text);
        assert_eq!(found.len(), 2, "{found:#?}");
        for problem in &found {
            assert_eq!(problem.line, text[..second].matches('\n').count() + 1);
            assert_eq!(problem.field, "nat_gateways[0].id");
        }
        assert!(
            found
                .iter()
                .any(|problem| problem.message.starts_with(&format!(
                    "duplicate gateway id \"igw-main\" (first defined at line {})",
                    line_of(&text, "id = \"igw-main\"")
                )))
        );
    }

    #[test]
    fn duplicate_subnet_id() {
        let text = plus(
            "[[subnets]]\nid = \"subnet-a\"\nipv4_cidr = \"10.0.2.0/24\"\nroute_table = \"rtb-a\"\n",
        );
        let second = text.rfind("id = \"subnet-a\"").unwrap();
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, text[..second].matches('\n').count() + 1);
        assert_eq!(found[0].field, "subnets[1].id");
        assert_eq!(
            found[0].message,
            format!(
                "duplicate subnet id \"subnet-a\" (first defined at line {})",
                line_of(&text, "id = \"subnet-a\"")
            )
        );
    }

    #[test]
    fn duplicate_route_table_id() {
        let text = plus("[[route_tables]]\nid = \"rtb-a\"\nroutes = []\n");
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].field, "route_tables[1].id");
        assert!(
            found[0]
                .message
                .starts_with("duplicate route table id \"rtb-a\" (first defined at line ")
        );
    }

    // --- Prefixes and addresses ----------------------------------------------------------------

    #[test]
    fn malformed_prefix_is_quoted() {
        let text = with("[\"10.0.0.0/16\"]", "[\"10.0.0/16\"]");
        assert_problem(
            &text,
            "10.0.0/16",
            "vpc.ipv4_cidrs[0]",
            "\"10.0.0/16\" is not a valid IPv4 prefix (expected address/length)",
        );
    }

    #[test]
    fn prefix_of_the_wrong_family() {
        let text = with(
            "ipv6_cidr = \"2001:db8:1000:1::/64\"",
            "ipv6_cidr = \"10.0.2.0/24\"",
        );
        assert_problem(
            &text,
            "ipv6_cidr = \"10.0.2.0/24\"",
            "subnets[0].ipv6_cidr",
            "10.0.2.0/24 is an IPv4 prefix, but this field takes IPv6 prefixes",
        );
    }

    #[test]
    fn prefix_with_host_bits() {
        let text = with("ipv4_cidr = \"10.0.1.0/24\"", "ipv4_cidr = \"10.0.1.0/24\"")
            .replace("\"0.0.0.0/0\"", "\"192.0.2.1/24\"");
        assert_problem(
            &text,
            "192.0.2.1/24",
            "route_tables[0].routes[0].destination",
            "192.0.2.1/24 has host bits set; did you mean 192.0.2.0/24?",
        );
    }

    #[test]
    fn malformed_address_is_quoted() {
        let text = with("public = \"203.0.113.10\"", "public = \"203.0.113\"");
        assert_problem(
            &text,
            "public = ",
            "internet_gateway.elastic_ips[0].public",
            "\"203.0.113\" is not a valid IPv4 address",
        );
    }

    // --- VPC -----------------------------------------------------------------------------------

    #[test]
    fn vpc_without_cidr() {
        // The subnet then lies outside the VPC, and the elastic IP outside every subnet.
        let text = with(
            "ipv4_cidrs = [\"10.0.0.0/16\"]\nipv6_cidrs = [\"2001:db8:1000::/56\"]\n",
            "",
        );
        let found = problems(&text);
        assert_eq!(found[0].line, line_of(&text, "[vpc]"));
        assert_eq!(found[0].field, "vpc");
        assert_eq!(
            found[0].message,
            "the VPC needs at least one CIDR, in ipv4_cidrs or ipv6_cidrs"
        );
    }

    #[test]
    fn vpc_cidrs_overlapping() {
        let text = with("[\"10.0.0.0/16\"]", "[\"10.0.0.0/16\", \"10.0.128.0/17\"]");
        assert_problem(
            &text,
            "10.0.128.0/17",
            "vpc.ipv4_cidrs[1]",
            "VPC CIDR 10.0.128.0/17 overlaps VPC CIDR 10.0.0.0/16 (vpc.ipv4_cidrs[0])",
        );
    }

    // --- Controller ----------------------------------------------------------------------------

    #[test]
    fn controller_socket() {
        let config =
            Config::parse(&plus("[controller]\nsocket = \"/tmp/gw.sock\"\n"), "t").unwrap();
        assert_eq!(config.controller.socket, PathBuf::from("/tmp/gw.sock"));
        let text = plus("[controller]\nsocket = \"\"\n");
        assert_problem(
            &text,
            "socket",
            "controller.socket",
            "the controller socket path must not be empty",
        );
    }

    // --- Interfaces ----------------------------------------------------------------------------

    #[test]
    fn interface_name_empty() {
        let text = with("name = \"gw-vpc\"", "name = \"\"");
        assert_problem(
            &text,
            "name = \"\"",
            "interfaces[0].name",
            "the interface name must not be empty",
        );
    }

    #[test]
    fn interface_name_too_long() {
        let text = with("name = \"gw-vpc\"", "name = \"gw-vpc-0123456789\"");
        assert_problem(
            &text,
            "gw-vpc-0123456789",
            "interfaces[0].name",
            "interface name \"gw-vpc-0123456789\" is 17 bytes long; Linux allows at most 15",
        );
    }

    #[test]
    fn interface_name_with_bad_characters() {
        for bad in ["gw/vpc", "gw vpc", "gw:1", ".."] {
            let text = with("name = \"gw-vpc\"", &format!("name = \"{bad}\""));
            assert_problem(
                &text,
                bad,
                "interfaces[0].name",
                &format!(
                    "{bad:?} is not a valid Linux interface name: it must not contain '/', ':' or whitespace"
                ),
            );
        }
    }

    #[test]
    fn interface_role_unknown() {
        let text = with("role = \"vpc\"", "role = \"lan\"");
        assert_problem(
            &text,
            "role = \"lan\"",
            "interfaces[0].role",
            "unknown interface role \"lan\"; expected \"vpc\" or \"internet\"",
        );
    }

    #[test]
    fn interface_name_duplicate() {
        let text = with("name = \"gw-inet\"", "name = \"gw-vpc\"");
        let second = text.rfind("name = \"gw-vpc\"").unwrap();
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, text[..second].matches('\n').count() + 1);
        assert_eq!(
            found[0].message,
            format!(
                "duplicate interface name \"gw-vpc\" (first defined at line {})",
                line_of(&text, "gw-vpc")
            )
        );
    }

    #[test]
    fn no_vpc_interface() {
        let text = with("role = \"vpc\"", "role = \"internet\"");
        assert_problem(
            &text,
            "name = \"gw-vpc\"",
            "interfaces",
            "no interface has role \"vpc\"; at least one must face the VPC's subnets",
        );
    }

    #[test]
    fn no_internet_interface() {
        let text = with("role = \"internet\"", "role = \"vpc\"");
        assert_problem(
            &text,
            "name = \"gw-vpc\"",
            "interfaces",
            "no interface has role \"internet\"; at least one must face the internet",
        );
    }

    #[test]
    fn interface_id() {
        let config = Config::parse(
            &with("role = \"vpc\"", "role = \"vpc\"\nid = \"eni-0abc\""),
            "t",
        )
        .unwrap();
        assert_eq!(config.interfaces[0].id, "eni-0abc");
    }

    // --- Subnets -------------------------------------------------------------------------------

    #[test]
    fn subnet_without_cidr() {
        // The elastic IP is then outside every subnet, too.
        let text = with(
            "ipv4_cidr = \"10.0.1.0/24\"\nipv6_cidr = \"2001:db8:1000:1::/64\"\n",
            "",
        );
        let found = problems(&text);
        assert_eq!(found[0].line, line_of(&text, "[[subnets]]"));
        assert_eq!(found[0].field, "subnets[0]");
        assert_eq!(
            found[0].message,
            "the subnet has neither ipv4_cidr nor ipv6_cidr; it needs at least one"
        );
    }

    #[test]
    fn subnet_outside_the_vpc() {
        let text = with("\"2001:db8:1000:1::/64\"", "\"2001:db8:2000:1::/64\"");
        assert_problem(
            &text,
            "2001:db8:2000:1::/64",
            "subnets[0].ipv6_cidr",
            "subnet CIDR 2001:db8:2000:1::/64 is not inside any of the VPC's IPv6 CIDRs (2001:db8:1000::/56)",
        );
    }

    #[test]
    fn subnets_overlapping() {
        let text = plus(
            "[[subnets]]\nid = \"subnet-b\"\nipv4_cidr = \"10.0.1.128/25\"\nroute_table = \"rtb-a\"\n",
        );
        assert_problem(
            &text,
            "10.0.1.128/25",
            "subnets[1].ipv4_cidr",
            "subnet subnet-b (10.0.1.128/25) overlaps subnet subnet-a (10.0.1.0/24)",
        );
    }

    #[test]
    fn subnet_with_unknown_route_table() {
        let text = with("route_table = \"rtb-a\"", "route_table = \"rtb-b\"");
        assert_problem(
            &text,
            "rtb-b",
            "subnets[0].route_table",
            "unknown route table \"rtb-b\" (defined: rtb-a)",
        );
    }

    // --- Routes --------------------------------------------------------------------------------

    #[test]
    fn route_to_unknown_target() {
        let text = with("target = \"igw-main\" },", "target = \"igw-other\" },");
        assert_problem(
            &text,
            "igw-other",
            "route_tables[0].routes[0].target",
            "unknown route target \"igw-other\"; expected \"local\", \"blackhole\" or the id of a gateway",
        );
    }

    #[test]
    fn route_destination_duplicated() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"0.0.0.0/0\", target = \"blackhole\"",
        );
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].line, line_of(&text, "\"blackhole\""));
        assert_eq!(found[0].field, "route_tables[0].routes[1].destination");
        assert_eq!(
            found[0].message,
            "destination 0.0.0.0/0 is already routed by route_tables[0].routes[0].destination"
        );
    }

    #[test]
    fn route_equal_to_a_vpc_cidr() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"10.0.0.0/16\", target = \"local\"",
        );
        assert_problem(
            &text,
            "10.0.0.0/16\", target",
            "route_tables[0].routes[1].destination",
            "the local route for 10.0.0.0/16 is implicit (it is a VPC CIDR); remove this route",
        );
    }

    #[test]
    fn route_more_specific_than_a_vpc_cidr_is_allowed() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"10.0.9.0/24\", target = \"blackhole\"",
        )
        .replace(
            "\"0.0.0.0/0\", target = \"igw-main\"",
            "\"10.0.8.0/24\", target = \"local\"",
        );
        let config = Config::parse(&text, "t").unwrap();
        let routes = &config.route_tables[0].routes;
        assert_eq!(routes[2].target, RouteTarget::Local);
        assert_eq!(routes[3].target, RouteTarget::Blackhole);
    }

    #[test]
    fn local_target_outside_the_vpc() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"192.0.2.0/24\", target = \"local\"",
        );
        assert_problem(
            &text,
            "\"local\"",
            "route_tables[0].routes[1].target",
            "target \"local\" only applies inside the VPC; 192.0.2.0/24 is not inside any VPC CIDR",
        );
    }

    #[test]
    fn ipv4_route_to_egress_only_gateway() {
        let text = with(
            "\"0.0.0.0/0\", target = \"igw-main\"",
            "\"0.0.0.0/0\", target = \"eigw-a\"",
        ) + "[[egress_only_internet_gateways]]\nid = \"eigw-a\"\n";
        let found = problems(&text);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].field, "route_tables[0].routes[0].target");
        assert_eq!(found[0].line, line_of(&text, "eigw-a"));
        assert_eq!(
            found[0].message,
            "eigw-a cannot take 0.0.0.0/0: egress-only internet gateways carry IPv6 only"
        );
    }

    #[test]
    fn route_to_nat_gateway_is_accepted_for_ipv4() {
        let text = with(
            "\"0.0.0.0/0\", target = \"igw-main\"",
            "\"0.0.0.0/0\", target = \"nat-a\"",
        ) + "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
             mapping = \"endpoint-dependent\"\nrst_on_idle_timeout = true\n\
             mapping_log = \"/var/log/nat.log\"\n";
        let config = Config::parse(&text, "t.toml").expect("valid");
        assert!(
            config.route_tables[0]
                .routes
                .iter()
                .any(|route| route.target == RouteTarget::NatGateway(0))
        );
        let nat = &config.nat_gateways[0];
        assert_eq!(nat.mapping, NatMappingMode::EndpointDependent);
        assert!(nat.rst_on_idle_timeout);
        assert_eq!(nat.mapping_log, Some(PathBuf::from("/var/log/nat.log")));
    }

    #[test]
    fn ipv6_route_to_nat_gateway_needs_its_nat64_prefix() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"::/0\", target = \"nat-a\"",
        ) + "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n";
        assert_problem(
            &text,
            "\"::/0\", target = \"nat-a\"",
            "route_tables[0].routes[1].target",
            "target nat-a is a NAT gateway without nat64_prefix: it translates IPv4 only; give it \
             nat64_prefix = \"64:ff9b::/96\" for NAT64, or route IPv6 through an internet or \
             egress-only internet gateway",
        );
    }

    #[test]
    fn ipv6_route_to_nat_gateway_must_stay_inside_its_prefix() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"::/0\", target = \"nat-a\"",
        ) + "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
              nat64_prefix = \"64:ff9b::/96\"\n";
        assert_problem(
            &text,
            "\"::/0\", target = \"nat-a\"",
            "route_tables[0].routes[1].target",
            "::/0 is outside nat-a's NAT64 prefix 64:ff9b::/96: a NAT gateway translates only IPv6 \
             destinations inside its NAT64 prefix",
        );
    }

    #[test]
    fn nat64_prefix_route_is_accepted() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"64:ff9b::/96\", target = \"nat-a\"",
        ) + "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
              nat64_prefix = \"64:ff9b::/96\"\nnat64_udp_zero_checksum = \"drop\"\n";
        let config = Config::parse(&text, "test.toml").expect("valid");
        assert_eq!(
            config.nat_gateways[0].nat64_udp_zero_checksum,
            UdpZeroChecksum::Drop
        );
        assert!(config.route_tables.iter().any(|table| {
            table.routes.iter().any(|route| {
                route.target == RouteTarget::NatGateway(0)
                    && route.destination == "64:ff9b::/96".parse::<IpNet>().unwrap()
            })
        }));
    }

    #[test]
    fn nat64_udp_zero_checksum_is_checked() {
        assert_problem(
            &plus(
                "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
                 nat64_udp_zero_checksum = \"ignore\"\n",
            ),
            "nat64_udp_zero_checksum",
            "nat_gateways[0].nat64_udp_zero_checksum",
            "unknown nat64_udp_zero_checksum \"ignore\"; expected \"compute\" (the default) or \
             \"drop\"",
        );
    }

    #[test]
    fn nat_gateway_options_are_checked() {
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
             mapping = \"full-cone\"\nrst_on_idle_timeout = \"yes\"\nmapping_log = \"nat.log\"\n",
        );
        let found = problems(&text);
        let fields: Vec<&str> = found.iter().map(|problem| problem.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "nat_gateways[0].mapping",
                "nat_gateways[0].rst_on_idle_timeout",
                "nat_gateways[0].mapping_log"
            ],
            "{found:?}"
        );
    }

    #[test]
    fn route_to_egress_only_gateway_is_accepted() {
        let text = with(
            "\"::/0\", target = \"igw-main\"",
            "\"::/0\", target = \"eigw-a\"",
        ) + "[[egress_only_internet_gateways]]\nid = \"eigw-a\"\n";
        let config = Config::parse(&text, "t.toml").expect("valid");
        assert!(
            config.route_tables[0]
                .routes
                .iter()
                .any(|route| route.target == RouteTarget::EgressOnlyInternetGateway(0))
        );
    }

    #[test]
    fn targets_resolve_to_their_gateways() {
        let prefix: Ipv6Net = "64:ff9b::/96".parse().unwrap();
        assert!(nat64_route_problem("nat-a", "::/0".parse().unwrap(), None).is_some());
        assert!(nat64_route_problem("nat-a", "::/0".parse().unwrap(), Some(prefix)).is_some());
        assert!(nat64_route_problem("nat-a", prefix, Some(prefix)).is_none());
        let ids = GatewayIds {
            by_id: HashMap::from([
                ("nat-a".to_owned(), (GatewayKind::Nat(3), 1, String::new())),
                (
                    "eigw-a".to_owned(),
                    (GatewayKind::EgressOnly(2), 1, String::new()),
                ),
            ]),
        };
        let mut sink = Sink::new("");
        let at = |value: &str| At {
            value: value.to_owned(),
            field: String::new(),
            line: 1,
        };
        assert_eq!(
            resolve_target(&mut sink, &at("nat-a"), &ids),
            Some(RouteTarget::NatGateway(3))
        );
        assert_eq!(
            resolve_target(&mut sink, &at("eigw-a"), &ids),
            Some(RouteTarget::EgressOnlyInternetGateway(2))
        );
        assert!(sink.problems.is_empty());
    }

    // --- Elastic IPs ---------------------------------------------------------------------------

    #[test]
    fn elastic_ip_outside_every_subnet() {
        let text = with("private = \"10.0.1.10\"", "private = \"10.9.9.9\"");
        assert_problem(
            &text,
            "10.9.9.9",
            "internet_gateway.elastic_ips[0].private",
            "elastic IP private address 10.9.9.9 is outside every subnet",
        );
    }

    #[test]
    fn elastic_ip_public_inside_the_vpc() {
        let text = with("public = \"203.0.113.10\"", "public = \"10.0.200.1\"");
        assert_problem(
            &text,
            "10.0.200.1",
            "internet_gateway.elastic_ips[0].public",
            "public address 10.0.200.1 is inside the VPC CIDR 10.0.0.0/16",
        );
    }

    #[test]
    fn elastic_ip_private_duplicated() {
        let text = with(
            "elastic_ips = [{ private = \"10.0.1.10\", public = \"203.0.113.10\" }]",
            "elastic_ips = [\n  { private = \"10.0.1.10\", public = \"203.0.113.10\" },\n  { private = \"10.0.1.10\", public = \"203.0.113.11\" },\n]",
        );
        assert_problem(
            &text,
            "203.0.113.11",
            "internet_gateway.elastic_ips[1].private",
            "private address 10.0.1.10 already has an elastic IP, at internet_gateway.elastic_ips[0].private",
        );
    }

    #[test]
    fn public_address_duplicated() {
        let text = plus("[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"203.0.113.10\"]\n");
        assert_problem(
            &text,
            "public_ips = [\"203",
            "nat_gateways[0].public_ips[0]",
            "public address 203.0.113.10 is already used by internet_gateway.elastic_ips[0].public",
        );
    }

    // --- NAT gateways --------------------------------------------------------------------------

    #[test]
    fn nat_gateway_public_ip_count() {
        let text = plus("[[nat_gateways]]\nid = \"nat-a\"\n");
        assert_problem(
            &text,
            "[[nat_gateways]]",
            "nat_gateways[0].public_ips",
            "a NAT gateway needs 1 to 8 public IPs, found 0",
        );
        let nine = (1..=9)
            .map(|i| format!("\"198.51.100.{i}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = plus(&format!(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [{nine}]\n"
        ));
        assert_problem(
            &text,
            "public_ips = [",
            "nat_gateways[0].public_ips",
            "found 9",
        );
    }

    #[test]
    fn nat_gateway_port_range_form() {
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\nport_range = \"1024:2048\"\n",
        );
        assert_problem(
            &text,
            "port_range",
            "nat_gateways[0].port_range",
            "port range \"1024:2048\" is not of the form \"first-last\", like \"1024-65535\"",
        );
    }

    #[test]
    fn nat_gateway_port_range_bounds() {
        for bad in ["0-100", "2000-1000", "1-65536"] {
            let text = plus(&format!(
                "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\nport_range = \"{bad}\"\n"
            ));
            assert_problem(
                &text,
                "port_range",
                "nat_gateways[0].port_range",
                &format!("port range {bad:?} must satisfy 1 <= first <= last <= 65535"),
            );
        }
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\nport_range = \"5-5\"\n",
        );
        assert_eq!(
            Config::parse(&text, "t").unwrap().nat_gateways[0].port_range,
            (5, 5)
        );
    }

    #[test]
    fn nat64_prefix_length() {
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\nnat64_prefix = \"64:ff9b::/80\"\n",
        );
        assert_problem(
            &text,
            "nat64_prefix",
            "nat_gateways[0].nat64_prefix",
            "NAT64 prefix length /80 is not allowed; RFC 6052 allows /32, /40, /48, /56, /64 or /96",
        );
    }

    #[test]
    fn nat64_prefix_u_octet() {
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\nnat64_prefix = \"2001:db8:0:0:100::/96\"\n",
        );
        assert_problem(
            &text,
            "nat64_prefix",
            "nat_gateways[0].nat64_prefix",
            "bits 64 to 71 (the \"u\" octet) of NAT64 prefix 2001:db8:0:0:100::/96 must be zero (RFC 6052)",
        );
        // A /64 does not cover the u octet.
        let text = plus(
            "[[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\nnat64_prefix = \"2001:db8:1::/64\"\n",
        );
        assert!(Config::parse(&text, "t").is_ok());
    }

    // --- Flow logs -----------------------------------------------------------------------------

    #[test]
    fn flow_logs_defaults() {
        let config = Config::parse(&plus("[flow_logs]\npath = \"/var/log/f.log\"\n"), "t").unwrap();
        assert_eq!(
            config.flow_logs,
            Some(FlowLogs {
                path: "/var/log/f.log".into(),
                aggregation_interval: Duration::from_secs(60),
                format: None,
            })
        );
    }

    #[test]
    fn flow_logs_path_empty() {
        let text = plus("[flow_logs]\npath = \"\"\n");
        assert_problem(
            &text,
            "path = ",
            "flow_logs.path",
            "the flow log path must not be empty",
        );
    }

    #[test]
    fn flow_logs_interval_out_of_range() {
        for bad in [0, 601, -1] {
            let text = plus(&format!(
                "[flow_logs]\npath = \"/f\"\naggregation_interval_seconds = {bad}\n"
            ));
            assert_problem(
                &text,
                "aggregation_interval_seconds",
                "flow_logs.aggregation_interval_seconds",
                &format!("the aggregation interval must be between 1 and 600 seconds, found {bad}"),
            );
        }
    }

    #[track_caller]
    fn assert_format_problem(format: &str, message: &str) {
        let text = plus(&format!(
            "[flow_logs]\npath = \"/f\"\nformat = \"{format}\"\n"
        ));
        assert_problem(&text, "format = ", "flow_logs.format", message);
    }

    #[test]
    fn flow_logs_format_without_fields() {
        assert_format_problem(
            " ",
            "the flow log format is empty: it needs at least one `${field}`",
        );
    }

    #[test]
    fn flow_logs_format_spacing() {
        assert_format_problem(
            "${version}  ${srcaddr}",
            "the flow log format has an empty field at byte 11: separate fields with exactly one space",
        );
    }

    #[test]
    fn flow_logs_format_token() {
        assert_format_problem(
            "${version} srcaddr",
            "`srcaddr` in the flow log format is not of the form `${field}`",
        );
    }

    #[test]
    fn flow_logs_format_unknown_field() {
        assert_format_problem("${version} ${source}", "unknown flow log field `source`");
    }

    #[test]
    fn conntrack_timeouts_default_and_override() {
        let config = Config::parse(BASE, "base.toml").expect("valid");
        assert_eq!(config.conntrack, Conntrack::default());
        assert_eq!(
            config.conntrack.tcp_established_idle,
            Duration::from_secs(350)
        );
        let text = format!(
            "{BASE}\n[conntrack]\ntcp_established_idle_seconds = 7440\nudp_idle_seconds = 120\n"
        );
        let config = Config::parse(&text, "c.toml").expect("valid");
        assert_eq!(
            config.conntrack.tcp_established_idle,
            Duration::from_secs(7440)
        );
        assert_eq!(config.conntrack.udp_idle, Duration::from_secs(120));
        assert_eq!(config.conntrack.icmp_idle, Duration::from_secs(60));
    }

    #[test]
    fn conntrack_timeout_out_of_range() {
        let text = format!("{BASE}\n[conntrack]\nicmp_idle_seconds = 0\n");
        let error = Config::parse(&text, "c.toml").expect_err("invalid");
        let message = error.to_string();
        assert!(
            message.contains("conntrack.icmp_idle_seconds")
                && message.contains("a conntrack timeout must be between 1 and 604800 seconds"),
            "{message}"
        );
    }

    #[test]
    fn conntrack_unknown_key() {
        let text = format!("{BASE}\n[conntrack]\ntcp_idle = 5\n");
        let message = Config::parse(&text, "c.toml")
            .expect_err("invalid")
            .to_string();
        assert!(message.contains("unknown key"), "{message}");
    }
}
