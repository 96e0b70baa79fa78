//! The ListTraces workload: which queries, and timing them one at a time
//! (a single client, so latency is service time, not queueing).

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::auth::{with_query, Auth};
use crate::gen::{self, Generator, TraceValues};
use crate::load::project_for_batch;
use crate::stats::{median, ms, percentile};

pub const LIMIT: usize = 200;

#[derive(Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// One filter: target p99 ≤ 10 ms.
    Single,
    /// Several filters, or nothing matching: target p99 ≤ 50 ms.
    Worst,
    /// Consecutive pages following markers: held to the single-filter target.
    Paging,
}

pub struct Query {
    pub filters: Vec<(&'static str, String)>,
    pub from: i64,
    pub to: i64,
    pub pages: usize,
}

pub struct Kind {
    pub name: String,
    pub class: Class,
    pub queries: Vec<Query>,
}

pub struct Page {
    pub count: usize,
    pub next: Option<String>,
}

/// A store that answers ListTraces pages; returns the time the page took.
pub trait Target {
    fn page(&mut self, q: &Query, next: Option<&str>) -> Result<(Duration, Page)>;

    /// CPU time the server has used so far, when it is a process of its
    /// own (the cost of a page, apart from waiting for a core).
    fn server_cpu(&self) -> Result<Option<Duration>> {
        Ok(None)
    }
}

type Pick = fn(&TraceValues) -> String;

/// The one-filter queries: each filter and how a trace's value for it is
/// drawn from the generated data.
pub const SINGLE_FILTERS: [(&str, Pick); 9] = [
    ("service_type", |v| v.meta.service.to_string()),
    ("user", |v| v.user.to_string()),
    ("resource_id", |v| v.resource.id.clone()),
    ("resource_name", |v| v.resource.name.clone()),
    ("resource_type", |v| v.meta.resource_type.to_string()),
    ("trace_name", |v| v.meta.trace_name.to_string()),
    ("trace_rating", |v| v.meta.rating.to_string()),
    ("access_key_id", |v| v.meta.access_key.clone()),
    ("enterprise_project_id", |v| {
        v.meta.enterprise_project_id.clone()
    }),
];

/// What the generated data looks like, for drawing query values.
pub struct Space<'a> {
    pub gen: &'a Generator,
    pub n: u64,
    pub batch: u64,
    pub from: i64,
    pub to: i64,
}

impl Space<'_> {
    /// A trace of the main project, drawn uniformly: values come out
    /// weighted as in the data.
    fn draw(&self, rng: &mut SmallRng) -> TraceValues<'_> {
        loop {
            let k = rng.random_range(0..self.n);
            if project_for_batch(k / self.batch) == gen::MAIN_PROJECT {
                return self.gen.values(k);
            }
        }
    }

    fn query(&self, filters: Vec<(&'static str, String)>) -> Query {
        Query {
            filters,
            from: self.from,
            to: self.to,
            pages: 1,
        }
    }

    /// Every query kind with `q` queries each (paging: q/20 walks of 20
    /// pages). `trace_ids` are ids this target stored.
    pub fn kinds(&self, q: usize, seed: u64, trace_ids: &[String]) -> Vec<Kind> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut kinds: Vec<Kind> = SINGLE_FILTERS
            .iter()
            .map(|(param, pick)| Kind {
                name: (*param).to_string(),
                class: Class::Single,
                queries: (0..q)
                    .map(|_| self.query(vec![(*param, pick(&self.draw(&mut rng)))]))
                    .collect(),
            })
            .collect();
        if !trace_ids.is_empty() {
            kinds.push(Kind {
                name: "trace_id".into(),
                class: Class::Single,
                queries: (0..q)
                    .map(|_| {
                        let id = &trace_ids[rng.random_range(0..trace_ids.len())];
                        self.query(vec![("trace_id", id.clone())])
                    })
                    .collect(),
            });
        }

        let mut worst =
            |name: &str, make: &mut dyn FnMut(&mut SmallRng) -> Vec<(&'static str, String)>| Kind {
                name: name.to_string(),
                class: Class::Worst,
                queries: (0..q).map(|_| self.query(make(&mut rng))).collect(),
            };
        kinds.push(worst(
            "service_type+user+trace_rating=incident",
            &mut |rng| {
                let v = self.draw(rng);
                vec![
                    ("service_type", v.meta.service.to_string()),
                    ("user", v.user.to_string()),
                    ("trace_rating", "incident".to_string()),
                ]
            },
        ));
        kinds.push(worst(
            "resource_type+trace_name+user+access_key_id",
            &mut |rng| {
                let v = self.draw(rng);
                vec![
                    ("resource_type", v.meta.resource_type.to_string()),
                    ("trace_name", v.meta.trace_name.to_string()),
                    ("user", v.user.to_string()),
                    ("access_key_id", v.meta.access_key.clone()),
                ]
            },
        ));
        kinds.push(worst(
            "trace_rating=incident+enterprise_project_id",
            &mut |rng| {
                let v = self.draw(rng);
                vec![
                    ("trace_rating", "incident".to_string()),
                    (
                        "enterprise_project_id",
                        v.meta.enterprise_project_id.clone(),
                    ),
                ]
            },
        ));
        kinds.push(worst("nothing: unknown user", &mut |rng| {
            vec![("user", format!("nobody.{:08x}", rng.random::<u32>()))]
        }));
        // Two common values that never occur together: an index per field
        // finds many candidates for each and no trace for both.
        kinds.push(worst(
            "nothing: service_type+foreign resource_type",
            &mut |rng| loop {
                let (a, b) = (self.draw(rng), self.draw(rng));
                let owned = self.gen.fragments.iter().any(|f| {
                    f.meta.service == a.meta.service && f.meta.resource_type == b.meta.resource_type
                });
                if !owned {
                    return vec![
                        ("service_type", a.meta.service.to_string()),
                        ("resource_type", b.meta.resource_type.to_string()),
                    ];
                }
            },
        ));

        let walks = (q / 20).max(1);
        let day = 86_400_000;
        for (name, with_filter) in [
            ("paging 20 pages: no filter", false),
            ("paging 20 pages: service_type", true),
        ] {
            kinds.push(Kind {
                name: name.to_string(),
                class: Class::Paging,
                queries: (0..walks)
                    .map(|_| {
                        let filters = if with_filter {
                            vec![("service_type", self.draw(&mut rng).meta.service.to_string())]
                        } else {
                            Vec::new()
                        };
                        // Start each walk somewhere else, so pages are not
                        // just cached answers of the previous walk.
                        let to = rng.random_range((self.from + day).min(self.to - 1)..self.to);
                        Query {
                            filters,
                            from: self.from,
                            to,
                            pages: 20,
                        }
                    })
                    .collect(),
            });
        }
        kinds
    }
}

