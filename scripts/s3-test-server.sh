#!/usr/bin/env bash
# Installs moto's S3 server (PyPI package moto[server]) into target/s3-venv,
# which the cts-archive tests start on a free loopback port of their own.
# Idempotent: does nothing when it is already installed.
#
#   scripts/s3-test-server.sh          install
#   scripts/s3-test-server.sh --start  install, then run one on 127.0.0.1:9000
#                                      (for trying things by hand)
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/s3-venv
if [[ ! -x "$VENV/bin/moto_server" ]]; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'moto[server]==5.2.5'
fi
echo "moto installed: $VENV/bin/moto_server"
echo "start one by hand:  $VENV/bin/moto_server -H 127.0.0.1 -p 9000"
echo "(the cargo tests of cts-archive start their own; CTS_TEST_MOTO_SERVER overrides the path)"

if [[ "${1:-}" == "--start" ]]; then
  exec "$VENV/bin/moto_server" -H 127.0.0.1 -p 9000
fi
