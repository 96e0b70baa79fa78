//! The soak's samples as a table (stdout, `soak.md`, `soak.csv`) and a
//! plot (`soak.svg`, hand-written: one panel per figure over time).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;

/// One sample: the state at `at_s`, rates and latencies since the last one.
pub struct Sample {
    pub at_s: f64,
    pub rss_mib: f64,
    /// What ctsd says two of its in-memory structures hold (the index's
    /// summaries and samples, the query frame cache): the part of RSS
    /// that is data, not allocator or buffers.
    pub index_memory_mib: f64,
    pub frame_cache_mib: f64,
    pub open_files: usize,
    pub segments: f64,
    pub query_p50_ms: f64,
    pub query_p99_ms: f64,
    pub queries: usize,
    pub ingest_rate: f64,
    pub transfer_backlog: f64,
}

pub struct Summary {
    pub duration: Duration,
    pub rate: f64,
    pub acked: u64,
    pub failed: u64,
    pub transfer_period: Duration,
}

const COLUMNS: [&str; 11] = [
    "time_s",
    "rss_mib",
    "index_memory_mib",
    "frame_cache_mib",
    "open_files",
    "segments",
    "query_p50_ms",
    "query_p99_ms",
    "queries",
    "ingest_traces_per_s",
    "transfer_backlog_traces",
];

impl Sample {
    fn cells(&self) -> [String; 11] {
        [
            format!("{:.0}", self.at_s),
            format!("{:.1}", self.rss_mib),
            format!("{:.1}", self.index_memory_mib),
            format!("{:.1}", self.frame_cache_mib),
            self.open_files.to_string(),
            format!("{:.0}", self.segments),
            format!("{:.2}", self.query_p50_ms),
            format!("{:.2}", self.query_p99_ms),
            self.queries.to_string(),
            format!("{:.0}", self.ingest_rate),
            format!("{:.0}", self.transfer_backlog),
        ]
    }
}

fn row(cells: &[String]) -> String {
    cells
        .iter()
        .zip(COLUMNS)
        .map(|(c, name)| format!("{c:>w$}", w = name.len()))
        .collect::<Vec<_>>()
        .join("  ")
}

pub fn print_header() {
    println!("{}", COLUMNS.join("  "));
}

pub fn print_row(s: &Sample) {
    println!("{}", row(&s.cells()));
}

/// Writes `soak.csv`, `soak.md` and `soak.svg` into `dir`.
pub fn write(dir: &Path, summary: &Summary, samples: &[Sample]) -> Result<Vec<PathBuf>> {
    let files = [
        ("soak.csv", csv(samples)),
        ("soak.md", markdown(summary, samples)),
        ("soak.svg", svg(samples)),
    ];
    let mut written = Vec::new();
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text)?;
        written.push(path);
    }
    Ok(written)
}

fn csv(samples: &[Sample]) -> String {
    let mut out = COLUMNS.join(",") + "\n";
    for s in samples {
        out += &(s.cells().join(",") + "\n");
    }
    out
}

/// First, last and highest value of a figure: flat means last ≈ first.
fn spread(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> (f64, f64, f64) {
    let first = samples.first().map(&f).unwrap_or(0.0);
    let last = samples.last().map(&f).unwrap_or(0.0);
    let max = samples.iter().map(&f).fold(0.0, f64::max);
    (first, last, max)
}

fn markdown(summary: &Summary, samples: &[Sample]) -> String {
    let mut out = String::from("# Soak run\n\n");
    let _ = writeln!(
        out,
        "{} at {:.0} traces/s ({} acknowledged, {} batches refused or lost), ListTraces \
         (page of 200, one filter) all the while, transfer period {}.\n",
        humantime::format_duration(summary.duration),
        summary.rate,
        summary.acked,
        summary.failed,
        humantime::format_duration(summary.transfer_period),
    );
    out += "| figure | first | last | max |\n|---|---:|---:|---:|\n";
    let figures: [(&str, Figure); 6] = [
        ("RSS (MiB)", |s| s.rss_mib),
        ("index summaries and samples (MiB)", |s| s.index_memory_mib),
        ("query frame cache (MiB)", |s| s.frame_cache_mib),
        ("open files", |s| s.open_files as f64),
        ("index segments", |s| s.segments),
        ("query p99 (ms)", |s| s.query_p99_ms),
    ];
    for (name, f) in figures {
        let (first, last, max) = spread(samples, f);
        let _ = writeln!(out, "| {name} | {first:.1} | {last:.1} | {max:.1} |");
    }
    let _ = writeln!(out, "\n| {} |", COLUMNS.join(" | "));
    let _ = writeln!(out, "|{}", "---:|".repeat(COLUMNS.len()));
    for s in samples {
        let _ = writeln!(out, "| {} |", s.cells().join(" | "));
    }
    out
}

const WIDTH: f64 = 760.0;
const PANEL: f64 = 120.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const GAP: f64 = 36.0;

/// Reads one figure of a sample.
type Figure = fn(&Sample) -> f64;

struct Series<'a> {
    label: &'a str,
    color: &'a str,
    value: Figure,
}

