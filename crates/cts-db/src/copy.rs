//! [`copy_rows`]: a table's rows from one database into another (an
//! embedded node's SQLite file into PostgreSQL), each row where the target
//! lacks it, so that a copy run again completes what is missing.

use crate::{Arg, DbError, Row, Sql};

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
    map: impl FnMut(&mut Row) -> Result<(), E>,
) -> Result<Copied, E> {
    copy_rows_in_order(from, to, table, columns, None, map)
}

/// [`copy_rows`], the rows read and written in the order of `order_by`
/// (for example `rowid`, where an identity column of `to` numbers the rows
/// as they arrive and that order must be the source's).
pub fn copy_rows_in_order<E: From<DbError>>(
    from: &dyn Sql,
    to: &dyn Sql,
    table: &str,
    columns: &[&str],
    order_by: Option<&str>,
    mut map: impl FnMut(&mut Row) -> Result<(), E>,
) -> Result<Copied, E> {
    let list = columns.join(", ");
    let params: Vec<String> = (1..=columns.len()).map(|i| format!("${i}")).collect();
    let insert = format!(
        "INSERT INTO {table} ({list}) VALUES ({}) ON CONFLICT DO NOTHING",
        params.join(", ")
    );
    let order = order_by
        .map(|o| format!(" ORDER BY {o}"))
        .unwrap_or_default();
    let mut out = Copied::default();
    for mut row in from.query(&format!("SELECT {list} FROM {table}{order}"), &[])? {
        map(&mut row)?;
        let args: Vec<Arg<'_>> = row.iter().map(Arg::from).collect();
        out.add(to.exec(&insert, &args)?);
    }
    Ok(out)
}

impl Copied {
    /// Counts one insert that wrote `rows` (0: the row was there).
    pub fn add(&mut self, rows: u64) {
        match rows {
            0 => self.present += 1,
            _ => self.copied += 1,
        }
    }
}
