//! DNS for the DNS64 tests: a small authoritative server for `example.` that runs on threads
//! with its sockets in a namespace (the upstream the gateway forwards to), and a client that asks
//! from a namespace over UDP or TCP.
//!
//! The zone (addresses from the documentation ranges; a network-specific NAT64 prefix may carry
//! them):
//!
//! ```text
//! v4only.example.     A     198.51.100.10
//! dual.example.       A     198.51.100.11
//!                     AAAA  2001:db8:ffff::11
//! alias.example.      CNAME v4only.example.
//! mapped.example.     AAAA  ::ffff:198.51.100.12
//!                     A     198.51.100.12
//! truncated.example.  A     198.51.100.13   (over UDP every answer for it is truncated: TC set,
//!                                            no records; the whole answer only over TCP)
//! server.example.     A     192.0.2.10      (the internet host itself, IPv4 only: the NAT64
//!                                            tests' server)
//! anything else       NXDOMAIN
//! ```
//!
//! Every record has TTL [`RECORD_TTL`]; negative answers carry the zone's SOA with TTL 3600 and
//! minimum [`NEGATIVE_TTL`], so a synthesised AAAA has TTL `NEGATIVE_TTL` (RFC 6147 s5.1.7).

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use anyhow::{Context as _, bail};
use hickory_proto::{
    op::{Edns, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, SOA},
    },
};

use crate::netns::Netns;

/// The TTL of every record in the zone.
pub const RECORD_TTL: u32 = 300;
/// The SOA minimum: how long negative answers may be cached.
pub const NEGATIVE_TTL: u32 = 60;

/// How a query travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// One query the server received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// Lower case, with the final dot.
    pub name: String,
    pub record_type: RecordType,
    pub transport: Transport,
}

/// The authoritative server; stops (and closes its sockets) on drop.
#[derive(Debug)]
pub struct ZoneServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    received: Arc<Mutex<Vec<Received>>>,
}

impl ZoneServer {
    /// Binds UDP and TCP port 53 on each of `addresses` inside `ns` and starts answering.
    pub fn start(ns: &Netns, addresses: &[IpAddr]) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let received = Arc::new(Mutex::new(Vec::new()));
        let mut server = Self {
            stop: Arc::clone(&stop),
            threads: Vec::new(),
            received: Arc::clone(&received),
        };
        for address in addresses {
            let address = SocketAddr::new(*address, 53);
            // A socket stays in the namespace it was created in, whichever thread uses it.
            let (udp, tcp) = ns
                .enter(|| {
                    let udp = UdpSocket::bind(address)
                        .with_context(|| format!("binding UDP {address}"))?;
                    let tcp = TcpListener::bind(address)
                        .with_context(|| format!("binding TCP {address}"))?;
                    Ok((udp, tcp))
                })
                .with_context(|| format!("starting the zone server in {}", ns.name()))?;
            udp.set_read_timeout(Some(Duration::from_millis(50)))?;
            tcp.set_nonblocking(true)?;
            let (stop_udp, log_udp) = (Arc::clone(&stop), Arc::clone(&received));
            server
                .threads
                .push(thread::spawn(move || serve_udp(&udp, &stop_udp, &log_udp)));
            let (stop_tcp, log_tcp) = (Arc::clone(&stop), Arc::clone(&received));
            server
                .threads
                .push(thread::spawn(move || serve_tcp(&tcp, &stop_tcp, &log_tcp)));
        }
        Ok(server)
    }

    /// Every query received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.received
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for ZoneServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

fn serve_udp(socket: &UdpSocket, stop: &AtomicBool, log: &Mutex<Vec<Received>>) {
    let mut buffer = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let (length, client) = match socket.recv_from(&mut buffer) {
            Ok(received) => received,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                continue;
            }
            Err(error) => {
                eprintln!("zone server: UDP receive: {error}");
                continue;
            }
        };
        if let Some(answer) = respond(&buffer[..length], Transport::Udp, log)
            && let Err(error) = socket.send_to(&answer, client)
        {
            eprintln!("zone server: UDP send to {client}: {error}");
        }
    }
}

