#!/usr/bin/env bash
# Installs what the tests need beyond the Rust toolchain and Python 3:
#   - the `age` command line tool (Debian package `age`): tests decrypt
#     encrypted trace files with it, as an auditor would;
#   - Chromium and its WebDriver (Debian `chromium`, `chromium-driver`):
#     the console's browser tests;
#   - moto's S3 server (PyPI `moto[server]`, into target/s3-venv): the
#     object storage tests talk to a real S3 protocol server;
#   - aiosmtpd (PyPI, into target/smtp-venv): the e-mail delivery tests
#     send through a real SMTP server (scripts/smtp-sink.py);
#   - PostgreSQL (Debian `postgresql`): the PostgreSQL backend's tests start
#     a throwaway server of their own (crates/cts-testpg);
#   - rsyslog with its TLS driver (Debian `rsyslog`, `rsyslog-gnutls`): the
#     LTS syslog tests start their own rsyslogd as the receiver.
# Idempotent; fails loudly (never skips) when something cannot be installed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Installs Debian package $1; fails if it cannot.
install_package() {
  local package=$1
  echo "test-deps: installing the Debian package $package" >&2
  if [[ $(id -u) -eq 0 ]]; then
    apt-get install -y -q "$package" >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q "$package" >/dev/null; }
  elif command -v sudo >/dev/null; then
    sudo apt-get install -y -q "$package" >/dev/null || { sudo apt-get update -q >/dev/null && sudo apt-get install -y -q "$package" >/dev/null; }
  else
    echo "test-deps: the Debian package $package is missing; install it: apt-get install $package" >&2
    exit 1
  fi
}

# Installs Debian package $1 unless command $2 exists; fails if it cannot.
need() {
  local package=$1 command=$2
  command -v "$command" >/dev/null && return 0
  install_package "$package"
  command -v "$command" >/dev/null || { echo "test-deps: '$command' is still missing after apt-get install $package" >&2; exit 1; }
}

need age age
# The console's browser tests drive headless Chromium through WebDriver.
need chromium chromium
need chromium-driver chromedriver
# Debian keeps initdb off PATH (in /usr/lib/postgresql/VERSION/bin), so look there.
have_postgres() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || command -v initdb >/dev/null; }
if ! have_postgres; then
  install_package postgresql
  have_postgres || { echo "test-deps: initdb is still missing after apt-get install postgresql" >&2; exit 1; }
fi

# rsyslogd lives in /usr/sbin, off a normal user's PATH.
if [[ ! -x /usr/sbin/rsyslogd ]] && ! command -v rsyslogd >/dev/null; then
  install_package rsyslog
fi
# The TLS driver (gtls) of the RFC 5425 test listener.
if ! compgen -G '/usr/lib/*/rsyslog/lmnsd_gtls.so' >/dev/null; then
  install_package rsyslog-gnutls
fi

scripts/s3-test-server.sh >/dev/null
scripts/smtp-test-server.sh >/dev/null

# The official OpenTelemetry protobuf package (PyPI opentelemetry-proto),
# into the same venv: the LTS tests' OTLP receiver decodes with it, and
# zstd request bodies with zstandard.
if ! target/s3-venv/bin/python -c 'import opentelemetry.proto.collector.logs.v1.logs_service_pb2, zstandard' 2>/dev/null; then
  echo "test-deps: installing opentelemetry-proto and zstandard into target/s3-venv" >&2
  target/s3-venv/bin/python -m pip install --quiet --disable-pip-version-check "opentelemetry-proto==1.45.2" "zstandard==0.23.0"
fi
