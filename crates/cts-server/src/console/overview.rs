//! The overview: what an auditor looks at first. Operations over time by
//! service and by rating for the chosen range, and the most active users
//! and resources, counted from the project's management traces (the
//! newest [`OVERVIEW_MAX`] of the range).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::Value;

use super::chart::{stacked_bars, Series, PALETTE};
use super::traces::{collect, Filters};
use super::view::{html, time_utc, Chrome};
use super::{allowed, PageError, Signed};
use crate::auth::Permission;
use crate::state::{now_ms, AppState};

/// Traces one overview counts at most.
pub const OVERVIEW_MAX: usize = 5_000;
/// Bars per chart.
const BUCKETS: i64 = 24;
/// Services (and users, resources) shown by name; the rest are "other".
const TOP: usize = 5;
const TOP_LIST: usize = 10;

/// One entry of a "most active" list.
pub struct Count {
    pub name: String,
    /// The Trace List filtered to it.
    pub link: String,
    pub count: u64,
    /// Width of its bar, in percent of the largest.
    pub width: u64,
}

#[derive(Template)]
#[template(path = "console/overview.html")]
struct OverviewPage {
    chrome: Chrome,
    range: String,
    total: usize,
    truncated: bool,
    by_service: String,
    by_rating: String,
    users: Vec<Count>,
    resources: Vec<Count>,
}

#[derive(serde::Deserialize)]
pub struct RangeParam {
    range: Option<String>,
}

/// `GET /console` (`?range=hour|day|week`).
pub async fn show(
    State(state): State<AppState>,
    Extension(s): Extension<Signed>,
    Query(q): Query<RangeParam>,
) -> Result<Response, PageError> {
    allowed(&state, &s, Permission::CtsRead).await?;
    let range = match q.range.as_deref() {
        Some(r @ ("hour" | "week")) => r.to_string(),
        _ => "day".to_string(),
    };
    let f = Filters::of(&[("range".to_string(), range.clone())]);
    let now = now_ms();
    let (from, to) = f.window(now)?;
    let (docs, truncated) = collect(&state, s.project(), &f, now, OVERVIEW_MAX).await?;
    let step = ((to - from) / BUCKETS).max(1);
    let labels: Vec<String> = (0..BUCKETS)
        .map(|i| {
            let t = time_utc(from + i * step);
            if range == "week" {
                t[5..16].to_string()
            } else {
                t[11..16].to_string()
            }
        })
        .collect();
    let bucket = |doc: &Value| {
        let t = doc.get("time").and_then(Value::as_i64).unwrap_or(from);
        (((t - from) / step).clamp(0, BUCKETS - 1)) as usize
    };
    let field = |doc: &Value, k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let services = top(docs.iter().map(|d| field(d, "service_type")), TOP);
    let by_service = series_of(&docs, &services, &bucket, |d| field(d, "service_type"));
    let ratings: Vec<(String, u64)> = ["normal", "warning", "incident"]
        .iter()
        .map(|r| (r.to_string(), 0))
        .collect();
    let mut by_rating = series_of(&docs, &ratings, &bucket, |d| field(d, "trace_rating"));
    // Ratings in the colours people expect.
    for (s, c) in by_rating.iter_mut().zip(["#2e8b57", "#e0a800", "#c0392b"]) {
        s.color = c;
    }
    let base = format!("/console/traces?{}", f.query_string());
    let link = |k: &str, v: &str| {
        format!(
            "{base}&{}",
            serde_urlencoded::to_string([(k, v)]).unwrap_or_default()
        )
    };
    let users = counts(
        top(
            docs.iter()
                .map(|d| d.get("user").map(|u| field(u, "name")).unwrap_or_default()),
            TOP_LIST,
        ),
        |n| link("user", n),
    );
    let resources = counts(
        top(docs.iter().map(|d| field(d, "resource_name")), TOP_LIST),
        |n| link("resource_name", n),
    );
    let page = OverviewPage {
        chrome: Chrome::of(&s, "Overview", "overview", false),
        total: docs.len(),
        truncated,
        by_service: stacked_bars("Operations by service", &labels, &by_service),
        by_rating: stacked_bars("Operations by rating", &labels, &by_rating),
        users,
        resources,
        range,
    };
    Ok(html(&page).into_response())
}

/// The `n` most frequent non-empty values, most frequent first (ties by
/// name, so the page is stable).
fn top(values: impl Iterator<Item = String>, n: usize) -> Vec<(String, u64)> {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for v in values.filter(|v| !v.is_empty()) {
        *counts.entry(v).or_default() += 1;
    }
    let mut v: Vec<(String, u64)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// One series per name of `names` and one "other" for the rest.
fn series_of(
    docs: &[Value],
    names: &[(String, u64)],
    bucket: &dyn Fn(&Value) -> usize,
    key: impl Fn(&Value) -> String,
) -> Vec<Series> {
    let mut series: Vec<Series> = names
        .iter()
        .zip(PALETTE)
        .map(|((n, _), c)| Series {
            name: n.clone(),
            color: c,
            values: vec![0; BUCKETS as usize],
        })
        .collect();
    let mut other = Series {
        name: "other".into(),
        color: PALETTE[PALETTE.len() - 1],
        values: vec![0; BUCKETS as usize],
    };
    for d in docs {
        let k = key(d);
        let s = series
            .iter_mut()
            .find(|s| s.name == k)
            .unwrap_or(&mut other);
        s.values[bucket(d)] += 1;
    }
    if other.values.iter().any(|v| *v > 0) {
        series.push(other);
    }
    series
}

fn counts(top: Vec<(String, u64)>, link: impl Fn(&str) -> String) -> Vec<Count> {
    let max = top.first().map_or(1, |t| t.1.max(1));
    top.into_iter()
        .map(|(name, count)| Count {
            link: link(&name),
            width: count * 100 / max,
            name,
            count,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn most_active_first_then_by_name() {
        let v = ["b", "a", "b", "", "c", "a", "b"].map(String::from);
        let t = top(v.into_iter(), 2);
        assert_eq!(t, vec![("b".to_string(), 3), ("a".to_string(), 2)]);
        let c = counts(t, |n| format!("/x?{n}"));
        assert_eq!(
            (c[0].width, c[1].width, c[1].link.as_str()),
            (100, 66, "/x?a")
        );
    }
}
