//! One way to run a statement on either backend, so that every query of the
//! consumer state is written once. The statements use `$1`, `$2`, … in the
//! order of their first use: PostgreSQL numbers them, and SQLite gives a
//! `$NAME` parameter the next free index, which is the same number.

use std::cell::RefCell;
use std::ops::DerefMut;

use postgres::types::{ToSql, Type};
use postgres::GenericClient;
use rusqlite::types::ValueRef;

use crate::ConsumerError;

/// A statement parameter.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Text(&'a str),
    Int(i64),
}

/// A column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    Null,
    Int(i64),
    Text(String),
}

impl Val {
    pub(crate) fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            _ => None,
        }
    }

    pub(crate) fn into_text(self) -> String {
        match self {
            Val::Text(s) => s,
            Val::Int(i) => i.to_string(),
            Val::Null => String::new(),
        }
    }
}

/// A connection or transaction of either backend.
pub(crate) trait Sql {
    /// Runs `sql`; answers the number of rows it changed.
    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, ConsumerError>;
    /// Runs `sql`; answers its rows.
    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Vec<Val>>, ConsumerError>;
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Arg::Text(s) => rusqlite::ToSql::to_sql(s),
            Arg::Int(i) => rusqlite::ToSql::to_sql(i),
        }
    }
}

impl Sql for rusqlite::Connection {
    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, ConsumerError> {
        Ok(self.execute(sql, rusqlite::params_from_iter(args))? as u64)
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Vec<Val>>, ConsumerError> {
        let mut stmt = self.prepare_cached(sql)?;
        let n = stmt.column_count();
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |row| {
                (0..n)
                    .map(|i| {
                        Ok(match row.get_ref(i)? {
                            ValueRef::Integer(i) => Val::Int(i),
                            ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into()),
                            _ => Val::Null,
                        })
                    })
                    .collect()
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}

fn pg_args<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter()
        .map(|a| match a {
            Arg::Text(s) => s as &(dyn ToSql + Sync),
            Arg::Int(i) => i as &(dyn ToSql + Sync),
        })
        .collect()
}

/// The PostgreSQL client (or transaction) needs `&mut` for every
/// statement.
impl<C> Sql for RefCell<C>
where
    C: DerefMut,
    C::Target: postgres::GenericClient,
{
    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, ConsumerError> {
        Ok(self.borrow_mut().deref_mut().execute(sql, &pg_args(args))?)
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Vec<Val>>, ConsumerError> {
        let rows = self.borrow_mut().deref_mut().query(sql, &pg_args(args))?;
        rows.iter()
            .map(|row| {
                (0..row.len())
                    .map(|i| {
                        let ty = row.columns()[i].type_();
                        Ok(if *ty == Type::INT8 {
                            row.try_get::<_, Option<i64>>(i)?
                                .map_or(Val::Null, Val::Int)
                        } else if *ty == Type::INT4 {
                            row.try_get::<_, Option<i32>>(i)?
                                .map_or(Val::Null, |v| Val::Int(v.into()))
                        } else {
                            row.try_get::<_, Option<String>>(i)?
                                .map_or(Val::Null, Val::Text)
                        })
                    })
                    .collect()
            })
            .collect()
    }
}
