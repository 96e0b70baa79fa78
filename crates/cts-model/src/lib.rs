//! The CTS domain model: the trace structure, the rules a reported trace must
//! meet, and the parameters of trace queries. No I/O lives here.

pub mod fuzzing;
mod indexed;
mod json;
pub mod query;
pub mod report;
pub mod text;
pub mod trace;

pub use indexed::{IndexedError, IndexedFields};
pub use query::{ApiVersion, Field, QueryError, TraceQuery};
pub use report::{is_valid_tracker_name, parse_report, FieldError, ReportContext, ReportError};
pub use trace::{Text, Trace, TraceKind, UserInfo, SYSTEM_ACTION, SYSTEM_TRACKER};
