//! Network-namespace test harness, shared by the end-to-end tests (`tests/tests/`) and
//! `cargo xtask demo`.
//!
//! - [`Netns`]: a namespace as an RAII guard with a unique name; commands and Rust threads run in
//!   it; drop kills what runs inside and deletes it.
//! - [`IgwTopology`]: instance — gateway — router — internet host, wired with `ip`/`ethtool`.
//! - [`GatewayProcess`]: `gateway run` in the gateway namespace, stopped with SIGINT on drop.
//! - [`traffic`]: ping, content-verified TCP transfers, UDP echo, traceroute.
//! - [`Capture`]: tcpdump, to see which addresses really crossed an interface.
//! - [`flowlog`]: parsing the flow-log records back.
//! - [`dns`]: an authoritative DNS server for `example.` (the DNS64 tests' upstream) and a client.
//!
//! Everything needs root (namespaces, veths, XDP).
//!
//! Environment:
//! - `GATEWAY_BIN`: the `gateway` binary to test (default: `gateway` next to the test binary's
//!   directory, i.e. `target/<profile>/gateway`, which `cargo xtask test` builds first).
//! - `GATEWAY_E2E_STANDIN=nftables`: replace the gateway by an nftables 1:1 NAT, to tell a
//!   topology problem from a dataplane one (tests of counters and flow logs then fail).

pub mod capture;
pub mod dns;
pub mod flowlog;
pub mod gateway;
pub mod netns;
pub mod topology;
pub mod traffic;
pub mod util;

pub use capture::{Capture, Packet};
pub use gateway::{GatewayConfigFiles, GatewayProcess, gateway_binary, write_gateway_config};
pub use netns::Netns;
pub use topology::{IgwTopology, addr, example_config_path, example_path, ifname};
pub use util::TempDir;
