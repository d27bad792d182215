//! Flow-log formats: which fields, in which order, and how each one is written.

use std::{
    fmt::{self, Write as _},
    str::FromStr,
};

use super::record::{FlowRecord, LogStatus};

/// A field AWS defines for flow-log records.
///
/// The gateway has data for the VPC-level ones; the fields about things it has no notion of
/// (regions, zones, Outposts, AWS service ranges, ECS, Block Public Access) are accepted so that a
/// format written for AWS works unchanged, and always render `-`, AWS's "not applicable".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Field {
    Version,
    AccountId,
    InterfaceId,
    Srcaddr,
    Dstaddr,
    Srcport,
    Dstport,
    Protocol,
    Packets,
    Bytes,
    Start,
    End,
    Action,
    LogStatus,
    VpcId,
    SubnetId,
    InstanceId,
    TcpFlags,
    Type,
    PktSrcaddr,
    PktDstaddr,
    Region,
    AzId,
    SublocationType,
    SublocationId,
    PktSrcAwsService,
    PktDstAwsService,
    FlowDirection,
    TrafficPath,
    EcsClusterArn,
    EcsClusterName,
    EcsContainerInstanceArn,
    EcsContainerInstanceId,
    EcsContainerId,
    EcsSecondContainerId,
    EcsServiceName,
    EcsTaskDefinitionArn,
    EcsTaskArn,
    EcsTaskId,
    RejectReason,
}

/// Every field with its name and the flow-log version that introduced it (which `${version}`
/// reports for a custom format, as AWS does). Order: AWS's table, so the first 14 are the default.
const FIELDS: &[(Field, &str, u8)] = &[
    (Field::Version, "version", 2),
    (Field::AccountId, "account-id", 2),
    (Field::InterfaceId, "interface-id", 2),
    (Field::Srcaddr, "srcaddr", 2),
    (Field::Dstaddr, "dstaddr", 2),
    (Field::Srcport, "srcport", 2),
    (Field::Dstport, "dstport", 2),
    (Field::Protocol, "protocol", 2),
    (Field::Packets, "packets", 2),
    (Field::Bytes, "bytes", 2),
    (Field::Start, "start", 2),
    (Field::End, "end", 2),
    (Field::Action, "action", 2),
    (Field::LogStatus, "log-status", 2),
    (Field::VpcId, "vpc-id", 3),
    (Field::SubnetId, "subnet-id", 3),
    (Field::InstanceId, "instance-id", 3),
    (Field::TcpFlags, "tcp-flags", 3),
    (Field::Type, "type", 3),
    (Field::PktSrcaddr, "pkt-srcaddr", 3),
    (Field::PktDstaddr, "pkt-dstaddr", 3),
    (Field::Region, "region", 4),
    (Field::AzId, "az-id", 4),
    (Field::SublocationType, "sublocation-type", 4),
    (Field::SublocationId, "sublocation-id", 4),
    (Field::PktSrcAwsService, "pkt-src-aws-service", 5),
    (Field::PktDstAwsService, "pkt-dst-aws-service", 5),
    (Field::FlowDirection, "flow-direction", 5),
    (Field::TrafficPath, "traffic-path", 5),
    (Field::EcsClusterArn, "ecs-cluster-arn", 7),
    (Field::EcsClusterName, "ecs-cluster-name", 7),
    (
        Field::EcsContainerInstanceArn,
        "ecs-container-instance-arn",
        7,
    ),
    (
        Field::EcsContainerInstanceId,
        "ecs-container-instance-id",
        7,
    ),
    (Field::EcsContainerId, "ecs-container-id", 7),
    (Field::EcsSecondContainerId, "ecs-second-container-id", 7),
    (Field::EcsServiceName, "ecs-service-name", 7),
    (Field::EcsTaskDefinitionArn, "ecs-task-definition-arn", 7),
    (Field::EcsTaskArn, "ecs-task-arn", 7),
    (Field::EcsTaskId, "ecs-task-id", 7),
    (Field::RejectReason, "reject-reason", 8),
];

/// How many leading entries of [`FIELDS`] make the default (version 2) format.
const DEFAULT_FIELDS: usize = 14;

