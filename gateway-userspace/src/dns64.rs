//! DNS64 (RFC 6147): the resolver a NAT gateway with a NAT64 prefix offers its VPC.
//!
//! Every query is forwarded to the configured upstream resolvers (UDP, retried over TCP when the
//! answer is truncated) and their answer is returned. An AAAA query whose name has no usable IPv6
//! address gets AAAA records synthesised from the name's A records, inside the gateway's NAT64
//! prefix (RFC 6052), so that an IPv6-only host reaches IPv4-only servers through the NAT64
//! translation.
//!
//! The decisions are pure functions on parsed messages ([`classify_aaaa`], [`synthesise`]); the
//! rest moves bytes between sockets. Answers that need no change are relayed byte for byte (only
//! the message ID is put back), so EDNS options and DNSSEC records pass through untouched.
//!
//! Left out: PTR synthesis for the prefix's `ip6.arpa` names (section 5.3.1) is not done; such
//! queries are forwarded like any other. No cache: the upstream resolvers cache.

use std::{
    hash::{BuildHasher as _, RandomState},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use gateway_common::nat64::{self, Nat64Prefix};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{
        DNSClass, RData, Record, RecordType,
        rdata::{A, AAAA},
    },
};
use ipnet::Ipv6Net;
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
    task::JoinSet,
};
use tracing::{debug, info, warn};

use crate::config::{Config, Dns64Config};

/// RFC 6052 section 2.1: the Well-Known Prefix.
const WELL_KNOWN_PREFIX: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);
/// RFC 6147 section 5.1.7: the TTL cap of a synthesised AAAA record when the negative AAAA answer
/// carried no SOA record.
const TTL_WITHOUT_SOA: u32 = 600;
/// The largest UDP answer to a client that did not say (no EDNS): RFC 1035.
const CLASSIC_UDP_SIZE: usize = 512;
/// The UDP payload size advertised in synthesised answers (the 2020 DNS flag day value).
const EDNS_UDP_SIZE: u16 = 1232;
/// Queries answered at once over UDP, over all listen sockets of a gateway; more wait in the
/// socket buffer (and the kernel drops what does not fit).
const UDP_QUERIES_IN_FLIGHT: usize = 1024;
/// TCP connections served at once per gateway; more are closed at once.
const TCP_CONNECTIONS: usize = 256;
/// How long a client's TCP connection may stay idle between queries (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// At most one warning about failing upstreams per this interval, with the count of the others.
const WARN_INTERVAL: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Addresses: RFC 6052 embedding and which IPv4 addresses may be synthesised.

/// RFC 6052 section 2.2: the IPv4 address goes right after the prefix, skipping bits 64 to 71
/// (the "u" octet, always zero); the suffix is zero. The prefix was validated with the config
/// (one of the six lengths), so the embedding always exists.
fn embed_ipv4(prefix: &Ipv6Net, v4: Ipv4Addr) -> Ipv6Addr {
    let prefix = Nat64Prefix {
        addr: prefix.network().octets(),
        len: prefix.prefix_len(),
        _pad: [0; 3],
    };
    Ipv6Addr::from(prefix.embed(v4.octets()).unwrap_or_default())
}

/// Whether `v4` is outside every special-purpose range that RFC 6052 section 3.1 forbids behind
/// the Well-Known Prefix.
fn is_global_ipv4(v4: Ipv4Addr) -> bool {
    nat64::is_global_ipv4(v4.octets())
}

fn in_ipv4_prefix(address: Ipv4Addr, network: Ipv4Addr, length: u8) -> bool {
    let mask = u32::MAX.checked_shl(32 - u32::from(length)).unwrap_or(0);
    u32::from(address) & mask == u32::from(network) & mask
}

/// How one gateway synthesises: its NAT64 prefix and the AAAA records it treats as absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Synthesis {
    pub prefix: Ipv6Net,
    pub exclude_aaaa: Vec<Ipv6Net>,
}

impl Synthesis {
    /// The AAAA address for `v4`, or `None` when `v4` must not be synthesised.
    ///
    /// With the Well-Known Prefix only global IPv4 addresses (RFC 6052 section 3.1: the prefix
    /// must not reach private or special-purpose space). A network-specific prefix belongs to
    /// this operator, whose NAT64 may well reach private IPv4 networks, so everything is allowed
    /// except what is never a unicast destination anywhere: "this network" 0/8, loopback 127/8,
    /// multicast 224/4 and reserved 240/4.
    pub fn address_for(&self, v4: Ipv4Addr) -> Option<Ipv6Addr> {
        let allowed =
            if self.prefix.network() == WELL_KNOWN_PREFIX && self.prefix.prefix_len() == 96 {
                is_global_ipv4(v4)
            } else {
                ![
                    (Ipv4Addr::new(0, 0, 0, 0), 8),
                    (Ipv4Addr::new(127, 0, 0, 0), 8),
                    (Ipv4Addr::new(224, 0, 0, 0), 4),
                    (Ipv4Addr::new(240, 0, 0, 0), 4),
                ]
                .iter()
                .any(|&(network, length)| in_ipv4_prefix(v4, network, length))
            };
        allowed.then(|| embed_ipv4(&self.prefix, v4))
    }

    fn is_excluded(&self, v6: Ipv6Addr) -> bool {
        self.exclude_aaaa.iter().any(|prefix| prefix.contains(&v6))
    }
}

// ---------------------------------------------------------------------------------------------
// The decisions, on parsed messages.

/// What the upstream's answer to an AAAA query calls for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AaaaAnswer {
    /// NXDOMAIN: the name does not exist; returned as is (section 5.1.2).
    NameError,
    /// At least one AAAA record outside `exclude_aaaa`: returned as is, or with the excluded
    /// records removed when there were some (section 5.1.4 SHOULD).
    Real { excluded_removed: bool },
    /// NOERROR without a usable AAAA record (NODATA, or only excluded ones), or any other rcode
    /// (section 5.1.2: SERVFAIL, REFUSED, ... count as an empty answer, because many servers
    /// answer AAAA queries badly): ask for A records and synthesise.
    Synthesise,
}

