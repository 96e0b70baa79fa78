#!/usr/bin/env bash
# Installs aiosmtpd (PyPI) into target/smtp-venv: the e-mail delivery tests
# of cts-smn start scripts/smtp-sink.py with it on a free loopback port.
# Idempotent: does nothing when it is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=target/smtp-venv
if ! "$VENV/bin/python" -c 'import aiosmtpd' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check 'aiosmtpd==1.4.6'
fi
echo "aiosmtpd installed: $VENV/bin/python scripts/smtp-sink.py PORT DIR USER PASSWORD"
