#!/usr/bin/env bash
# Property-based API test: schemathesis (PyPI, pinned, into
# target/schemathesis-venv) generates requests from /openapi.json against a
# real debug ctsd with a fresh data directory and an admin token; any 5xx
# answer fails the run. Bounded: a few examples per operation, fixed seed.
#
#   scripts/schemathesis.sh                  # the CI run
#   ST_MAX_EXAMPLES=200 scripts/schemathesis.sh   # longer, locally
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VERSION=4.32.5
VENV="$ROOT/target/schemathesis-venv"
CTSD="${CTSD:-$ROOT/target/debug/ctsd}"

die() {
    echo "schemathesis.sh: $*" >&2
    exit 1
}

if [[ "$("$VENV/bin/schemathesis" --version 2>/dev/null || true)" != *"$VERSION"* ]]; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" || die "could not create $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION" ||
        die "could not install schemathesis $VERSION from PyPI"
fi
[[ -x "$CTSD" ]] || die "no $CTSD (cargo build -p cts-server --bins)"

DATA="$(mktemp -d)"
LOG="$DATA.log"
cleanup() {
    [[ -n "${PID:-}" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$DATA" "$LOG"
}
trap cleanup EXIT

export CTS_BOOTSTRAP_DOMAIN_NAME=cts CTS_BOOTSTRAP_USER_NAME=admin \
    CTS_BOOTSTRAP_PASSWORD=schemathesis-Passw0rd CTS_BOOTSTRAP_PROJECT_ID=0123456789abcdef0123456789abcdef
CTS_LISTEN=127.0.0.1:0 CTS_DATA_DIR="$DATA/data" "$CTSD" serve >"$LOG" 2>&1 &
PID=$!
URL=""
for _ in $(seq 100); do
    URL="$(sed -n 's/^ctsd listening on \(http:\/\/127\.0\.0\.1:[0-9]*\)$/\1/p' "$LOG")"
    [[ -n "$URL" ]] && break
    kill -0 "$PID" 2>/dev/null || die "ctsd exited: $(cat "$LOG")"
    sleep 0.1
done
[[ -n "$URL" ]] || die "ctsd did not say where it listens: $(cat "$LOG")"

TOKEN="$(curl -sS -i "$URL/v3/auth/tokens" -H 'Content-Type: application/json' -d '{
  "auth": {"identity": {"methods": ["password"], "password": {"user": {
      "name": "'"$CTS_BOOTSTRAP_USER_NAME"'", "password": "'"$CTS_BOOTSTRAP_PASSWORD"'",
      "domain": {"name": "'"$CTS_BOOTSTRAP_DOMAIN_NAME"'"}}}},
    "scope": {"project": {"id": "'"$CTS_BOOTSTRAP_PROJECT_ID"'"}}}}' |
    awk 'tolower($1)=="x-subject-token:" {print $2}' | tr -d '\r')"
[[ -n "$TOKEN" ]] || die "no token from POST /v3/auth/tokens"

# Every project-scoped route on the bootstrap project: a random one is 403.
cat >"$DATA/schemathesis.toml" <<TOML
[parameters]
"path.project_id" = "$CTS_BOOTSTRAP_PROJECT_ID"
TOML
"$VENV/bin/schemathesis" --config-file "$DATA/schemathesis.toml" run "$URL/openapi.json" \
    --url "$URL" \
    --header "X-Auth-Token: $TOKEN" \
    --checks not_a_server_error \
    --max-examples "${ST_MAX_EXAMPLES:-10}" \
    --seed 1 \
    --workers 1 \
    --no-color
