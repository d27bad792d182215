//! CPU cycles per packet with `perf stat`, on machines whose (virtual) CPU exposes the cycles
//! counter. Many VMs do not: then the report says "not supported" instead of a number.

use std::{
    io::Read as _,
    process::{Child, Command, Stdio},
};

use anyhow::{Context as _, bail};

/// Whether `perf stat -e cycles` counts here; the reason when it does not.
pub fn cycles_supported() -> Result<(), String> {
    let output = Command::new("perf")
        .args(["stat", "-x,", "-e", "cycles", "true"])
        .stdin(Stdio::null())
        .output()
        .map_err(|error| format!("perf not runnable: {error}"))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    match parse_cycles(&stderr) {
        Some(_) if output.status.success() => Ok(()),
        _ if stderr.contains("<not supported>") => {
            Err("the CPU exposes no cycles counter to perf (typical of VMs)".into())
        }
        _ => Err(format!(
            "perf stat failed: {}",
            stderr.lines().next().unwrap_or("no output")
        )),
    }
}

/// Reads the cycles count from `perf stat -x,` output (`<count>,<unit>,cycles,...`).
pub fn parse_cycles(stderr: &str) -> Option<u64> {
    stderr.lines().find_map(|line| {
        let mut fields = line.split(',');
        let count = fields.next()?;
        let _unit = fields.next()?;
        let event = fields.next()?;
        if event.starts_with("cycles") {
            count.trim().parse().ok()
        } else {
            None
        }
    })
}

/// `perf stat` counting cycles on one CPU until [`CpuCycles::stop`].
pub struct CpuCycles {
    child: Child,
}

impl CpuCycles {
    pub fn start(cpu: usize) -> anyhow::Result<CpuCycles> {
        let child = Command::new("perf")
            .args(["stat", "-x,", "-e", "cycles", "-C", &cpu.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf stat")?;
        Ok(CpuCycles { child })
    }

    pub fn stop(mut self) -> anyhow::Result<u64> {
        // perf prints its counts when interrupted; the child is ours, signalled by its pid.
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) on the pid of a child we spawned and have not waited for.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let mut stderr = String::new();
        if let Some(mut pipe) = self.child.stderr.take() {
            pipe.read_to_string(&mut stderr)
                .context("reading perf stat output")?;
        }
        self.child.wait().context("waiting for perf stat")?;
        match parse_cycles(&stderr) {
            Some(cycles) => Ok(cycles),
            None => bail!("no cycles count in perf stat output: {}", stderr.trim()),
        }
    }
}

impl Drop for CpuCycles {
    fn drop(&mut self) {
        // Only reached on an error path before stop(): do not leave perf running.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_perf_csv() {
        assert_eq!(
            parse_cycles("123456,,cycles,1000000,100.00,,\n"),
            Some(123_456)
        );
        assert_eq!(parse_cycles("<not supported>,,cycles,0,100.00,,\n"), None);
        assert_eq!(
            parse_cycles("0.75,msec,task-clock,753245,100.00,0.450,CPUs\n"),
            None
        );
    }
}
