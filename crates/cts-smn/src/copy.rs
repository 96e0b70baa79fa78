//! Copying an embedded node's topics, subscriptions and outbox into another
//! database (`ctsd migrate-from-embedded`): every row the target lacks, so
//! that a run again completes what is missing. A message waiting for
//! delivery on the embedded node is delivered by the new one.

use cts_db::{copy_rows_in_order, Arg, Copied, Db, DbError, Row, SecretKey, Sql, Val};

use crate::error::SmnError;
use crate::topics::stored_secret;

/// Copies topics, subscriptions, messages and deliveries, each in the order
/// they were made: the target numbers messages as they arrive, and a
/// subscription's deliveries go in that order. With `key` (the target's,
/// see [`crate::TopicStore::sealed`]) the signing secrets arrive sealed.
/// One transaction.
pub fn copy_into(
    from: &Db,
    to: &Db,
    key: Option<&SecretKey>,
) -> Result<Vec<(&'static str, Copied)>, SmnError> {
    // The subscriptions' columns begin with `urn` and hold `secret` at 5.
    let seal = |table: &str, row: &mut Row| {
        if let (Some(key), "subscriptions") = (key, table) {
            let sealed = stored_secret(Some(key), row[0].text()?, row[5].text()?);
            row[5] = Val::Text(sealed);
        }
        Ok::<_, DbError>(())
    };
    let tables: [(&str, &[&str], &str); 3] = [
        (
            "topics",
            &[
                "urn",
                "project_id",
                "name",
                "display_name",
                "kind",
                "created_ms",
            ],
            "rowid",
        ),
        (
            "subscriptions",
            &[
                "urn",
                "topic_urn",
                "protocol",
                "endpoint",
                "remark",
                "secret",
                "created_ms",
            ],
            "rowid",
        ),
        (
            "messages",
            &[
                "message_id",
                "project_id",
                "topic_urn",
                "notification_id",
                "notification_name",
                "trace",
                "created_ms",
            ],
            "seq",
        ),
    ];
    let copied = from.read(|from| {
        to.transaction(|to| {
            let mut out = Vec::new();
            for (table, columns, order) in tables {
                let copied = copy_rows_in_order(from, to, table, columns, Some(order), |row| {
                    seal(table, row)
                })?;
                out.push((table, copied));
            }
            out.push(("deliveries", copy_deliveries(from, to)?));
            Ok::<_, DbError>(out)
        })
    })?;
    Ok(copied)
}

/// A delivery names its message by the source's `seq`, which the target
/// numbered anew: it is found again through the message's id.
fn copy_deliveries(from: &dyn Sql, to: &dyn Sql) -> Result<Copied, DbError> {
    let rows = from.query(
        "SELECT d.subscription_urn, m.message_id, d.state, d.attempts, d.next_ms, d.last_error, \
         d.done_ms FROM deliveries d JOIN messages m ON m.seq = d.seq ORDER BY d.seq",
        &[],
    )?;
    let mut out = Copied::default();
    for row in rows {
        let args: Vec<Arg<'_>> = row.iter().map(Arg::from).collect();
        out.add(to.exec(
            "INSERT INTO deliveries (subscription_urn, seq, state, attempts, next_ms, \
             last_error, done_ms) SELECT CAST($1 AS TEXT), seq, CAST($3 AS TEXT), \
             CAST($4 AS BIGINT), CAST($5 AS BIGINT), CAST($6 AS TEXT), CAST($7 AS BIGINT) \
             FROM messages WHERE message_id = $2 ON CONFLICT DO NOTHING",
            &args,
        )?);
    }
    Ok(out)
}
