//! Reading VPC-Flow-Log default-format (version 2) records back, independently of the gateway's own
//! writer, so the tests check the format rather than trust it.

use std::{fs, net::IpAddr, path::Path};

use anyhow::{Context as _, bail, ensure};

/// One default-format record: the 14 fields in AWS order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowRecord {
    pub version: u8,
    pub account_id: String,
    pub interface_id: String,
    pub srcaddr: IpAddr,
    pub dstaddr: IpAddr,
    pub srcport: u16,
    pub dstport: u16,
    pub protocol: u8,
    pub packets: u64,
    pub bytes: u64,
    pub start: u64,
    pub end: u64,
    pub action: String,
    pub log_status: String,
    /// The line as written.
    pub line: String,
}

impl FlowRecord {
    /// Parses `version account-id interface-id srcaddr dstaddr srcport dstport protocol packets
    /// bytes start end action log-status`. `-` (no data) is refused for the fields a record with
    /// `log-status OK` must carry.
    pub fn parse(line: &str) -> anyhow::Result<Self> {
        let fields: Vec<&str> = line.split(' ').collect();
        ensure!(
            fields.len() == 14,
            "{} fields instead of 14 in {line:?}",
            fields.len()
        );
        let field = |i: usize, name: &str| -> anyhow::Result<&str> {
            let value = fields[i];
            if value.is_empty() || value == "-" {
                bail!("field {name} is empty in {line:?}");
            }
            Ok(value)
        };
        macro_rules! parse {
            ($i:expr, $name:expr) => {
                field($i, $name)?
                    .parse()
                    .with_context(|| format!("field {} = {:?} in {line:?}", $name, fields[$i]))?
            };
        }
        Ok(Self {
            version: parse!(0, "version"),
            account_id: field(1, "account-id")?.to_owned(),
            interface_id: field(2, "interface-id")?.to_owned(),
            srcaddr: parse!(3, "srcaddr"),
            dstaddr: parse!(4, "dstaddr"),
            srcport: parse!(5, "srcport"),
            dstport: parse!(6, "dstport"),
            protocol: parse!(7, "protocol"),
            packets: parse!(8, "packets"),
            bytes: parse!(9, "bytes"),
            start: parse!(10, "start"),
            end: parse!(11, "end"),
            action: field(12, "action")?.to_owned(),
            log_status: field(13, "log-status")?.to_owned(),
            line: line.to_owned(),
        })
    }
}

/// The non-empty lines of a flow-log file, without a header line (`version account-id ...`) if
/// the writer puts one first.
pub fn read_lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading the flow log {}", path.display()))?;
    Ok(text
        .lines()
        .filter(|line| !line.trim().is_empty() && !line.starts_with("version "))
        .map(str::to_owned)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_example_record_parses_field_by_field() {
        let line = "2 123456789012 eni-0a1b2c3d 2406:da14::d062 2406:da14::bb58 0 0 58 17 1768 \
                    1709627080 1709627199 ACCEPT OK";
        let record = FlowRecord::parse(line).unwrap();
        assert_eq!(record.version, 2);
        assert_eq!(record.account_id, "123456789012");
        assert_eq!(record.protocol, 58);
        assert_eq!(record.packets, 17);
        assert_eq!(record.bytes, 1768);
        assert_eq!(record.action, "ACCEPT");
        assert_eq!(record.log_status, "OK");
    }

    #[test]
    fn record_with_missing_field_is_refused() {
        assert!(
            FlowRecord::parse("2 123456789012 eni-1 10.0.0.1 10.0.0.2 1 2 6 1 40 1 2 ACCEPT")
                .is_err()
        );
    }
}
