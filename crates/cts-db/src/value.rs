//! What goes into a statement ([`Arg`]) and what comes out of it ([`Val`]),
//! in the four shapes both backends store the same way: NULL, a 64-bit
//! integer, text and bytes. A boolean is an integer 0/1 on both (a
//! PostgreSQL `boolean` column reads as one too).

use crate::DbError;

/// A statement parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Bytes(&'a [u8]),
}

impl From<i64> for Arg<'_> {
    fn from(i: i64) -> Self {
        Arg::Int(i)
    }
}

impl<'a> From<&'a str> for Arg<'a> {
    fn from(s: &'a str) -> Self {
        Arg::Text(s)
    }
}

impl<'a> From<&'a String> for Arg<'a> {
    fn from(s: &'a String) -> Self {
        Arg::Text(s)
    }
}

impl<'a> From<&'a [u8]> for Arg<'a> {
    fn from(b: &'a [u8]) -> Self {
        Arg::Bytes(b)
    }
}

impl From<bool> for Arg<'_> {
    fn from(b: bool) -> Self {
        Arg::Int(i64::from(b))
    }
}

/// A value read, passed on as an argument (a row copied elsewhere).
impl<'a> From<&'a Val> for Arg<'a> {
    fn from(v: &'a Val) -> Self {
        match v {
            Val::Null => Arg::Null,
            Val::Int(i) => Arg::Int(*i),
            Val::Text(s) => Arg::Text(s),
            Val::Bytes(b) => Arg::Bytes(b),
        }
    }
}

impl<'a, T: Into<Arg<'a>>> From<Option<T>> for Arg<'a> {
    fn from(v: Option<T>) -> Self {
        v.map_or(Arg::Null, Into::into)
    }
}

/// A column value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    Null,
    Int(i64),
    Text(String),
    Bytes(Vec<u8>),
}

/// A result row: its columns in the order the statement selects them.
pub type Row = Vec<Val>;

/// The `N` columns of `row`, to destructure: `let [id, name] = columns(row)?`.
pub fn columns<const N: usize>(row: Row) -> Result<[Val; N], DbError> {
    let found = row.len();
    row.try_into()
        .map_err(|_| DbError::Columns { expected: N, found })
}

impl Val {
    fn kind(&self) -> &'static str {
        match self {
            Val::Null => "NULL",
            Val::Int(_) => "an integer",
            Val::Text(_) => "text",
            Val::Bytes(_) => "bytes",
        }
    }

    fn shape(&self, expected: &'static str) -> DbError {
        DbError::Shape {
            expected,
            found: self.kind(),
        }
    }

    pub fn int(&self) -> Result<i64, DbError> {
        match self {
            Val::Int(i) => Ok(*i),
            v => Err(v.shape("an integer")),
        }
    }

    pub fn opt_int(&self) -> Result<Option<i64>, DbError> {
        match self {
            Val::Null => Ok(None),
            v => v.int().map(Some),
        }
    }

    /// An integer that must be 0 or 1.
    pub fn bool(&self) -> Result<bool, DbError> {
        match self {
            Val::Int(0) => Ok(false),
            Val::Int(1) => Ok(true),
            v => Err(v.shape("a boolean (0 or 1)")),
        }
    }

    pub fn text(&self) -> Result<&str, DbError> {
        match self {
            Val::Text(s) => Ok(s),
            v => Err(v.shape("text")),
        }
    }

    pub fn opt_text(&self) -> Result<Option<&str>, DbError> {
        match self {
            Val::Null => Ok(None),
            v => v.text().map(Some),
        }
    }

    pub fn into_text(self) -> Result<String, DbError> {
        match self {
            Val::Text(s) => Ok(s),
            v => Err(v.shape("text")),
        }
    }

    pub fn bytes(&self) -> Result<&[u8], DbError> {
        match self {
            Val::Bytes(b) => Ok(b),
            v => Err(v.shape("bytes")),
        }
    }

    pub fn into_bytes(self) -> Result<Vec<u8>, DbError> {
        match self {
            Val::Bytes(b) => Ok(b),
            v => Err(v.shape("bytes")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getters_refuse_another_shape_saying_both() {
        assert_eq!(Val::Int(3).int().unwrap(), 3);
        assert_eq!(Val::Null.opt_int().unwrap(), None);
        assert!(Val::Int(1).bool().unwrap());
        let e = Val::Int(2).bool().unwrap_err();
        assert!(matches!(e, DbError::Shape { .. }), "{e}");
        let e = Val::Text("x".into()).int().unwrap_err();
        assert_eq!(
            e.to_string(),
            "a column of an unexpected shape: expected an integer, found text"
        );
        assert!(Val::Null.text().is_err());
        assert_eq!(Val::Null.opt_text().unwrap(), None);
        let [a, b] = columns(vec![Val::Int(1), Val::Null]).unwrap();
        assert_eq!((a, b), (Val::Int(1), Val::Null));
        let e = columns::<3>(vec![Val::Null]).unwrap_err();
        assert_eq!(e.to_string(), "a row of 1 columns where 3 were expected");
        assert_eq!(Arg::from(Some("a")), Arg::Text("a"));
        assert_eq!(Arg::from(None::<i64>), Arg::Null);
        assert_eq!(Arg::from(true), Arg::Int(1));
    }
}
