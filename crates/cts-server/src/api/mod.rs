//! The HTTP endpoints.

pub mod credentials;
pub mod domain_roles;
pub mod dry_run;
pub mod identity;
pub mod notifications;
pub mod ops;
pub mod tokens;
pub mod topics;
pub mod traces;
pub mod trackers;
pub mod transfer;
pub mod versions;

use axum::http::{header, HeaderMap};

use crate::state::AppState;

/// The URL clients reach this server at, without a trailing `/`:
/// `public_url` when configured, else the scheme and `Host` of the request.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(url) = &state.config.public_url {
        return url.trim_end_matches('/').to_string();
    }
    let scheme = if state.config.tls.cert.is_some() {
        "https"
    } else {
        "http"
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| state.config.listen.to_string());
    format!("{scheme}://{host}")
}