/// One panel per figure, time on the x axis, each y axis from 0 to the
/// figure's maximum.
fn svg(samples: &[Sample]) -> String {
    let panels: [(&str, Vec<Series>); 6] = [
        (
            "memory (MiB)",
            vec![
                series("rss", "#1f77b4", |s| s.rss_mib),
                series("index", "#bcbd22", |s| s.index_memory_mib),
                series("frame cache", "#7f7f7f", |s| s.frame_cache_mib),
            ],
        ),
        (
            "open files",
            vec![series("fds", "#ff7f0e", |s| s.open_files as f64)],
        ),
        (
            "index segments",
            vec![series("segments", "#2ca02c", |s| s.segments)],
        ),
        (
            "ListTraces latency (ms)",
            vec![
                series("p99", "#d62728", |s| s.query_p99_ms),
                series("p50", "#9467bd", |s| s.query_p50_ms),
            ],
        ),
        (
            "ingest (traces/s)",
            vec![series("rate", "#8c564b", |s| s.ingest_rate)],
        ),
        (
            "transfer backlog (traces)",
            vec![series("backlog", "#17becf", |s| s.transfer_backlog)],
        ),
    ];
    let height = panels.len() as f64 * (PANEL + GAP) + GAP;
    let t_max = samples.iter().map(|s| s.at_s).fold(1.0, f64::max);
    let x = |t: f64| LEFT + (WIDTH - LEFT - RIGHT) * t / t_max;
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
    );
    for (i, (title, series)) in panels.iter().enumerate() {
        let top = GAP + i as f64 * (PANEL + GAP);
        let bottom = top + PANEL;
        let max = series
            .iter()
            .flat_map(|s| samples.iter().map(s.value))
            .fold(0.0, f64::max);
        let y_max = if max > 0.0 { max * 1.1 } else { 1.0 };
        let y = |v: f64| bottom - PANEL * v / y_max;
        let _ = writeln!(
            out,
            "<text x=\"{LEFT}\" y=\"{:.1}\" font-weight=\"bold\">{title}</text>\n\
             <line x1=\"{LEFT}\" y1=\"{bottom:.1}\" x2=\"{:.1}\" y2=\"{bottom:.1}\" stroke=\"#888\"/>\n\
             <line x1=\"{LEFT}\" y1=\"{top:.1}\" x2=\"{LEFT}\" y2=\"{bottom:.1}\" stroke=\"#888\"/>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n\
             <text x=\"{:.1}\" y=\"{bottom:.1}\" text-anchor=\"end\">0</text>\n\
             <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{:.0} s</text>",
            top - 6.0,
            WIDTH - RIGHT,
            LEFT - 4.0,
            top + 10.0,
            number(y_max),
            LEFT - 4.0,
            WIDTH - RIGHT,
            bottom + 14.0,
            t_max,
        );
        for (k, s) in series.iter().enumerate() {
            let points: Vec<String> = samples
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.at_s), y((s.value)(p))))
                .collect();
            let _ = writeln!(
                out,
                "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.5\" points=\"{}\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\" fill=\"{}\" text-anchor=\"end\">{}</text>",
                s.color,
                points.join(" "),
                WIDTH - RIGHT - 40.0 * k as f64,
                top - 6.0,
                s.color,
                s.label,
            );
        }
    }
    out += "</svg>\n";
    out
}

fn series<'a>(label: &'a str, color: &'a str, value: Figure) -> Series<'a> {
    Series {
        label,
        color,
        value,
    }
}

/// An axis label: short, without needless decimals.
fn number(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_s: f64, rss: f64) -> Sample {
        Sample {
            at_s,
            rss_mib: rss,
            index_memory_mib: 20.0,
            frame_cache_mib: 8.0,
            open_files: 40,
            segments: 3.0,
            query_p50_ms: 1.5,
            query_p99_ms: 7.25,
            queries: 100,
            ingest_rate: 5000.0,
            transfer_backlog: 1200.0,
        }
    }

    #[test]
    fn writes_table_and_plot() {
        let dir = tempfile::tempdir().unwrap();
        let samples = [
            sample(60.0, 100.0),
            sample(120.0, 130.0),
            sample(180.0, 110.0),
        ];
        let summary = Summary {
            duration: Duration::from_secs(180),
            rate: 5000.0,
            acked: 900_000,
            failed: 0,
            transfer_period: Duration::from_secs(60),
        };
        let files = write(dir.path(), &summary, &samples).unwrap();
        assert_eq!(files.len(), 3);
        let csv = std::fs::read_to_string(dir.path().join("soak.csv")).unwrap();
        assert_eq!(csv.lines().count(), 4);
        assert!(
            csv.starts_with("time_s,rss_mib,index_memory_mib,frame_cache_mib,open_files,"),
            "{csv}"
        );
        assert!(
            csv.contains("\n120,130.0,20.0,8.0,40,3,1.50,7.25,100,5000,1200\n"),
            "{csv}"
        );
        let md = std::fs::read_to_string(dir.path().join("soak.md")).unwrap();
        assert!(md.contains("| RSS (MiB) | 100.0 | 110.0 | 130.0 |"), "{md}");
        assert!(
            md.contains("3m at 5000 traces/s (900000 acknowledged"),
            "{md}"
        );
        let svg = std::fs::read_to_string(dir.path().join("soak.svg")).unwrap();
        assert!(svg.starts_with("<svg ") && svg.ends_with("</svg>\n"));
        // Six panels; memory has three lines, latency two.
        assert_eq!(svg.matches("<polyline").count(), 9);
        // The highest RSS sample touches the panel's top less its headroom;
        // the last sample sits at the right edge.
        assert!(svg.contains(&format!("{:.1},", WIDTH - RIGHT)), "{svg}");
    }
}
