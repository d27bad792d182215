//! What a run found, and how it is written: JSON for machines, a Markdown table for people, an
//! SVG bar chart of the packet rates.

use std::{collections::BTreeMap, fmt::Write as _, fs, path::Path};

use anyhow::Context as _;
use plotters::prelude::*;
use serde::Serialize;

use super::stats::{Ratio, Summary};

#[derive(Debug, Serialize)]
pub struct Report {
    /// Bumped when a field changes meaning.
    pub schema: u32,
    /// "full" or "quick".
    pub mode: String,
    /// Seconds since the epoch at the start of the run.
    pub started_unix: u64,
    pub elapsed_seconds: f64,
    pub machine: Machine,
    pub method: Method,
    pub throughput: Vec<Throughput>,
    pub program_cost: Option<ProgramCost>,
    /// S2: NAT44 new connections, table capacity and memory per connection.
    pub new_connections: Option<NewConnections>,
    pub not_measured: Vec<NotMeasured>,
    pub perf: PerfStatus,
    pub warnings: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Machine {
    pub kernel: String,
    pub cpu_model: String,
    pub cores: usize,
    pub memory_gib: f64,
    /// 1-minute load average at the start and at the end of the run: whatever else the machine
    /// was running competes with the benchmark for the same CPUs.
    pub load_average_start: f64,
    pub load_average_end: f64,
}

/// The 1-minute load average.
pub fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

impl Machine {
    /// Describes this machine; `load_average_start` is the caller's reading from the start.
    pub fn detect(load_average_start: f64) -> Machine {
        let read = |path: &str| fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let field = |name: &str| {
            cpuinfo
                .lines()
                .find(|line| line.starts_with(name))
                .and_then(|line| line.split_once(':'))
                .map(|(_, value)| value.trim().to_string())
        };
        let memory_kib: f64 = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        Machine {
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            cpu_model: field("model name").unwrap_or_else(|| "unknown".into()),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_gib: (memory_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            load_average_start,
            load_average_end: load_average(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Method {
    pub trial_seconds: f64,
    pub trials_per_variant: usize,
    pub frame_len_ipv4: usize,
    pub frame_len_ipv6: usize,
    pub protocol: String,
    /// Frames per BPF_PROG_RUN live-frames batch.
    pub generator_batch: u32,
    pub generator_cpu: usize,
    /// Where the gateway's receive processing runs; `None`: on the generator's CPU.
    pub gateway_cpu: Option<usize>,
    pub notes: Vec<String>,
}

/// One case measured with several variants of the device under test, trials interleaved.
#[derive(Debug, Serialize)]
pub struct Throughput {
    pub scenario: String,
    pub case: String,
    /// Short label for the chart.
    pub label: String,
    /// "outbound" (generator on the VPC side) or "inbound" (generator on the internet side).
    pub direction: String,
    /// "delivered": the variants' rates are packets delivered at the far end; "dropped": packets
    /// the device under test dropped (a flood that must not get through; nothing reached the far
    /// end in any trial).
    pub metric: String,
    pub flows: u32,
    pub frame_len: usize,
    pub variants: Vec<VariantRun>,
    pub ratios: Vec<RatioRow>,
    /// Non-zero gateway counters over the "ours" trials (what the dataplane did with them).
    pub gateway_counters: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct VariantRun {
    /// "ours", "fwd_limit", "kernel", "nftables", "drop".
    pub name: String,
    pub description: String,
    /// Delivered at the sink; for the "dropped" metric, dropped by the device under test.
    pub delivered_mpps: Summary,
    pub delivered_mpps_trials: Vec<f64>,
    /// Produced by the generator (what the device under test was offered).
    pub sent_mpps: Summary,
    /// 1 - delivered / sent, per trial.
    pub loss: Summary,
    /// Average run time of the device-under-test XDP program per packet in a separate trial
    /// with the kernel's BPF run-time statistics on (`None`: no XDP program or not measured).
    pub program_ns_per_packet: Option<f64>,
    /// CPU cycles per delivered packet on the gateway's CPU (`perf stat`), where supported.
    pub cycles_per_packet: Option<f64>,
    /// Variants that translate in a userspace process (TAYGA): the process's CPU time per
    /// delivered packet in the profiling trial, which includes the kernel's forwarding of what
    /// it writes back (it runs in the process's context).
    pub process_ns_per_packet: Option<f64>,
    /// The same process's CPU time as a share of the trial (1.0: a whole CPU).
    pub process_cpu_share: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct RatioRow {
    pub numerator: String,
    pub denominator: String,
    pub ratio: Ratio,
    /// The target for this ratio (at least), if it has one.
    pub target: Option<f64>,
    pub met: Option<bool>,
}

#[derive(Debug, Serialize)]
pub struct ProgramCost {
    pub method: String,
    pub empty_ns: Summary,
    /// The empty program timed with `repeat` runs in one call.
    pub empty_repeated_ns: f64,
    pub repeat: u32,
    pub paths: Vec<PathCost>,
}

#[derive(Debug, Serialize)]
pub struct PathCost {
    pub path: String,
    pub verdict: String,
    /// ns per run, the batches' means.
    pub ns: Summary,
    /// Median minus the empty program's median.
    pub above_empty_ns: f64,
    /// Timed with `repeat` runs in one call (paths that do not rewrite the frame only).
    pub repeated_ns: Option<f64>,
}

/// S2: every generated packet a new flow, ours against the kernel's NAT.
#[derive(Debug, Serialize)]
pub struct NewConnections {
    pub method: String,
    /// Distinct flows of the generator (no flow repeats within a trial).
    pub flows: u32,
    pub frame_len: usize,
    pub variants: Vec<NewConnectionsRun>,
    /// ours / nftables, new connections per second (target: at least 5).
    pub ratio: Option<RatioRow>,
    /// The target for the table capacity in the default configuration.
    pub capacity_target: u64,
}

#[derive(Debug, Serialize)]
pub struct NewConnectionsRun {
    /// "ours" or "nftables".
    pub name: String,
    pub description: String,
    /// Millions of new connections per second (each delivered packet of a trial started one),
    /// per trial from an empty table.
    pub mcps: Summary,
    pub mcps_trials: Vec<f64>,
    /// Connections the variant held after the generator ran for `fill_seconds` from an empty
    /// table.
    pub reached: u64,
    /// The table's limit: ours, CONNTRACK's max entries / 2 (a session is two halves);
    /// nftables, nf_conntrack_max.
    pub limit: u64,
    pub fill_seconds: f64,
    /// What stopped growth, or what happened at the limit.
    pub capacity_note: String,
    /// Slab memory (all caches, active objects x object size) grown per connection while the
    /// table filled.
    pub slab_bytes_per_connection: Option<f64>,
    /// ours: the growth of the maps' `memlock` (fdinfo) per session; nftables: the size of one
    /// `nf_conntrack` slab object.
    pub table_bytes_per_connection: Option<f64>,
    pub memory_note: String,
}

#[derive(Debug, Serialize)]
pub struct NotMeasured {
    pub scenario: String,
    pub title: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct PerfStatus {
    pub supported: bool,
    pub note: String,
}

fn range(summary: &Summary, digits: usize) -> String {
    format!(
        "{:.digits$} [{:.digits$}–{:.digits$}]",
        summary.median, summary.min, summary.max
    )
}

impl Report {
    /// Variant names in first-seen order (the table's columns and the chart's series).
    fn variant_names(&self) -> Vec<String> {
        let mut names: Vec<String> = Vec::new();
        let s2 = self.new_connections.iter().flat_map(|s2| &s2.variants);
        for name in self
            .throughput
            .iter()
            .flat_map(|row| row.variants.iter().map(|variant| &variant.name))
            .chain(s2.map(|run| &run.name))
        {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
        // Ours first, then the baselines, whatever order the scenarios ran in.
        let rank = |name: &String| match name.as_str() {
            "ours" => 0,
            "fwd_limit" => 1,
            "kernel" => 2,
            "nftables" => 3,
            "drop" => 4,
            "tayga" => 5,
            _ => 6,
        };
        names.sort_by_key(rank);
        names
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let machine = &self.machine;
        let method = &self.method;
        // Writing to a String cannot fail: the results of writeln! are ignored below.
        let _ = writeln!(out, "# Benchmark results ({} run)\n", self.mode);
        let _ = writeln!(
            out,
            "Machine: {}, {} cores, {} GiB, Linux {}. Run took {:.0} s.\n",
            machine.cpu_model,
            machine.cores,
            machine.memory_gib,
            machine.kernel,
            self.elapsed_seconds
        );
        let _ = writeln!(
            out,
            "Method: generator -> gateway -> sink namespaces over veth, native XDP. The generator \
             (BPF_PROG_RUN live frames, batch {}) runs on CPU {}; {}. Each number is packets per \
             second delivered to the sink, the median of {} interleaved trials of {} s with \
             [min–max]; ratios are ratios of medians with the range of back-to-back trial ratios. \
             {} {}-byte IPv4 frames, {}-byte IPv6 frames.\n",
            method.generator_batch,
            method.generator_cpu,
            match method.gateway_cpu {
                Some(cpu) => format!(
                    "the gateway's receive path (and the sink behind it) runs in a NAPI thread \
                     pinned to CPU {cpu}"
                ),
                None => "the gateway runs on the same CPU".into(),
            },
            method.trials_per_variant,
            method.trial_seconds,
            method.protocol,
            method.frame_len_ipv4,
            method.frame_len_ipv6,
        );
        for note in &method.notes {
            let _ = writeln!(out, "- {note}");
        }
        if !method.notes.is_empty() {
            out.push('\n');
        }

        let names = self.variant_names();
        if !self.throughput.is_empty() {
            let _ = writeln!(
                out,
                "## Throughput (Mpps delivered; drop-rate cases: Mpps dropped)\n"
            );
            let _ = write!(out, "| Scenario | Case | Flows |");
            for name in &names {
                let _ = write!(out, " {name} |");
            }
            let _ = writeln!(out, " loss |");
            let _ = write!(out, "|---|---|---:|");
            for _ in &names {
                out.push_str("---:|");
            }
            out.push_str("---:|\n");
            for row in &self.throughput {
                let _ = write!(
                    out,
                    "| {} | {} | {} |",
                    row.scenario,
                    row.case_with_metric(),
                    flows_label(row.flows)
                );
                for name in &names {
                    match row.variants.iter().find(|variant| &variant.name == name) {
                        Some(variant) => {
                            let _ = write!(out, " {} |", range(&variant.delivered_mpps, 2));
                        }
                        None => out.push_str(" — |"),
                    }
                }
                // The loss of the first variant in column order: the device under test's.
                match names
                    .iter()
                    .find_map(|name| row.variants.iter().find(|variant| &variant.name == name))
                {
                    Some(first) => {
                        let _ =
                            writeln!(out, " {:.0}% ({}) |", first.loss.median * 100.0, first.name);
                    }
                    None => out.push_str(" — |\n"),
                }
            }
            out.push('\n');
            let offered_limited: Vec<String> = self
                .throughput
                .iter()
                .flat_map(|row| {
                    row.variants
                        .iter()
                        .filter(|variant| variant.loss.median < 0.05)
                        .map(move |variant| {
                            format!(
                                "{} {} ({}): {}",
                                row.scenario,
                                row.case,
                                flows_label(row.flows),
                                variant.name
                            )
                        })
                })
                .collect();
            if !offered_limited.is_empty() {
                let _ = writeln!(
                    out,
                    "Took nearly everything the generator offered (median loss under 5%), so the \
                     generator, not the device under test, set these rates: their capacity is at \
                     least this, and ratios against them are upper bounds: {}.\n",
                    offered_limited.join("; ")
                );
            }
            if self.throughput.iter().any(|row| row.metric == "dropped") {
                out.push_str(
                    "Drop-rate cases: the rate is what the device under test dropped per second \
                     (ours: the gateway's drop counters; drop: `bench_drop`'s count; nftables: the \
                     ruleset's drop counter); the loss column is what the veth ring refused before \
                     it got there. No packet of these cases reached the far end.\n\n",
                );
            }

            let _ = writeln!(out, "## Ratios against the targets\n");
            out.push_str("| Scenario | Case | Flows | Ratio | Median [range] | Target | Met |\n");
            out.push_str("|---|---|---:|---|---:|---:|:---:|\n");
            for row in &self.throughput {
                for ratio in &row.ratios {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} / {} | {:.2} [{:.2}–{:.2}] | {} | {} |",
                        row.scenario,
                        row.case_with_metric(),
                        flows_label(row.flows),
                        ratio.numerator,
                        ratio.denominator,
                        ratio.ratio.of_medians,
                        ratio.ratio.pairwise_min,
                        ratio.ratio.pairwise_max,
                        ratio
                            .target
                            .map_or("—".to_string(), |target| format!("≥ {target}")),
                        match ratio.met {
                            Some(true) => "yes",
                            Some(false) => "**no**",
                            None => "—",
                        },
                    );
                }
            }
            out.push('\n');

            let timed: Vec<_> = self
                .throughput
                .iter()
                .flat_map(|row| row.variants.iter().map(move |variant| (row, variant)))
                .filter(|(_, variant)| {
                    variant.program_ns_per_packet.is_some()
                        || variant.cycles_per_packet.is_some()
                        || variant.process_ns_per_packet.is_some()
                })
                .collect();
            if !timed.is_empty() {
                let _ = writeln!(out, "## Cost per packet inside the live runs\n");
                out.push_str(
                    "| Scenario | Case | Flows | Variant | XDP program ns/packet | cycles/packet | \
                     process ns/packet (CPU share) |\n",
                );
                out.push_str("|---|---|---:|---|---:|---:|---:|\n");
                for (row, variant) in timed {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        row.scenario,
                        row.case_with_metric(),
                        flows_label(row.flows),
                        variant.name,
                        variant
                            .program_ns_per_packet
                            .map_or("—".into(), |ns| format!("{ns:.1}")),
                        variant
                            .cycles_per_packet
                            .map_or("not supported".into(), |cycles| format!("{cycles:.0}")),
                        match (variant.process_ns_per_packet, variant.process_cpu_share) {
                            (Some(ns), Some(share)) => format!("{ns:.0} ({:.0}%)", share * 100.0),
                            _ => "—".into(),
                        },
                    );
                }
                out.push('\n');
            }
        }

        if let Some(cost) = &self.program_cost {
            let _ = writeln!(out, "## S5 program cost per path (BPF_PROG_TEST_RUN)\n");
            let _ = writeln!(out, "{}\n", cost.method);
            let _ = writeln!(
                out,
                "| Path | Verdict | ns per run, median [min–max] | above empty | ns per run, repeat {} |",
                cost.repeat
            );
            out.push_str("|---|---|---:|---:|---:|\n");
            let _ = writeln!(
                out,
                "| empty program | XDP_PASS | {} | 0 | {:.1} |",
                range(&cost.empty_ns, 1),
                cost.empty_repeated_ns
            );
            for path in &cost.paths {
                let _ = writeln!(
                    out,
                    "| {} | {} | {} | {:.1} | {} |",
                    path.path,
                    path.verdict,
                    range(&path.ns, 1),
                    path.above_empty_ns,
                    path.repeated_ns
                        .map_or("— (rewrites)".into(), |ns| format!("{ns:.1}"))
                );
            }
            out.push('\n');
        }

        if let Some(s2) = &self.new_connections {
            s2.markdown(&mut out);
        }

        let _ = writeln!(
            out,
            "perf stat cycles: {}.\n",
            if self.perf.supported {
                "measured".to_string()
            } else {
                format!("not supported ({})", self.perf.note)
            }
        );

        if !self.not_measured.is_empty() {
            let _ = writeln!(out, "## Not measured\n");
            out.push_str("| Scenario | What | Why |\n|---|---|---|\n");
            for row in &self.not_measured {
                let _ = writeln!(out, "| {} | {} | {} |", row.scenario, row.title, row.reason);
            }
            out.push('\n');
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(out, "## Warnings\n");
            for warning in &self.warnings {
                let _ = writeln!(out, "- {warning}");
            }
            out.push('\n');
        }
        out
    }

    /// A grouped bar chart: one group per measured case, one bar per variant (median, with a
    /// min–max whisker).
    pub fn svg(&self) -> anyhow::Result<String> {
        let names = self.variant_names();
        // One group per throughput case, then S2's new connections per second (millions).
        let mut bars: Vec<(String, Vec<(&str, Summary)>)> = self
            .throughput
            .iter()
            .map(|row| {
                let variants = row
                    .variants
                    .iter()
                    .map(|variant| (variant.name.as_str(), variant.delivered_mpps))
                    .collect();
                (row.label.clone(), variants)
            })
            .collect();
        if let Some(s2) = &self.new_connections {
            bars.push((
                "S2 new conn. (M/s)".into(),
                s2.variants
                    .iter()
                    .map(|run| (run.name.as_str(), run.mcps))
                    .collect(),
            ));
        }
        let groups = bars.len().max(1);
        let top = bars
            .iter()
            .flat_map(|(_, variants)| variants)
            .map(|(_, summary)| summary.max)
            .fold(1.0f64, f64::max)
            * 1.15;
        let width = (180 + 110 * groups as u32).max(640);
        let mut svg = String::new();
        {
            let root = SVGBackend::with_string(&mut svg, (width, 480)).into_drawing_area();
            root.fill(&WHITE).map_err(plot_error)?;
            let title = format!(
                "Mpps delivered per scenario, S2: M new connections/s ({}, {} cores, Linux {})",
                self.machine.cpu_model, self.machine.cores, self.machine.kernel
            );
            let mut chart = ChartBuilder::on(&root)
                .caption(title, ("sans-serif", 18))
                .margin(16)
                .x_label_area_size(56)
                .y_label_area_size(56)
                .build_cartesian_2d(0f64..groups as f64, 0f64..top)
                .map_err(plot_error)?;
            chart
                .configure_mesh()
                .disable_x_mesh()
                .x_labels(0)
                .y_desc("Mpps delivered or dropped (median, min–max)")
                .draw()
                .map_err(plot_error)?;
            let bar = 0.8 / names.len().max(1) as f64;
            for (series, name) in names.iter().enumerate() {
                let color = Palette99::pick(series).to_rgba();
                let color = match name.as_str() {
                    "ours" => RGBColor(31, 119, 180).to_rgba(),
                    "fwd_limit" => RGBColor(44, 160, 44).to_rgba(),
                    "kernel" => RGBColor(127, 127, 127).to_rgba(),
                    "nftables" => RGBColor(214, 39, 40).to_rgba(),
                    "drop" => RGBColor(255, 127, 14).to_rgba(),
                    "tayga" => RGBColor(148, 103, 189).to_rgba(),
                    _ => color,
                };
                let placed: Vec<(f64, Summary)> =
                    bars.iter()
                        .enumerate()
                        .filter_map(|(group, (_, variants))| {
                            variants.iter().find(|(variant, _)| variant == name).map(
                                |(_, summary)| (group as f64 + 0.1 + bar * series as f64, *summary),
                            )
                        })
                        .collect();
                chart
                    .draw_series(placed.iter().map(|(x, summary)| {
                        Rectangle::new(
                            [(*x, 0.0), (*x + bar * 0.9, summary.median)],
                            color.filled(),
                        )
                    }))
                    .map_err(plot_error)?
                    .label(name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                    });
                chart
                    .draw_series(placed.iter().map(|(x, summary)| {
                        let middle = *x + bar * 0.45;
                        PathElement::new(
                            vec![(middle, summary.min), (middle, summary.max)],
                            BLACK.stroke_width(1),
                        )
                    }))
                    .map_err(plot_error)?;
            }
            chart
                .draw_series(bars.iter().enumerate().map(|(group, (label, _))| {
                    EmptyElement::at((group as f64 + 0.5, 0.0))
                        + Text::new(
                            label.clone(),
                            (0, 8),
                            ("sans-serif", 12).into_font().color(&BLACK).pos(
                                plotters::style::text_anchor::Pos::new(
                                    plotters::style::text_anchor::HPos::Center,
                                    plotters::style::text_anchor::VPos::Top,
                                ),
                            ),
                        )
                }))
                .map_err(plot_error)?;
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperRight)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(plot_error)?;
            root.present().map_err(plot_error)?;
        }
        Ok(svg)
    }

    /// Writes latest.json, latest.md and latest.svg into `dir`.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let json = serde_json::to_string_pretty(self).context("serialising the report")?;
        for (name, text) in [
            ("latest.json", json + "\n"),
            ("latest.md", self.markdown()),
            ("latest.svg", self.svg()?),
        ] {
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

impl NewConnections {
    fn markdown(&self, out: &mut String) {
        let _ = writeln!(
            out,
            "## S2 NAT44 new connections, table capacity, memory per connection\n"
        );
        let _ = writeln!(out, "{}\n", self.method);
        out.push_str(
            "| Variant | new connections, M/s median [min–max] | connections reached | limit | \
             slab bytes / connection | table bytes / connection |\n",
        );
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        let bytes = |value: Option<f64>| value.map_or("—".into(), |value| format!("{value:.0}"));
        for run in &self.variants {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                run.name,
                range(&run.mcps, 3),
                run.reached,
                run.limit,
                bytes(run.slab_bytes_per_connection),
                bytes(run.table_bytes_per_connection),
            );
        }
        out.push('\n');
        for run in &self.variants {
            let _ = writeln!(
                out,
                "- {}: {} {}",
                run.name, run.capacity_note, run.memory_note
            );
        }
        out.push('\n');
        out.push_str("| Target | Measured | Met |\n|---|---:|:---:|\n");
        let met = |value: Option<bool>| match value {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "—",
        };
        if let Some(ratio) = &self.ratio {
            let _ = writeln!(
                out,
                "| new connections/s ours / nftables ≥ {} | {:.2} [{:.2}–{:.2}] | {} |",
                ratio.target.unwrap_or(0.0),
                ratio.ratio.of_medians,
                ratio.ratio.pairwise_min,
                ratio.ratio.pairwise_max,
                met(ratio.met),
            );
        }
        let ours = self.variants.iter().find(|run| run.name == "ours");
        let kernel = self.variants.iter().find(|run| run.name == "nftables");
        if let Some(ours) = ours {
            let _ = writeln!(
                out,
                "| tracked connections (default configuration) ≥ {} | limit {}, reached {} | {} |",
                self.capacity_target,
                ours.limit,
                ours.reached,
                met(Some(
                    ours.limit >= self.capacity_target && ours.reached >= self.capacity_target
                )),
            );
        }
        if let (Some(ours), Some(kernel)) = (ours, kernel) {
            let less = match (
                ours.slab_bytes_per_connection,
                kernel.slab_bytes_per_connection,
            ) {
                (Some(ours), Some(kernel)) => Some(ours < kernel),
                _ => None,
            };
            let _ = writeln!(
                out,
                "| slab memory per connection ours < nftables | {} vs {} | {} |",
                bytes(ours.slab_bytes_per_connection),
                bytes(kernel.slab_bytes_per_connection),
                met(less),
            );
        }
        out.push('\n');
    }
}

impl Throughput {
    /// The case as the tables show it: drop-rate cases say so.
    fn case_with_metric(&self) -> String {
        if self.metric == "dropped" {
            format!("{} (Mpps dropped)", self.case)
        } else {
            self.case.clone()
        }
    }
}

fn plot_error<E: std::fmt::Debug>(error: E) -> anyhow::Error {
    anyhow::anyhow!("drawing the chart: {error:?}")
}

/// 1, 1k, 64k, 1M.
pub fn flows_label(flows: u32) -> String {
    if flows >= 1 << 20 && flows.is_multiple_of(1 << 20) {
        format!("{}M", flows >> 20)
    } else if flows >= 1 << 10 && flows.is_multiple_of(1 << 10) {
        format!("{}k", flows >> 10)
    } else {
        flows.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(median: f64) -> Summary {
        Summary {
            median,
            min: median * 0.9,
            max: median * 1.1,
        }
    }

    fn variant(name: &str, mpps: f64) -> VariantRun {
        VariantRun {
            name: name.into(),
            description: String::new(),
            delivered_mpps: summary(mpps),
            delivered_mpps_trials: vec![mpps],
            sent_mpps: summary(mpps * 2.0),
            loss: summary(0.5),
            program_ns_per_packet: Some(50.0),
            cycles_per_packet: None,
            process_ns_per_packet: None,
            process_cpu_share: None,
        }
    }

    fn report() -> Report {
        Report {
            schema: 1,
            mode: "quick".into(),
            started_unix: 0,
            elapsed_seconds: 1.0,
            machine: Machine {
                kernel: "6.18".into(),
                cpu_model: "Test CPU".into(),
                cores: 2,
                memory_gib: 24.0,
                load_average_start: 0.5,
                load_average_end: 0.7,
            },
            method: Method {
                trial_seconds: 1.0,
                trials_per_variant: 5,
                frame_len_ipv4: 64,
                frame_len_ipv6: 64,
                protocol: "UDP".into(),
                generator_batch: 64,
                generator_cpu: 0,
                gateway_cpu: Some(1),
                notes: vec![],
            },
            throughput: vec![
                Throughput {
                    scenario: "S3".into(),
                    case: "IPv4 1:1 NAT outbound".into(),
                    label: "S3 v4 1k".into(),
                    direction: "outbound".into(),
                    metric: "delivered".into(),
                    flows: 1024,
                    frame_len: 64,
                    variants: vec![variant("ours", 5.0), variant("fwd_limit", 6.0)],
                    ratios: vec![RatioRow {
                        numerator: "ours".into(),
                        denominator: "fwd_limit".into(),
                        ratio: Ratio::of(&[5.0], &[6.0]).unwrap(),
                        target: Some(0.85),
                        met: Some(false),
                    }],
                    gateway_counters: BTreeMap::new(),
                },
                Throughput {
                    scenario: "S4b".into(),
                    case: "unsolicited inbound TCP SYN flood".into(),
                    label: "S4b SYN 64k (drops)".into(),
                    direction: "inbound".into(),
                    metric: "dropped".into(),
                    flows: 65536,
                    frame_len: 74,
                    variants: vec![variant("ours", 1.0), {
                        let mut drop = variant("drop", 6.0);
                        drop.loss = Summary::default();
                        drop
                    }],
                    ratios: vec![RatioRow {
                        numerator: "ours".into(),
                        denominator: "drop".into(),
                        ratio: Ratio::of(&[1.0], &[6.0]).unwrap(),
                        target: Some(0.8),
                        met: Some(false),
                    }],
                    gateway_counters: BTreeMap::new(),
                },
                Throughput {
                    scenario: "S6".into(),
                    case: "NAT64 established, outbound (IPv6 -> IPv4)".into(),
                    label: "S6 NAT64 1k".into(),
                    direction: "outbound".into(),
                    metric: "delivered".into(),
                    flows: 1024,
                    frame_len: 64,
                    variants: vec![variant("ours", 2.0), variant("fwd_limit", 3.0), {
                        let mut tayga = variant("tayga", 0.04);
                        tayga.program_ns_per_packet = None;
                        tayga.process_ns_per_packet = Some(9000.0);
                        tayga.process_cpu_share = Some(0.36);
                        tayga
                    }],
                    ratios: vec![RatioRow {
                        numerator: "ours".into(),
                        denominator: "tayga".into(),
                        ratio: Ratio::of(&[2.0], &[0.04]).unwrap(),
                        target: Some(10.0),
                        met: Some(true),
                    }],
                    gateway_counters: BTreeMap::new(),
                },
            ],
            program_cost: Some(ProgramCost {
                method: "m".into(),
                empty_ns: summary(30.0),
                empty_repeated_ns: 7.0,
                repeat: 1000,
                paths: vec![PathCost {
                    path: "IGW IPv4 outbound".into(),
                    verdict: "XDP_REDIRECT".into(),
                    ns: summary(90.0),
                    above_empty_ns: 60.0,
                    repeated_ns: None,
                }],
            }),
            new_connections: Some(NewConnections {
                method: "m2".into(),
                flows: 1 << 24,
                frame_len: 64,
                variants: vec![
                    NewConnectionsRun {
                        name: "ours".into(),
                        description: String::new(),
                        mcps: summary(2.0),
                        mcps_trials: vec![2.0],
                        reached: 500_000,
                        limit: 524_288,
                        fill_seconds: 3.0,
                        capacity_note: "port space".into(),
                        slab_bytes_per_connection: Some(300.0),
                        table_bytes_per_connection: Some(280.0),
                        memory_note: String::new(),
                    },
                    NewConnectionsRun {
                        name: "nftables".into(),
                        description: String::new(),
                        mcps: summary(0.5),
                        mcps_trials: vec![0.5],
                        reached: 262_144,
                        limit: 262_144,
                        fill_seconds: 3.0,
                        capacity_note: "early drop".into(),
                        slab_bytes_per_connection: Some(400.0),
                        table_bytes_per_connection: Some(256.0),
                        memory_note: String::new(),
                    },
                ],
                ratio: Some(RatioRow {
                    numerator: "ours".into(),
                    denominator: "nftables".into(),
                    ratio: Ratio::of(&[2.0], &[0.5]).unwrap(),
                    target: Some(5.0),
                    met: Some(false),
                }),
                capacity_target: 1 << 20,
            }),
            not_measured: vec![NotMeasured {
                scenario: "S1".into(),
                title: "NAT44".into(),
                reason: "not yet supported by the dataplane".into(),
            }],
            perf: PerfStatus {
                supported: false,
                note: "no PMU".into(),
            },
            warnings: vec![],
        }
    }

    #[test]
    fn markdown_has_every_part() {
        let text = report().markdown();
        assert!(text.contains("| S3 | IPv4 1:1 NAT outbound | 1k | 5.00 [4.50–5.50] | 6.00"));
        assert!(text.contains("| 50% (ours) |"));
        assert!(text.contains("| ours / fwd_limit | 0.83 [0.83–0.83] | ≥ 0.85 | **no** |"));
        assert!(text.contains("| IGW IPv4 outbound | XDP_REDIRECT |"));
        assert!(text.contains("not yet supported by the dataplane"));
        assert!(text.contains("not supported (no PMU)"));
        assert!(text.contains(
            "| S4b | unsolicited inbound TCP SYN flood (Mpps dropped) | 64k | 1.00 [0.90–1.10] | — |"
        ));
        assert!(text.contains("| ours / drop | 0.17 [0.17–0.17] | ≥ 0.8 | **no** |"));
        assert!(text.contains("S4b unsolicited inbound TCP SYN flood (64k): drop"));
        assert!(text.contains("| ours | 2.000 [1.800–2.200] | 500000 | 524288 | 300 | 280 |"));
        assert!(
            text.contains("| new connections/s ours / nftables ≥ 5 | 4.00 [4.00–4.00] | **no** |")
        );
        assert!(text.contains("| tracked connections (default configuration) ≥ 1048576 |"));
        assert!(text.contains("| slab memory per connection ours < nftables | 300 vs 400 | yes |"));
        // TAYGA translates in a process: its column sits after the kernel baselines', and the
        // cost table shows the process's CPU time and share.
        assert!(text.contains(
            "| Scenario | Case | Flows | ours | fwd_limit | nftables | drop | tayga | loss |"
        ));
        assert!(text.contains("| ours / tayga | 50.00 [50.00–50.00] | ≥ 10 | yes |"));
        assert!(text.contains("| S6 | NAT64 established, outbound (IPv6 -> IPv4) | 1k | tayga | — | not supported | 9000 (36%) |"));
        assert!(text.contains("| S6 | NAT64 established, outbound (IPv6 -> IPv4) | 1k | ours | 50.0 | not supported | — |"));
    }

    #[test]
    fn svg_draws_bars_and_labels() {
        let svg = report().svg().unwrap();
        assert!(svg.starts_with("<svg"));
        assert!(svg.contains("S3 v4 1k"));
        assert!(svg.contains("S4b SYN 64k (drops)"));
        assert!(svg.contains("S6 NAT64 1k"));
        assert!(svg.contains("tayga"));
        assert!(svg.contains("S2 new conn. (M/s)"));
        assert!(svg.contains("fwd_limit"));
        assert!(svg.contains("<rect"));
    }

    #[test]
    fn writes_the_three_files() {
        let dir = std::env::temp_dir().join(format!("gateway-bench-test-{}", std::process::id()));
        let mut report = report();
        report.machine = Machine::detect(load_average());
        assert!(report.machine.cores >= 1);
        report.write(&dir).unwrap();
        for name in ["latest.json", "latest.md", "latest.svg"] {
            assert!(dir.join(name).metadata().unwrap().len() > 100, "{name}");
        }
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("latest.json")).unwrap()).unwrap();
        assert_eq!(json["throughput"][0]["ratios"][0]["met"], false);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn flow_labels() {
        assert_eq!(flows_label(1), "1");
        assert_eq!(flows_label(1024), "1k");
        assert_eq!(flows_label(65536), "64k");
        assert_eq!(flows_label(1 << 20), "1M");
    }
}
