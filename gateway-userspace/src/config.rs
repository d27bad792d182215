//! The declarative, AWS-shaped configuration file (TOML) and its validation.
//!
//! [`Config::parse`] reads the whole file and checks everything before anything is loaded: every
//! problem found is reported at once, each with its line and field path, e.g.
//! `gateway.toml:12: subnets[0].ipv4_cidr: 10.0.1.5/24 has host bits set; did you mean 10.0.1.0/24?`
//!
//! The result is a [`Config`] whose cross-references are resolved to indices (a subnet's route
//! table, a route's NAT gateway, an elastic IP's subnet), and whose route tables hold the
//! implicit `local` routes for the VPC CIDRs, as AWS adds them.

mod reader;

use std::{
    collections::HashMap,
    fmt,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

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

/// The fields a custom flow log `format` may name, as `${field}`, in AWS VPC Flow Logs order.
pub const FLOW_LOG_FIELDS: &[&str] = &[
    "version",
    "account-id",
    "interface-id",
    "srcaddr",
    "dstaddr",
    "srcport",
    "dstport",
    "protocol",
    "packets",
    "bytes",
    "start",
    "end",
    "action",
    "log-status",
    "vpc-id",
    "subnet-id",
    "instance-id",
    "tcp-flags",
    "type",
    "pkt-srcaddr",
    "pkt-dstaddr",
    "region",
    "az-id",
    "sublocation-type",
    "sublocation-id",
    "pkt-src-aws-service",
    "pkt-dst-aws-service",
    "flow-direction",
    "traffic-path",
];

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
                &["id", "public_ips", "port_range", "nat64_prefix"],
            )
            .into_iter()
            .map(|table| RawNatGateway {
                field: table.field().to_owned(),
                line: table.line(),
                id: table.required_string(sink, "id"),
                public_ips: table.string_array(sink, "public_ips"),
                port_range: table.string(sink, "port_range"),
                nat64_prefix: table.string(sink, "nat64_prefix"),
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
        Self {
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
    by_id: HashMap<String, (GatewayKind, usize)>,
}

impl GatewayIds {
    /// Records a gateway id, reporting a duplicate across all kinds of gateways.
    fn add(&mut self, sink: &mut Sink, id: &At<String>, kind: GatewayKind) {
        if let Some((_, first_line)) = self.by_id.get(&id.value) {
            sink.report_at(
                id,
                format!(
                    "duplicate gateway id {:?} (first defined at line {first_line}); gateway ids \
                     must be unique across internet, NAT and egress-only internet gateways",
                    id.value
                ),
            );
        } else {
            self.by_id.insert(id.value.clone(), (kind, id.line));
        }
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

    let route_tables = validate_route_tables(raw.route_tables, &vpc, &gateway_ids, sink);
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

    Config {
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
            format!("{:?} is not valid for {what}: its id must start with {prefix:?}, followed by a name", id.value),
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

fn vpc_cidrs(vpc: &Vpc) -> impl Iterator<Item = IpNet> + '_ {
    vpc.ipv4_cidrs
        .iter()
        .map(|net| IpNet::V4(*net))
        .chain(vpc.ipv6_cidrs.iter().map(|net| IpNet::V6(*net)))
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
                "interface name {text:?} is {} bytes long; Linux allows at most {MAX_INTERFACE_NAME_LEN}",
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
                "NAT64 prefix length /{} is not allowed; RFC 6052 allows /32, /40, /48, /56, /64 or /96",
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
    public_addresses: &mut HashMap<Ipv4Addr, String>,
) -> bool {
    if let Some(cidr) = vpc.ipv4_cidrs.iter().find(|cidr| cidr.contains(&address)) {
        sink.report_at(
            text,
            format!("public address {address} is inside the VPC CIDR {cidr}"),
        );
        return false;
    }
    if let Some(first) = public_addresses.get(&address) {
        sink.report_at(
            text,
            format!("public address {address} is already used by {first}"),
        );
        return false;
    }
    public_addresses.insert(address, text.field.clone());
    true
}

fn validate_nat_gateways(
    raw: Vec<RawNatGateway>,
    vpc: &Vpc,
    gateway_ids: &mut GatewayIds,
    public_addresses: &mut HashMap<Ipv4Addr, String>,
    sink: &mut Sink,
) -> Vec<NatGateway> {
    let mut nat_gateways = Vec::new();
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
        let nat64_prefix = nat
            .nat64_prefix
            .and_then(|text| check_nat64_prefix(sink, &text));
        nat_gateways.push(NatGateway {
            id: nat.id.map(|id| id.value).unwrap_or_default(),
            public_ips,
            port_range,
            nat64_prefix,
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

/// Refuses the route targets that this version parses but whose dataplane is not implemented
/// yet. Implementing one of them means removing its arm here.
fn refuse_unimplemented_target(target: RouteTarget, id: &str) -> Option<String> {
    match target {
        RouteTarget::NatGateway(_) => Some(format!(
            "target {id} is a NAT gateway, which this version of the dataplane does not implement yet"
        )),
        RouteTarget::EgressOnlyInternetGateway(_) => Some(format!(
            "target {id} is an egress-only internet gateway, which this version of the dataplane \
             does not implement yet"
        )),
        RouteTarget::Local | RouteTarget::Blackhole | RouteTarget::InternetGateway => None,
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
            Some((GatewayKind::Internet, _)) => RouteTarget::InternetGateway,
            Some((GatewayKind::Nat(index), _)) => RouteTarget::NatGateway(*index),
            Some((GatewayKind::EgressOnly(index), _)) => {
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

/// Each validated table, with its id as written (for the subnets' references).
fn validate_route_tables(
    raw: Vec<RawRouteTable>,
    vpc: &Vpc,
    gateway_ids: &GatewayIds,
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
    let mut tables = Vec::new();
    for table in raw {
        if let Some(id) = &table.id {
            check_id(sink, id);
        }
        let mut routes = local_routes.clone();
        let mut destinations: HashMap<IpNet, String> = HashMap::new();
        for route in table.routes {
            let destination = route.destination.as_ref().and_then(|text| {
                let destination = parse_prefix(sink, text, None)?;
                if let Some(first) = destinations.get(&destination) {
                    sink.report_at(text, format!("destination {destination} is already routed by {first}"));
                    return None;
                }
                destinations.insert(destination, text.field.clone());
                if vpc_cidrs(vpc).any(|cidr| cidr == destination) {
                    sink.report_at(
                        text,
                        format!("the local route for {destination} is implicit (it is a VPC CIDR); remove this route"),
                    );
                    return None;
                }
                Some(destination)
            });
            let target = route.target.as_ref().and_then(|text| {
                let target = resolve_target(sink, text, gateway_ids)?;
                let mut allowed = true;
                if let Some(destination) = destination {
                    if target == RouteTarget::Local && !vpc_cidrs(vpc).any(|cidr| cidr.contains(&destination)) {
                        sink.report_at(
                            text,
                            format!("target \"local\" only applies inside the VPC; {destination} is not inside any VPC CIDR"),
                        );
                        allowed = false;
                    }
                    if matches!(target, RouteTarget::EgressOnlyInternetGateway(_)) && Family::of(&destination) == Family::V4 {
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
                if let Some(message) = refuse_unimplemented_target(target, &text.value) {
                    sink.report_at(text, message);
                    allowed = false;
                }
                allowed.then_some(target)
            });
            if let (Some(destination), Some(target)) = (destination, target) {
                routes.push(Route {
                    destination,
                    target,
                });
            }
        }
        tables.push((
            RouteTable {
                id: table
                    .id
                    .as_ref()
                    .map(|id| id.value.clone())
                    .unwrap_or_default(),
                routes,
            },
            table.id,
        ));
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
            if !vpc_cidrs.iter().any(|cidr| cidr.contains(&net)) {
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
    public_addresses: &mut HashMap<Ipv4Addr, String>,
    sink: &mut Sink,
) -> Vec<ElasticIp> {
    let mut elastic_ips = Vec::new();
    let mut private_addresses: HashMap<Ipv4Addr, String> = HashMap::new();
    for eip in raw {
        let private = eip.private.as_ref().and_then(|text| {
            let address = parse_ipv4_address(sink, text)?;
            let Some(subnet) = subnets
                .iter()
                .position(|subnet| subnet.ipv4_cidr.is_some_and(|cidr| cidr.contains(&address)))
            else {
                sink.report_at(
                    text,
                    format!("elastic IP private address {address} is outside every subnet"),
                );
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

/// Checks a custom flow log format: `${field}` tokens separated by single spaces, each field in
/// [`FLOW_LOG_FIELDS`]. (Same contract as `crate::flowlog::validate_format`, to be wired later.)
fn check_flow_log_format(format: &str) -> Result<(), String> {
    if format.trim().is_empty() {
        return Err("the format names no fields".to_owned());
    }
    for token in format.split(' ') {
        if token.is_empty() {
            return Err("fields in the format must be separated by single spaces".to_owned());
        }
        let Some(name) = token
            .strip_prefix("${")
            .and_then(|rest| rest.strip_suffix('}'))
        else {
            return Err(format!(
                "format token {token:?} is not of the form ${{field-name}}"
            ));
        };
        if !FLOW_LOG_FIELDS.contains(&name) {
            return Err(format!(
                "unknown flow log field {name:?} in the format; known fields: {}",
                FLOW_LOG_FIELDS.join(" ")
            ));
        }
    }
    Ok(())
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
        && let Err(message) = check_flow_log_format(&format.value)
    {
        sink.report_at(format, message);
    }
    FlowLogs {
        path,
        aggregation_interval: Duration::from_secs(seconds),
        format: raw.format.map(|format| format.value),
    }
}
