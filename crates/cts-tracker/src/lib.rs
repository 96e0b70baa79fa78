//! Trackers of CTS: the management tracker `system` and data trackers of a
//! project, as the v3 and v1.0 APIs show them; their tags; the tenant quotas;
//! and the catalog of services, resource types, trace names and users that
//! `operations`, `resources` and `user-resources` answer from. No HTTP here:
//! the server parses bodies with the `parse_*` functions, calls the stores,
//! maps [`TrackerError`] (which carries its CTS code and status) to a
//! response, and renders trackers with [`Tracker::to_v3_json`] and friends.
//!
//! # On disk
//!
//! ```text
//! DATA_DIR/trackers/     mode 0700
//!   trackers.db          trackers and their tags (SQLite, WAL, synchronous=FULL)
//!   catalog.db           learned operations and users (same settings)
//! ```
//!
//! Or, with several nodes, the same tables in PostgreSQL ([`PG_SCHEMA`]);
//! each node's in-memory view follows the others' changes (`view.rs`).
//!
//! # The same trackers through both APIs
//!
//! v1.0 and v3 requests parse into one [`TrackerSpec`]; the store keeps one
//! [`Tracker`]; each API renders its own view of it. v1.0 reaches only the
//! management tracker (its pages allow no other).
//!
//! # Hooks for later parts
//!
//! * Keys: `kms_id` is checked by a `key_exists` callback the server passes
//!   to [`TrackerStore::create`] and [`TrackerStore::update`].
//! * Transfer: [`TrackerStore::set_status`] moves a tracker to `error` (with
//!   its `detail`) and back.
//! * Ingest: [`TrackerStore::management_enabled`] and
//!   [`TrackerStore::data_tracker_for`] answer from memory;
//!   [`Catalog::observe`] learns from every recorded trace.
//! * Notifications: [`TrackerStore::quotas`] takes their count.

mod catalog;
mod copy;
mod error;
mod keys;
mod model;
mod request;
mod schema;
mod store;
mod tags;
#[cfg(test)]
mod testing;
mod view;

pub use catalog::{Catalog, OperationList, TraceResource, SUPPORTED_SERVICES, USER_WINDOW_MS};
pub use error::{codes, TrackerError};
pub use keys::{is_valid_key_name, EncryptionKey};
pub use model::{
    CompressType, DataBucket, DataEvent, ErrorDetail, Lts, ObsInfo, Tag, Tracker, TrackerStatus,
    TrackerType, SYSTEM_TRACKER_NAME,
};
pub use request::{
    is_valid_data_tracker_name, parse_tracker_type_param, parse_v1_create, parse_v1_update,
    parse_v3_create, parse_v3_update, ObsSpec, TrackerSpec, AGENCY_NAME, BUCKET_LIFECYCLES,
    EXCLUDABLE_SERVICES,
};
pub use schema::PG_SCHEMA;
pub use store::{Limits, Quota, TrackerStore};
pub use tags::{parse_tags_create, parse_tags_delete, TagFilter, MAX_TAGS, TAG_RESOURCE_TYPE};
pub use view::{RecordingDataTracker, REFRESH_EVERY};
