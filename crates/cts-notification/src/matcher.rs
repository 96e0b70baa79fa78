//! Enabled rules compiled per project into hash lookups, so that a trace
//! costs a few lookups whatever the number of rules: the rules of its
//! (service, resource type, trace name) and the `complete` rules are the
//! only candidates; each candidate then checks its user set (a hash
//! lookup) and its filter (at most six comparisons).

use std::sync::Arc;

use foldhash::fast::RandomState;
use hashbrown::{HashMap, HashSet};

use crate::facts::TraceFacts;
use crate::filter::Filter;
use crate::model::{Notification, OperationType};

type Map<K, V> = HashMap<K, V, RandomState>;

/// One rule, ready to test traces.
#[derive(Debug)]
pub struct CompiledRule {
    pub notification: Arc<Notification>,
    /// Traces recorded before it are not this rule's (see [`Notification::since`]).
    since: i64,
    /// Ids and names of the users whose traces fire; `None`: every user.
    users: Option<HashSet<String, RandomState>>,
    filter: Option<Filter>,
}

impl CompiledRule {
    fn of(n: Notification, respect_since: bool) -> CompiledRule {
        let users = (!n.users.is_empty()).then(|| {
            n.users
                .iter()
                .flat_map(|u| [u.id.clone(), u.name.clone()])
                .collect()
        });
        CompiledRule {
            since: if respect_since {
                n.since.unwrap_or(n.create_time)
            } else {
                i64::MIN
            },
            users,
            filter: n.filter.clone(),
            notification: Arc::new(n),
        }
    }

    /// Whether the trace fires this rule, its operation aside.
    fn admits(&self, t: &TraceFacts<'_>) -> bool {
        t.record_time >= self.since
            && self.users.as_ref().is_none_or(|users| {
                let known = |v: &Option<std::borrow::Cow<'_, str>>| {
                    v.as_deref().is_some_and(|v| users.contains(v))
                };
                known(&t.user.id) || known(&t.user.name)
            })
            && self.filter.as_ref().is_none_or(|f| f.passes(t))
    }
}

/// The rules of one project.
#[derive(Debug, Default)]
struct ProjectRules {
    rules: Vec<CompiledRule>,
    complete: Vec<usize>,
    /// service → resource type → trace name → rules.
    by_operation: Map<String, Map<String, Map<String, Vec<usize>>>>,
}

impl ProjectRules {
    fn add(&mut self, rule: CompiledRule) {
        let i = self.rules.len();
        let n = &rule.notification;
        match n.operation_type {
            OperationType::Complete => self.complete.push(i),
            OperationType::Customized => {
                for op in &n.operations {
                    let names = self
                        .by_operation
                        .entry(op.service_type.clone())
                        .or_default()
                        .entry(op.resource_type.clone())
                        .or_default();
                    for name in &op.trace_names {
                        let rules = names.entry(name.clone()).or_default();
                        // An operation listed twice fires once.
                        if rules.last() != Some(&i) {
                            rules.push(i);
                        }
                    }
                }
            }
        }
        self.rules.push(rule);
    }

    fn candidates<'s>(&'s self, t: &TraceFacts<'_>) -> impl Iterator<Item = &'s CompiledRule> {
        let listed = self
            .by_operation
            .get(&*t.service_type)
            .and_then(|r| r.get(&*t.resource_type))
            .and_then(|n| n.get(&*t.trace_name))
            .map(Vec::as_slice)
            .unwrap_or_default();
        self.complete.iter().chain(listed).map(|&i| &self.rules[i])
    }
}

/// The rules of every project, compiled.
#[derive(Debug, Default)]
pub struct Matcher {
    projects: Map<String, ProjectRules>,
}

impl Matcher {
    /// Compiles the active notifications (enabled, with a topic) among
    /// `notifications`; each applies to traces recorded at or after its
    /// `since`.
    pub fn compile(notifications: impl IntoIterator<Item = Notification>) -> Matcher {
        Matcher::build(
            notifications.into_iter().filter(Notification::is_active),
            true,
        )
    }

    /// One rule whatever its status and `since`: what a dry run evaluates.
    pub fn single(notification: Notification) -> Matcher {
        Matcher::build(std::iter::once(notification), false)
    }

    fn build(notifications: impl Iterator<Item = Notification>, respect_since: bool) -> Matcher {
        let mut m = Matcher::default();
        for n in notifications {
            m.projects
                .entry(n.project_id.clone())
                .or_default()
                .add(CompiledRule::of(n, respect_since));
        }
        m
    }

    /// Number of compiled rules.
    pub fn len(&self) -> usize {
        self.projects.values().map(|p| p.rules.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }

    /// The newest `since` of the rules, and the oldest one after
    /// `applied`: where a consumer that placed its cursor for `applied`
    /// must evaluate again from.
    pub fn sinces(&self, applied: i64) -> (Option<i64>, Option<i64>) {
        let all = || {
            self.projects
                .values()
                .flat_map(|p| &p.rules)
                .map(|r| r.since)
        };
        (all().max(), all().filter(|s| *s > applied).min())
    }

    /// Appends the notifications the trace fires to `fired`.
    pub fn fire<'s>(&'s self, t: &TraceFacts<'_>, fired: &mut Vec<&'s Arc<Notification>>) {
        let Some(p) = self.projects.get(&*t.project_id) else {
            return;
        };
        fired.extend(
            p.candidates(t)
                .filter(|r| r.admits(t))
                .map(|r| &r.notification),
        );
    }
}

#[cfg(test)]
mod tests;
