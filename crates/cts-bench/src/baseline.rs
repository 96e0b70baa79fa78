//! The naive baseline: SQLite (WAL, synchronous=FULL), one table with a
//! column per filter, a B-tree index per filter column, batched
//! transactions. In process, so it pays no HTTP or JSON parsing: a
//! conservative yardstick for the server.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::SmallRng;
use rand::SeedableRng;
use rusqlite::{params, Connection};

use crate::gen::{self, Generator, Timeline};
use crate::load::project_for_batch;
use crate::queries::{Page, Query, Target, LIMIT};

/// Filter parameters and their columns; each column gets an index
/// `(project_id, column, time)` so a filtered page is one index range scan.
const COLUMNS: [(&str, &str); 9] = [
    ("service_type", "service_type"),
    ("user", "user_name"),
    ("resource_id", "resource_id"),
    ("resource_name", "resource_name"),
    ("resource_type", "resource_type"),
    ("trace_name", "trace_name"),
    ("trace_rating", "trace_rating"),
    ("access_key_id", "access_key_id"),
    ("enterprise_project_id", "enterprise_project_id"),
];

pub struct Sqlite {
    conn: Connection,
}

pub struct Loaded {
    pub traces: u64,
    pub elapsed: Duration,
    pub sample_ids: Vec<String>,
    /// Time of each batch's transaction, commit included.
    pub latencies_ms: Vec<f64>,
}

impl Sqlite {
    pub fn create(path: &Path) -> Result<Sqlite> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // A 256 MiB page cache, half the server's memory budget: without it
        // SQLite's 2 MiB default would make the baseline a straw man.
        conn.pragma_update(None, "cache_size", -262_144)?;
        let mut ddl = String::from(
            "CREATE TABLE traces (trace_id TEXT NOT NULL, project_id TEXT NOT NULL, time INTEGER NOT NULL, \
             service_type TEXT, user_name TEXT, resource_id TEXT, resource_name TEXT, resource_type TEXT, \
             trace_name TEXT, trace_rating TEXT, access_key_id TEXT, enterprise_project_id TEXT, \
             tracker_name TEXT, doc TEXT NOT NULL);\n\
             CREATE UNIQUE INDEX traces_id ON traces(trace_id);\n\
             CREATE INDEX traces_time ON traces(project_id, time);\n",
        );
        for (_, col) in COLUMNS {
            ddl.push_str(&format!(
                "CREATE INDEX traces_{col} ON traces(project_id, {col}, time);\n"
            ));
        }
        conn.execute_batch(&ddl)?;
        Ok(Sqlite { conn })
    }

    /// Inserts traces `0..timeline.n` in transactions of `batch`.
    pub fn load(&mut self, gen: &Generator, timeline: &Timeline, batch: u64) -> Result<Loaded> {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut sample_ids = Vec::new();
        let mut latencies_ms = Vec::new();
        let mut doc = Vec::with_capacity(1200);
        let start = Instant::now();
        let mut last_report = start;
        for b in 0..timeline.n.div_ceil(batch) {
            let project = project_for_batch(b);
            let batch_start = Instant::now();
            let tx = self.conn.transaction()?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO traces VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, 'system', ?13)",
                )?;
                for k in b * batch..((b + 1) * batch).min(timeline.n) {
                    let time = timeline.time(k);
                    let id = gen::uuid(&mut rng);
                    doc.clear();
                    gen.write_trace(&mut doc, k, time, Some(&id));
                    let v = gen.values(k);
                    insert.execute(params![
                        id,
                        project,
                        time,
                        v.meta.service,
                        v.user,
                        v.resource.id,
                        v.resource.name,
                        v.meta.resource_type,
                        v.meta.trace_name,
                        v.meta.rating,
                        v.meta.access_key,
                        v.meta.enterprise_project_id,
                        std::str::from_utf8(&doc)?,
                    ])?;
                    if k == b * batch && project == gen::MAIN_PROJECT {
                        sample_ids.push(id);
                    }
                }
            }
            tx.commit()?;
            latencies_ms.push(crate::stats::ms(batch_start.elapsed()));
            if last_report.elapsed() > Duration::from_secs(10) {
                last_report = Instant::now();
                let done = ((b + 1) * batch).min(timeline.n);
                let rate = done as f64 / start.elapsed().as_secs_f64();
                eprintln!("  baseline: {done} of {} traces, {rate:.0}/s", timeline.n);
            }
        }
        let elapsed = start.elapsed();
        // Statistics for the query planner, as anyone running SQLite in
        // production would gather; without them it picks the time index
        // and scans. Not part of the measured load time.
        self.conn.execute_batch("ANALYZE")?;
        Ok(Loaded {
            traces: timeline.n,
            elapsed,
            sample_ids,
            latencies_ms,
        })
    }
}

