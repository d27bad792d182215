//! Real traffic between namespaces: ping, content-verified TCP transfers, UDP echo, traceroute.
//!
//! TCP and UDP run as Rust sockets on threads that entered the namespaces, so each side reports
//! what it really saw (the peer address from `accept`/`recv_from`), and every byte is checked.

use std::{
    collections::BTreeSet,
    io::{Read as _, Write as _},
    net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use crate::{netns::Netns, topology::unspecified_like};

/// How long one side of an exchange waits for the other before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// `ping -c COUNT ADDR` from `ns`: true when ping exits 0, i.e. at least one reply arrived (the
/// first echo may be lost while ARP/ND resolves). [`ping_output`] gives the details.
pub fn ping(ns: &Netns, addr: IpAddr, count: u32) -> bool {
    ping_output(ns, addr, count, None).is_ok_and(|out| out.status.success())
}

/// Runs `ping -n -c COUNT -i 0.2 -W 2 [-t TTL] ADDR` in `ns` and returns its output (whatever the
/// exit status), for tests that read the replies or errors.
pub fn ping_output(
    ns: &Netns,
    addr: IpAddr,
    count: u32,
    ttl: Option<u8>,
) -> anyhow::Result<std::process::Output> {
    let mut args = vec![
        "ping".to_owned(),
        "-n".to_owned(),
        "-c".to_owned(),
        count.to_string(),
        "-i".to_owned(),
        "0.2".to_owned(),
        "-W".to_owned(),
        "2".to_owned(),
    ];
    if let Some(ttl) = ttl {
        args.extend(["-t".to_owned(), ttl.to_string()]);
    }
    args.push(addr.to_string());
    ns.exec(&args)
}

/// `traceroute -n -q 1 -w 2 -m MAX_HOPS ADDR` from `ns` (UDP probes): the address that answered
/// each hop, `None` for a hop that stayed silent (`*`).
pub fn traceroute(ns: &Netns, addr: IpAddr, max_hops: u8) -> anyhow::Result<Vec<Option<IpAddr>>> {
    let family = if addr.is_ipv4() { "-4" } else { "-6" };
    let out = ns.run([
        "traceroute",
        family,
        "-n",
        "-q",
        "1",
        "-w",
        "2",
        "-m",
        &max_hops.to_string(),
        &addr.to_string(),
    ])?;
    Ok(parse_traceroute(&out))
}

fn parse_traceroute(out: &str) -> Vec<Option<IpAddr>> {
    // Lines look like " 2  198.51.100.2  0.051 ms" or " 3  *"; the header line has no hop number.
    out.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            words.next()?.parse::<u8>().ok()?;
            Some(words.next().and_then(|w| w.parse().ok()))
        })
        .collect()
}

/// What both ends of a TCP exchange observed.
#[derive(Debug, Clone)]
pub struct TcpExchange {
    /// The client's address as the server's `accept` reported it: after any translation.
    pub server_saw_peer: SocketAddr,
    /// The client's own end of the connection.
    pub client_local: SocketAddr,
    /// The server's end as the client sees it.
    pub client_saw_peer: SocketAddr,
    /// Bytes the server received (all verified against the pattern).
    pub uploaded: usize,
    /// Bytes the client received (all verified against the pattern).
    pub downloaded: usize,
}

