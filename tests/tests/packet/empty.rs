//! The cost baseline: an XDP program that only returns `XDP_PASS`, loaded from two raw
//! instructions through the `bpf(2)` syscall (aya loads programs from ELF objects only), and run
//! through `BPF_PROG_TEST_RUN` exactly as aya runs the gateway.

use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_TEST_RUN` part of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    /// Explicit tail padding, zero.
    _pad: u32,
}

/// `r0 = XDP_PASS; exit`.
const INSTRUCTIONS: [u64; 2] = [
    // BPF_ALU64 | BPF_MOV | BPF_K, dst r0, imm 2 (imm is the high 32 bits, little-endian layout).
    0xb7 | (2u64 << 32),
    // BPF_JMP | BPF_EXIT.
    0x95,
];

pub struct EmptyXdp {
    fd: OwnedFd,
}

impl EmptyXdp {
    pub fn load() -> EmptyXdp {
        let license = c"GPL";
        let mut name = [0u8; 16];
        name[..9].copy_from_slice(b"empty_xdp");
        let attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_XDP,
            insn_cnt: INSTRUCTIONS.len() as u32,
            insns: INSTRUCTIONS.as_ptr() as u64,
            license: license.as_ptr() as u64,
            prog_name: name,
            ..ProgLoadAttr::default()
        };
        // SAFETY: `attr` and the buffers it points to outlive the call; size is exact.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_LOAD,
                &attr as *const ProgLoadAttr,
                size_of::<ProgLoadAttr>(),
            )
        };
        assert!(
            fd >= 0,
            "loading the empty XDP program: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a new file descriptor owned by nobody else.
        EmptyXdp {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        }
    }

    /// Runs the program `repeat` times; returns (verdict, average duration per run).
    pub fn run(&self, frame: &[u8], ctx: &[u8], repeat: u32) -> (u32, std::time::Duration) {
        let mut attr = TestRunAttr {
            prog_fd: self.fd.as_raw_fd() as u32,
            data_size_in: frame.len() as u32,
            data_in: frame.as_ptr() as u64,
            repeat,
            ctx_size_in: ctx.len() as u32,
            ctx_in: ctx.as_ptr() as u64,
            ..TestRunAttr::default()
        };
        // SAFETY: `attr` and the buffers it points to outlive the call; size is exact.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_TEST_RUN,
                &mut attr as *mut TestRunAttr,
                size_of::<TestRunAttr>(),
            )
        };
        assert_eq!(
            rc,
            0,
            "BPF_PROG_TEST_RUN of the empty program: {}",
            std::io::Error::last_os_error()
        );
        (
            attr.retval,
            std::time::Duration::from_nanos(attr.duration.into()),
        )
    }
}