/// Section 5.1: what to do with the upstream's answer to an AAAA query.
pub fn classify_aaaa(response: &Message, synthesis: &Synthesis) -> AaaaAnswer {
    match response.response_code {
        ResponseCode::NXDomain => AaaaAnswer::NameError,
        ResponseCode::NoError => {
            let mut usable = false;
            let mut excluded = false;
            for address in aaaa_addresses(response) {
                if synthesis.is_excluded(address) {
                    excluded = true;
                } else {
                    usable = true;
                }
            }
            if usable {
                AaaaAnswer::Real {
                    excluded_removed: excluded,
                }
            } else {
                AaaaAnswer::Synthesise
            }
        }
        _ => AaaaAnswer::Synthesise,
    }
}

fn aaaa_addresses(message: &Message) -> impl Iterator<Item = Ipv6Addr> + '_ {
    message
        .answers
        .iter()
        .filter_map(|record| match &record.data {
            RData::AAAA(AAAA(address)) if record.dns_class == DNSClass::IN => Some(*address),
            _ => None,
        })
}

/// `response` without the AAAA records inside `exclude_aaaa`.
pub fn without_excluded(response: &Message, synthesis: &Synthesis) -> Message {
    let mut filtered = response.clone();
    filtered.answers.retain(|record| match &record.data {
        RData::AAAA(AAAA(address)) => !synthesis.is_excluded(*address),
        _ => true,
    });
    filtered
}

/// The result of [`synthesise`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synthesised {
    /// AAAA records made from the A records.
    Answer(Message),
    /// No A record that may be synthesised (none, NXDOMAIN or SERVFAIL for A, or only addresses
    /// the prefix must not carry): the AAAA answer stands, excluded records removed.
    NoAddress(Message),
}

