//! Plain-text tables: of traces, and the cells of the management commands'
//! tables.

use comfy_table::{presets, ColumnConstraint, Table, Width};
use serde_json::Value;

use crate::timefmt::format_rfc3339_ms;

pub const HEADERS: [&str; 10] = [
    "TIME",
    "TRACE_NAME",
    "SERVICE",
    "RESOURCE_TYPE",
    "RESOURCE_NAME",
    "USER",
    "RATING",
    "CODE",
    "SOURCE_IP",
    "TRACE_ID",
];

/// Column widths for output that streams (tail), where rows cannot be
/// measured in advance; wider cells just push the line out.
pub const STREAM_WIDTHS: [usize; 10] = [24, 20, 7, 14, 24, 16, 8, 4, 15, 36];

pub type Row = [String; 10];

/// A cell: strings bare, missing or empty values as `-`, others as JSON.
pub fn text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".to_string(),
        Some(Value::String(s)) if s.is_empty() => "-".to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// The cell of the value at JSON pointer `pointer`: as [`text`], but a
/// list of scalars as its items joined by `,`, and an integer `*_time` (ms
/// since the epoch, as every CTS time) as RFC 3339.
pub fn cell(pointer: &str, v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) if pointer.ends_with("_time") => match n.as_i64() {
            Some(ms) => format_rfc3339_ms(ms),
            None => n.to_string(),
        },
        Some(Value::Array(items)) if items.iter().all(|i| !i.is_array() && !i.is_object()) => {
            if items.is_empty() {
                "-".to_string()
            } else {
                items
                    .iter()
                    .map(|i| text(Some(i)))
                    .collect::<Vec<_>>()
                    .join(",")
            }
        }
        other => text(other),
    }
}

pub fn row(trace: &Value) -> Row {
    let field = |name: &str| text(trace.get(name));
    [
        trace
            .get("time")
            .and_then(Value::as_i64)
            .map(format_rfc3339_ms)
            .unwrap_or_else(|| field("time")),
        field("trace_name"),
        field("service_type"),
        field("resource_type"),
        field("resource_name"),
        text(trace.get("user").and_then(|u| u.get("name"))),
        field("trace_rating"),
        field("code"),
        field("source_ip"),
        field("trace_id"),
    ]
}

pub fn header_row() -> Row {
    HEADERS.map(str::to_string)
}

/// Cells left-aligned, two spaces apart, no borders, no trailing blanks;
/// `min_widths` pads columns whose rows cannot be measured in advance.
fn layout<R: AsRef<[String]>>(rows: &[R], min_widths: Option<&[usize]>) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    for r in rows {
        table.add_row(r.as_ref());
    }
    let columns = table.column_count();
    for (i, column) in table.column_iter_mut().enumerate() {
        let gap = if i + 1 < columns { 2 } else { 0 };
        column.set_padding((0, gap));
        if let Some(&w) = min_widths.and_then(|m| m.get(i)) {
            // The constraint counts the padding too.
            let total = u16::try_from(w).unwrap_or(u16::MAX).saturating_add(gap);
            column.set_constraint(ColumnConstraint::LowerBoundary(Width::Fixed(total)));
        }
    }
    table.trim_fmt()
}

/// One line of output that streams, padded to `widths`; wider cells push
/// the line out rather than being cut.
pub fn format_row(row: &[String], widths: &[usize]) -> String {
    layout(&[row], Some(widths))
}

/// Aligned lines of `rows`, each ending in a newline.
pub fn render_rows<R: AsRef<[String]>>(rows: &[R]) -> String {
    if rows.is_empty() {
        return String::new();
    }
    layout(rows, None) + "\n"
}

pub fn render(traces: &[Value]) -> String {
    let rows: Vec<Row> = std::iter::once(header_row())
        .chain(traces.iter().map(row))
        .collect();
    render_rows(&rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_aligned_columns() {
        let traces = vec![
            json!({
                "time": 1_700_000_000_123_i64, "trace_name": "createServer", "service_type": "ECS",
                "resource_type": "ecs", "resource_name": "web-01", "user": {"name": "alice"},
                "trace_rating": "normal", "code": "202", "source_ip": "10.0.0.1",
                "trace_id": "0f8fad5b-d9cb-469f-a165-70867728950e"
            }),
            json!({
                "time": 1_700_000_000_000_i64, "trace_name": "deleteVolume", "service_type": "EVS",
                "resource_type": "volume", "user": {"name": "bob"}, "trace_rating": "incident",
                "code": 500, "source_ip": "", "trace_id": "7c9e6679-7425-40de-944b-e07fc1f90ae7"
            }),
        ];
        let out = render(&traces);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(
            lines[0],
            "TIME                      TRACE_NAME    SERVICE  RESOURCE_TYPE  RESOURCE_NAME  USER   RATING    CODE  SOURCE_IP  TRACE_ID"
        );
        assert_eq!(
            lines[1],
            "2023-11-14T22:13:20.123Z  createServer  ECS      ecs            web-01         alice  normal    202   10.0.0.1   0f8fad5b-d9cb-469f-a165-70867728950e"
        );
        // Missing and empty values show as "-", numeric codes without quotes.
        assert_eq!(
            lines[2],
            "2023-11-14T22:13:20.000Z  deleteVolume  EVS      volume         -              bob    incident  500   -          7c9e6679-7425-40de-944b-e07fc1f90ae7"
        );
    }

    #[test]
    fn cells_join_lists_and_format_times() {
        let v = json!({"create_time": 1_700_000_000_123_i64, "events": ["READ", "WRITE"],
                       "none": [], "tags": [{"key": "a"}], "n": 3});
        let c = |p: &str| cell(p, v.pointer(p));
        assert_eq!(c("/create_time"), "2023-11-14T22:13:20.123Z");
        assert_eq!(c("/events"), "READ,WRITE");
        assert_eq!(c("/none"), "-");
        assert_eq!(c("/tags"), r#"[{"key":"a"}]"#);
        assert_eq!(c("/n"), "3");
        assert_eq!(c("/missing"), "-");
    }

    #[test]
    fn stream_widths_pad_but_never_cut() {
        let mut r = header_row();
        r[1] = "aVeryLongTraceNameThatDoesNotFit".into();
        let line = format_row(&r, &STREAM_WIDTHS);
        assert!(line.starts_with(&format!(
            "{:<24}  aVeryLongTraceNameThatDoesNotFit  SERVICE",
            "TIME"
        )));
        assert!(line.ends_with("SOURCE_IP        TRACE_ID"));
    }
}
