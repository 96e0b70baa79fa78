#!/usr/bin/env bash
# Benchmarks ctsd against the issue's targets and a naive SQLite baseline.
# Every request to ctsd is signed (SDK-HMAC-SHA256) with the access key the
# server writes to its bootstrap.json on first start.
# Full run: scripts/bench.sh            (10 million traces; takes a while)
# Smoke:    scripts/bench.sh --smoke    (= --traces 20000 --queries 20 --baseline-traces 20000)
# All flags: scripts/bench.sh --help
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--smoke" ]]; then
  shift
  set -- --traces 20000 --queries 20 --baseline-traces 20000 "$@"
fi
cargo build --release -p cts-server -p cts-bench
exec target/release/cts-bench "$@"
