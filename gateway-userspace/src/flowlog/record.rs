//! One flow-log record and the enumerated values of its fields.

use std::{fmt, net::IpAddr};

/// The record version the gateway produces when nothing newer is asked for: the default format's.
pub const DEFAULT_VERSION: u8 = 2;

/// One flow on one interface during one aggregation interval.
///
/// Addresses come in two pairs because the gateway translates: `srcaddr`/`dstaddr` are what left
/// the gateway, `pkt_srcaddr`/`pkt_dstaddr` what arrived, so a reader sees the NAT in one line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// The lowest version the record needs; a format with newer fields renders a higher one.
    pub version: u8,
    pub account_id: String,
    pub vpc_id: String,
    pub interface_id: String,
    /// `None` when the flow has no VPC-side address in a configured subnet.
    pub subnet_id: Option<String>,
    /// As the packet left the gateway (after translation).
    pub srcaddr: IpAddr,
    pub dstaddr: IpAddr,
    /// As the packet arrived at the gateway (before translation).
    pub pkt_srcaddr: IpAddr,
    pub pkt_dstaddr: IpAddr,
    /// After translation; 0 for protocols without ports (ICMP included, as AWS writes it).
    pub srcport: u16,
    pub dstport: u16,
    /// IANA protocol number.
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    /// Unix seconds of the first and last packet of the interval.
    pub start: u64,
    pub end: u64,
    pub action: Action,
    pub log_status: LogStatus,
    pub flow_direction: FlowDirection,
    /// AWS `traffic-path` code, only for egress traffic.
    pub traffic_path: Option<u8>,
    /// Already in the AWS form (see [`super::aws_tcp_flags`]).
    pub tcp_flags: u8,
    pub family: Family,
}

/// `action`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    Accept,
    Reject,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Accept => "ACCEPT",
            Action::Reject => "REJECT",
        }
    }
}

/// `log-status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStatus {
    /// Data is logging normally.
    Ok,
    /// No traffic during the interval.
    NoData,
    /// Some records were skipped during the interval (e.g. the flow table was full).
    SkipData,
}

impl LogStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            LogStatus::Ok => "OK",
            LogStatus::NoData => "NODATA",
            LogStatus::SkipData => "SKIPDATA",
        }
    }
}

/// `flow-direction`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowDirection {
    Ingress,
    Egress,
}

impl FlowDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            FlowDirection::Ingress => "ingress",
            FlowDirection::Egress => "egress",
        }
    }
}

/// `type`: the address family of the flow as it arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Ipv4,
    Ipv6,
}

impl Family {
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Ipv4 => "IPv4",
            Family::Ipv6 => "IPv6",
        }
    }
}

macro_rules! display_as_str {
    ($($ty:ty),*) => {$(
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    )*};
}

display_as_str!(Action, LogStatus, FlowDirection, Family);
