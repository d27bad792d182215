//! Frames sent one at a time through an AF_PACKET socket: the priming packets of the egress-only
//! scenario (the first packet of every flow, then its reply), which must each arrive, in order,
//! unlike the generator's flood.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

use anyhow::{Context as _, ensure};

/// A raw packet socket that sends whole Ethernet frames out of one interface.
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl PacketSocket {
    /// Opens a socket that sends out of `ifindex`. Call it from a thread in the interface's
    /// namespace: the socket stays in the namespace it was created in.
    pub fn open(ifindex: u32) -> anyhow::Result<PacketSocket> {
        // Protocol 0: the socket receives nothing.
        // SAFETY: plain syscall.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error()).context("socket(AF_PACKET, SOCK_RAW)");
        }
        // SAFETY: a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(PacketSocket {
            fd,
            ifindex: i32::try_from(ifindex).context("ifindex out of range")?,
        })
    }

    /// Sends one frame (Ethernet header included). A full device queue drops the frame and
    /// reports ENOBUFS: then it is sent again after a pause, a few times.
    pub fn send(&self, frame: &[u8]) -> anyhow::Result<()> {
        const ATTEMPTS: usize = 100;
        for _ in 1..ATTEMPTS {
            match self.send_once(frame) {
                Err(error)
                    if error
                        .downcast_ref::<std::io::Error>()
                        .and_then(std::io::Error::raw_os_error)
                        == Some(libc::ENOBUFS) =>
                {
                    std::thread::sleep(std::time::Duration::from_micros(200));
                }
                result => return result,
            }
        }
        self.send_once(frame).with_context(|| {
            format!("sendto on the packet socket (the device queue was full {ATTEMPTS} times)")
        })
    }

    fn send_once(&self, frame: &[u8]) -> anyhow::Result<()> {
        ensure!(frame.len() >= 14, "a frame of {} bytes", frame.len());
        // SAFETY: sockaddr_ll is plain data.
        let mut address: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        address.sll_family = libc::AF_PACKET as u16;
        address.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        address.sll_ifindex = self.ifindex;
        address.sll_halen = 6;
        address.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: the buffer and the address are valid for the lengths given.
        let sent = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&raw const address).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if sent < 0 {
            // The io::Error itself, so that the caller can tell ENOBUFS.
            return Err(anyhow::Error::new(std::io::Error::last_os_error()));
        }
        ensure!(
            sent as usize == frame.len(),
            "sent {sent} of {} bytes",
            frame.len()
        );
        Ok(())
    }
}
