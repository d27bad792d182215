//! The controller's flow-log loop: every aggregation interval, read the kernel's flow table,
//! turn what is new into records, append them to the log file, and delete idle entries.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use anyhow::Context as _;
use tracing::{debug, warn};

use crate::{
    config::{Config, FlowLogs},
    dataplane::{Dataplane, MapPlan},
    flowlog::{Clock, FlowAggregator, FlowContext, FlowLogWriter, LogFormat},
};

/// Reads `CLOCK_MONOTONIC_COARSE`, the clock of `bpf_ktime_get_coarse_ns`.
pub fn monotonic_coarse_ns() -> u64 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut now) };
    now.tv_sec as u64 * 1_000_000_000 + now.tv_nsec as u64
}

/// Everything one flush needs, kept between flushes.
pub struct FlowLogger {
    aggregator: FlowAggregator,
    writer: FlowLogWriter,
    context: FlowContext,
}

impl FlowLogger {
    /// Opens the log file. Flows idle for two intervals (at least 10 s) are deleted from the kernel.
    pub fn new(config: &Config, logs: &FlowLogs, plan: &MapPlan) -> anyhow::Result<FlowLogger> {
        let format = match &logs.format {
            Some(text) => LogFormat::parse(text)
                .map_err(|error| anyhow::anyhow!("flow_logs.format: {error}"))?,
            None => LogFormat::default_v2(),
        };
        let writer = FlowLogWriter::open(&logs.path, format)
            .with_context(|| format!("opening the flow log {}", logs.path.display()))?;
        let interfaces: HashMap<u32, String> = plan
            .interfaces
            .iter()
            .zip(&config.interfaces)
            .map(|((ifindex, _), interface)| (*ifindex, interface.id.clone()))
            .collect();
        let context = FlowContext {
            account_id: config.vpc.account_id.clone(),
            vpc_id: config.vpc.id.clone(),
            interfaces,
            subnets: config
                .subnets
                .iter()
                .map(|subnet| subnet.id.clone())
                .collect(),
        };
        let idle = (logs.aggregation_interval * 2).max(Duration::from_secs(10));
        Ok(FlowLogger {
            aggregator: FlowAggregator::new(idle),
            writer,
            context,
        })
    }

    /// Writes the records of everything counted since the previous flush; returns how many.
    pub fn flush(&mut self, dataplane: &Mutex<Dataplane>) -> anyhow::Result<usize> {
        let snapshot = dataplane.lock().expect("dataplane lock poisoned").flows()?;
        let now = monotonic_coarse_ns();
        let clock = Clock::from_readings(now, SystemTime::now());
        let flush = self.aggregator.flush(&snapshot, now, &clock, &self.context);
        self.writer
            .write_batch(&flush.records)
            .context("writing flow-log records")?;
        if !flush.invalid.is_empty() {
            warn!(
                count = flush.invalid.len(),
                "undecodable flow entries deleted"
            );
        }
        let mut stale = flush.idle;
        stale.extend(flush.invalid);
        if !stale.is_empty() {
            dataplane
                .lock()
                .expect("dataplane lock poisoned")
                .remove_flows(&stale)?;
        }
        debug!(
            records = flush.records.len(),
            deleted = stale.len(),
            "flow-log flush"
        );
        Ok(flush.records.len())
    }
}

/// Flushes every `interval` until the task is aborted.
pub async fn run(
    dataplane: Arc<Mutex<Dataplane>>,
    logger: Arc<Mutex<FlowLogger>>,
    interval: Duration,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let result = logger
            .lock()
            .expect("flow logger lock poisoned")
            .flush(&dataplane);
        if let Err(error) = result {
            warn!(error = %format!("{error:#}"), "flow-log flush failed");
        }
    }
}
