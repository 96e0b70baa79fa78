//! The column of each ListTraces filter.

use cts_model::Field;

/// The column holding the value a filter on `field` matches: named as its
/// query parameter, except `user` (a reserved word in SQL) and the trace
/// type (`kind`, the name the schema gave it).
pub(crate) fn column(field: Field) -> &'static str {
    match field {
        Field::User => "user_name",
        Field::Kind => "kind",
        other => other.param(),
    }
}

/// The filter columns in [`Field::ALL`] order, comma-separated.
pub(crate) fn filter_columns() -> String {
    Field::ALL.map(column).join(", ")
}
