#!/bin/sh
# Test the package's install, upgrade, removal and purge (packaging/deb/
# checks.sh) inside a throwaway copy of the ARCH Debian root of cross/
# (arm64 by default; binaries run under qemu-user). Needs root.
#
#   sudo [ARCH=arm64] sh qemu/test-deb.sh [SRC]
#
# SRC is what the packages hold: a standalone build folder or an executable
# (default dist/ARCH/mycelium.dist, from `make deb ARCH=...`). Without one, a
# two-line launcher of the source tree with the root's Python stands in, so
# that CI tests the maintainer scripts on every run without a cross build.
# Two packages are built from SRC, VERSION~test1 and ~test2, and the second
# upgrades the first.
# shellcheck source=cross/common.sh
. "$(dirname "$0")/../cross/common.sh"
ensure_root
case $ARCH in arm64) DEB_ARCH=arm64 ;; armhf) DEB_ARCH=armhf ;; esac
SRC=${1:-$REPO/dist/$ARCH/mycelium.dist}
work=$(mktemp -d)
trap 'umount "$work/merged" 2>/dev/null || true; rm -rf "$work"' EXIT
if [ ! -e "$SRC" ]; then
  log "no build at $SRC: the packages hold a launcher of the source tree"
  SRC=$work/launcher
  printf '#!/bin/sh\nPYTHONPATH=/opt/mycelium-src exec /opt/venv/bin/python -m agent "$@"\n' > "$SRC"
  chmod 0755 "$SRC"
  src_tree=1
fi
base=$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' "$REPO/agent/__init__.py")
VERSION=$base~test1 sh "$REPO/packaging/deb/build.sh" "$DEB_ARCH" "$SRC" "$work/debs"
VERSION=$base~test2 sh "$REPO/packaging/deb/build.sh" "$DEB_ARCH" "$SRC" "$work/debs"

# the root, copy-on-write: the cached one is never changed
mkdir -p "$work/upper" "$work/ovl" "$work/merged"
mount -t overlay overlay -o "lowerdir=$ROOT,upperdir=$work/upper,workdir=$work/ovl" "$work/merged"
M=$work/merged
mkdir -p "$M/opt/debs"
cp "$work"/debs/*.deb "$REPO/packaging/deb/checks.sh" "$REPO/packaging/deb/check-lib.sh" "$M/opt/debs/"
if [ -n "${src_tree:-}" ]; then
  mkdir -p "$M/opt/mycelium-src"
  (cd "$REPO" && git ls-files -z -- agent | tar --null -T - -cf -) | tar -xf - -C "$M/opt/mycelium-src"
fi
t0=$(date +%s)
rc=0
ROOT=$M in_root sh /opt/debs/checks.sh "/opt/debs/mycelium_${base}~test1_$DEB_ARCH.deb" \
  "/opt/debs/mycelium_${base}~test2_$DEB_ARCH.deb" || rc=$?
ls -l "$work"/debs/*.deb >&2
log "package checks: exit $rc in $(($(date +%s) - t0)) s"
exit $rc
