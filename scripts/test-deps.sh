#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain and Python 3:
#   - the `age` command line tool (Debian package `age`): tests decrypt
#     encrypted trace files with it, as an auditor would;
#   - moto's S3 server (PyPI `moto[server]`, into target/s3-venv): the
#     object storage tests talk to a real S3 protocol server.
# Idempotent; fails loudly (never skips) when something cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v age >/dev/null; then
  echo "test-deps: installing the Debian package age" >&2
  if [[ $(id -u) -eq 0 ]]; then
    apt-get install -y -q age >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q age >/dev/null; }
  elif command -v sudo >/dev/null; then
    sudo apt-get install -y -q age >/dev/null || { sudo apt-get update -q >/dev/null && sudo apt-get install -y -q age >/dev/null; }
  else
    echo "test-deps: the 'age' tool is missing; install the Debian package: apt-get install age" >&2
    exit 1
  fi
fi
command -v age >/dev/null || { echo "test-deps: 'age' is still missing after apt-get install age" >&2; exit 1; }

scripts/s3-test-server.sh >/dev/null