impl Field {
    /// The field's name, as written between `${` and `}`.
    pub fn name(self) -> &'static str {
        self.entry().1
    }

    /// The flow-log version that introduced the field.
    pub fn version(self) -> u8 {
        self.entry().2
    }

    /// Looks a field up by name (without `${}`).
    pub fn from_name(name: &str) -> Option<Field> {
        FIELDS
            .iter()
            .find(|(_, n, _)| *n == name)
            .map(|(f, _, _)| *f)
    }

    fn entry(self) -> &'static (Field, &'static str, u8) {
        // The table lists the variants in declaration order (a test checks it), so the
        // discriminant is the index.
        &FIELDS[self as usize]
    }

    /// Fields that describe the traffic itself: without data (`NODATA`, `SKIPDATA`) AWS writes `-`
    /// for them and keeps the ones about the interface and the interval.
    fn is_traffic(self) -> bool {
        matches!(
            self,
            Field::Srcaddr
                | Field::Dstaddr
                | Field::Srcport
                | Field::Dstport
                | Field::Protocol
                | Field::Packets
                | Field::Bytes
                | Field::Action
                | Field::TcpFlags
                | Field::Type
                | Field::PktSrcaddr
                | Field::PktDstaddr
                | Field::FlowDirection
                | Field::TrafficPath
        )
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a format string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("the flow log format is empty: it needs at least one `${{field}}`")]
    Empty,
    #[error(
        "the flow log format has an empty field at byte {offset}: separate fields with exactly one space"
    )]
    ExtraSpace { offset: usize },
    #[error("`{token}` in the flow log format is not of the form `${{field}}`")]
    Malformed { token: String },
    #[error("unknown flow log field `{field}`")]
    UnknownField { field: String },
}

/// Checks a custom format, for config validation that only needs a message.
pub fn validate_format(format: &str) -> Result<(), String> {
    LogFormat::parse(format)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// The fields of a record line, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogFormat {
    fields: Vec<Field>,
    /// Highest version among the fields: what `${version}` says, as AWS does for custom formats.
    version: u8,
}

impl LogFormat {
    /// AWS's default format: `version account-id interface-id srcaddr dstaddr srcport dstport
    /// protocol packets bytes start end action log-status`.
    pub fn default_v2() -> LogFormat {
        LogFormat::from_fields(
            FIELDS[..DEFAULT_FIELDS]
                .iter()
                .map(|(f, _, _)| *f)
                .collect(),
        )
    }

    /// Parses AWS's custom-format syntax: `${field}` tokens separated by single spaces, e.g.
    /// `${version} ${vpc-id} ${srcaddr}`. A field may appear more than once.
    ///
    /// The syntax is strict (no tabs, no double spaces) so that a format accepted here is one AWS
    /// would accept too, and a typo cannot silently shift columns.
    pub fn parse(format: &str) -> Result<LogFormat, FormatError> {
        if format.trim().is_empty() {
            return Err(FormatError::Empty);
        }
        let mut fields = Vec::new();
        let mut offset = 0;
        for token in format.split(' ') {
            if token.is_empty() {
                return Err(FormatError::ExtraSpace { offset });
            }
            let name = token
                .strip_prefix("${")
                .and_then(|rest| rest.strip_suffix('}'))
                .filter(|name| !name.is_empty() && !name.contains(['$', '{', '}']))
                .ok_or_else(|| FormatError::Malformed {
                    token: token.to_owned(),
                })?;
            let field = Field::from_name(name).ok_or_else(|| FormatError::UnknownField {
                field: name.to_owned(),
            })?;
            fields.push(field);
            offset += token.len() + 1;
        }
        Ok(LogFormat::from_fields(fields))
    }

    fn from_fields(fields: Vec<Field>) -> LogFormat {
        let version = fields.iter().map(|f| f.version()).max().unwrap_or(2);
        LogFormat { fields, version }
    }

    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// The version `${version}` renders (at least the record's own).
    pub fn version(&self) -> u8 {
        self.version
    }

    /// One record as a line, without the newline.
    pub fn render(&self, record: &FlowRecord) -> String {
        self.display(record).to_string()
    }

    /// One record as a line, without the newline, for writing straight into a buffer.
    pub fn display<'a>(&'a self, record: &'a FlowRecord) -> impl fmt::Display + 'a {
        Line {
            format: self,
            record,
        }
    }
}

