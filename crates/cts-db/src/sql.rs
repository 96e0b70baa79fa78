//! [`Sql`]: a connection or transaction of either backend, so that every
//! statement of a store is written once.
//!
//! Parameters are `$1`, `$2`, …: PostgreSQL's own syntax. On SQLite each
//! `$N` is bound by its name to `args[N - 1]` (not by the index SQLite gives
//! it), so a statement may use a parameter several times and in any order;
//! keeping them numbered in order of first use is still the house style.
//! The values are those of [`Arg`] and [`Val`]: an integer parameter binds
//! to a PostgreSQL `bigint`, `integer`, `smallint` or `boolean` (checked, not
//! truncated), text to `text`/`varchar`, bytes to `bytea`; any other column
//! type is read as an error naming it (cast it in the statement).

use std::cell::RefCell;
use std::error::Error;

use bytes::BytesMut;
use postgres::types::{IsNull, ToSql, Type};
use postgres::GenericClient;
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::{Arg, DbError, Row, Val};

/// A connection or transaction of either backend.
pub trait Sql {
    /// Runs `sql`; answers the number of rows it changed.
    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError>;

    /// Runs `sql`; answers its rows.
    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError>;

    /// Runs `sql`; answers its first row, if any.
    fn query_opt(&self, sql: &str, args: &[Arg<'_>]) -> Result<Option<Row>, DbError> {
        Ok(self.query(sql, args)?.into_iter().next())
    }
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match *self {
            Arg::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Arg::Int(i) => ToSqlOutput::Borrowed(ValueRef::Integer(i)),
            Arg::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Arg::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
        })
    }
}

/// Binds every `$N` of `stmt` to `args[N - 1]`.
fn bind(stmt: &mut rusqlite::Statement<'_>, args: &[Arg<'_>]) -> Result<(), DbError> {
    for index in 1..=stmt.parameter_count() {
        let name = stmt.parameter_name(index).unwrap_or("?");
        let arg = name
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
            .and_then(|n| args.get(n.checked_sub(1)?))
            .ok_or_else(|| DbError::Parameter {
                name: name.to_string(),
                given: args.len(),
            })?;
        stmt.raw_bind_parameter(index, arg)?;
    }
    Ok(())
}

impl Sql for rusqlite::Connection {
    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        let mut stmt = self.prepare_cached(sql)?;
        bind(&mut stmt, args)?;
        Ok(stmt.raw_execute()? as u64)
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError> {
        let mut stmt = self.prepare_cached(sql)?;
        bind(&mut stmt, args)?;
        let n = stmt.column_count();
        let mut rows = stmt.raw_query();
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let vals = (0..n)
                .map(|i| {
                    Ok(match row.get_ref(i)? {
                        ValueRef::Null => Val::Null,
                        ValueRef::Integer(i) => Val::Int(i),
                        ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into()),
                        ValueRef::Blob(b) => Val::Bytes(b.to_vec()),
                        ValueRef::Real(_) => {
                            return Err(DbError::ColumnType {
                                column: row.as_ref().column_name(i)?.to_string(),
                                ty: "REAL".into(),
                            })
                        }
                    })
                })
                .collect::<Result<Row, DbError>>()?;
            out.push(vals);
        }
        Ok(out)
    }
}

type BoxError = Box<dyn Error + Sync + Send>;

/// Accepts every type and checks the pair when the statement's parameter
/// types are known, so that the message names both.
impl ToSql for Arg<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match *self {
            Arg::Null => Ok(IsNull::Yes),
            Arg::Int(i) => match *ty {
                Type::INT8 => i.to_sql(ty, out),
                Type::INT4 => i32::try_from(i)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(i)?.to_sql(ty, out),
                Type::BOOL if i == 0 || i == 1 => (i == 1).to_sql(ty, out),
                _ => Err(format!("an integer ({i}) given for a parameter of type {ty}").into()),
            },
            Arg::Text(s) if <&str as ToSql>::accepts(ty) => s.to_sql(ty, out),
            Arg::Bytes(b) if *ty == Type::BYTEA => b.to_sql(ty, out),
            Arg::Text(_) => Err(format!("text given for a parameter of type {ty}").into()),
            Arg::Bytes(_) => Err(format!("bytes given for a parameter of type {ty}").into()),
        }
    }

    fn accepts(_: &Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

/// A PostgreSQL client or transaction as [`Sql`]: it needs `&mut` for
/// every statement.
pub(crate) struct PgSql<'a, C>(pub(crate) RefCell<&'a mut C>);

fn pg_args<'a>(args: &'a [Arg<'a>]) -> Vec<&'a (dyn ToSql + Sync)> {
    args.iter().map(|a| a as &(dyn ToSql + Sync)).collect()
}

fn pg_val(row: &postgres::Row, i: usize) -> Result<Val, DbError> {
    let ty = row.columns()[i].type_();
    Ok(match *ty {
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Val::Null, Val::Int),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Val::Null, |v| Val::Int(v.into())),
        Type::INT2 => row
            .try_get::<_, Option<i16>>(i)?
            .map_or(Val::Null, |v| Val::Int(v.into())),
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Val::Null, |v| Val::Int(v.into())),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Val::Null, Val::Bytes),
        ref ty if <String as postgres::types::FromSql>::accepts(ty) => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Val::Null, Val::Text),
        ref ty => {
            return Err(DbError::ColumnType {
                column: row.columns()[i].name().to_string(),
                ty: ty.to_string(),
            })
        }
    })
}

impl<C: GenericClient> Sql for PgSql<'_, C> {
    fn exec(&self, sql: &str, args: &[Arg<'_>]) -> Result<u64, DbError> {
        Ok(self.0.borrow_mut().execute(sql, &pg_args(args))?)
    }

    fn query(&self, sql: &str, args: &[Arg<'_>]) -> Result<Vec<Row>, DbError> {
        let rows = self.0.borrow_mut().query(sql, &pg_args(args))?;
        rows.iter()
            .map(|row| (0..row.len()).map(|i| pg_val(row, i)).collect())
            .collect()
    }
}
