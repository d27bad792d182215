//! Appends rendered records to a file.

use std::{
    fmt::Write as _,
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    path::{Path, PathBuf},
};

use super::{format::LogFormat, record::FlowRecord};

/// A failure of the flow-log file, with the path it concerns.
#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("cannot create the flow log directory {}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot open the flow log file {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot write to the flow log file {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Writes records, one line each, at the end of a file.
///
/// There is no header line: AWS puts one in the files it delivers to S3 but not in CloudWatch
/// Logs, and a header in an appended file would reappear in the middle at every restart. The
/// format is in the config for whoever needs the column names.
#[derive(Debug)]
pub struct FlowLogWriter {
    path: PathBuf,
    file: File,
    format: LogFormat,
}

impl FlowLogWriter {
    /// Opens `path` for appending, creating it and its parent directories when missing.
    pub fn open(path: impl Into<PathBuf>, format: LogFormat) -> Result<FlowLogWriter, WriterError> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(|source| WriterError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|source| WriterError::Open {
                path: path.clone(),
                source,
            })?;
        Ok(FlowLogWriter { path, file, format })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn format(&self) -> &LogFormat {
        &self.format
    }

    /// Writes the records and flushes them to the file.
    ///
    /// The batch goes out in one write so that a reader tailing the file, or a crash, sees whole
    /// lines rather than a record cut in the middle (as far as the filesystem keeps one append
    /// whole).
    pub fn write_batch(&mut self, records: &[FlowRecord]) -> Result<(), WriterError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut text = String::with_capacity(records.len() * 128);
        for record in records {
            // Formatting into a String only fails if a Display impl does, and ours do not.
            let _ = writeln!(text, "{}", self.format.display(record));
        }
        self.file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.flush())
            .map_err(|source| WriterError::Write {
                path: self.path.clone(),
                source,
            })
    }
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        sync::atomic::{AtomicU32, Ordering},
        time::{SystemTime, UNIX_EPOCH},
    };

    use super::*;
    use crate::flowlog::record::{Action, Family, FlowDirection, LogStatus};

    /// A fresh directory under the system temp dir, removed on drop even if the test fails.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos());
            let name = format!(
                "gateway-flowlog-test-{}-{nanos}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            TempDir(std::env::temp_dir().join(name))
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn record(packets: u64) -> FlowRecord {
        let addr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 5));
        FlowRecord {
            version: 2,
            account_id: "123456789012".into(),
            vpc_id: "vpc-0f1e2d3c".into(),
            interface_id: "eni-vpc0".into(),
            subnet_id: None,
            srcaddr: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 10)),
            dstaddr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            pkt_srcaddr: addr,
            pkt_dstaddr: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)),
            srcport: 40000,
            dstport: 443,
            protocol: 6,
            packets,
            bytes: packets * 100,
            start: 1_709_627_100,
            end: 1_709_627_160,
            action: Action::Accept,
            log_status: LogStatus::Ok,
            flow_direction: FlowDirection::Egress,
            traffic_path: Some(8),
            tcp_flags: 0,
            family: Family::Ipv4,
        }
    }

    #[test]
    fn appends_batches_without_header() {
        let dir = TempDir::new();
        let path = dir.0.join("nested/dirs/flows.log");
        let mut writer = FlowLogWriter::open(&path, LogFormat::default_v2()).unwrap();
        assert_eq!(writer.path(), path);
        writer.write_batch(&[record(1), record(2)]).unwrap();
        writer.write_batch(&[]).unwrap();
        drop(writer);

        // Reopening appends rather than truncating.
        let format = LogFormat::parse("${pkt-srcaddr} ${srcaddr} ${packets}").unwrap();
        let mut writer = FlowLogWriter::open(&path, format).unwrap();
        writer.write_batch(&[record(3)]).unwrap();

        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            "2 123456789012 eni-vpc0 203.0.113.10 198.51.100.7 40000 443 6 1 100 1709627100 1709627160 ACCEPT OK\n\
             2 123456789012 eni-vpc0 203.0.113.10 198.51.100.7 40000 443 6 2 200 1709627100 1709627160 ACCEPT OK\n\
             10.0.1.5 203.0.113.10 3\n"
        );
    }

    #[test]
    fn open_errors_name_the_path() {
        let dir = TempDir::new();
        fs::create_dir_all(&dir.0).unwrap();

        // A directory where the file should be.
        let err = FlowLogWriter::open(&dir.0, LogFormat::default_v2()).unwrap_err();
        assert!(
            matches!(&err, WriterError::Open { path, .. } if *path == dir.0),
            "{err:?}"
        );
        assert!(err.to_string().contains(&*dir.0.to_string_lossy()), "{err}");

        // A file where a parent directory should be.
        let file = dir.0.join("file");
        fs::write(&file, "").unwrap();
        let err = FlowLogWriter::open(file.join("flows.log"), LogFormat::default_v2()).unwrap_err();
        assert!(
            matches!(&err, WriterError::CreateDir { path, .. } if *path == file),
            "{err:?}"
        );
    }
}
