#!/usr/bin/env bash
# Client compatibility suite: drives a real ctsd with the official Huawei Cloud
# SDK (huaweicloudsdkcts) and openstacksdk + otcextensions (compat/README.md).
#
#   scripts/compat.sh                 # run everything
#   scripts/compat.sh -k openstack    # extra arguments go to pytest
#   CTSD=/path/to/ctsd scripts/compat.sh
#   COMPAT_BUILD=1 scripts/compat.sh       # rebuild target/debug/ctsd first even if it exists
#
# The virtualenv lives in target/compat-venv and is re-created only when
# compat/requirements.txt (its sha256 is kept in the venv) or python3 changes.
set -euo pipefail
# A $CTSD given relative to the caller's directory.
if [[ -n "${CTSD:-}" ]]; then
    CTSD="$(realpath -m -- "$CTSD")"
fi
cd "$(dirname "$0")/.."
ROOT="$PWD"

PYTHON="${PYTHON:-python3}"
VENV="$ROOT/target/compat-venv"
REQS="$ROOT/compat/requirements.txt"
STAMP="$VENV/.requirements.stamp"

die() {
    echo "compat.sh: $*" >&2
    exit 1
}

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (Python 3.11 is needed)"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' ||
    die "$PYTHON is $("$PYTHON" -V 2>&1); Python >= 3.11 is needed (openstacksdk 4.22 and keystoneauth1 5.18 require it)"

# The venv is reused while the requirements and the Python version stay the same.
want="$(sha256sum "$REQS" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.version.split()[0])')"
have="$(cat "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" || ! -x "$VENV/bin/python" ]]; then
    echo "compat.sh: creating $VENV from compat/requirements.txt" >&2
    start=$SECONDS
    rm -rf "$VENV"
    mkdir -p "$ROOT/target"
    "$PYTHON" -m venv "$VENV" || die "could not create the virtualenv: $PYTHON -m venv $VENV"
    if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQS"; then
        rm -rf "$VENV"
        cat >&2 <<EOF
compat.sh: FAILED to install the client libraries from PyPI (is PyPI reachable?).
The compatibility suite cannot run without them; nothing was skipped. To retry by hand:

    $PYTHON -m venv $VENV
    $VENV/bin/python -m pip install -r $REQS

then run scripts/compat.sh again.
EOF
        exit 1
    fi
    echo "$want" >"$STAMP"
    echo "compat.sh: virtualenv ready in $((SECONDS - start))s" >&2
fi

if [[ -z "${CTSD:-}" ]]; then
    CTSD="$ROOT/target/debug/ctsd"
    if [[ ! -x "$CTSD" || -n "${COMPAT_BUILD:-}" ]]; then
        echo "compat.sh: building ctsd (cargo build -p cts-server --bins)" >&2
        cargo build -p cts-server --bins
    fi
fi
[[ -x "$CTSD" ]] || die "ctsd binary not found or not executable: $CTSD"
export CTSD

# No bytecode or pytest cache in the source tree.
export PYTHONDONTWRITEBYTECODE=1
exec "$VENV/bin/python" -m pytest -q compat/tests "$@"
