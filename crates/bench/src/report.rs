//! Results: per-operation throughput and latency percentiles, a human table, JSON and an SVG
//! plot (throughput over time and the latency histogram).

use crate::run::{Op, Outcome, Params, Tick};
use crate::units::human_bytes;
use anyhow::{Context, Result};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct OpStats {
    pub count: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub mib_per_sec: f64,
    pub bytes: u64,
    /// Milliseconds, successful and failed operations alike.
    pub latency_ms: Latency,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub params: Params,
    pub duration_secs: f64,
    pub operations: BTreeMap<Op, OpStats>,
    pub total: OpStats,
    pub errors_by_code: BTreeMap<String, u64>,
    pub timeline: Vec<Tick>,
    #[serde(skip)]
    pub latencies_us: HashMap<Op, Vec<u32>>,
}

fn pct(sorted: &[u32], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)] as f64 / 1000.0
}

fn stats(lat: &mut [u32], errors: u64, bytes: u64, secs: f64) -> OpStats {
    lat.sort_unstable();
    let n = lat.len() as u64;
    let mean = if n == 0 {
        0.0
    } else {
        lat.iter().map(|v| *v as f64).sum::<f64>() / n as f64 / 1000.0
    };
    OpStats {
        count: n,
        errors,
        ops_per_sec: n as f64 / secs,
        mib_per_sec: bytes as f64 / secs / (1024.0 * 1024.0),
        bytes,
        latency_ms: Latency {
            p50: pct(lat, 0.5),
            p90: pct(lat, 0.9),
            p99: pct(lat, 0.99),
            p999: pct(lat, 0.999),
            max: pct(lat, 1.0),
            mean,
        },
    }
}

pub fn build(params: Params, out: Outcome) -> Report {
    let secs = out.elapsed.as_secs_f64().max(1e-9);
    let mut by_op: HashMap<Op, (Vec<u32>, u64)> = HashMap::new();
    for s in &out.samples {
        let e = by_op.entry(s.op).or_default();
        e.0.push(s.micros);
        if !s.ok {
            e.1 += 1;
        }
    }
    let mut operations = BTreeMap::new();
    let mut latencies_us = HashMap::new();
    let mut all: Vec<u32> = out.samples.iter().map(|s| s.micros).collect();
    let mut total_errors = 0;
    for (op, (mut lat, errs)) in by_op {
        total_errors += errs;
        operations.insert(
            op,
            stats(&mut lat, errs, out.bytes.get(&op).copied().unwrap_or(0), secs),
        );
        latencies_us.insert(op, lat);
    }
    let total_bytes = out.bytes.values().sum();
    Report {
        tool: "ironbucket-bench",
        version: env!("CARGO_PKG_VERSION"),
        params,
        duration_secs: secs,
        operations,
        total: stats(&mut all, total_errors, total_bytes, secs),
        errors_by_code: out.errors.into_iter().collect(),
        timeline: out.timeline,
        latencies_us,
    }
}

pub fn table(r: &Report) -> String {
    let mut s = String::new();
    let p = &r.params;
    s.push_str(&format!(
        "ironbucket-bench {} mode={:?} size={} concurrency={} duration={:.1}s endpoints={}\n",
        r.version,
        p.mode,
        if p.size.min == p.size.max {
            human_bytes(p.size.min as f64)
        } else {
            format!("{}..{}", human_bytes(p.size.min as f64), human_bytes(p.size.max as f64))
        },
        p.concurrency,
        r.duration_secs,
        p.endpoints.join(",")
    ));
    s.push_str(&format!(
        "{:<10} {:>9} {:>7} {:>11} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "op", "count", "errors", "ops/s", "MiB/s", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
    ));
    let row = |name: &str, o: &crate::report::OpStats| {
        format!(
            "{:<10} {:>9} {:>7} {:>11.1} {:>10.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
            name,
            o.count,
            o.errors,
            o.ops_per_sec,
            o.mib_per_sec,
            o.latency_ms.p50,
            o.latency_ms.p90,
            o.latency_ms.p99,
            o.latency_ms.p999,
            o.latency_ms.max
        )
    };
    for (op, o) in &r.operations {
        s.push_str(&row(op.name(), o));
    }
    if r.operations.len() > 1 {
        s.push_str(&row("TOTAL", &r.total));
    }
    if !r.errors_by_code.is_empty() {
        s.push_str("errors by code:\n");
        for (c, n) in &r.errors_by_code {
            let share = 100.0 * *n as f64 / r.total.count.max(1) as f64;
            s.push_str(&format!("  {c}: {n} ({share:.1}%)\n"));
        }
    }
    s
}

pub fn write_json(r: &Report, path: &str) -> Result<()> {
    let text = serde_json::to_string_pretty(r)?;
    if path == "-" {
        println!("{text}");
    } else {
        std::fs::write(path, text + "\n").with_context(|| format!("cannot write {path}"))?;
    }
    Ok(())
}

/// Throughput over time (top) and the latency histogram of the busiest operation (bottom).
pub fn plot(r: &Report, path: &str) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1000, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (top, bottom) = root.split_vertically(380);
    let max_t = r.timeline.last().map(|t| t.t).unwrap_or(1.0).max(1.0);
    let max_ops = r.timeline.iter().map(|t| t.ops).max().unwrap_or(1).max(1) as f64 * 1.1;
    let title = format!(
        "{:?} {} x{}: ops/s over time",
        r.params.mode,
        human_bytes(r.params.size.max as f64),
        r.params.concurrency
    );
    let mut chart = ChartBuilder::on(&top)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..max_t, 0f64..max_ops)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc("ops/s")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut prev = 0.0;
    let pts: Vec<(f64, f64)> = r
        .timeline
        .iter()
        .map(|t| {
            let dt = (t.t - prev).max(1e-3);
            prev = t.t;
            (t.t, t.ops as f64 / dt)
        })
        .collect();
    chart
        .draw_series(LineSeries::new(pts, &BLUE))
        .map_err(|e| anyhow::anyhow!("{e}"))?;

    let Some((op, lat)) = r.latencies_us.iter().max_by_key(|(_, v)| v.len()) else {
        return root.present().map_err(|e| anyhow::anyhow!("{e}"));
    };
    let p999 = pct(lat, 0.999).max(0.01);
    let bins = 60usize;
    let width = p999 / bins as f64;
    let mut counts = vec![0u32; bins + 1];
    for v in lat {
        let ms = *v as f64 / 1000.0;
        let i = ((ms / width) as usize).min(bins);
        counts[i] += 1;
    }
    let max_c = *counts.iter().max().unwrap_or(&1) as f64 * 1.1;
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("{} latency histogram (ms, last bin = beyond p99.9)", op.name()),
            ("sans-serif", 20),
        )
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..(width * (bins + 1) as f64), 0f64..max_c)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("latency ms")
        .y_desc("requests")
        .draw()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, c)| {
            let x0 = i as f64 * width;
            Rectangle::new([(x0, 0.0), (x0 + width * 0.9, *c as f64)], BLUE.filled())
        }))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
