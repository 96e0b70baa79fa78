#!/usr/bin/env bash
# Runs every test of the project. Needs the Rust toolchain and Python 3.11+
# (the compatibility suite installs its packages from PyPI into
# target/compat-venv).
set -euo pipefail
cd "$(dirname "$0")/.."

# The age tool and a real S3 server (moto) for the transfer tests.
scripts/test-deps.sh
# The integration tests start the real binaries (ctsd, cts), so build them all first.
cargo build --workspace --bins
cargo test --workspace --no-fail-fast
# The benchmark must keep working: a small smoke run against the debug server.
target/debug/cts-bench --traces 20000 --queries 20 --baseline-traces 20000 \
  --server target/debug/ctsd --out target/bench-smoke.json
# And on PostgreSQL: two nodes, the plain COPY beside them (~20 s).
target/debug/cts-bench --backend postgres --nodes 2 --traces 5000 --queries 5 \
  --server target/debug/ctsd --out target/bench-pg-smoke.json
# The soak mode too, briefly (~25 s): rate probe, paced load, queries,
# transfer, samples, table and plot.
target/debug/cts-bench --soak 15s --sample-every 5s --transfer-period 10s \
  --server target/debug/ctsd --out target/soak-smoke/latest.json
# The official clients (huaweicloudsdkcts, openstacksdk + otcextensions)
# against a live server.
CTSD="$PWD/target/debug/ctsd" scripts/compat.sh
# The same suite with every server on PostgreSQL (store.backend =
# "postgres"), on a throwaway server that cts-testpg starts and stops.
target/debug/cts-testpg -- env CTSD="$PWD/target/debug/ctsd" scripts/compat.sh
# Generated requests from /openapi.json against a live server: no 5xx.
CTSD="$PWD/target/debug/ctsd" scripts/schemathesis.sh