fn serve_tcp(listener: &TcpListener, stop: &AtomicBool, log: &Mutex<Vec<Received>>) {
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(error) if error.kind() == ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(10));
                continue;
            }
            Err(error) => {
                eprintln!("zone server: TCP accept: {error}");
                continue;
            }
        };
        if let Err(error) = serve_connection(&mut stream, log) {
            eprintln!("zone server: TCP connection: {error:#}");
        }
    }
}

/// Answers the queries of one connection in turn until the client closes it.
fn serve_connection(stream: &mut TcpStream, log: &Mutex<Vec<Received>>) -> anyhow::Result<()> {
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    loop {
        let query = match read_framed(stream) {
            Ok(query) => query,
            Err(error) if error.kind() == ErrorKind::UnexpectedEof => return Ok(()),
            Err(error) => return Err(error.into()),
        };
        if let Some(answer) = respond(&query, Transport::Tcp, log) {
            write_framed(stream, &answer)?;
        }
    }
}

fn read_framed(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut length = [0u8; 2];
    stream.read_exact(&mut length)?;
    let mut message = vec![0; usize::from(u16::from_be_bytes(length))];
    stream.read_exact(&mut message)?;
    Ok(message)
}

fn write_framed(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<()> {
    let length = u16::try_from(message.len()).expect("test messages are small");
    let mut framed = length.to_be_bytes().to_vec();
    framed.extend_from_slice(message);
    stream.write_all(&framed)
}

fn name(text: &str) -> Name {
    Name::from_ascii(text).expect("the zone's names are valid")
}

/// The zone's answer to `bytes`; `None` for what is not a query.
fn respond(bytes: &[u8], transport: Transport, log: &Mutex<Vec<Received>>) -> Option<Vec<u8>> {
    let query = Message::from_vec(bytes).ok()?;
    let question = query.queries.first()?.clone();
    let qname = question.name.to_lowercase().to_ascii();
    log.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(Received {
            name: qname.clone(),
            record_type: question.query_type,
            transport,
        });

    let mut answer = Message::response(query.id, query.op_code);
    answer.metadata.authoritative = true;
    answer.metadata.recursion_desired = query.recursion_desired;
    answer.queries = vec![question.clone()];
    if query.edns.is_some() {
        answer.set_edns(Edns::new());
    }
    if qname == "truncated.example." && transport == Transport::Udp {
        answer.metadata.truncation = true;
        return answer.to_vec().ok();
    }
    let records = zone_records(&qname);
    if records.is_empty() {
        answer.metadata.response_code = ResponseCode::NXDomain;
        answer.authorities.push(soa());
        return answer.to_vec().ok();
    }
    // Follow a CNAME inside the zone, as an authoritative server does for its own data.
    let mut owner = qname;
    loop {
        let records = zone_records(&owner);
        let cname = records.iter().find_map(|record| match &record.data {
            RData::CNAME(CNAME(target)) if question.query_type != RecordType::CNAME => {
                Some(target.to_ascii())
            }
            _ => None,
        });
        match cname {
            Some(target) => {
                answer.answers.extend(records);
                owner = target;
            }
            None => {
                answer.answers.extend(
                    records
                        .into_iter()
                        .filter(|record| record.record_type() == question.query_type),
                );
                break;
            }
        }
    }
    if !answer
        .answers
        .iter()
        .any(|record| record.record_type() == question.query_type)
    {
        // NODATA: NOERROR, the SOA for negative caching.
        answer.authorities.push(soa());
    }
    answer.to_vec().ok()
}

fn soa() -> Record {
    let data = SOA::new(
        name("ns.example."),
        name("hostmaster.example."),
        2024010101,
        3600,
        600,
        86400,
        NEGATIVE_TTL,
    );
    Record::from_rdata(name("example."), 3600, RData::SOA(data))
}

fn zone_records(owner: &str) -> Vec<Record> {
    let a = |v4: [u8; 4]| RData::A(A(Ipv4Addr::from(v4)));
    let aaaa = |v6: &str| RData::AAAA(AAAA(v6.parse().expect("the zone's addresses are valid")));
    let data = match owner {
        "v4only.example." => vec![a([198, 51, 100, 10])],
        "dual.example." => vec![a([198, 51, 100, 11]), aaaa("2001:db8:ffff::11")],
        "alias.example." => vec![RData::CNAME(CNAME(name("v4only.example.")))],
        "mapped.example." => vec![aaaa("::ffff:198.51.100.12"), a([198, 51, 100, 12])],
        "truncated.example." => vec![a([198, 51, 100, 13])],
        "server.example." => vec![a([192, 0, 2, 10])],
        _ => vec![],
    };
    data.into_iter()
        .map(|rdata| {
            let mut record = Record::from_rdata(name(owner), RECORD_TTL, rdata);
            record.dns_class = DNSClass::IN;
            record
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The client.

/// A recursive query for `qname`/`record_type`, with EDNS (1232 bytes) like today's stub
/// resolvers.
pub fn query(qname: &str, record_type: RecordType) -> Message {
    static NEXT_ID: AtomicU16 = AtomicU16::new(1);
    let mut query = Message::new(
        NEXT_ID.fetch_add(1, Ordering::Relaxed),
        MessageType::Query,
        OpCode::Query,
    );
    query.metadata.recursion_desired = true;
    query.add_query(Query::query(name(qname), record_type));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    query.set_edns(edns);
    query
}

/// Sends `query` to `server` from inside `ns` and returns the answer (5 s timeout).
pub fn ask(
    ns: &Netns,
    server: SocketAddr,
    query: &Message,
    transport: Transport,
) -> anyhow::Result<Message> {
    let bytes = query.to_vec().context("encoding the query")?;
    let answer = ns.enter(|| match transport {
        Transport::Udp => {
            let local: SocketAddr = if server.is_ipv4() {
                (Ipv4Addr::UNSPECIFIED, 0).into()
            } else {
                (Ipv6Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(local)?;
            socket.set_read_timeout(Some(Duration::from_secs(5)))?;
            socket.connect(server)?;
            socket.send(&bytes)?;
            let mut buffer = [0u8; 4096];
            let length = socket
                .recv(&mut buffer)
                .with_context(|| format!("waiting for {server}'s answer over UDP"))?;
            Ok(buffer[..length].to_vec())
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(5))
                .with_context(|| format!("connecting to {server} over TCP"))?;
            stream.set_read_timeout(Some(Duration::from_secs(5)))?;
            write_framed(&mut stream, &bytes)?;
            read_framed(&mut stream)
                .with_context(|| format!("waiting for {server}'s answer over TCP"))
        }
    })?;
    let answer = Message::from_vec(&answer).context("decoding the answer")?;
    if answer.id != query.id {
        bail!("answer id {} for query id {}", answer.id, query.id);
    }
    Ok(answer)
}

/// Sends `bytes` as one UDP datagram to `server` from inside `ns`, expecting nothing back.
pub fn send_udp(ns: &Netns, server: SocketAddr, bytes: &[u8]) -> anyhow::Result<()> {
    ns.enter(|| {
        let local: SocketAddr = if server.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let socket = UdpSocket::bind(local)?;
        socket.send_to(bytes, server)?;
        Ok(())
    })
}

/// The answer section as `(owner, ttl, type, data)` rows, to compare whole.
pub fn answer_rows(message: &Message) -> Vec<(String, u32, String, String)> {
    message
        .answers
        .iter()
        .map(|record| {
            (
                record.name.to_ascii(),
                record.ttl,
                record.record_type().to_string(),
                record.data.to_string(),
            )
        })
        .collect()
}