impl Target for Sqlite {
    fn page(&mut self, q: &Query, next: Option<&str>) -> Result<(Duration, Page)> {
        let mut sql = String::from("SELECT time, trace_id, doc FROM traces WHERE ");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some((_, id)) = q.filters.iter().find(|(p, _)| *p == "trace_id") {
            sql.push_str("trace_id = ? AND project_id = ?");
            args.push(id.clone().into());
            args.push(gen::MAIN_PROJECT.to_string().into());
        } else {
            sql.push_str("project_id = ?");
            args.push(gen::MAIN_PROJECT.to_string().into());
            for (param, value) in &q.filters {
                let col = COLUMNS.iter().find(|(p, _)| p == param).map(|(_, c)| *c);
                sql.push_str(&format!(" AND {} = ?", col.unwrap_or("unknown")));
                args.push(value.clone().into());
            }
        }
        sql.push_str(" AND time > ? AND time < ?");
        args.push(q.from.into());
        args.push(q.to.into());
        // The marker is the last row's (time, trace_id): continue strictly
        // after it in the (time DESC, trace_id DESC) order.
        if let Some((t, id)) = next.and_then(|n| n.split_once(':')) {
            sql.push_str(" AND (time < ? OR (time = ? AND trace_id < ?))");
            let t: i64 = t.parse()?;
            args.push(t.into());
            args.push(t.into());
            args.push(id.to_string().into());
        }
        sql.push_str(&format!(" ORDER BY time DESC, trace_id DESC LIMIT {LIMIT}"));

        let start = Instant::now();
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        let (mut count, mut last) = (0, None);
        while let Some(row) = rows.next()? {
            // Read the document too: a page is returned in full.
            let doc: rusqlite::types::ValueRef = row.get_ref(2)?;
            std::hint::black_box(doc.as_str()?);
            count += 1;
            last = Some((row.get::<_, i64>(0)?, row.get::<_, String>(1)?));
        }
        let took = start.elapsed();
        Ok((
            took,
            Page {
                count,
                next: last.map(|(t, id)| format!("{t}:{id}")),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::Config;

    #[test]
    fn loads_and_pages() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = Sqlite::create(&dir.path().join("b.db")).unwrap();
        let gen = Generator::new(&Config {
            fragments: 500,
            resources: 2_000,
            ..Config::default()
        });
        let tl = Timeline {
            start: 1_000_000,
            end: 2_000_000,
            n: 10_000,
        };
        let loaded = db.load(&gen, &tl, 500).unwrap();
        assert_eq!(loaded.sample_ids.len(), 18);

        let all = Query {
            filters: vec![],
            from: 0,
            to: 3_000_000,
            pages: 20,
        };
        let (mut seen, mut next) = (0, None);
        loop {
            let (_, page) = db.page(&all, next.as_deref()).unwrap();
            seen += page.count;
            if page.count < LIMIT {
                break;
            }
            next = page.next;
        }
        // 18 of every 20 batches are the main project's.
        assert_eq!(seen, 9_000);

        let id = loaded.sample_ids[3].clone();
        let by_id = Query {
            filters: vec![("trace_id", id)],
            from: 0,
            to: 3_000_000,
            pages: 1,
        };
        assert_eq!(db.page(&by_id, None).unwrap().1.count, 1);
        let ecs = Query {
            filters: vec![("service_type", "ECS".into())],
            from: 0,
            to: 3_000_000,
            pages: 1,
        };
        assert!(db.page(&ecs, None).unwrap().1.count > 0);
    }
}
