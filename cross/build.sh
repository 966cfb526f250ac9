#!/bin/sh
# Build the `mycelium` binary for ARCH (arm64 default, or armhf) inside the
# Debian bookworm root of cross/mkroot.sh, through qemu-user + binfmt.
#
#   sudo [ARCH=arm64] [MODE=packed] [XCC=1] cross/build.sh
#
# Nuitka's Python phase runs emulated in the root. With XCC=1 (default) its C
# phase runs at native speed: Debian's x86_64 -> ARCH cross compiler of the
# host is bind-mounted into the root (with its loader and libraries) and used
# as CC; it finds the root's own headers and libraries (libpython3.11.a
# included) through Debian's multiarch paths. XCC=0 compiles with the root's
# gcc under emulation (slow). ccache ($CROSS_CACHE/ccache-ARCH) and the root
# are kept between builds. armhf has no wasmtime: its binary runs the
# reference engine. Output: dist/ARCH/mycelium (+ mycelium.dist for standalone).
# shellcheck source=cross/common.sh
. "$(dirname "$0")/common.sh"
MODE=${MODE:-packed}
XCC=${XCC:-1}
ensure_root
t0=$(date +%s)

if [ "$XCC" = 1 ]; then
  if ! command -v "$DEB_TRIPLET-gcc" >/dev/null; then
    log "installing the host cross compiler gcc-$DEB_TRIPLET"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "gcc-$DEB_TRIPLET" ccache >/dev/null
  fi
  export XCC_TRIPLET="$DEB_TRIPLET"
  export XCC_ENV="CC=/usr/bin/$DEB_TRIPLET-gcc NUITKA_CCACHE_BINARY=/opt/xcc/ccache"
fi

nuitka=$(grep -i '^nuitka==' "$REPO/packaging/requirements.txt")
if ! in_root /opt/venv/bin/python -m pip show -q nuitka >/dev/null 2>&1 ||
   [ "$(in_root /opt/venv/bin/python -m nuitka --version 2>/dev/null | head -1)" != "${nuitka#*==}" ]; then
  log "installing $nuitka in the root"
  in_root /opt/venv/bin/pip install -q "$nuitka" zstandard
fi

sync_src
log "building ($MODE, XCC=$XCC)"
in_root sh -c "cd /src && PYTHON=/opt/venv/bin/python sh packaging/build.sh $MODE /src/dist/$ARCH"
out=$REPO/dist/$ARCH
mkdir -p "$out"
rm -rf "$out/mycelium" "$out/mycelium.dist"
cp -a "$ROOT/src/dist/$ARCH/." "$out/"
t1=$(date +%s)
if [ "$MODE" = standalone ]; then
  size=$(du -sb "$out/mycelium.dist" | cut -f1)
else
  size=$(stat -c %s "$out/mycelium")
fi
log "dist/$ARCH/mycelium: $size bytes, built in $((t1 - t0)) s (root ready before)"
echo "$ARCH $MODE xcc=$XCC size=$size build_s=$((t1 - t0))" >> "$CROSS_CACHE/build-times.log"
