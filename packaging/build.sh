#!/bin/sh
# Build the `mycelium` binary with Nuitka.
#
#   packaging/build.sh [MODE] [OUT]
#     MODE  packed          one file: packaging/launcher/launcher.c followed by the
#                           zstd-compressed standalone folder; unpacked once per
#                           build to ($XDG_CACHE_HOME or ~/.cache)/mycelium/bin-ID,
#                           then every start is one stat + one exec (the default)
#           standalone      a folder: OUT/mycelium.dist/mycelium (+ libs)
#           onefile         one file, unpacked to a fresh temp dir each run
#           onefile-cached  one file, unpacked once to a persistent cache dir
#                           ($XDG_CACHE_HOME or ~/.cache)/mycelium/bin-VERSION)
#     OUT   output folder (default dist/MODE)
#   PYTHON  the Python whose site-packages hold Nuitka and the runtime
#           dependencies (default build/venv/bin/python; `make dist` makes it)
#
# The binary carries the Python runtime, the agent package compiled to C,
# wasmtime's native library laid out as in site-packages
# (wasmtime/linux-ARCH/_libwasmtime.so plus its dist-info, so agent/core/wasm.py
# finds it unchanged), agent/core/crdt_core.wasm and its precompiled .cwasm.
# Where wasmtime has no build (armhf), the binary runs the reference engine.
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=${1:-packed}
OUT=${2:-$REPO/dist/$MODE}
PYTHON=${PYTHON:-$REPO/build/venv/bin/python}
JOBS=${JOBS:-$(nproc)}
cd "$REPO"

# what the build needs besides the venv (Debian: apt-get install gcc python3-dev
# python3-venv patchelf ccache libzstd-dev)
for t in "${CC:-gcc}" patchelf; do
  command -v "$t" >/dev/null || { echo "build.sh: no $t (apt-get install gcc patchelf)" >&2; exit 2; }
done
if [ "$MODE" = packed ] && ! printf '#include <zstd.h>\n' | "${CC:-gcc}" -E - >/dev/null 2>&1; then
  echo "build.sh: packed mode needs zstd.h and libzstd.a (apt-get install libzstd-dev)" >&2
  exit 2
fi
command -v ccache >/dev/null || echo "build.sh: no ccache: every build compiles from scratch" >&2

machine=$(uname -m)
stage=$REPO/build/stage-$machine
rm -rf "$stage"
mkdir -p "$stage" "$OUT"

