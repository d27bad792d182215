//! TEMPORARY stub of the validated config types (the real module is being written).
#![expect(dead_code, reason = "stub")]
use std::{net::Ipv4Addr, path::PathBuf, time::Duration};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

#[derive(Debug, Clone)]
pub struct Config {
    pub vpc: Vpc,
    pub controller: Controller,
    pub interfaces: Vec<Interface>,
    pub subnets: Vec<Subnet>,
    pub route_tables: Vec<RouteTable>,
    pub internet_gateway: Option<InternetGateway>,
    pub nat_gateways: Vec<NatGateway>,
    pub egress_only_internet_gateways: Vec<EgressOnlyInternetGateway>,
    pub flow_logs: Option<FlowLogs>,
}
#[derive(Debug, Clone)]
pub struct Vpc {
    pub id: String,
    pub account_id: String,
    pub ipv4_cidrs: Vec<Ipv4Net>,
    pub ipv6_cidrs: Vec<Ipv6Net>,
}
#[derive(Debug, Clone)]
pub struct Controller {
    pub socket: PathBuf,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterfaceRole {
    Vpc,
    Internet,
}
#[derive(Debug, Clone)]
pub struct Interface {
    pub name: String,
    pub role: InterfaceRole,
    pub id: String,
    pub line: usize,
}
#[derive(Debug, Clone)]
pub struct Subnet {
    pub id: String,
    pub ipv4_cidr: Option<Ipv4Net>,
    pub ipv6_cidr: Option<Ipv6Net>,
    pub route_table: usize,
}
#[derive(Debug, Clone)]
pub struct RouteTable {
    pub id: String,
    pub routes: Vec<Route>,
}
#[derive(Debug, Clone)]
pub struct Route {
    pub destination: IpNet,
    pub target: RouteTarget,
}
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    Local,
    Blackhole,
    InternetGateway,
    NatGateway(usize),
    EgressOnlyInternetGateway(usize),
}
#[derive(Debug, Clone)]
pub struct InternetGateway {
    pub id: String,
    pub elastic_ips: Vec<ElasticIp>,
}
#[derive(Debug, Clone)]
pub struct ElasticIp {
    pub private: Ipv4Addr,
    pub public: Ipv4Addr,
    pub subnet: usize,
}
#[derive(Debug, Clone)]
pub struct NatGateway {
    pub id: String,
    pub public_ips: Vec<Ipv4Addr>,
    pub port_range: (u16, u16),
    pub nat64_prefix: Option<Ipv6Net>,
}
#[derive(Debug, Clone)]
pub struct EgressOnlyInternetGateway {
    pub id: String,
}
#[derive(Debug, Clone)]
pub struct FlowLogs {
    pub path: PathBuf,
    pub aggregation_interval: Duration,
    pub format: Option<String>,
}
#[derive(Debug, thiserror::Error)]
#[error("config error")]
pub struct ConfigError;
impl Config {
    pub fn from_file(_path: &std::path::Path) -> Result<Config, ConfigError> {
        Err(ConfigError)
    }
}
