//! [`copy_rows`]: a table's rows from one database into another (an
//! embedded node's SQLite file into PostgreSQL), each row where the target
//! lacks it, so that a copy run again completes what is missing.

use crate::{Arg, DbError, Row, Sql, Val};

/// What [`copy_rows`] did to one table.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Copied {
    /// Rows written.
    pub copied: u64,
    /// Rows the target had already (same primary or unique key).
    pub present: u64,
}

/// Copies every row of `table` (its `columns`) from `from` into `to`,
/// leaving each row whose key `to` has already. `map` may change a row on
/// its way (re-seal a secret, translate an id); it sees the columns in
/// order. Parents go before children: run it table by table.
pub fn copy_rows<E: From<DbError>>(
    from: &dyn Sql,
    to: &dyn Sql,
    table: &str,
    columns: &[&str],
    mut map: impl FnMut(&mut Row) -> Result<(), E>,
) -> Result<Copied, E> {
    let list = columns.join(", ");
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({list}) VALUES ({}) ON CONFLICT DO NOTHING",
        params.join(", ")
    );
    let mut out = Copied::default();
    for mut row in from.query(&format!("SELECT {list} FROM {table}"), &[])? {
        map(&mut row)?;
        let args: Vec<Arg<'_>> = row.iter().map(arg).collect();
        match to.exec(&insert, &args)? {
            0 => out.present += 1,
            _ => out.copied += 1,
        }
    }
    Ok(out)
}

fn arg(v: &Val) -> Arg<'_> {
    match v {
        Val::Null => Arg::Null,
        Val::Int(i) => Arg::Int(*i),
        Val::Text(s) => Arg::Text(s),
        Val::Bytes(b) => Arg::Bytes(b),
    }
}
