//! The column of each ListTraces filter.

use cts_model::Field;

/// The column holding the value a filter on `field` matches.
pub(crate) fn column(field: Field) -> &'static str {
    match field {
        Field::ServiceType => "service_type",
        Field::User => "user_name",
        Field::ResourceId => "resource_id",
        Field::ResourceName => "resource_name",
        Field::ResourceType => "resource_type",
        Field::TraceName => "trace_name",
        Field::TraceRating => "trace_rating",
        Field::AccessKeyId => "access_key_id",
        Field::EnterpriseProjectId => "enterprise_project_id",
        Field::TrackerName => "tracker_name",
        Field::Kind => "kind",
    }
}

/// The filter columns in [`Field::ALL`] order, comma-separated.
pub(crate) fn filter_columns() -> String {
    Field::ALL.map(column).join(", ")
}
