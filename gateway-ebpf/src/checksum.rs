//! Incremental checksum updates written straight into the packet.

use gateway_common::checksum::{update_u16, update_u32, update_udp_u32};

/// Reads a 16-bit checksum field as stored (network order bytes -> u16 big-endian value).
#[inline(always)]
pub fn read(field: *const [u8; 2]) -> u16 {
    // SAFETY: the caller bounds-checked `field`.
    u16::from_be_bytes(unsafe { *field })
}

#[inline(always)]
pub fn write(field: *mut [u8; 2], value: u16) {
    // SAFETY: the caller bounds-checked `field`.
    unsafe { *field = value.to_be_bytes() };
}

/// Adjusts `field` for a 32-bit word (an IPv4 address) changing from `old` to `new`.
#[inline(always)]
pub fn replace_u32(field: *mut [u8; 2], old: [u8; 4], new: [u8; 4]) {
    write(
        field,
        update_u32(
            read(field),
            u32::from_be_bytes(old),
            u32::from_be_bytes(new),
        ),
    );
}

/// Like [`replace_u32`] for a UDP-over-IPv4 checksum (0 = none stays 0; a computed 0 becomes 0xffff).
#[inline(always)]
pub fn replace_u32_udp(field: *mut [u8; 2], old: [u8; 4], new: [u8; 4]) {
    write(
        field,
        update_udp_u32(
            read(field),
            u32::from_be_bytes(old),
            u32::from_be_bytes(new),
        ),
    );
}

#[inline(always)]
pub fn replace_u16(field: *mut [u8; 2], old: u16, new: u16) {
    write(field, update_u16(read(field), old, new));
}