# wasmtime's library, found the way agent/core/wasm.py finds it
wt=$("$PYTHON" - <<'PY'
import importlib.machinery, os, sys
spec = importlib.machinery.PathFinder.find_spec("wasmtime")
if spec and spec.submodule_search_locations:
    loc = list(spec.submodule_search_locations)[0]
    lib = os.path.join(loc, "linux-%s" % os.uname().machine, "_libwasmtime.so")
    if os.path.isfile(lib):
        parent = os.path.dirname(loc)
        info = [n for n in os.listdir(parent)
                if n.startswith("wasmtime-") and n.endswith(".dist-info")]
        print(lib, info[0] if info else "")
PY
)
set --
if [ -n "$wt" ]; then
  lib=${wt% *}
  info=${wt#* }
  set -- "--include-data-files=$stage/_libwasmtime.so=wasmtime/linux-$machine/_libwasmtime.so"
  if [ -n "$info" ]; then
    mkdir -p "$stage/$info"
    echo "Name: wasmtime" > "$stage/$info/METADATA"
    set -- "$@" "--include-data-files=$stage/$info/METADATA=$info/METADATA"
  fi
  # precompile the core for this wasmtime and CPU; wasm.py falls back to
  # compiling (and caching in the user's cache dir) if the CPU differs
  if MYCELIUM_CACHE_DIR="$stage/cwasm" MYCELIUM_CORE=wasm PYTHONPATH="$REPO" "$PYTHON" -c \
      "from agent.core.wasm import WasmEngine; WasmEngine().close()" 2>/dev/null; then
    for f in "$stage"/cwasm/*.cwasm; do
      [ -f "$f" ] && set -- "$@" "--include-data-files=$f=agent/core/$(basename "$f")"
    done
  fi
  # its .symtab is not needed by ctypes (dynamic symbols stay): 29.7 -> 24.0 MB on x86
  cp "$lib" "$stage/_libwasmtime.so"
  strip --strip-unneeded "$stage/_libwasmtime.so" 2>/dev/null || cp "$lib" "$stage/_libwasmtime.so"
  echo "wasm core: wasmtime library $lib" >&2
else
  echo "wasm core: no wasmtime library for $machine; the binary runs the reference engine" >&2
  set -- "--nofollow-import-to=wasmtime"
fi

case $MODE in
  standalone|packed) set -- "$@" --mode=standalone ;;
  onefile) set -- "$@" --mode=onefile ;;
  onefile-cached)
    ver=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo dev)
    ver=$ver-$(cat agent/core/crdt_core.wasm packaging/requirements-runtime.txt | sha256sum | cut -c1-8)
    set -- "$@" --mode=onefile --onefile-cache-mode=cached \
      "--onefile-tempdir-spec={CACHE_DIR}/mycelium/bin-$ver" ;;
  *) echo "MODE must be packed, standalone, onefile or onefile-cached" >&2; exit 2 ;;
esac

# wheels ship their extension modules with debug info (pyroaring 8.9 MB, 1.0
# MB stripped); Nuitka copies them as they are, so strip them in place in the
# build venv first (STRIP_DEPS=0 leaves the venv alone)
if [ "${STRIP_DEPS:-1}" = 1 ]; then
  site=$("$PYTHON" -c "import sysconfig; print(sysconfig.get_paths()['platlib'])")
  find "$site" -name '*.so' ! -name '_libwasmtime.so' -exec strip --strip-debug {} + 2>/dev/null || true
fi

# static imports only (DESIGN.md), so following them finds everything; what
# the agent never imports stays out. Nuitka also carries ~200 stdlib modules
# nobody imports; PyNaCl (imported only inside serve, sync and init, and
# whose compiled _sodium loads _cffi_backend from C) is named outright; the
# listed ones are dropped (a module named there cannot be
# imported by the binary, so only ones the agent has no use for are listed),
# and so are the CJK codec libraries (_codecs_cn, _jp, ...: removed below).
t0=$(date +%s)
PYTHONPATH="$REPO" "$PYTHON" -m nuitka "$@" \
  --output-dir="$REPO/build/nuitka-$MODE-$machine" --output-filename=mycelium \
  --lto=no --jobs="$JOBS" --assume-yes-for-downloads --quiet \
  --report="$REPO/build/nuitka-$MODE-$machine.report.xml" \
  --python-flag=no_site --python-flag=static_hashes --python-flag=safe_path \
  --python-flag=no_docstrings \
  --include-package=agent \
  --include-package=nacl --include-module=nacl._sodium --include-module=_cffi_backend \
  --include-data-files="$REPO/agent/core/crdt_core.wasm=agent/core/crdt_core.wasm" \
  --nofollow-import-to=zstandard.backend_cffi,pytest,hypothesis,_pytest,unittest,doctest,pydoc,tkinter,setuptools,distutils,pip,wasmtime,bench,tests \
  --nofollow-import-to=cgi,cgitb,chunk,crypt,ftplib,imaplib,imghdr,imp,mailcap,modulefinder,netrc,nturl2path,pickletools,pipes,poplib,pstats,pyclbr,rlcompleter,sndhdr,symtable,uu,webbrowser,xdrlib,__hello__,__phello__,_aix_support,_osx_support,_pydecimal,xmlrpc,lib2to3,idlelib,turtledemo,ensurepip,venv,curses,dbm \
  --noinclude-setuptools-mode=nofollow --noinclude-pytest-mode=nofollow \
  --noinclude-unittest-mode=nofollow --noinclude-pydoc-mode=nofollow \
  packaging/mycelium_main.py
t1=$(date +%s)

b=$REPO/build/nuitka-$MODE-$machine
if [ -d "$b/mycelium_main.dist" ]; then
  rm -f "$b"/mycelium_main.dist/_codecs_cn.so "$b"/mycelium_main.dist/_codecs_hk.so \
        "$b"/mycelium_main.dist/_codecs_iso2022.so "$b"/mycelium_main.dist/_codecs_jp.so \
        "$b"/mycelium_main.dist/_codecs_kr.so "$b"/mycelium_main.dist/_codecs_tw.so
fi
if [ "$MODE" = packed ]; then
  # one file: packaging/launcher + the standalone folder, zstd-compressed;
  # unpacked once per build id, then each start is one stat and one exec
  ${CC:-gcc} -O2 -Wall -s -o "$b/launcher" "$REPO/packaging/launcher/launcher.c" \
    -Wl,-Bstatic -lzstd -Wl,-Bdynamic
  "$PYTHON" "$REPO/packaging/pack.py" "$b/launcher" "$b/mycelium_main.dist" "$OUT/mycelium"
  t1=$(date +%s)
  echo "built $OUT/mycelium (packed, $machine) in $((t1 - t0)) s, $(stat -c %s "$OUT/mycelium") bytes" >&2
  exit 0
fi
rm -rf "$OUT/mycelium" "$OUT/mycelium.dist"
if [ "$MODE" = standalone ]; then
  cp -a "$b/mycelium_main.dist" "$OUT/mycelium.dist"
  ln -sf mycelium.dist/mycelium "$OUT/mycelium"
else
  cp "$b/mycelium" "$OUT/mycelium"
fi
size=$(du -sb "$OUT/mycelium" "$OUT/mycelium.dist" 2>/dev/null | awk '{s+=$1} END {print s}')
[ "$MODE" = standalone ] && size=$(du -sb "$OUT/mycelium.dist" | cut -f1)
echo "built $OUT/mycelium ($MODE, $machine) in $((t1 - t0)) s, $size bytes" >&2
