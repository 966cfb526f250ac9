#!/bin/sh
# Make .venv with Mycelium installed. Usage: scripts/bootstrap.sh [pip extras, e.g. test]
# Installs python3-venv with apt-get when it is missing (as root, or with sudo).
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! command -v "$PY" >/dev/null 2>&1; then
    echo "mycelium: python3 (3.11 or later) is needed: apt-get install python3 python3-venv" >&2
    exit 2
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "mycelium: Python 3.11 or later is needed; this is $("$PY" -V 2>&1)" >&2
    exit 2
fi
if [ ! -x .venv/bin/python ]; then
    if ! "$PY" -m venv .venv >/dev/null 2>&1; then
        rm -rf .venv
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO=sudo
        echo "mycelium: installing python3-venv with apt-get" >&2
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq python3-venv >/dev/null
        "$PY" -m venv .venv
    fi
fi
EXTRAS=${1:-}
if [ "$EXTRAS" = test ]; then
    # tests/test_readonly.py checks with strace that reads write nothing;
    # tests/sync/test_invite.py reads invite's QR code back with zbarimg;
    # tests/core/test_wasm_build.py rebuilds the core with native/TOOLCHAIN's
    # clang, wasm-ld and wasm-opt (Debian 12's clang, lld and binaryen);
    # tests/observe/ drive the dashboard in headless Chromium
    need=""
    command -v strace >/dev/null 2>&1 || need="$need strace"
    command -v zbarimg >/dev/null 2>&1 || need="$need zbar-tools"
    command -v clang >/dev/null 2>&1 || need="$need clang"
    command -v wasm-ld >/dev/null 2>&1 || need="$need lld"
    command -v wasm-opt >/dev/null 2>&1 || need="$need binaryen"
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
        need="$need chromium"
    if [ -n "$need" ]; then
        SUDO=""
        [ "$(id -u)" = 0 ] || SUDO=sudo
        echo "mycelium: installing$need with apt-get (for the tests)" >&2
        # shellcheck disable=SC2086 # a list of names
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq --no-install-recommends $need >/dev/null
    fi
fi
SPEC="."
[ -n "$EXTRAS" ] && SPEC=".[$EXTRAS]"
.venv/bin/python -m pip install -q --disable-pip-version-check -e "$SPEC"