/// Sections 5.1.6 to 5.1.8: the answer to the client's AAAA `query`, from the upstream's `aaaa`
/// answer (that had no usable record) and its `a` answer for the same name.
///
/// The answer keeps the A answer's CNAME/DNAME chain, and each synthesised AAAA record keeps the
/// owner name of its A record. Its TTL is the A record's, capped by the negative-caching TTL of
/// the AAAA answer (the SOA record's TTL and its minimum field, RFC 2308), or by 600 s when the
/// AAAA answer carried no SOA (section 5.1.7).
pub fn synthesise(
    query: &Message,
    aaaa: &Message,
    a: &Message,
    synthesis: &Synthesis,
) -> Synthesised {
    let ttl_cap = negative_ttl(aaaa).unwrap_or(TTL_WITHOUT_SOA);
    let synthesised: Vec<Record> = if a.response_code == ResponseCode::NoError {
        a.answers
            .iter()
            .filter(|record| record.dns_class == DNSClass::IN)
            .filter_map(|record| match &record.data {
                RData::A(A(v4)) => Some(Record::from_rdata(
                    record.name.clone(),
                    record.ttl.min(ttl_cap),
                    RData::AAAA(AAAA(synthesis.address_for(*v4)?)),
                )),
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    if synthesised.is_empty() {
        return Synthesised::NoAddress(without_excluded(aaaa, synthesis));
    }
    let mut answer = Message::response(query.id, query.op_code);
    answer.metadata.recursion_desired = query.recursion_desired;
    answer.metadata.recursion_available = a.recursion_available;
    answer.metadata.checking_disabled = query.checking_disabled;
    // Made up here, so never validated: AD stays clear (section 5.5).
    answer.metadata.authentic_data = false;
    answer.metadata.response_code = ResponseCode::NoError;
    answer.queries = query.queries.clone();
    answer.answers = a
        .answers
        .iter()
        .filter(|record| matches!(record.record_type(), RecordType::CNAME | RecordType::DNAME))
        .cloned()
        .chain(synthesised)
        .collect();
    if query.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(EDNS_UDP_SIZE);
        answer.set_edns(edns);
    }
    Synthesised::Answer(answer)
}

/// RFC 2308 section 5: how long a negative answer may be cached, from the SOA record in its
/// authority section.
fn negative_ttl(response: &Message) -> Option<u32> {
    response
        .authorities
        .iter()
        .find_map(|record| match &record.data {
            RData::SOA(soa) => Some(record.ttl.min(soa.minimum)),
            _ => None,
        })
}

/// Section 5.5: a client that sets DO (it validates) and CD (it checks signatures itself) gets the
/// real answer; a synthesised record would fail its validation.
fn validates_itself(query: &Message) -> bool {
    query.checking_disabled
        && query
            .edns
            .as_ref()
            .is_some_and(|edns| edns.flags().dnssec_ok)
}

// ---------------------------------------------------------------------------------------------
// Counters.

/// What `gateway stats` shows of DNS64, all gateways together.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Dns64Stats {
    /// Queries received (well-formed), of every type.
    pub queries: u64,
    /// AAAA queries answered with the name's real AAAA records.
    pub answered_real_aaaa: u64,
    /// AAAA queries answered with records synthesised from A records.
    pub synthesised: u64,
    /// Queries that no upstream answered in time: SERVFAIL returned.
    pub upstream_failures: u64,
    /// Messages that were not a DNS query (undecodable, a response, no question): dropped, or
    /// answered FORMERR when the header could be read.
    pub malformed_dropped: u64,
}

impl Dns64Stats {
    /// (name, value, meaning) for the text output of `gateway stats`.
    pub fn rows(&self) -> [(&'static str, u64, &'static str); 5] {
        [
            ("queries", self.queries, "queries received"),
            (
                "answered_real_aaaa",
                self.answered_real_aaaa,
                "AAAA queries answered with real AAAA records",
            ),
            (
                "synthesised",
                self.synthesised,
                "AAAA queries answered with AAAA synthesised from A records",
            ),
            (
                "upstream_failures",
                self.upstream_failures,
                "no upstream answered in time: SERVFAIL returned",
            ),
            (
                "malformed_dropped",
                self.malformed_dropped,
                "messages that were not a well-formed query",
            ),
        ]
    }
}

/// The live counters behind [`Dns64Stats`].
#[derive(Debug, Default)]
pub struct Dns64Counters {
    queries: AtomicU64,
    answered_real_aaaa: AtomicU64,
    synthesised: AtomicU64,
    upstream_failures: AtomicU64,
    malformed_dropped: AtomicU64,
}

impl Dns64Counters {
    pub fn snapshot(&self) -> Dns64Stats {
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        Dns64Stats {
            queries: read(&self.queries),
            answered_real_aaaa: read(&self.answered_real_aaaa),
            synthesised: read(&self.synthesised),
            upstream_failures: read(&self.upstream_failures),
            malformed_dropped: read(&self.malformed_dropped),
        }
    }
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// One warning per [`WARN_INTERVAL`] at most, so that a dead upstream under load does not flood
/// the log; the warning says how many failures it stands for.
#[derive(Debug, Default)]
struct WarnLimiter {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// `Some(failures since the last warning)` when a warning is due now.
    fn due(&self) -> Option<u64> {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if last.is_some_and(|at| now.duration_since(at) < WARN_INTERVAL) {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        *last = Some(now);
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

// ---------------------------------------------------------------------------------------------
// The resolver of one gateway: from query bytes to answer bytes.

/// The transport a query came in on, which bounds the answer's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// Why no upstream produced an answer.
#[derive(Debug, thiserror::Error)]
enum UpstreamError {
    #[error("no answer from {upstream} within {timeout:?}")]
    Timeout {
        upstream: SocketAddr,
        timeout: Duration,
    },
    #[error("{upstream}: {source}")]
    Io {
        upstream: SocketAddr,
        source: std::io::Error,
    },
    #[error("{upstream}: answer over TCP does not match the query")]
    Mismatch { upstream: SocketAddr },
}

struct Resolver {
    gateway: String,
    upstreams: Vec<SocketAddr>,
    timeout: Duration,
    synthesis: Synthesis,
    counters: Arc<Dns64Counters>,
    warnings: WarnLimiter,
    /// Keys the message IDs of upstream queries.
    ids: RandomState,
    next_id: AtomicU64,
}

impl Resolver {
    fn new(
        gateway: &str,
        config: &Dns64Config,
        prefix: Ipv6Net,
        counters: Arc<Dns64Counters>,
    ) -> Self {
        Self {
            gateway: gateway.to_owned(),
            upstreams: config.upstream.clone(),
            timeout: config.timeout,
            synthesis: Synthesis {
                prefix,
                exclude_aaaa: config.exclude_aaaa.clone(),
            },
            counters,
            warnings: WarnLimiter::default(),
            ids: RandomState::new(),
            next_id: AtomicU64::new(0),
        }
    }

    /// An unpredictable message ID for an upstream query (with the kernel's random source port,
    /// what makes forged answers hard to slip in): a counter hashed with this process's random
    /// SipHash keys.
    fn upstream_id(&self) -> u16 {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        (self.ids.hash_one(n) & 0xffff) as u16
    }

    /// The answer to the message `bytes` from `client`, or `None` when it is dropped.
    async fn answer(
        &self,
        bytes: &[u8],
        client: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let query = match Message::from_vec(bytes) {
            Ok(query) if query.message_type == MessageType::Query => query,
            Ok(_) => {
                bump(&self.counters.malformed_dropped);
                debug!(gateway = %self.gateway, %client, "DNS64: a response, not a query: dropped");
                return None;
            }
            Err(error) => {
                bump(&self.counters.malformed_dropped);
                debug!(gateway = %self.gateway, %client, %error, "DNS64: undecodable query dropped");
                return None;
            }
        };
        if query.queries.len() != 1 {
            bump(&self.counters.malformed_dropped);
            debug!(
                gateway = %self.gateway, %client, questions = query.queries.len(),
                "DNS64: query without exactly one question: FORMERR"
            );
            let mut formerr = Message::error_msg(query.id, query.op_code, ResponseCode::FormErr);
            formerr.metadata.recursion_desired = query.recursion_desired;
            return formerr.to_vec().ok();
        }
        bump(&self.counters.queries);
        let question = &query.queries[0];
        let wants_synthesis = query.op_code == OpCode::Query
            && question.query_type == RecordType::AAAA
            && question.query_class == DNSClass::IN
            && !validates_itself(&query);
        let result = if wants_synthesis {
            self.answer_aaaa(bytes, &query).await
        } else {
            self.forward(bytes, &query)
                .await
                .map(|(bytes, _)| (bytes, "forwarded"))
        };
        let (answer, outcome) = match result {
            Ok(answered) => answered,
            Err(error) => {
                bump(&self.counters.upstream_failures);
                if let Some(suppressed) = self.warnings.due() {
                    warn!(
                        gateway = %self.gateway, name = %question.name, error = %error,
                        "DNS64: no upstream answered; SERVFAIL returned ({suppressed} more such \
                         failure(s) since the last warning)"
                    );
                }
                let mut failure =
                    Message::error_msg(query.id, query.op_code, ResponseCode::ServFail);
                failure.metadata.recursion_desired = query.recursion_desired;
                failure.metadata.recursion_available = true;
                failure.queries = query.queries.clone();
                (failure.to_vec().ok()?, "servfail")
            }
        };
        debug!(
            gateway = %self.gateway, %client, name = %question.name, r#type = %question.query_type,
            ?transport, outcome, "DNS64 query"
        );
        Some(match transport {
            Transport::Tcp => answer,
            Transport::Udp => fit_udp(answer, &query),
        })
    }

    /// Section 5.1: the AAAA query, its A query when needed, and the synthesis.
    async fn answer_aaaa(
        &self,
        bytes: &[u8],
        query: &Message,
    ) -> Result<(Vec<u8>, &'static str), UpstreamError> {
        let (aaaa_bytes, aaaa) = self.forward(bytes, query).await?;
        match classify_aaaa(&aaaa, &self.synthesis) {
            AaaaAnswer::NameError => Ok((aaaa_bytes, "nxdomain")),
            AaaaAnswer::Real {
                excluded_removed: false,
            } => {
                bump(&self.counters.answered_real_aaaa);
                Ok((aaaa_bytes, "real aaaa"))
            }
            AaaaAnswer::Real {
                excluded_removed: true,
            } => {
                bump(&self.counters.answered_real_aaaa);
                let filtered = without_excluded(&aaaa, &self.synthesis);
                Ok((encode(&filtered, query), "real aaaa (excluded removed)"))
            }
            AaaaAnswer::Synthesise => {
                let mut a_query = query.clone();
                a_query.queries[0].query_type = RecordType::A;
                let a_bytes = encode(&a_query, query);
                let (_, a) = self.forward(&a_bytes, &a_query).await?;
                match synthesise(query, &aaaa, &a, &self.synthesis) {
                    Synthesised::Answer(answer) => {
                        bump(&self.counters.synthesised);
                        Ok((encode(&answer, query), "synthesised"))
                    }
                    Synthesised::NoAddress(answer) => Ok((encode(&answer, query), "no address")),
                }
            }
        }
    }

    /// Asks the upstreams in order; the first answer wins. Returns it as bytes (with the client's
    /// message ID) and parsed.
    async fn forward(
        &self,
        bytes: &[u8],
        query: &Message,
    ) -> Result<(Vec<u8>, Message), UpstreamError> {
        let mut last_error = None;
        for &upstream in &self.upstreams {
            match self.exchange(upstream, bytes, query).await {
                Ok((mut answer_bytes, mut answer)) => {
                    answer_bytes[..2].copy_from_slice(&query.id.to_be_bytes());
                    answer.metadata.id = query.id;
                    return Ok((answer_bytes, answer));
                }
                Err(error) => {
                    debug!(gateway = %self.gateway, %error, "DNS64: upstream failed, trying the next");
                    last_error = Some(error);
                }
            }
        }
        Err(last_error.expect("a DNS64 configuration has at least one upstream"))
    }

    /// One query to one upstream: UDP, then TCP if the answer is truncated; each within the
    /// timeout.
    async fn exchange(
        &self,
        upstream: SocketAddr,
        bytes: &[u8],
        query: &Message,
    ) -> Result<(Vec<u8>, Message), UpstreamError> {
        let id = self.upstream_id();
        let mut outgoing = bytes.to_vec();
        outgoing[..2].copy_from_slice(&id.to_be_bytes());
        let io = |source| UpstreamError::Io { upstream, source };
        let timed_out = |_| UpstreamError::Timeout {
            upstream,
            timeout: self.timeout,
        };
        let udp = tokio::time::timeout(self.timeout, exchange_udp(upstream, &outgoing, id, query))
            .await
            .map_err(timed_out)?
            .map_err(io)?;
        if !udp.1.truncation {
            return Ok(udp);
        }
        let tcp = tokio::time::timeout(self.timeout, exchange_tcp(upstream, &outgoing))
            .await
            .map_err(timed_out)?
            .map_err(io)?;
        if !answers(&tcp.1, id, query) {
            return Err(UpstreamError::Mismatch { upstream });
        }
        Ok(tcp)
    }
}

/// Whether `answer` is the answer to `query` sent with message ID `id`.
fn answers(answer: &Message, id: u16, query: &Message) -> bool {
    answer.id == id
        && answer.message_type == MessageType::Response
        && answer.queries == query.queries
}

/// Sends `outgoing` from a fresh socket (a fresh random source port) and waits for the answer;
/// datagrams that are not it are ignored.
async fn exchange_udp(
    upstream: SocketAddr,
    outgoing: &[u8],
    id: u16,
    query: &Message,
) -> std::io::Result<(Vec<u8>, Message)> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(outgoing).await?;
    let mut buffer = vec![0; usize::from(u16::MAX)];
    loop {
        let length = socket.recv(&mut buffer).await?;
        if let Ok(answer) = Message::from_vec(&buffer[..length])
            && answers(&answer, id, query)
        {
            return Ok((buffer[..length].to_vec(), answer));
        }
    }
}

/// RFC 1035 section 4.2.2: each message prefixed with its length.
async fn exchange_tcp(
    upstream: SocketAddr,
    outgoing: &[u8],
) -> std::io::Result<(Vec<u8>, Message)> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, outgoing).await?;
    let answer = read_framed(&mut stream).await?;
    let message = Message::from_vec(&answer)
        .map_err(|error| std::io::Error::new(std::io::ErrorKind::InvalidData, error.to_string()))?;
    Ok((answer, message))
}

async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "message over 64 KiB")
    })?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&length.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

async fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let length = stream.read_u16().await?;
    let mut message = vec![0; usize::from(length)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

/// `message` as bytes; an answer that cannot be encoded (it came from a decoded one, so this does
/// not happen) becomes SERVFAIL rather than silence.
fn encode(message: &Message, query: &Message) -> Vec<u8> {
    message.to_vec().unwrap_or_else(|error| {
        warn!(%error, "DNS64: encoding an answer failed; SERVFAIL returned");
        let failure = Message::error_msg(query.id, query.op_code, ResponseCode::ServFail);
        failure.to_vec().unwrap_or_default()
    })
}

/// An answer too large for the client's UDP payload size becomes the truncated form (header,
/// question, TC set), so the client asks again over TCP.
fn fit_udp(answer: Vec<u8>, query: &Message) -> Vec<u8> {
    let limit = usize::from(query.max_payload()).max(CLASSIC_UDP_SIZE);
    if answer.len() <= limit {
        return answer;
    }
    match Message::from_vec(&answer) {
        Ok(message) => encode(&message.truncate(), query),
        Err(_) => encode(&query.truncate(), query),
    }
}

// ---------------------------------------------------------------------------------------------
// The service: sockets and tasks.

/// The DNS64 resolvers of every NAT gateway that has one, running until dropped.
pub struct Dns64Service {
    tasks: JoinSet<()>,
    counters: Arc<Dns64Counters>,
}

impl Dns64Service {
    /// Binds every gateway's listen addresses (UDP and TCP) and starts answering. `Ok(None)` when
    /// no gateway has DNS64. A socket that cannot be bound is an error naming the address.
    pub async fn start(config: &Config) -> anyhow::Result<Option<Self>> {
        let counters = Arc::new(Dns64Counters::default());
        let mut tasks = JoinSet::new();
        let mut any = false;
        for nat in &config.nat_gateways {
            let (Some(dns64), Some(prefix)) = (&nat.dns64, nat.nat64_prefix) else {
                continue;
            };
            any = true;
            let resolver = Arc::new(Resolver::new(&nat.id, dns64, prefix, Arc::clone(&counters)));
            let udp_slots = Arc::new(Semaphore::new(UDP_QUERIES_IN_FLIGHT));
            let tcp_slots = Arc::new(Semaphore::new(TCP_CONNECTIONS));
            for &address in &dns64.listen {
                let udp = UdpSocket::bind(address).await.with_context(|| {
                    format!(
                        "NAT gateway {}: DNS64 cannot listen on UDP {address}",
                        nat.id
                    )
                })?;
                let tcp = TcpListener::bind(address).await.with_context(|| {
                    format!(
                        "NAT gateway {}: DNS64 cannot listen on TCP {address}",
                        nat.id
                    )
                })?;
                tasks.spawn(serve_udp(
                    Arc::new(udp),
                    Arc::clone(&resolver),
                    Arc::clone(&udp_slots),
                ));
                tasks.spawn(serve_tcp(
                    tcp,
                    Arc::clone(&resolver),
                    Arc::clone(&tcp_slots),
                ));
            }
            info!(
                gateway = %nat.id,
                prefix = %prefix,
                listen = ?dns64.listen,
                upstream = ?dns64.upstream,
                "DNS64 on"
            );
        }
        Ok(any.then_some(Self { tasks, counters }))
    }

    /// The counters, for `gateway stats`.
    pub fn counters(&self) -> Arc<Dns64Counters> {
        Arc::clone(&self.counters)
    }

    /// Stops answering and closes the sockets.
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
    }
}