/// Opens a TCP connection from `client` (in its namespace) to `connect` and a server in `server`
/// listening on `listen` (port chosen by the kernel), sends `upload` bytes client->server, then
/// `download` bytes server->client, and checks every byte on both sides.
pub fn tcp_exchange(
    server: &Netns,
    listen: IpAddr,
    client: &Netns,
    connect: IpAddr,
    upload: usize,
    download: usize,
) -> anyhow::Result<TcpExchange> {
    let (port_tx, port_rx) = mpsc::channel();
    let server_thread = server.spawn_thread(move || {
        let listener =
            TcpListener::bind((listen, 0)).with_context(|| format!("binding {listen}"))?;
        port_tx.send(listener.local_addr()?.port())?;
        let (mut stream, peer) = accept_with_timeout(&listener, IO_TIMEOUT)?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let received = read_to_end_verified(&mut stream, upload, UPLOAD_SEED)
            .context("server receiving the upload")?;
        stream
            .write_all(&pattern(download, DOWNLOAD_SEED))
            .context("server sending the download")?;
        stream.shutdown(Shutdown::Write)?;
        Ok((peer, received))
    });
    let Ok(port) = port_rx.recv_timeout(IO_TIMEOUT) else {
        // The server thread ended without a port: its error says why.
        return Err(join(server_thread)
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the TCP server did not start")))
        .context("starting the TCP server");
    };
    let target = SocketAddr::new(connect, port);

    let client_result = client.enter(move || {
        let mut stream = TcpStream::connect_timeout(&target, IO_TIMEOUT)
            .with_context(|| format!("connecting to {target}"))?;
        stream.set_read_timeout(Some(IO_TIMEOUT))?;
        stream.set_write_timeout(Some(IO_TIMEOUT))?;
        let local = stream.local_addr()?;
        let peer = stream.peer_addr()?;
        stream
            .write_all(&pattern(upload, UPLOAD_SEED))
            .context("client sending the upload")?;
        stream.shutdown(Shutdown::Write)?;
        let received = read_to_end_verified(&mut stream, download, DOWNLOAD_SEED)
            .context("client receiving the download")?;
        Ok((local, peer, received))
    });
    let client_result = client_result.with_context(|| format!("TCP client to {target}"));
    // A failed client leaves the server in accept until its timeout: join it anyway, so both
    // sides' errors are reported.
    let server_result = join(server_thread).context("TCP server");
    let ((client_local, client_saw_peer, downloaded), (server_saw_peer, uploaded)) =
        match (client_result, server_result) {
            (Ok(client), Ok(server)) => (client, server),
            (Err(client), Err(server)) => {
                return Err(client.context(format!("the server failed too: {server:#}")));
            }
            (Err(err), Ok(_)) | (Ok(_), Err(err)) => return Err(err),
        };
    Ok(TcpExchange {
        server_saw_peer,
        client_local,
        client_saw_peer,
        uploaded,
        downloaded,
    })
}

const UPLOAD_SEED: u64 = 0x5eed_0001;
const DOWNLOAD_SEED: u64 = 0x5eed_0002;

/// Deterministic pseudo-random bytes (xorshift), so a reordered, duplicated or corrupted segment
/// shows as a mismatch at a precise offset.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

fn read_to_end_verified(
    stream: &mut TcpStream,
    expected_len: usize,
    seed: u64,
) -> anyhow::Result<usize> {
    let expected = pattern(expected_len, seed);
    let mut received = Vec::with_capacity(expected_len);
    stream
        .read_to_end(&mut received)
        .with_context(|| format!("after {} of {expected_len} bytes", received.len()))?;
    if let Some(offset) = received.iter().zip(&expected).position(|(a, b)| a != b) {
        bail!("content differs at byte {offset} of {expected_len}");
    }
    ensure!(
        received.len() == expected_len,
        "received {} bytes, expected {expected_len}",
        received.len()
    );
    Ok(received.len())
}

fn accept_with_timeout(
    listener: &TcpListener,
    timeout: Duration,
) -> anyhow::Result<(TcpStream, SocketAddr)> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false)?;
                return Ok((stream, peer));
            }
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("no connection arrived within {timeout:?}");
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(err) => return Err(err).context("accept"),
        }
    }
}

/// What a UDP echo exchange observed.
#[derive(Debug, Clone)]
pub struct UdpEcho {
    /// Distinct source addresses the server received datagrams from.
    pub server_saw_peers: BTreeSet<SocketAddr>,
    /// Datagrams sent by the client (retries included).
    pub sent: usize,
    /// Datagrams whose echo came back intact.
    pub echoed: usize,
}

/// Runs a UDP echo server in `server` on `listen` and sends `datagrams` datagrams of `size` bytes
/// from `client` to `connect`, each retried up to 3 times until its echo arrives intact.
pub fn udp_echo(
    server: &Netns,
    listen: IpAddr,
    client: &Netns,
    connect: IpAddr,
    datagrams: usize,
    size: usize,
) -> anyhow::Result<UdpEcho> {
    ensure!(size >= 8, "datagrams carry an 8-byte sequence number");
    let stop = Arc::new(AtomicBool::new(false));
    let (port_tx, port_rx) = mpsc::channel();
    let server_stop = Arc::clone(&stop);
    let server_thread = server.spawn_thread(move || {
        let socket = UdpSocket::bind((listen, 0)).with_context(|| format!("binding {listen}"))?;
        port_tx.send(socket.local_addr()?.port())?;
        socket.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut peers = BTreeSet::new();
        let mut buf = vec![0; 65536];
        let deadline = Instant::now() + Duration::from_secs(60);
        while !server_stop.load(Ordering::Relaxed) && Instant::now() < deadline {
            match socket.recv_from(&mut buf) {
                Ok((len, peer)) => {
                    peers.insert(peer);
                    socket.send_to(&buf[..len], peer)?;
                }
                Err(err)
                    if matches!(
                        err.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(err) => return Err(err).context("UDP server recv"),
            }
        }
        Ok(peers)
    });
    let Ok(port) = port_rx.recv_timeout(IO_TIMEOUT) else {
        return Err(join(server_thread)
            .err()
            .unwrap_or_else(|| anyhow::anyhow!("the UDP server did not start")))
        .context("starting the UDP server");
    };
    let target = SocketAddr::new(connect, port);

    let client_result = client.enter(move || {
        let socket = UdpSocket::bind((unspecified_like(connect), 0))?;
        socket.set_read_timeout(Some(Duration::from_secs(1)))?;
        let (mut sent, mut echoed) = (0, 0);
        let mut buf = vec![0; 65536];
        for seq in 0..datagrams as u64 {
            let mut payload = pattern(size, seq.wrapping_add(UPLOAD_SEED));
            payload[..8].copy_from_slice(&seq.to_be_bytes());
            'retries: for _ in 0..3 {
                socket.send_to(&payload, target)?;
                sent += 1;
                // Skip late echoes of earlier retries until ours arrives or the timeout hits.
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((len, from)) if from == target && buf[..len] == payload[..] => {
                            echoed += 1;
                            break 'retries;
                        }
                        Ok(_) => {}
                        Err(_) => break,
                    }
                }
            }
        }
        Ok((sent, echoed))
    });
    stop.store(true, Ordering::Relaxed);
    let server_result = join(server_thread).context("UDP server");
    let (sent, echoed) = client_result.with_context(|| format!("UDP client to {target}"))?;
    Ok(UdpEcho {
        server_saw_peers: server_result?,
        sent,
        echoed,
    })
}

