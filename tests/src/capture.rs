//! Packet captures with `tcpdump`, to see which addresses really crossed an interface.

use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::IpAddr,
    process::Child,
    sync::mpsc,
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::netns::{Netns, kill};

/// One captured IP packet: its source and destination addresses and tcpdump's line for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub line: String,
}

/// A running `tcpdump -n -l -i IFACE FILTER` in a namespace.
#[derive(Debug)]
pub struct Capture {
    child: Option<Child>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

impl Capture {
    /// Starts the capture and returns once tcpdump reports that it is listening, so nothing sent
    /// afterwards is missed. `filter` is a pcap filter expression ("" for everything).
    pub fn start(ns: &Netns, iface: &str, filter: &str) -> anyhow::Result<Self> {
        // --immediate-mode: without it packets wait in the kernel ring for up to a second and a
        // stop (SIGINT) drops them unprinted. -l: line-buffered output; -p: no promiscuous mode
        // (veths do not need it); -n: numeric addresses, which are what we compare.
        let mut args = vec!["tcpdump", "--immediate-mode", "-n", "-l", "-p", "-i", iface];
        if !filter.is_empty() {
            args.push(filter);
        }
        let mut child = ns.spawn(&args)?;
        let mut stdout = child.stdout.take().context("tcpdump stdout")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let stdout = thread::spawn(move || {
            let mut text = String::new();
            // A read error only truncates the capture; the caller sees what arrived.
            let _ = stdout.read_to_string(&mut text);
            text
        });
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = thread::spawn(move || {
            let mut text = String::new();
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                }
                text.push_str(&line);
                text.push('\n');
            }
            text
        });
        let mut capture = Self {
            child: Some(child),
            stdout: Some(stdout),
            stderr: Some(stderr),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if ready_rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                return Ok(capture);
            }
            let exited = capture
                .child
                .as_mut()
                .map(|c| c.try_wait())
                .transpose()
                .context("polling tcpdump")?
                .flatten();
            if exited.is_some() || Instant::now() >= deadline {
                let (_, stderr) = capture.finish();
                bail!(
                    "tcpdump on {iface} in {} did not start: {stderr}",
                    ns.name()
                );
            }
        }
    }

    /// Stops tcpdump (SIGINT, so it flushes) and returns the IP packets it printed.
    pub fn stop(mut self) -> anyhow::Result<Vec<Packet>> {
        let (stdout, stderr) = self.finish();
        let packets = parse_tcpdump(&stdout);
        if packets.is_empty() && stdout.trim().is_empty() && stderr.contains("rror") {
            bail!("tcpdump failed: {stderr}");
        }
        Ok(packets)
    }

    fn finish(&mut self) -> (String, String) {
        if let Some(mut child) = self.child.take() {
            kill(child.id(), libc::SIGINT);
            let deadline = Instant::now() + Duration::from_secs(5);
            while child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                thread::sleep(Duration::from_millis(10));
            }
        }
        let join = |handle: Option<JoinHandle<String>>| {
            handle
                .map(|h| h.join().unwrap_or_default())
                .unwrap_or_default()
        };
        (join(self.stdout.take()), join(self.stderr.take()))
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The distinct source addresses of `packets`, in order of first appearance.
pub fn sources(packets: &[Packet]) -> Vec<IpAddr> {
    let mut seen = Vec::new();
    for packet in packets {
        if !seen.contains(&packet.src) {
            seen.push(packet.src);
        }
    }
    seen
}

/// Parses tcpdump's default one-line output: `TIME IP SRC[.PORT] > DST[.PORT]: ...` (or `IP6`).
fn parse_tcpdump(text: &str) -> Vec<Packet> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let _time = words.next()?;
            let proto = words.next()?;
            if proto != "IP" && proto != "IP6" {
                return None;
            }
            let src = parse_endpoint(words.next()?)?;
            if words.next()? != ">" {
                return None;
            }
            let dst = parse_endpoint(words.next()?.trim_end_matches(':'))?;
            Some(Packet {
                src,
                dst,
                line: line.to_owned(),
            })
        })
        .collect()
}

/// `192.0.2.10.5000`, `192.0.2.10`, `2001:db8::1.5000` or `2001:db8::1`.
fn parse_endpoint(word: &str) -> Option<IpAddr> {
    word.parse().ok().or_else(|| {
        let (addr, port) = word.rsplit_once('.')?;
        port.parse::<u16>().ok()?;
        addr.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcpdump_lines_give_source_and_destination() {
        let text = "\
10:00:00.000001 IP 203.0.113.10.40000 > 192.0.2.10.7000: Flags [S], seq 1, length 0
10:00:00.000002 IP6 2001:db8:1000:1::10 > 2001:db8:eeee::10: ICMP6, echo request, id 1, seq 1, length 64
10:00:00.000003 ARP, Request who-has 192.0.2.1 tell 192.0.2.10, length 28
10:00:00.000004 IP 203.0.113.10 > 192.0.2.10: ICMP echo request, id 7, seq 1, length 64
";
        let packets = parse_tcpdump(text);
        assert_eq!(packets.len(), 3, "{packets:?}");
        assert_eq!(packets[0].src, "203.0.113.10".parse::<IpAddr>().unwrap());
        assert_eq!(packets[0].dst, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!(
            packets[1].src,
            "2001:db8:1000:1::10".parse::<IpAddr>().unwrap()
        );
        assert_eq!(
            sources(&packets),
            vec![
                "203.0.113.10".parse::<IpAddr>().unwrap(),
                "2001:db8:1000:1::10".parse().unwrap()
            ]
        );
    }
}
