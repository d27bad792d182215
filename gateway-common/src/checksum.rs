//! Internet checksum arithmetic (RFC 1071) with incremental updates (RFC 1624).
//!
//! Every rewrite in the dataplane changes a few 16-bit words of a header that is covered by one or
//! more checksums. Instead of recomputing over the whole packet, the old checksum is adjusted by the
//! difference between the old and the new words: `HC' = ~(~HC + ~m + m')` (RFC 1624, eqn. 3), which
//! has no `-0` corner case. A checksum that was wrong before the update stays wrong by the same
//! amount afterwards, which is what a router must do.

/// Folds a 32-bit one's complement accumulator into 16 bits.
#[inline(always)]
pub const fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// Adds the one's complement difference of replacing `old` by `new` (a 32-bit field, such as an
/// IPv4 address, in network byte order as read from the packet) to the checksum `check` (also as
/// read from the packet, i.e. the raw 16-bit value in network byte order).
#[inline(always)]
pub const fn update_u32(check: u16, old: u32, new: u32) -> u16 {
    let sum = (!check as u32 & 0xffff)
        + (!(old >> 16) & 0xffff)
        + (!old & 0xffff)
        + (new >> 16)
        + (new & 0xffff);
    !fold(sum)
}

/// Like [`update_u32`] for a 16-bit field.
#[inline(always)]
pub const fn update_u16(check: u16, old: u16, new: u16) -> u16 {
    let sum = (!check as u32 & 0xffff) + (!old as u32 & 0xffff) + new as u32;
    !fold(sum)
}

/// Like [`update_u32`] for a UDP checksum over IPv4, where 0 means "no checksum": a packet sent
/// without one keeps none, and a computed 0 is written as 0xffff (RFC 768).
#[inline(always)]
pub const fn update_udp_u32(check: u16, old: u32, new: u32) -> u16 {
    if check == 0 {
        return 0;
    }
    let updated = update_u32(check, old, new);
    if updated == 0 { 0xffff } else { updated }
}

/// Reads big-endian 16-bit words of `data` into a one's complement sum (an odd trailing byte is
/// padded with zero). Used by the tests and by the controller; the dataplane only updates.
pub fn sum_words(data: &[u8], initial: u32) -> u32 {
    let mut sum = initial as u64;
    let mut chunks = data.chunks_exact(2);
    for pair in &mut chunks {
        sum += u16::from_be_bytes([pair[0], pair[1]]) as u64;
    }
    if let [last] = chunks.remainder() {
        sum += (*last as u64) << 8;
    }
    while sum >> 32 != 0 {
        sum = (sum & 0xffff_ffff) + (sum >> 32);
    }
    sum as u32
}

/// The full Internet checksum of `data` (as it would be stored in network byte order, returned as
/// a host integer: write it with `to_be_bytes`).
pub fn full(data: &[u8]) -> u16 {
    !fold(sum_words(data, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4 header checksum computed from scratch, to compare updates against.
    fn ipv4_checksum(header: &mut [u8; 20]) -> u16 {
        header[10] = 0;
        header[11] = 0;
        full(header)
    }

    fn sample_header(src: [u8; 4], dst: [u8; 4]) -> [u8; 20] {
        let mut h = [
            0x45, 0, 0, 84, 0x12, 0x34, 0x40, 0, 64, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        h[12..16].copy_from_slice(&src);
        h[16..20].copy_from_slice(&dst);
        let c = ipv4_checksum(&mut h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        h
    }

    #[test]
    fn update_matches_full_recomputation_for_address_rewrites() {
        let cases: &[([u8; 4], [u8; 4])] = &[
            ([10, 0, 1, 10], [203, 0, 113, 10]),
            ([0, 0, 0, 0], [255, 255, 255, 255]),
            ([255, 255, 255, 255], [0, 0, 0, 0]),
            ([10, 0, 0, 1], [10, 0, 0, 1]),
            ([192, 168, 255, 254], [1, 2, 3, 4]),
        ];
        for (old, new) in cases {
            for dst in [[198, 51, 100, 2], [0, 0, 0, 0], [255, 255, 255, 255]] {
                let header = sample_header(*old, dst);
                let check = u16::from_be_bytes([header[10], header[11]]);
                let updated = update_u32(check, u32::from_be_bytes(*old), u32::from_be_bytes(*new));
                let mut expected = sample_header(*new, dst);
                let recomputed = ipv4_checksum(&mut expected);
                assert_eq!(
                    updated, recomputed,
                    "rewrite {old:?} -> {new:?} (dst {dst:?})"
                );
            }
        }
    }

    /// RFC 1624 section 4: the case where eqn. 2 of RFC 1141 yields -0 (0xffff) but the correct
    /// result is 0x0000. The header sums to 0xcd7a with the field 0x5555 becoming 0x3285.
    #[test]
    fn rfc1624_example_has_no_negative_zero() {
        assert_eq!(update_u16(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    #[test]
    fn update_u16_matches_recomputation_over_all_ttl_values() {
        for ttl in 1..=255u8 {
            let mut h = sample_header([10, 0, 1, 10], [198, 51, 100, 2]);
            h[8] = ttl;
            let c = ipv4_checksum(&mut h);
            h[10..12].copy_from_slice(&c.to_be_bytes());
            let old_word = u16::from_be_bytes([h[8], h[9]]);
            h[8] = ttl - 1;
            let new_word = u16::from_be_bytes([h[8], h[9]]);
            let updated = update_u16(c, old_word, new_word);
            assert_eq!(updated, ipv4_checksum(&mut h), "ttl {ttl}");
        }
    }

    #[test]
    fn wrong_checksum_stays_wrong_by_the_same_amount() {
        let header = sample_header([10, 0, 1, 10], [198, 51, 100, 2]);
        let good = u16::from_be_bytes([header[10], header[11]]);
        let bad = good.wrapping_add(7);
        let old = u32::from_be_bytes([10, 0, 1, 10]);
        let new = u32::from_be_bytes([203, 0, 113, 10]);
        let good_after = update_u32(good, old, new);
        let bad_after = update_u32(bad, old, new);
        // One's complement difference between the two is preserved.
        let diff_before = fold(bad as u32 + (!good as u32 & 0xffff));
        let diff_after = fold(bad_after as u32 + (!good_after as u32 & 0xffff));
        assert_eq!(diff_before, diff_after);
    }

    #[test]
    fn udp_zero_checksum_stays_zero_and_computed_zero_becomes_ffff() {
        assert_eq!(update_udp_u32(0, 1, 2), 0);
        // With a stored 0xffff and an unchanged field, the plain update yields 0x0000, which UDP
        // must send as 0xffff.
        assert_eq!(update_u32(0xffff, 0x0a00_010a, 0x0a00_010a), 0);
        assert_eq!(update_udp_u32(0xffff, 0x0a00_010a, 0x0a00_010a), 0xffff);
    }

    #[test]
    fn full_checksum_of_odd_length_pads_with_zero() {
        assert_eq!(full(&[0x01]), !0x0100);
        assert_eq!(full(&[0x01, 0x00]), !0x0100);
    }
}