fn join<T>(handle: thread::JoinHandle<anyhow::Result<T>>) -> anyhow::Result<T> {
    handle
        .join()
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Sends complete IP packets (header included, IPv4 or IPv6 by their version) from `ns` through
/// raw sockets, paced so that no queue on the way overflows. For tests that forge what no socket
/// API sends: scans, spoofed flags, errors quoting unknown flows.
pub fn send_raw(ns: &Netns, packets: Vec<Vec<u8>>) -> anyhow::Result<()> {
    use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

    ns.enter(move || {
        let open = |family: libc::c_int| -> anyhow::Result<OwnedFd> {
            // SAFETY: plain socket(2); the descriptor is owned below. For IPv4, IPPROTO_RAW
            // implies IP_HDRINCL.
            let fd = unsafe { libc::socket(family, libc::SOCK_RAW, libc::IPPROTO_RAW) };
            ensure!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            // SAFETY: a new descriptor owned by nobody else.
            let socket = unsafe { OwnedFd::from_raw_fd(fd) };
            if family == libc::AF_INET6 {
                let one: libc::c_int = 1;
                // SAFETY: valid descriptor, option value of the size passed.
                let rc = unsafe {
                    libc::setsockopt(
                        socket.as_raw_fd(),
                        libc::IPPROTO_IPV6,
                        libc::IPV6_HDRINCL,
                        (&raw const one).cast(),
                        size_of::<libc::c_int>() as libc::socklen_t,
                    )
                };
                ensure!(rc == 0, "IPV6_HDRINCL: {}", std::io::Error::last_os_error());
            }
            Ok(socket)
        };
        let (v4, v6) = (open(libc::AF_INET)?, open(libc::AF_INET6)?);
        for (index, packet) in packets.iter().enumerate() {
            ensure!(!packet.is_empty(), "scan packet {index} is empty");
            // SAFETY (both arms): all-zero is a valid sockaddr; buffer and address valid for the
            // lengths passed.
            let sent = if packet[0] >> 4 == 6 {
                let destination: [u8; 16] = packet
                    .get(24..40)
                    .and_then(|bytes| bytes.try_into().ok())
                    .context("IPv6 packet shorter than its header")?;
                let mut to: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
                to.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                to.sin6_addr.s6_addr = destination;
                unsafe {
                    libc::sendto(
                        v6.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                    )
                }
            } else {
                let destination: [u8; 4] = packet
                    .get(16..20)
                    .and_then(|bytes| bytes.try_into().ok())
                    .context("IPv4 packet shorter than its header")?;
                let mut to: libc::sockaddr_in = unsafe { std::mem::zeroed() };
                to.sin_family = libc::AF_INET as libc::sa_family_t;
                to.sin_addr.s_addr = u32::from_ne_bytes(destination);
                unsafe {
                    libc::sendto(
                        v4.as_raw_fd(),
                        packet.as_ptr().cast(),
                        packet.len(),
                        0,
                        (&raw const to).cast(),
                        size_of::<libc::sockaddr_in>() as libc::socklen_t,
                    )
                }
            };
            ensure!(
                sent == packet.len() as isize,
                "sending scan packet {index}: {}",
                std::io::Error::last_os_error()
            );
            if index % 32 == 31 {
                thread::sleep(Duration::from_millis(2));
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceroute_output_parses_hops_and_silent_hops() {
        let out = "traceroute to 192.0.2.10 (192.0.2.10), 3 hops max, 60 byte packets\n \
                   1  10.0.1.1  0.050 ms\n 2  *\n 3  192.0.2.10  0.101 ms\n";
        assert_eq!(
            parse_traceroute(out),
            vec![
                Some("10.0.1.1".parse().unwrap()),
                None,
                Some("192.0.2.10".parse().unwrap())
            ]
        );
    }

    #[test]
    fn pattern_is_deterministic_and_seed_dependent() {
        assert_eq!(pattern(64, 1), pattern(64, 1));
        assert_ne!(pattern(64, 1), pattern(64, 2));
    }
}
