//! TCP flags as VPC Flow Logs report them.

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// Converts TCP flag bits (one header's flag byte, or the OR of several) into the `tcp-flags`
/// value AWS reports.
///
/// AWS reports only FIN (1), SYN (2) and RST (4), plus ACK (16) when it came with a SYN, so that a
/// SYN-ACK shows as 18. PSH, URG, ECE, CWR and an ACK without SYN are not reported: a flow of plain
/// data segments logs 0.
///
/// Given an OR over several packets, "SYN and ACK both seen" is all this function can know, so the
/// client side of a handshake (a SYN, then ACKs) also yields 18 where AWS would say 2. Converting
/// each packet and OR-ing the results is exact, and this function is idempotent
/// (`aws_tcp_flags(aws_tcp_flags(x)) == aws_tcp_flags(x)`), so a dataplane that stores converted
/// flags can still be fed through it.
pub fn aws_tcp_flags(raw_or_of_tcp_flag_bytes: u8) -> u8 {
    let raw = raw_or_of_tcp_flag_bytes;
    let reported = raw & (FIN | SYN | RST);
    if raw & (SYN | ACK) == SYN | ACK {
        reported | ACK
    } else {
        reported
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSH: u8 = 0x08;
    const URG: u8 = 0x20;
    const ECE: u8 = 0x40;
    const CWR: u8 = 0x80;

    #[test]
    fn single_flags() {
        assert_eq!(aws_tcp_flags(FIN), 1);
        assert_eq!(aws_tcp_flags(SYN), 2);
        assert_eq!(aws_tcp_flags(RST), 4);
        assert_eq!(aws_tcp_flags(SYN | ACK), 18);
    }

    #[test]
    fn unreported_flags_vanish() {
        assert_eq!(aws_tcp_flags(0), 0);
        assert_eq!(aws_tcp_flags(ACK), 0);
        assert_eq!(aws_tcp_flags(ACK | PSH), 0);
        assert_eq!(aws_tcp_flags(URG | ECE | CWR), 0);
        assert_eq!(aws_tcp_flags(ACK | FIN | PSH), 1);
        assert_eq!(aws_tcp_flags(ACK | RST), 4);
    }

    #[test]
    fn combinations_or_like_aws() {
        // AWS's own examples: SYN-ACK and FIN on one record is 19, SYN and FIN is 3.
        assert_eq!(aws_tcp_flags(SYN | ACK | FIN), 19);
        assert_eq!(aws_tcp_flags(SYN | FIN), 3);
        assert_eq!(aws_tcp_flags(SYN | ECE | CWR), 2);
        assert_eq!(aws_tcp_flags(0xff), 1 | 2 | 4 | 16);
    }

    #[test]
    fn idempotent() {
        for raw in 0..=u8::MAX {
            let once = aws_tcp_flags(raw);
            assert_eq!(aws_tcp_flags(once), once, "raw {raw:#04x}");
        }
    }
}
