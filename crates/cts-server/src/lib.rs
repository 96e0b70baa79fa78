//! The CTS server: configuration, HTTP API and background tasks around a
//! [`cts_store::TraceStore`]. The `ctsd` binary is a thin shell around
//! [`Config::load`], [`AppState::open`], [`bootstrap`] and [`serve`].

pub mod api;
mod app;
mod audit;
pub mod auth;
pub mod backend;
mod body;
pub mod citus;
pub mod config;
mod connections;
mod console;
pub mod error;
pub mod lockout;
pub mod metrics;
mod recording;
mod refusals;
pub mod state;

#[cfg(test)]
mod broken_store;
#[cfg(test)]
mod tests;

pub use app::{load_tls, router, serve};
pub use config::{Config, LogFormat, Overrides};
pub use error::ApiError;
pub use state::AppState;
