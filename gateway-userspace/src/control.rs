//! The control socket: a Unix stream socket on which the running controller answers one request
//! per connection (a line with the command, a JSON document back). `gateway stats` and later
//! commands use it from another shell; a socket needs no cleanup in bpffs and works the same in
//! every network namespace.

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

/// The answer to `stats`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsReply {
    /// (name, value) in the dataplane's counter order.
    pub counters: Vec<(String, u64)>,
    /// Live entries in the flow-log accounting table.
    pub tracked_flows: u64,
    /// Seconds since the controller started.
    pub uptime_seconds: u64,
    /// The NAT gateway metrics under AWS's CloudWatch names (all NAT gateways together).
    #[serde(default)]
    pub nat: Vec<(String, u64)>,
    /// The DNS64 resolvers' counters (all NAT gateways together); `None` when none runs.
    #[serde(default)]
    pub dns64: Option<crate::dns64::Dns64Stats>,
}

/// The AWS NAT gateway metrics from the counters, the live session count and the idle timeouts.
pub fn nat_metrics(
    counters: &[(gateway_common::Counter, u64)],
    active_connections: u64,
    idle_timeouts: u64,
) -> Vec<(String, u64)> {
    use gateway_common::Counter as C;
    let value = |wanted: C| {
        counters
            .iter()
            .find(|(counter, _)| *counter == wanted)
            .map_or(0, |(_, value)| *value)
    };
    let drops: u64 = counters
        .iter()
        .filter(|(counter, _)| {
            counter.name().starts_with("drop_nat_") || *counter == C::NatErrorPortAllocation
        })
        .map(|(_, value)| value)
        .sum();
    [
        ("ActiveConnectionCount", active_connections),
        ("ConnectionAttemptCount", value(C::NatConnectionAttempt)),
        (
            "ConnectionEstablishedCount",
            value(C::NatConnectionEstablished),
        ),
        ("ErrorPortAllocation", value(C::NatErrorPortAllocation)),
        ("IdleTimeoutCount", idle_timeouts),
        ("PacketsDropCount", drops),
        ("BytesInFromSource", value(C::NatBytesInFromSource)),
        (
            "BytesInFromDestination",
            value(C::NatBytesInFromDestination),
        ),
        ("BytesOutToDestination", value(C::NatBytesOutToDestination)),
        ("BytesOutToSource", value(C::NatBytesOutToSource)),
        ("PacketsInFromSource", value(C::NatPacketsInFromSource)),
        (
            "PacketsInFromDestination",
            value(C::NatPacketsInFromDestination),
        ),
        (
            "PacketsOutToDestination",
            value(C::NatPacketsOutToDestination),
        ),
        ("PacketsOutToSource", value(C::NatPacketsOutToSource)),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_string(), value))
    .collect()
}

/// One live connection-tracking entry, as `gateway conntrack` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ConntrackRow {
    /// "tcp", "udp", "icmp", "icmpv6" or the protocol number.
    pub protocol: String,
    /// Which gateway tracks it: "egress-only".
    pub gateway: String,
    /// The VPC side, `address port` (ICMP echo: the identifier as the port); for NAT, the private
    /// endpoint.
    pub inside: String,
    /// NAT: the public endpoint the private one is translated to.
    #[serde(default)]
    pub public: Option<String>,
    /// The internet side.
    pub remote: String,
    pub state: String,
    pub age_seconds: u64,
    pub idle_seconds: u64,
    pub packets_out: u64,
    pub bytes_out: u64,
    pub packets_in: u64,
    pub bytes_in: u64,
}

/// Sends `command` to the controller at `socket` and returns its JSON answer.
pub fn request(socket: &Path, command: &str) -> anyhow::Result<String> {
    let mut stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "connecting to the gateway's control socket {} (is `gateway run` running, and is this \
             its socket? see [controller] socket in the config)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    writeln!(stream, "{command}")?;
    let mut reply = String::new();
    BufReader::new(stream)
        .read_line(&mut reply)
        .context("reading the controller's answer")?;
    if reply.is_empty() {
        bail!("the controller closed the connection without answering");
    }
    if let Some(error) = reply.strip_prefix("error: ") {
        bail!("the controller answered: {}", error.trim_end());
    }
    Ok(reply)
}
