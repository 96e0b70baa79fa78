//! Integration tests: the real `ctsd` binary, started on a free loopback
//! port and a temporary data directory, driven over HTTP.

mod auth;
mod console;
mod console_browser;
mod crash;
mod damage;
mod isolation;
mod legacy;
mod limits;
mod lockout;
mod lts;
mod lts_syslog;
mod notifications;
mod ops;
mod paging;
mod pg_identity;
mod pg_move;
mod pg_transfer;
mod postgres;
mod priority;
mod query;
mod report;
mod retention;
mod selfaudit;
mod support;
mod tokens;
mod topics;
mod trackers;
mod transfer;
