//! VPC-Flow-Log-style records: what the gateway saw, in the text form AWS publishes.
//!
//! The layer is pure apart from [`FlowLogWriter`]: the controller reads the kernel's `FLOWS` map,
//! sums the per-CPU values and hands the snapshot to a [`FlowAggregator`], which turns the
//! counters into per-interval [`FlowRecord`]s; a [`LogFormat`] renders them and the writer appends
//! the lines to a file. Keeping BPF and clocks out of here is what makes every step unit-testable.
//!
//! The aggregator only produces `OK` records, from traffic it saw; [`LogStatus::NoData`] and
//! [`LogStatus::SkipData`] records (an idle interface, a full flow table) are for the caller to
//! build, and the formats render them as AWS does.

mod aggregate;
mod format;
mod record;
mod tcp;
mod writer;

pub use aggregate::{Clock, FlowAggregator, FlowContext, Flush};
pub use format::{Field, FormatError, LogFormat, validate_format};
pub use record::{Action, Family, FlowDirection, FlowRecord, LogStatus};
pub use tcp::aws_tcp_flags;
pub use writer::{FlowLogWriter, WriterError};