struct Line<'a> {
    format: &'a LogFormat,
    record: &'a FlowRecord,
}

impl fmt::Display for Line<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.format.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            self.field(f, *field)?;
        }
        Ok(())
    }
}

impl Line<'_> {
    fn field(&self, f: &mut fmt::Formatter<'_>, field: Field) -> fmt::Result {
        let r = self.record;
        if r.log_status != LogStatus::Ok && field.is_traffic() {
            return f.write_str("-");
        }
        match field {
            Field::Version => write!(f, "{}", self.format.version.max(r.version)),
            Field::AccountId => write_id(f, &r.account_id),
            Field::InterfaceId => write_id(f, &r.interface_id),
            Field::Srcaddr => write!(f, "{}", r.srcaddr),
            Field::Dstaddr => write!(f, "{}", r.dstaddr),
            Field::Srcport => write!(f, "{}", r.srcport),
            Field::Dstport => write!(f, "{}", r.dstport),
            Field::Protocol => write!(f, "{}", r.protocol),
            Field::Packets => write!(f, "{}", r.packets),
            Field::Bytes => write!(f, "{}", r.bytes),
            Field::Start => write!(f, "{}", r.start),
            Field::End => write!(f, "{}", r.end),
            Field::Action => f.write_str(r.action.as_str()),
            Field::LogStatus => f.write_str(r.log_status.as_str()),
            Field::VpcId => write_id(f, &r.vpc_id),
            Field::SubnetId => write_id(f, r.subnet_id.as_deref().unwrap_or("")),
            Field::TcpFlags => write!(f, "{}", r.tcp_flags),
            Field::Type => f.write_str(r.family.as_str()),
            Field::PktSrcaddr => write!(f, "{}", r.pkt_srcaddr),
            Field::PktDstaddr => write!(f, "{}", r.pkt_dstaddr),
            Field::FlowDirection => f.write_str(r.flow_direction.as_str()),
            Field::TrafficPath => match r.traffic_path {
                Some(path) => write!(f, "{path}"),
                None => f.write_str("-"),
            },
            // The gateway is not an instance and knows nothing of these.
            Field::InstanceId
            | Field::Region
            | Field::AzId
            | Field::SublocationType
            | Field::SublocationId
            | Field::PktSrcAwsService
            | Field::PktDstAwsService
            | Field::EcsClusterArn
            | Field::EcsClusterName
            | Field::EcsContainerInstanceArn
            | Field::EcsContainerInstanceId
            | Field::EcsContainerId
            | Field::EcsSecondContainerId
            | Field::EcsServiceName
            | Field::EcsTaskDefinitionArn
            | Field::EcsTaskArn
            | Field::EcsTaskId
            | Field::RejectReason => f.write_str("-"),
        }
    }
}

/// Writes an identifier from the config as one token: `-` when empty and whitespace replaced, so
/// that a bad id can never add or remove a column for whoever splits the line on spaces.
fn write_id(f: &mut fmt::Formatter<'_>, id: &str) -> fmt::Result {
    if id.is_empty() {
        return f.write_str("-");
    }
    for c in id.chars() {
        f.write_char(if c.is_whitespace() || c.is_control() {
            '_'
        } else {
            c
        })?;
    }
    Ok(())
}
impl Default for LogFormat {
    fn default() -> LogFormat {
        LogFormat::default_v2()
    }
}

impl FromStr for LogFormat {
    type Err = FormatError;

    fn from_str(s: &str) -> Result<LogFormat, FormatError> {
        LogFormat::parse(s)
    }
}