#[derive(Clone, Serialize)]
pub struct KindResult {
    pub name: String,
    pub class: Class,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub pages: usize,
    /// Mean traces on a first page; shows the query found what it should.
    pub mean_results: f64,
    /// The server's CPU time per page (ms), where it can be told apart.
    pub cpu_ms_per_page: Option<f64>,
}

pub fn run(target: &mut dyn Target, kinds: &[Kind]) -> Result<Vec<KindResult>> {
    let mut results = Vec::new();
    for kind in kinds {
        let mut latencies = Vec::new();
        let mut first_counts = Vec::new();
        let cpu_before = target.server_cpu()?;
        for q in &kind.queries {
            let mut next: Option<String> = None;
            for p in 0..q.pages {
                let (took, page) = target.page(q, next.as_deref())?;
                if page.count > LIMIT {
                    bail!(
                        "{}: a page of {} traces (limit {LIMIT})",
                        kind.name,
                        page.count
                    );
                }
                latencies.push(ms(took));
                if p == 0 {
                    first_counts.push(page.count as f64);
                }
                match page.next {
                    Some(m) if page.count == LIMIT => next = Some(m),
                    _ => break,
                }
            }
        }
        let cpu = cpu_before.zip(target.server_cpu()?);
        results.push(KindResult {
            cpu_ms_per_page: cpu.map(|(a, b)| ms(b - a) / latencies.len().max(1) as f64),
            name: kind.name.clone(),
            class: kind.class,
            p50_ms: percentile(&latencies, 50.0),
            p99_ms: percentile(&latencies, 99.0),
            pages: latencies.len(),
            mean_results: first_counts.iter().sum::<f64>() / first_counts.len().max(1) as f64,
        });
    }
    Ok(results)
}

/// Per kind, the median over rounds of each figure.
pub fn median_over_runs(runs: &[Vec<KindResult>]) -> Vec<KindResult> {
    let Some(first) = runs.first() else {
        return Vec::new();
    };
    first
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let col = |f: fn(&KindResult) -> f64| {
                median(&runs.iter().map(|r| f(&r[i])).collect::<Vec<_>>())
            };
            KindResult {
                p50_ms: col(|r| r.p50_ms),
                p99_ms: col(|r| r.p99_ms),
                mean_results: col(|r| r.mean_results),
                cpu_ms_per_page: k
                    .cpu_ms_per_page
                    .map(|_| col(|r| r.cpu_ms_per_page.unwrap_or(0.0))),
                ..k.clone()
            }
        })
        .collect()
}

/// ctsd over HTTP, one signed request at a time.
pub struct Http<'a> {
    pub rt: &'a tokio::runtime::Runtime,
    pub http: reqwest::Client,
    pub url: String,
    pub auth: &'a Auth,
    /// The server's process, when it runs alone on this machine (its CPU
    /// time per page is reported).
    pub pid: Option<u32>,
}

#[derive(Deserialize)]
struct ListAnswer {
    meta_data: ListMeta,
}

#[derive(Deserialize)]
struct ListMeta {
    count: usize,
    marker: Option<String>,
}

impl Target for Http<'_> {
    fn server_cpu(&self) -> Result<Option<Duration>> {
        self.pid.map(crate::server::process_cpu).transpose()
    }

    fn page(&mut self, q: &Query, next: Option<&str>) -> Result<(Duration, Page)> {
        let mut params: Vec<(&str, String)> = q.filters.clone();
        params.push(("from", q.from.to_string()));
        params.push(("to", q.to.to_string()));
        params.push(("limit", LIMIT.to_string()));
        if let Some(n) = next {
            params.push(("next", n.to_string()));
        }
        let project = self.auth.project(gen::MAIN_PROJECT);
        let url = with_query(&format!("{}/v3/{project}/traces", self.url), &params);
        // Signed before the clock starts: the latency is the server's.
        let request = self.auth.request(
            &self.http,
            reqwest::Method::GET,
            &url,
            Some(project),
            Default::default(),
        )?;
        let start = Instant::now();
        let (status, body) = self.rt.block_on(async {
            let resp = request.send().await?;
            let status = resp.status();
            Ok::<_, reqwest::Error>((status, resp.bytes().await?))
        })?;
        let took = start.elapsed();
        if !status.is_success() {
            bail!(
                "ListTraces {params:?}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let answer: ListAnswer = serde_json::from_slice(&body)?;
        Ok((
            took,
            Page {
                count: answer.meta_data.count,
                next: answer.meta_data.marker,
            },
        ))
    }
}
