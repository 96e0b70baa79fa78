//! Integration tests of cts-archive against a local directory and a real S3
//! server (moto, started per test; `scripts/s3-test-server.sh` installs it).

mod standard_tools;
mod storage;
mod support;
mod verify;