/// The format in AWS's custom syntax; parsing it gives the same format back.
impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, field) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "${{{field}}}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::flowlog::record::{Action, Family, FlowDirection};

    /// The record of AWS's example line (an ICMPv6 flow).
    fn aws_example() -> FlowRecord {
        FlowRecord {
            version: 2,
            account_id: "123456789012".into(),
            vpc_id: "vpc-0f1e2d3c".into(),
            interface_id: "eni-0a1b2c3d".into(),
            subnet_id: None,
            srcaddr: "2406:da14::d062".parse().unwrap(),
            dstaddr: "2406:da14::bb58".parse().unwrap(),
            pkt_srcaddr: "2406:da14::d062".parse().unwrap(),
            pkt_dstaddr: "2406:da14::bb58".parse().unwrap(),
            srcport: 0,
            dstport: 0,
            protocol: 58,
            packets: 17,
            bytes: 1768,
            start: 1_709_627_080,
            end: 1_709_627_199,
            action: Action::Accept,
            log_status: LogStatus::Ok,
            flow_direction: FlowDirection::Egress,
            traffic_path: None,
            tcp_flags: 0,
            family: Family::Ipv6,
        }
    }

    /// An instance's TCP connection out through the internet gateway's 1:1 NAT.
    fn nat_record() -> FlowRecord {
        FlowRecord {
            version: 2,
            account_id: "123456789012".into(),
            vpc_id: "vpc-0f1e2d3c".into(),
            interface_id: "eni-vpc0".into(),
            subnet_id: Some("subnet-0aa11bb2".into()),
            srcaddr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
            dstaddr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            pkt_srcaddr: IpAddr::V4(Ipv4Addr::new(10, 0, 1, 5)),
            pkt_dstaddr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            srcport: 40000,
            dstport: 443,
            protocol: 6,
            packets: 12,
            bytes: 3400,
            start: 1_709_627_100,
            end: 1_709_627_160,
            action: Action::Accept,
            log_status: LogStatus::Ok,
            flow_direction: FlowDirection::Egress,
            traffic_path: Some(8),
            tcp_flags: 19,
            family: Family::Ipv4,
        }
    }

    #[test]
    fn default_format_renders_the_aws_example_byte_for_byte() {
        assert_eq!(
            LogFormat::default_v2().render(&aws_example()),
            "2 123456789012 eni-0a1b2c3d 2406:da14::d062 2406:da14::bb58 0 0 58 17 1768 \
             1709627080 1709627199 ACCEPT OK"
        );
    }

    #[test]
    fn default_format_is_the_v2_fields_in_aws_order() {
        let text = "${version} ${account-id} ${interface-id} ${srcaddr} ${dstaddr} ${srcport} \
                    ${dstport} ${protocol} ${packets} ${bytes} ${start} ${end} ${action} \
                    ${log-status}";
        assert_eq!(LogFormat::default_v2().to_string(), text);
        assert_eq!(LogFormat::parse(text).unwrap(), LogFormat::default_v2());
        assert_eq!(LogFormat::default(), LogFormat::default_v2());
        assert_eq!(LogFormat::default_v2().version(), 2);
    }

    #[test]
    fn custom_format_shows_the_translation() {
        let format = LogFormat::parse(
            "${version} ${vpc-id} ${subnet-id} ${instance-id} ${interface-id} ${srcaddr} \
             ${pkt-srcaddr} ${dstaddr} ${pkt-dstaddr} ${srcport} ${dstport} ${protocol} \
             ${tcp-flags} ${type} ${flow-direction} ${traffic-path} ${action} ${log-status}",
        )
        .unwrap();
        // traffic-path and flow-direction are version 5 fields, so the version says 5.
        assert_eq!(
            format.render(&nat_record()),
            "5 vpc-0f1e2d3c subnet-0aa11bb2 - eni-vpc0 203.0.113.10 10.0.1.5 198.51.100.7 \
             198.51.100.7 40000 443 6 19 IPv4 egress 8 ACCEPT OK"
        );
    }

    #[test]
    fn version_follows_the_newest_field() {
        assert_eq!(LogFormat::parse("${srcaddr}").unwrap().version(), 2);
        assert_eq!(LogFormat::parse("${srcaddr} ${type}").unwrap().version(), 3);
        assert_eq!(
            LogFormat::parse("${az-id} ${version}").unwrap().version(),
            4
        );
        assert_eq!(LogFormat::parse("${reject-reason}").unwrap().version(), 8);
    }

    #[test]
    fn fields_without_data_render_a_dash() {
        let mut record = nat_record();
        record.subnet_id = None;
        record.traffic_path = None;
        record.account_id = String::new();
        let format = LogFormat::parse(
            "${account-id} ${subnet-id} ${traffic-path} ${instance-id} ${region} ${az-id} \
             ${sublocation-type} ${sublocation-id} ${pkt-src-aws-service} ${pkt-dst-aws-service} \
             ${ecs-task-id} ${reject-reason} ${version}",
        )
        .unwrap();
        assert_eq!(format.render(&record), "- - - - - - - - - - - - 8");
    }

    #[test]
    fn whitespace_in_an_id_cannot_shift_columns() {
        let mut record = nat_record();
        record.interface_id = "eni one\ttwo".into();
        let format = LogFormat::parse("${interface-id} ${action}").unwrap();
        assert_eq!(format.render(&record), "eni_one_two ACCEPT");
    }

    #[test]
    fn nodata_and_skipdata_blank_the_traffic_fields() {
        let mut record = aws_example();
        record.account_id = "123456789010".into();
        record.interface_id = "eni-1235b8ca123456789".into();
        record.start = 1_431_280_876;
        record.end = 1_431_280_934;
        record.log_status = LogStatus::NoData;
        assert_eq!(
            LogFormat::default_v2().render(&record),
            "2 123456789010 eni-1235b8ca123456789 - - - - - - - 1431280876 1431280934 - NODATA"
        );
        record.log_status = LogStatus::SkipData;
        let format = LogFormat::parse("${vpc-id} ${tcp-flags} ${type} ${log-status}").unwrap();
        assert_eq!(format.render(&record), "vpc-0f1e2d3c - - SKIPDATA");
    }

    #[test]
    fn a_field_may_repeat() {
        let format = LogFormat::parse("${action} ${action}").unwrap();
        assert_eq!(format.render(&nat_record()), "ACCEPT ACCEPT");
    }

    #[test]
    fn unknown_field_is_named() {
        let err = LogFormat::parse("${version} ${srcadr} ${dstaddr}").unwrap_err();
        assert_eq!(
            err,
            FormatError::UnknownField {
                field: "srcadr".into()
            }
        );
        assert_eq!(err.to_string(), "unknown flow log field `srcadr`");
        assert_eq!(
            validate_format("${bogus}"),
            Err("unknown flow log field `bogus`".to_owned())
        );
    }

    #[test]
    fn empty_format_is_refused() {
        assert_eq!(LogFormat::parse(""), Err(FormatError::Empty));
        assert_eq!(LogFormat::parse("   "), Err(FormatError::Empty));
        assert!(validate_format("").is_err());
        assert_eq!(validate_format("${version}"), Ok(()));
    }

    #[test]
    fn separators_are_single_spaces() {
        assert_eq!(
            LogFormat::parse("${version}  ${srcaddr}"),
            Err(FormatError::ExtraSpace { offset: 11 })
        );
        assert_eq!(
            LogFormat::parse(" ${version}"),
            Err(FormatError::ExtraSpace { offset: 0 })
        );
        assert_eq!(
            LogFormat::parse("${version} "),
            Err(FormatError::ExtraSpace { offset: 11 })
        );
        assert!(matches!(
            LogFormat::parse("${version}\t${srcaddr}"),
            Err(FormatError::Malformed { .. })
        ));
    }

    #[test]
    fn tokens_must_be_dollar_braced() {
        for token in [
            "version",
            "${version",
            "$version}",
            "{version}",
            "${}",
            "${}x",
            "${${a}}",
        ] {
            assert_eq!(
                LogFormat::parse(token),
                Err(FormatError::Malformed {
                    token: token.into()
                }),
                "{token}"
            );
        }
    }

    #[test]
    fn field_table_is_complete_and_consistent() {
        let mut names = std::collections::HashSet::new();
        for (i, (field, name, _)) in FIELDS.iter().enumerate() {
            assert_eq!(*field as usize, i, "{name} out of declaration order");
            assert!(names.insert(*name), "{name} twice");
            assert_eq!(Field::from_name(name), Some(*field));
            assert_eq!(field.name(), *name);
        }
        // The last variant is the last entry, so every variant has one.
        assert_eq!(Field::RejectReason as usize, FIELDS.len() - 1);
    }

    #[test]
    fn display_round_trips() {
        let text = "${pkt-srcaddr} ${srcaddr} ${flow-direction} ${ecs-cluster-arn}";
        let format: LogFormat = text.parse().unwrap();
        assert_eq!(format.to_string(), text);
        assert_eq!(LogFormat::parse(&format.to_string()).unwrap(), format);
    }
}
