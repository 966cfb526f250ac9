#!/bin/sh
# Build and install `mycelium` on an Android device, inside Termux.
#
#   sh packaging/termux/build.sh            check, build, install to $PREFIX/bin
#   sh packaging/termux/build.sh --check    only the checks (also runs off-device:
#                                           then it checks the reference-engine
#                                           path with the local python)
#   sh packaging/termux/build.sh --no-nuitka
#                                           install as a Python app (pip), no compile
#
# Termux has no wasmtime build for Android (the PyPI wheels are manylinux/glibc,
# Termux is bionic), so the binary runs the pure-Python reference engine
# (MYCELIUM_CORE=reference is implied: agent.core falls back when wasmtime is
# absent). If a libwasmtime for Android exists one day, put it at
# $PREFIX/lib/python3.X/site-packages/wasmtime/linux-aarch64/_libwasmtime.so
# with a wasmtime-VERSION.dist-info beside it and rebuild.
#
# Steps on the device (first time, ~20-40 min on a phone, mostly Nuitka's C phase):
#   pkg update && pkg install python clang make patchelf ccache binutils git libsodium
#   git clone <this repo> && cd mycelium && sh packaging/termux/build.sh
set -eu
REPO=$(cd "$(dirname "$0")/../.." && pwd)
MODE=check-build
case "${1:-}" in
  --check) MODE=check ;;
  --no-nuitka) MODE=pip ;;
  "") ;;
  *) echo "usage: $0 [--check|--no-nuitka]" >&2; exit 2 ;;
esac

say() { printf 'termux-build: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

on_termux=0
if [ -n "${TERMUX_VERSION:-}" ] || [ -d /data/data/com.termux ]; then on_termux=1; fi
PREFIX=${PREFIX:-/usr}
PY=${PYTHON:-python3}

# ---- checks (all modes)
command -v "$PY" >/dev/null || die "no $PY: pkg install python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 11), sys.version' \
  || die "Python 3.11 or later is needed"
if [ "$on_termux" = 1 ]; then
  for t in clang make patchelf; do
    command -v "$t" >/dev/null || die "no $t: pkg install clang make patchelf ccache binutils"
  done
  # PyNaCl (actor keys and signatures) builds against Termux's libsodium
  [ -e "$PREFIX/include/sodium.h" ] || die "no libsodium: pkg install libsodium"
  export SODIUM_INSTALL=system
  free_kb=$(df -k "$HOME" | awk 'NR == 2 { print $4 }')
  [ "${free_kb:-0}" -gt 1048576 ] || say "warning: under 1 GB free in $HOME; the build needs about 1 GB"
else
  say "not on Termux: checking the reference-engine path with $PY only"
fi

# ---- the build environment: a venv with the runtime dependencies (no
# wasmtime: there is no Android build). The self-check below runs in it, so
# it checks what gets installed, not whatever the system python happens to have.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT INT TERM
venv=${MYCELIUM_BUILD_VENV:-$HOME/.cache/mycelium-build/venv}
if [ ! -x "$venv/bin/python" ]; then
  say "making the build venv $venv"
  "$PY" -m venv "$venv" || die "cannot make a venv with $PY (Debian: apt-get install python3-venv)"
fi
# zstandard, pyroaring and psutil compile from source with Termux's clang
# when no wheel fits
grep -v '^wasmtime' "$REPO/packaging/requirements-runtime.txt" > "$tmp/req.txt"
say "installing the runtime dependencies into the venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r "$tmp/req.txt" \
  || die "pip could not install the runtime dependencies (see above)"

# the agent must run on the reference engine, with no wasmtime at all
MYCELIUM_CORE=reference PYTHONPATH="$REPO" "$venv/bin/python" - "$tmp/d" <<'PY' || die "reference-engine self-check failed"
import sys
from agent.core import load_engine
from agent.node import Node, init_identity
from agent.values import Inc
assert load_engine().name == "reference"
init_identity(sys.argv[1])
from agent.sync.identity import ensure_identity  # the TLS identity, made in Python
ensure_identity(sys.argv[1])
with Node.open(sys.argv[1]) as n:
    n.put("k", {"n": Inc(2), "s": "x"})
    assert n.get("k") == {"n": 2, "s": "x"}, n.get("k")
print("termux-build: reference engine ok", file=sys.stderr)
PY
[ "$MODE" = check ] && { say "checks passed"; exit 0; }
[ "$on_termux" = 1 ] || die "building and installing runs on the device only (use --check here)"

# ---- build on the device
if [ "$MODE" = pip ]; then
  "$venv/bin/pip" install -q -r "$tmp/req.txt" "$REPO"
  ln -sf "$venv/bin/mycelium" "$PREFIX/bin/mycelium"
  say "installed $PREFIX/bin/mycelium (Python app, reference engine)"
  exit 0
fi
grep -i '^nuitka==' "$REPO/packaging/requirements.txt" >> "$tmp/req.txt"
"$venv/bin/pip" install -q -r "$tmp/req.txt"
# Termux's Python is shared-only: Nuitka links libpython dynamically there.
# On the device a standalone folder is the best fit: nothing to unpack, the
# fastest start (bench/startup.py), and no static libzstd needed for the
# packed launcher. It goes to $PREFIX/opt/mycelium, linked from $PREFIX/bin.
CC=${CC:-clang} PYTHON="$venv/bin/python" sh "$REPO/packaging/build.sh" standalone \
  "$REPO/dist/termux"
rm -rf "$PREFIX/opt/mycelium"
mkdir -p "$PREFIX/opt"
cp -R "$REPO/dist/termux/mycelium.dist" "$PREFIX/opt/mycelium"
ln -sf "$PREFIX/opt/mycelium/mycelium" "$PREFIX/bin/mycelium"
say "installed $PREFIX/opt/mycelium, linked as $PREFIX/bin/mycelium"
MYCELIUM_CORE=reference EXPECT_ENGINE=reference sh "$REPO/packaging/smoke.sh" "$PREFIX/bin/mycelium"
