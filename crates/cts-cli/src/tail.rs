//! `cts traces tail`: polls a trailing time window and prints what it has
//! not shown yet.
//!
//! A trace may be reported after newer ones (its `time` is when the
//! operation happened, not when it arrived), so each poll reads the whole
//! window rather than "everything since the newest seen", and the ids seen
//! in the window are remembered so that nothing prints twice.

use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use serde_json::Value;

use crate::client::{Client, ServerError};
use crate::table;
use crate::timefmt::now_ms;
use crate::{Output, TailArgs};

/// Traces stamped slightly ahead of this host's clock (clock skew between
/// reporters and us) must not be missed.
const SKEW_MS: i64 = 60_000;

struct Seen {
    /// trace id → time, pruned once the time leaves the window.
    ids: HashMap<String, i64>,
}

impl Seen {
    /// The traces not seen before, oldest first; they become seen.
    fn take_new(&mut self, traces: Vec<Value>) -> Vec<Value> {
        let mut fresh: Vec<(i64, String, Value)> = traces
            .into_iter()
            .filter_map(|t| {
                let id = t.get("trace_id")?.as_str()?.to_string();
                let time = t.get("time").and_then(Value::as_i64).unwrap_or(0);
                Some((time, id, t))
            })
            .filter(|(time, id, _)| self.ids.insert(id.clone(), *time).is_none())
            .collect();
        fresh.sort_by(|a, b| (a.0, &a.1).cmp(&(b.0, &b.1)));
        fresh.into_iter().map(|(_, _, t)| t).collect()
    }

    /// Forgets ids older than the window: the next polls cannot return them.
    fn prune(&mut self, from: i64) {
        self.ids.retain(|_, time| *time > from);
    }
}

fn poll(
    client: &Client,
    project: &str,
    filters: &[(&'static str, String)],
    window_ms: i64,
) -> Result<(Vec<Value>, i64)> {
    let now = now_ms();
    let from = now - window_ms;
    let mut params = filters.to_vec();
    params.push(("from", from.to_string()));
    params.push(("to", (now + SKEW_MS).to_string()));
    params.push(("limit", crate::MAX_PAGE.to_string()));
    let mut traces = Vec::new();
    client.list_all(project, &params, |page| traces.extend(page.traces))?;
    Ok((traces, from))
}

pub fn run(client: &Client, project: &str, args: &TailArgs, output: Output) -> Result<()> {
    let filters = args.filters.params();
    let window_ms = args.window.as_millis() as i64;
    let mut seen = Seen {
        ids: HashMap::new(),
    };

    // What is already there is history, not news: remember it, print nothing.
    let (existing, _) = poll(client, project, &filters, window_ms)?;
    seen.take_new(existing);
    eprintln!(
        "following traces (polling every {:?}, late arrivals up to {:?}); Ctrl-C to stop",
        args.interval, args.window
    );

    let mut out = std::io::stdout().lock();
    if let Output::Table = output {
        writeln!(
            out,
            "{}",
            table::format_row(&table::header_row(), &table::STREAM_WIDTHS)
        )?;
        out.flush()?;
    }
    loop {
        std::thread::sleep(args.interval);
        let (traces, from) = match poll(client, project, &filters, window_ms) {
            Ok(r) => r,
            // A refused query will be refused again: give up.
            Err(e)
                if e.downcast_ref::<ServerError>()
                    .is_some_and(|s| s.status < 500) =>
            {
                return Err(e)
            }
            // A restarting or overloaded server: say so and keep following.
            Err(e) => {
                eprintln!("warning: {e:#}");
                continue;
            }
        };
        for t in seen.take_new(traces) {
            match output {
                Output::Json => writeln!(out, "{t}")?,
                Output::Table => writeln!(
                    out,
                    "{}",
                    table::format_row(&table::row(&t), &table::STREAM_WIDTHS)
                )?,
            }
        }
        out.flush()?;
        seen.prune(from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn new_traces_once_oldest_first() {
        let mut seen = Seen {
            ids: HashMap::new(),
        };
        let t = |id: &str, time: i64| json!({"trace_id": id, "time": time});
        let first = seen.take_new(vec![t("b", 20), t("a", 10)]);
        assert_eq!(first, vec![t("a", 10), t("b", 20)]);
        // A late arrival with an older time still shows, the others do not.
        let second = seen.take_new(vec![t("c", 30), t("b", 20), t("late", 5), t("a", 10)]);
        assert_eq!(second, vec![t("late", 5), t("c", 30)]);
        seen.prune(10);
        assert_eq!(seen.ids.len(), 2);
        assert!(seen.take_new(vec![t("c", 30)]).is_empty());
    }
}
