//! `cts-bench --notifications N`: sustained matching throughput of the
//! notification matcher, in process: N generated traces, stored the way
//! ctsd stores them (through the report rules), each read from its JSON
//! and evaluated against 100 rules of its project (60 customized on the
//! generator's operations, 20 of them for a user list, 20 complete with
//! AND/OR filters, 20 of another project), as the journal consumer does.

use std::time::Instant;

use anyhow::{Context, Result};
use cts_notification::{
    Condition, Filter, FilterRule, Matcher, Notification, NotifyUsers, Operation, OperationType,
    ResolvedUser, Status, TraceFacts,
};
use serde_json::json;

use crate::gen::{self, Generator};
use crate::now_ms;

const PROJECT: &str = "bench";
/// The target.
const TARGET_PER_SEC: f64 = 50_000.0;

fn rule(i: usize, project: &str, kind: OperationType) -> Notification {
    Notification {
        notification_id: format!("n{i}"),
        project_id: project.into(),
        domain_id: "d".into(),
        notification_name: format!("rule_{i}"),
        operation_type: kind,
        operations: Vec::new(),
        notify_user_list: Vec::new(),
        users: Vec::new(),
        topic_id: Some(format!("urn:smn:r:{project}:t{i}")),
        filter: None,
        status: Status::Enabled,
        create_time: 0,
        since: Some(0),
    }
}

fn filter(condition: Condition, rules: &[&str]) -> Result<Filter> {
    let rules = rules
        .iter()
        .map(|r| FilterRule::parse(r).map_err(anyhow::Error::msg))
        .collect::<Result<_>>()?;
    Ok(Filter {
        condition,
        is_support_filter: true,
        rules,
    })
}

/// 100 rules over the generator's operations and users.
fn rules(g: &Generator) -> Result<Vec<Notification>> {
    let mut out = Vec::new();
    for i in 0..60 {
        let m = &g.fragments[(i * 7) % g.fragments.len()].meta;
        let mut n = rule(i, PROJECT, OperationType::Customized);
        n.operations = vec![Operation {
            service_type: m.service.into(),
            resource_type: m.resource_type.into(),
            trace_names: vec![m.trace_name.into(), format!("other{i}")],
        }];
        if i % 3 == 0 {
            let names: Vec<String> = g.users.iter().take(5).map(|u| u.name.clone()).collect();
            n.users = names
                .iter()
                .map(|name| ResolvedUser {
                    id: format!("id-{name}"),
                    name: name.clone(),
                })
                .collect();
            n.notify_user_list = vec![NotifyUsers {
                user_group: "ops".into(),
                user_list: names,
            }];
        }
        out.push(n);
    }
    for i in 60..80 {
        let mut n = rule(i, PROJECT, OperationType::Complete);
        n.filter = Some(if i % 2 == 0 {
            filter(
                Condition::And,
                &[
                    "trace_rating != normal",
                    "code != 200",
                    "trace_type = ApiCall",
                ],
            )?
        } else {
            filter(
                Condition::Or,
                &["resource_name = nothing", "api_version = v9", "code = 503"],
            )?
        });
        out.push(n);
    }
    out.extend((80..100).map(|i| rule(i, "elsewhere", OperationType::Complete)));
    Ok(out)
}

/// `n` traces as ctsd stores them.
fn stored(g: &Generator, n: u64) -> Result<Vec<Vec<u8>>> {
    let now = now_ms();
    let mut docs = Vec::with_capacity(n as usize);
    for k in 0..n {
        docs.extend(
            g.recorded(k..k + 1, PROJECT, now)?
                .iter()
                .map(|t| t.to_json()),
        );
    }
    Ok(docs)
}

pub fn run(n: u64, seed: u64) -> Result<()> {
    let g = Generator::new(&gen::Config {
        seed,
        ..gen::Config::default()
    });
    let rules = rules(&g)?;
    let count = rules.len();
    let matcher = Matcher::compile(rules);
    let docs = stored(&g, n).context("generating the traces")?;
    let mut fired = Vec::new();
    let (mut matched, mut messages) = (0u64, 0u64);
    let t0 = Instant::now();
    for doc in &docs {
        let facts = TraceFacts::read(doc)?;
        fired.clear();
        matcher.fire(&facts, &mut fired);
        matched += u64::from(!fired.is_empty());
        messages += fired.len() as u64;
    }
    let secs = t0.elapsed().as_secs_f64();
    let per_sec = n as f64 / secs;
    let result = json!({
        "traces": n,
        "rules": count,
        "traces_per_sec": per_sec.round(),
        "us_per_trace": (secs * 1e6 / n as f64 * 100.0).round() / 100.0,
        "ns_per_trace_per_rule": (secs * 1e9 / n as f64 / count as f64 * 10.0).round() / 10.0,
        "traces_matched": matched,
        "messages": messages,
        "target_traces_per_sec": TARGET_PER_SEC,
        "meets_target": per_sec >= TARGET_PER_SEC,
    });
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
