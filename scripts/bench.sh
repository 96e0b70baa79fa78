#!/usr/bin/env bash
# Benchmarks ctsd against the issue's targets and a naive SQLite baseline.
# Full run: scripts/bench.sh            (10 million traces; takes a while)
# Smoke:    scripts/bench.sh --traces 20000 --queries 20
# All flags: scripts/bench.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -p cts-server -p cts-bench
exec target/release/cts-bench "$@"
