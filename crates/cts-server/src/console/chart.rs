//! Charts drawn on the server as inline SVG: no chart library, nothing to
//! run in the browser.

use std::fmt::Write;

/// One stacked series: its name, colour and a value per bucket.
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub values: Vec<u64>,
}

/// Colours of successive series (readable on white, distinct in grey).
pub const PALETTE: &[&str] = &[
    "#1f5fa8", "#e07b00", "#2e8b57", "#8e44ad", "#c0392b", "#7f8c8d",
];

/// Text for SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const W: u64 = 640;
const H: u64 = 200;
const LEFT: u64 = 40;
const BOTTOM: u64 = 24;

/// A stacked bar chart: one bar per bucket (`labels`), one colour per
/// series, with a legend. Each bar segment has a tooltip (`<title>`).
pub fn stacked_bars(title: &str, labels: &[String], series: &[Series]) -> String {
    let totals: Vec<u64> = (0..labels.len())
        .map(|i| {
            series
                .iter()
                .map(|s| s.values.get(i).copied().unwrap_or(0))
                .sum()
        })
        .collect();
    let max = totals.iter().copied().max().unwrap_or(0).max(1);
    let plot_h = H - BOTTOM - 8;
    let n = labels.len().max(1) as u64;
    let slot = (W - LEFT) / n;
    let bar = (slot * 4 / 5).max(1);
    let mut out = String::new();
    let _ = write!(
        out,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" role="img" aria-label="{}" preserveAspectRatio="none"><title>{}</title>"#,
        esc(title),
        esc(title)
    );
    // The axis: zero and the maximum.
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" y1="{y0}" x2="{W}" y2="{y0}" stroke="#999"/><text x="{tx}" y="{y0}" font-size="10" text-anchor="end">0</text><text x="{tx}" y="14" font-size="10" text-anchor="end">{max}</text>"##,
        y0 = H - BOTTOM,
        tx = LEFT - 4,
    );
    for (i, label) in labels.iter().enumerate() {
        let x = LEFT + i as u64 * slot + (slot - bar) / 2;
        let mut y = H - BOTTOM;
        for s in series {
            let v = s.values.get(i).copied().unwrap_or(0);
            if v == 0 {
                continue;
            }
            let h = (v * plot_h).div_ceil(max);
            y -= h;
            let _ = write!(
                out,
                r#"<rect x="{x}" y="{y}" width="{bar}" height="{h}" fill="{}"><title>{} · {}: {v}</title></rect>"#,
                s.color,
                esc(label),
                esc(&s.name)
            );
        }
    }
    // Time labels: first, middle and last bucket.
    let last = labels.len().saturating_sub(1);
    for i in [0, last / 2, last] {
        if let Some(label) = labels.get(i) {
            let x = LEFT + i as u64 * slot + slot / 2;
            let anchor = if i == 0 {
                "start"
            } else if i == last {
                "end"
            } else {
                "middle"
            };
            let _ = write!(
                out,
                r#"<text x="{x}" y="{}" font-size="10" text-anchor="{anchor}">{}</text>"#,
                H - 8,
                esc(label)
            );
        }
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_stack_and_names_are_escaped() {
        let labels = vec!["07:00".to_string(), "08:00".to_string()];
        let series = vec![
            Series {
                name: "<ECS>".into(),
                color: PALETTE[0],
                values: vec![2, 0],
            },
            Series {
                name: "OBS".into(),
                color: PALETTE[1],
                values: vec![2, 1],
            },
        ];
        let svg = stacked_bars("Operations \"by\" service", &labels, &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(!svg.contains("<ECS>"), "{svg}");
        assert!(svg.contains("&lt;ECS&gt;"));
        assert!(svg.contains("aria-label=\"Operations &quot;by&quot; service\""));
        // The tallest bar (4) fills the plot; zero values draw nothing.
        assert_eq!(svg.matches("<rect").count(), 3);
        assert_eq!(svg.matches(r#"height="84""#).count(), 2, "{svg}");
        assert!(svg.contains(r#"y="8" width"#), "{svg}");
    }
}
