#!/bin/sh
# Build the CRDT core: native/crdt_core.c -> agent/core/crdt_core.wasm.
#
#   native/build.sh              full core into agent/core/crdt_core.wasm,
#                                then every trimmed variant into native/out/
#   native/build.sh OUT [FLAGS]  one build into OUT with extra -D flags
#
# Reproducible: same source and tool versions give the same bytes (no debug
# info, no producers section, no paths or dates in the output).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
CLANG=${CLANG:-clang}
WASM_OPT=${WASM_OPT:-wasm-opt}

need_tools() {
    command -v "$CLANG" >/dev/null 2>&1 && command -v wasm-ld >/dev/null 2>&1 \
        && command -v "$WASM_OPT" >/dev/null 2>&1
}
if ! need_tools; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq clang lld binaryen
    fi
    need_tools || { echo "build.sh: need clang, wasm-ld (lld) and wasm-opt (binaryen)" >&2; exit 1; }
fi

build() { # out, extra flags...
    out=$1; shift
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    # compile and link as two steps: clang's own driver would run wasm-opt
    # from PATH behind our back
    (cd "$here" && "$CLANG" --target=wasm32 -nostdlib -ffreestanding -O2 -mbulk-memory \
        -fno-ident -fdebug-prefix-map="$here"=. "$@" -c -o "$tmp/core.o" crdt_core.c)
    wasm-ld --no-entry --gc-sections --strip-all -z stack-size=65536 \
        --export=apply --export=merge --export=alloc --export=heap_base --export=result \
        -o "$tmp/raw.wasm" "$tmp/core.o"
    "$WASM_OPT" -Oz --enable-bulk-memory --strip-debug --strip-producers \
        --strip-target-features "$tmp/raw.wasm" -o "$tmp/opt.wasm"
    mkdir -p "$(dirname "$out")"
    cp "$tmp/opt.wasm" "$out"
    rm -rf "$tmp"
    trap - EXIT
}

size_line() { # name, file
    raw=$(wc -c <"$2" | tr -d ' ')
    gz=$(gzip -9n <"$2" | wc -c | tr -d ' ')
    printf '%-28s %7s bytes raw %7s bytes gzipped\n' "$1" "$raw" "$gz"
}

if [ $# -ge 1 ]; then
    out=$1; shift
    build "$out" "$@"
    size_line "$(basename "$out")" "$out"
    exit 0
fi

build "$root/agent/core/crdt_core.wasm"
size_line "full" "$root/agent/core/crdt_core.wasm"
mkdir -p "$here/out"
for v in "NO_COUNTER" "NO_MV" "NO_SET" "NO_MV NO_SET" "NO_COUNTER NO_MV NO_SET"; do
    flags=""; name="core"
    for f in $v; do flags="$flags -D$f"; name="$name-$(echo "$f" | tr 'A-Z_' 'a-z-')"; done
    # shellcheck disable=SC2086
    build "$here/out/$name.wasm" $flags
    size_line "$name ($v)" "$here/out/$name.wasm"
done