async fn serve_udp(socket: Arc<UdpSocket>, resolver: Arc<Resolver>, slots: Arc<Semaphore>) {
    let mut buffer = vec![0; usize::from(u16::MAX)];
    loop {
        let (length, client) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                // ICMP errors from earlier answers surface here (ECONNREFUSED ...): not fatal.
                debug!(gateway = %resolver.gateway, %error, "DNS64: UDP receive error");
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let query = buffer[..length].to_vec();
        let socket = Arc::clone(&socket);
        let resolver = Arc::clone(&resolver);
        tokio::spawn(async move {
            if let Some(answer) = resolver.answer(&query, client, Transport::Udp).await
                && let Err(error) = socket.send_to(&answer, client).await
            {
                debug!(gateway = %resolver.gateway, %client, %error, "DNS64: UDP send failed");
            }
            drop(slot);
        });
    }
}

async fn serve_tcp(listener: TcpListener, resolver: Arc<Resolver>, slots: Arc<Semaphore>) {
    loop {
        let (mut stream, client) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                debug!(gateway = %resolver.gateway, %error, "DNS64: TCP accept failed");
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            debug!(gateway = %resolver.gateway, %client, "DNS64: too many TCP clients; closed");
            continue;
        };
        let resolver = Arc::clone(&resolver);
        tokio::spawn(async move {
            // Queries on one connection are answered in turn, until the client closes it or
            // stays idle.
            while let Ok(Ok(query)) = tokio::time::timeout(TCP_IDLE, read_framed(&mut stream)).await
            {
                let Some(answer) = resolver.answer(&query, client, Transport::Tcp).await else {
                    break;
                };
                if write_framed(&mut stream, &answer).await.is_err() {
                    break;
                }
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::Query,
        rr::{
            Name,
            rdata::{CNAME, SOA},
        },
    };

    use super::*;

    fn net(text: &str) -> Ipv6Net {
        text.parse().unwrap()
    }

    fn name(text: &str) -> Name {
        Name::from_ascii(text).unwrap()
    }

    fn network_specific() -> Synthesis {
        Synthesis {
            prefix: net("2001:db8:64::/96"),
            exclude_aaaa: vec![net("::ffff:0:0/96")],
        }
    }

    fn well_known() -> Synthesis {
        Synthesis {
            prefix: net("64:ff9b::/96"),
            exclude_aaaa: vec![net("::ffff:0:0/96")],
        }
    }

    /// RFC 6052 section 2.4, tables 1 and 2 (the same as the project's rfc6052-vectors.json).
    #[test]
    fn embedding_matches_rfc6052_vectors() {
        let vectors = [
            ("2001:db8::/32", "192.0.2.33", "2001:db8:c000:221::"),
            ("2001:db8:100::/40", "192.0.2.33", "2001:db8:1c0:2:21::"),
            (
                "2001:db8:122::/48",
                "192.0.2.33",
                "2001:db8:122:c000:2:2100::",
            ),
            (
                "2001:db8:122:300::/56",
                "192.0.2.33",
                "2001:db8:122:3c0:0:221::",
            ),
            (
                "2001:db8:122:344::/64",
                "192.0.2.33",
                "2001:db8:122:344:c0:2:2100:0",
            ),
            (
                "2001:db8:122:344::/96",
                "192.0.2.33",
                "2001:db8:122:344::c000:221",
            ),
            ("64:ff9b::/96", "192.0.2.33", "64:ff9b::c000:221"),
        ];
        for (prefix, v4, v6) in vectors {
            assert_eq!(
                embed_ipv4(&net(prefix), v4.parse().unwrap()),
                v6.parse::<Ipv6Addr>().unwrap(),
                "{v4} in {prefix}"
            );
        }
    }

    #[test]
    fn non_global_ipv4() {
        for v4 in [
            "0.1.2.3",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "169.254.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.10",
            "203.0.113.5",
            "224.0.0.1",
            "239.1.1.1",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert!(!is_global_ipv4(v4.parse().unwrap()), "{v4} is not global");
        }
        for v4 in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert!(is_global_ipv4(v4.parse().unwrap()), "{v4} is global");
        }
    }

    #[test]
    fn well_known_prefix_never_carries_non_global_ipv4() {
        let wkp = well_known();
        assert_eq!(wkp.address_for("10.1.2.3".parse().unwrap()), None);
        assert_eq!(wkp.address_for("198.51.100.10".parse().unwrap()), None);
        assert_eq!(
            wkp.address_for("8.8.8.8".parse().unwrap()),
            Some("64:ff9b::808:808".parse().unwrap())
        );
        // The WKP at another length is not the WKP.
        let other = Synthesis {
            prefix: net("64:ff9b::/64"),
            exclude_aaaa: vec![],
        };
        assert!(other.address_for("10.1.2.3".parse().unwrap()).is_some());
    }

    #[test]
    fn network_specific_prefix_carries_private_but_not_unusable_ipv4() {
        let nsp = network_specific();
        assert_eq!(
            nsp.address_for("198.51.100.10".parse().unwrap()),
            Some("2001:db8:64::c633:640a".parse().unwrap())
        );
        assert_eq!(
            nsp.address_for("10.1.2.3".parse().unwrap()),
            Some("2001:db8:64::a01:203".parse().unwrap())
        );
        for v4 in [
            "0.0.0.1",
            "127.0.0.1",
            "224.0.0.251",
            "240.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(nsp.address_for(v4.parse().unwrap()), None, "{v4}");
        }
    }

    #[test]
    fn synthesis_at_every_prefix_length() {
        for (prefix, expected) in [
            ("2001:db8::/32", "2001:db8:c633:640a::"),
            ("2001:db8:100::/40", "2001:db8:1c6:3364:a::"),
            ("2001:db8:122::/48", "2001:db8:122:c633:64:a00::"),
            ("2001:db8:122:300::/56", "2001:db8:122:3c6:33:640a::"),
            ("2001:db8:122:344::/64", "2001:db8:122:344:c6:3364:a00:0"),
            ("2001:db8:122:344::/96", "2001:db8:122:344::c633:640a"),
        ] {
            let synthesis = Synthesis {
                prefix: net(prefix),
                exclude_aaaa: vec![],
            };
            assert_eq!(
                synthesis.address_for("198.51.100.10".parse().unwrap()),
                Some(expected.parse().unwrap()),
                "{prefix}"
            );
        }
    }

    fn query(qname: &str, qtype: RecordType) -> Message {
        let mut query = Message::new(0x1234, MessageType::Query, OpCode::Query);
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(name(qname), qtype));
        query
    }

    fn response(query: &Message, rcode: ResponseCode, answers: Vec<Record>) -> Message {
        let mut response = Message::response(0x9999, OpCode::Query);
        response.metadata.response_code = rcode;
        response.metadata.recursion_available = true;
        response.queries = query.queries.clone();
        response.answers = answers;
        response
    }

    fn a(owner: &str, ttl: u32, v4: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::A(A(v4.parse().unwrap())))
    }

    fn aaaa(owner: &str, ttl: u32, v6: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::AAAA(AAAA(v6.parse().unwrap())))
    }

    fn cname(owner: &str, ttl: u32, target: &str) -> Record {
        Record::from_rdata(name(owner), ttl, RData::CNAME(CNAME(name(target))))
    }

    fn soa(zone: &str, ttl: u32, minimum: u32) -> Record {
        let data = SOA::new(
            name(&format!("ns.{zone}")),
            name(&format!("hostmaster.{zone}")),
            1,
            3600,
            600,
            86400,
            minimum,
        );
        Record::from_rdata(name(zone), ttl, RData::SOA(data))
    }

    fn with_soa(mut message: Message, record: Record) -> Message {
        message.authorities.push(record);
        message
    }

    /// The (owner, ttl, rdata) of each answer record, to compare at a glance.
    fn answers_of(message: &Message) -> Vec<(String, u32, String)> {
        message
            .answers
            .iter()
            .map(|record| (record.name.to_ascii(), record.ttl, record.data.to_string()))
            .collect()
    }

    fn synthesised_answer(outcome: Synthesised) -> Message {
        match outcome {
            Synthesised::Answer(message) => message,
            Synthesised::NoAddress(message) => panic!("expected synthesis, got {message}"),
        }
    }

    #[test]
    fn real_aaaa_is_returned() {
        let q = query("dual.example.", RecordType::AAAA);
        let upstream = response(
            &q,
            ResponseCode::NoError,
            vec![aaaa("dual.example.", 300, "2001:db8:ffff::11")],
        );
        assert_eq!(
            classify_aaaa(&upstream, &network_specific()),
            AaaaAnswer::Real {
                excluded_removed: false
            }
        );
    }

    #[test]
    fn excluded_aaaa_beside_a_real_one_is_removed() {
        let q = query("mixed.example.", RecordType::AAAA);
        let upstream = response(
            &q,
            ResponseCode::NoError,
            vec![
                aaaa("mixed.example.", 300, "::ffff:198.51.100.12"),
                aaaa("mixed.example.", 300, "2001:db8:ffff::12"),
            ],
        );
        let synthesis = network_specific();
        assert_eq!(
            classify_aaaa(&upstream, &synthesis),
            AaaaAnswer::Real {
                excluded_removed: true
            }
        );
        assert_eq!(
            answers_of(&without_excluded(&upstream, &synthesis)),
            [("mixed.example.".into(), 300, "2001:db8:ffff::12".into())]
        );
    }

    #[test]
    fn nodata_and_only_excluded_aaaa_call_for_synthesis() {
        let q = query("v4only.example.", RecordType::AAAA);
        let nodata = response(&q, ResponseCode::NoError, vec![]);
        assert_eq!(
            classify_aaaa(&nodata, &network_specific()),
            AaaaAnswer::Synthesise
        );
        let mapped = response(
            &q,
            ResponseCode::NoError,
            vec![aaaa("v4only.example.", 300, "::ffff:198.51.100.12")],
        );
        assert_eq!(
            classify_aaaa(&mapped, &network_specific()),
            AaaaAnswer::Synthesise
        );
        // With no exclusions, the mapped address is a real answer.
        let no_exclusions = Synthesis {
            exclude_aaaa: vec![],
            ..network_specific()
        };
        assert_eq!(
            classify_aaaa(&mapped, &no_exclusions),
            AaaaAnswer::Real {
                excluded_removed: false
            }
        );
    }

    #[test]
    fn nxdomain_is_returned_and_other_rcodes_count_as_empty() {
        let q = query("missing.example.", RecordType::AAAA);
        let nxdomain = response(&q, ResponseCode::NXDomain, vec![]);
        assert_eq!(
            classify_aaaa(&nxdomain, &network_specific()),
            AaaaAnswer::NameError
        );
        for rcode in [
            ResponseCode::ServFail,
            ResponseCode::Refused,
            ResponseCode::NotImp,
            ResponseCode::FormErr,
        ] {
            let failed = response(&q, rcode, vec![]);
            assert_eq!(
                classify_aaaa(&failed, &network_specific()),
                AaaaAnswer::Synthesise,
                "{rcode:?}"
            );
        }
    }

    #[test]
    fn synthesised_from_a_with_the_soa_ttl_cap() {
        let q = query("v4only.example.", RecordType::AAAA);
        // SOA TTL 3600 but minimum 60: negative answers are cached for 60 s (RFC 2308).
        let aaaa_answer = with_soa(
            response(&q, ResponseCode::NoError, vec![]),
            soa("example.", 3600, 60),
        );
        let a_query = query("v4only.example.", RecordType::A);
        let a_answer = response(
            &a_query,
            ResponseCode::NoError,
            vec![
                a("v4only.example.", 300, "198.51.100.10"),
                a("v4only.example.", 30, "198.51.100.20"),
            ],
        );
        let answer =
            synthesised_answer(synthesise(&q, &aaaa_answer, &a_answer, &network_specific()));
        assert_eq!(
            answers_of(&answer),
            [
                (
                    "v4only.example.".into(),
                    60,
                    "2001:db8:64::c633:640a".into()
                ),
                (
                    "v4only.example.".into(),
                    30,
                    "2001:db8:64::c633:6414".into()
                ),
            ]
        );
        assert_eq!(answer.id, 0x1234);
        assert_eq!(answer.message_type, MessageType::Response);
        assert_eq!(answer.response_code, ResponseCode::NoError);
        assert!(answer.recursion_desired && answer.recursion_available && !answer.authentic_data);
        assert_eq!(answer.queries, q.queries, "the question stays the AAAA one");
    }

    #[test]
    fn ttl_without_soa_is_capped_at_600() {
        let q = query("v4only.example.", RecordType::AAAA);
        let aaaa_answer = response(&q, ResponseCode::NoError, vec![]);
        let a_answer = response(
            &query("v4only.example.", RecordType::A),
            ResponseCode::NoError,
            vec![
                a("v4only.example.", 86400, "198.51.100.10"),
                a("v4only.example.", 100, "198.51.100.11"),
            ],
        );
        let answer =
            synthesised_answer(synthesise(&q, &aaaa_answer, &a_answer, &network_specific()));
        let ttls: Vec<u32> = answer.answers.iter().map(|record| record.ttl).collect();
        assert_eq!(ttls, [600, 100]);
    }

    #[test]
    fn cname_chain_is_kept() {
        let q = query("alias.example.", RecordType::AAAA);
        let aaaa_answer = with_soa(
            response(
                &q,
                ResponseCode::NoError,
                vec![cname("alias.example.", 120, "v4only.example.")],
            ),
            soa("example.", 300, 300),
        );
        let a_answer = response(
            &query("alias.example.", RecordType::A),
            ResponseCode::NoError,
            vec![
                cname("alias.example.", 120, "v4only.example."),
                a("v4only.example.", 300, "198.51.100.10"),
            ],
        );
        let answer =
            synthesised_answer(synthesise(&q, &aaaa_answer, &a_answer, &network_specific()));
        assert_eq!(
            answers_of(&answer),
            [
                ("alias.example.".into(), 120, "v4only.example.".into()),
                (
                    "v4only.example.".into(),
                    300,
                    "2001:db8:64::c633:640a".into()
                ),
            ]
        );
    }

    #[test]
    fn non_global_a_behind_the_well_known_prefix_is_not_synthesised() {
        let q = query("internal.example.", RecordType::AAAA);
        let aaaa_answer = response(&q, ResponseCode::NoError, vec![]);
        let a_answer = response(
            &query("internal.example.", RecordType::A),
            ResponseCode::NoError,
            vec![
                a("internal.example.", 300, "10.1.2.3"),
                a("internal.example.", 300, "8.8.4.4"),
            ],
        );
        let answer = synthesised_answer(synthesise(&q, &aaaa_answer, &a_answer, &well_known()));
        assert_eq!(
            answers_of(&answer),
            [("internal.example.".into(), 300, "64:ff9b::808:404".into())]
        );
        // Only non-global ones: the empty AAAA answer stands.
        let a_private = response(
            &query("internal.example.", RecordType::A),
            ResponseCode::NoError,
            vec![a("internal.example.", 300, "192.168.1.1")],
        );
        assert_eq!(
            synthesise(&q, &aaaa_answer, &a_private, &well_known()),
            Synthesised::NoAddress(aaaa_answer.clone())
        );
    }

    #[test]
    fn without_a_the_aaaa_answer_stands() {
        let q = query("nothing.example.", RecordType::AAAA);
        let aaaa_answer = with_soa(
            response(&q, ResponseCode::NoError, vec![]),
            soa("example.", 300, 300),
        );
        let a_query = query("nothing.example.", RecordType::A);
        for a_answer in [
            response(&a_query, ResponseCode::NoError, vec![]),
            response(&a_query, ResponseCode::NXDomain, vec![]),
            response(&a_query, ResponseCode::ServFail, vec![]),
        ] {
            assert_eq!(
                synthesise(&q, &aaaa_answer, &a_answer, &network_specific()),
                Synthesised::NoAddress(aaaa_answer.clone())
            );
        }
        // A SERVFAIL for AAAA counts as empty; with A records, synthesis answers NOERROR.
        let servfail = response(&q, ResponseCode::ServFail, vec![]);
        let a_answer = response(
            &a_query,
            ResponseCode::NoError,
            vec![a("nothing.example.", 50, "198.51.100.7")],
        );
        let answer = synthesised_answer(synthesise(&q, &servfail, &a_answer, &network_specific()));
        assert_eq!(answer.response_code, ResponseCode::NoError);
        assert_eq!(
            answers_of(&answer),
            [(
                "nothing.example.".into(),
                50,
                "2001:db8:64::c633:6407".into()
            )]
        );
    }

    #[test]
    fn dnssec_clients_that_check_for_themselves_get_no_synthesis() {
        let mut q = query("v4only.example.", RecordType::AAAA);
        assert!(!validates_itself(&q));
        let mut edns = Edns::new();
        edns.set_dnssec_ok(true);
        q.set_edns(edns);
        assert!(
            !validates_itself(&q),
            "DO without CD: the resolver validates, synthesis is fine"
        );
        q.metadata.checking_disabled = true;
        assert!(validates_itself(&q));
    }

    #[test]
    fn oversized_udp_answer_is_truncated() {
        let q = query("many.example.", RecordType::A);
        let records = (0..60)
            .map(|i| a("many.example.", 60, &format!("198.51.100.{i}")))
            .collect();
        let big = response(&q, ResponseCode::NoError, records)
            .to_vec()
            .unwrap();
        assert!(big.len() > CLASSIC_UDP_SIZE);
        let fitted = Message::from_vec(&fit_udp(big.clone(), &q)).unwrap();
        assert!(fitted.truncation);
        assert!(fitted.answers.is_empty());
        assert_eq!(fitted.queries, q.queries);
        // A client that advertises 4096 bytes gets it whole.
        let mut large = q.clone();
        let mut edns = Edns::new();
        edns.set_max_payload(4096);
        large.set_edns(edns);
        assert_eq!(fit_udp(big.clone(), &large), big);
    }

    /// An upstream on loopback that answers every query with one A record, and reports the
    /// message IDs it saw.
    async fn answering_upstream() -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<u16>) {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let address = socket.local_addr().unwrap();
        let (ids, seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buffer = [0u8; 1500];
            while let Ok((length, client)) = socket.recv_from(&mut buffer).await {
                let query = Message::from_vec(&buffer[..length]).unwrap();
                ids.send(query.id).unwrap();
                let name = query.queries[0].name.to_ascii();
                let answer = response(
                    &query,
                    ResponseCode::NoError,
                    vec![a(&name, 42, "198.51.100.10")],
                );
                let mut answer = answer;
                answer.metadata.id = query.id;
                socket
                    .send_to(&answer.to_vec().unwrap(), client)
                    .await
                    .unwrap();
            }
        });
        (address, seen)
    }

    fn loopback_resolver(upstreams: Vec<SocketAddr>) -> Resolver {
        let config = Dns64Config {
            listen: vec![],
            upstream: upstreams,
            exclude_aaaa: vec![],
            timeout: Duration::from_millis(200),
        };
        Resolver::new("nat-test", &config, net("2001:db8:64::/96"), Arc::default())
    }

    #[tokio::test]
    async fn a_silent_upstream_is_skipped_and_ids_are_not_the_clients() {
        // Bound but never read: queries to it go unanswered.
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (answering, mut seen) = answering_upstream().await;
        let resolver = loopback_resolver(vec![silent.local_addr().unwrap(), answering]);
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();

        let q = query("v4only.example.", RecordType::AAAA);
        let bytes = resolver
            .answer(&q.to_vec().unwrap(), client, Transport::Udp)
            .await
            .expect("an answer");
        let answer = Message::from_vec(&bytes).unwrap();
        assert_eq!(answer.id, q.id);
        assert_eq!(
            answers_of(&answer),
            [(
                "v4only.example.".into(),
                42,
                "2001:db8:64::c633:640a".into()
            )]
        );
        // The AAAA and the A query reached the second upstream, under IDs of their own.
        let ids = [seen.recv().await.unwrap(), seen.recv().await.unwrap()];
        assert!(ids.iter().all(|id| *id != q.id), "{ids:?}");
        assert_eq!(
            resolver.counters.snapshot(),
            Dns64Stats {
                queries: 1,
                synthesised: 1,
                ..Dns64Stats::default()
            }
        );
    }

    #[tokio::test]
    async fn no_answer_from_any_upstream_is_servfail() {
        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let resolver = loopback_resolver(vec![silent.local_addr().unwrap()]);
        let q = query("v4only.example.", RecordType::A);
        let client: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let bytes = resolver
            .answer(&q.to_vec().unwrap(), client, Transport::Udp)
            .await
            .expect("an answer");
        let answer = Message::from_vec(&bytes).unwrap();
        assert_eq!(
            (answer.id, answer.response_code),
            (q.id, ResponseCode::ServFail)
        );
        assert_eq!(answer.queries, q.queries);
        assert_eq!(resolver.counters.snapshot().upstream_failures, 1);

        // Garbage and responses are dropped without an answer.
        assert_eq!(
            resolver
                .answer(b"\x00\x01garbage", client, Transport::Udp)
                .await,
            None
        );
        let mut not_a_query = q.clone();
        not_a_query.metadata.message_type = MessageType::Response;
        assert_eq!(
            resolver
                .answer(&not_a_query.to_vec().unwrap(), client, Transport::Udp)
                .await,
            None
        );
        assert_eq!(resolver.counters.snapshot().malformed_dropped, 2);
    }

    #[tokio::test]
    async fn a_listen_address_that_cannot_be_bound_stops_the_start_naming_it() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let text = format!(
            "[vpc]\nid = \"vpc-t\"\naccount_id = \"123456789012\"\nipv4_cidrs = [\"10.0.0.0/16\"]\n\
             [[interfaces]]\nname = \"gw-vpc\"\nrole = \"vpc\"\n\
             [[interfaces]]\nname = \"gw-inet\"\nrole = \"internet\"\n\
             [[nat_gateways]]\nid = \"nat-a\"\npublic_ips = [\"198.51.100.1\"]\n\
             nat64_prefix = \"64:ff9b::/96\"\n[nat_gateways.dns64]\n\
             listen = [\"{address}\"]\nupstream = [\"192.0.2.53\"]\n"
        );
        let config = Config::parse(&text, "t").expect("a valid config");
        let error = Dns64Service::start(&config)
            .await
            .err()
            .expect("the address is taken");
        assert_eq!(
            error.to_string(),
            format!("NAT gateway nat-a: DNS64 cannot listen on UDP {address}")
        );
    }

    #[test]
    fn warnings_are_rate_limited() {
        let limiter = WarnLimiter::default();
        assert_eq!(limiter.due(), Some(0));
        assert_eq!(limiter.due(), None);
        assert_eq!(limiter.due(), None);
        *limiter.last.lock().unwrap() = Some(Instant::now() - WARN_INTERVAL);
        assert_eq!(limiter.due(), Some(2));
    }
}
