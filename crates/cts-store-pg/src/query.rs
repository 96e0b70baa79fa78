//! ListTraces pages: newest first (time, then trace id, descending), read
//! through the index of the first filter the planner likes best.

use cts_model::TraceQuery;
use cts_store::QueryPage;
use postgres::types::ToSql;
use uuid::Uuid;

use crate::columns::column;
use crate::store::{day_of, PgStore};
use crate::PgError;

impl PgStore {
    pub(crate) fn query_page(&self, q: &TraceQuery) -> Result<QueryPage, PgError> {
        let cutoff = cts_clock::now_ms() - self.retention_ms;
        let mut client = self.pool.get()?;
        if let Some(id) = &q.trace_id {
            // Not a trace id: no trace has it.
            let Ok(id) = Uuid::try_parse(id) else {
                return Ok(QueryPage::default());
            };
            let rows = client.query(
                "SELECT doc FROM cts_traces WHERE project_id = $1 AND trace_id = $2 \
                 AND time_ms >= $3 ORDER BY time_ms DESC LIMIT 1",
                &[&q.project_id, &id, &cutoff],
            )?;
            return Ok(QueryPage {
                traces: rows.iter().map(|r| r.get(0)).collect(),
                marker: None,
            });
        }
        // Keys below (time, id) in page order; `to` is exclusive.
        let mut upper = (q.to, Uuid::nil());
        if let Some(next) = &q.next {
            let marker = match Uuid::try_parse(next) {
                Ok(id) => client
                    .query_opt(
                        "SELECT time_ms FROM cts_traces WHERE project_id = $1 AND trace_id = $2 \
                         ORDER BY time_ms DESC LIMIT 1",
                        &[&q.project_id, &id],
                    )?
                    .map(|r| (r.get::<_, i64>(0), id)),
                Err(_) => None,
            };
            match marker {
                Some(key) => upper = upper.min(key),
                // The marker's trace expired, and everything older with it.
                None => return Ok(QueryPage::default()),
            }
        }
        let from = q.from.max(cutoff - 1);
        if from >= upper.0 {
            return Ok(QueryPage::default());
        }
        let (first_day, last_day) = (day_of(from.saturating_add(1)), day_of(upper.0));
        let limit = q.limit as i64 + 1;
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![
            &q.project_id,
            &first_day,
            &last_day,
            &from,
            &upper.0,
            &upper.1,
            &limit,
        ];
        // The day bounds let the planner skip whole partitions.
        let mut sql = String::from(
            "SELECT doc, trace_id FROM cts_traces WHERE project_id = $1 AND day BETWEEN $2 AND $3 \
             AND time_ms > $4 AND (time_ms, trace_id) < ($5, $6)",
        );
        for (field, value) in &q.filters {
            params.push(value);
            sql.push_str(&format!(" AND {} = ${}", column(*field), params.len()));
        }
        sql.push_str(" ORDER BY time_ms DESC, trace_id DESC LIMIT $7");
        let rows = client.query(sql.as_str(), &params)?;
        let more = rows.len() > q.limit;
        let rows = &rows[..rows.len().min(q.limit)];
        let marker = rows
            .last()
            .filter(|_| more)
            .map(|r| r.get::<_, Uuid>(1).hyphenated().to_string());
        Ok(QueryPage {
            traces: rows.iter().map(|r| r.get(0)).collect(),
            marker,
        })
    }
}
