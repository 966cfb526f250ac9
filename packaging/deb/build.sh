#!/bin/sh
# Build the Debian package of mycelium with dpkg-deb (no debhelper needed).
#
#   sh packaging/deb/build.sh ARCH SRC [OUT]
#     ARCH  the Debian architecture: arm64, armhf or amd64
#     SRC   a standalone build folder (packaging/build.sh standalone makes
#           mycelium.dist), installed as /usr/lib/mycelium with
#           /usr/bin/mycelium linking to its executable; or one executable file
#     OUT   where mycelium_VERSION_ARCH.deb goes (default dist/)
#   VERSION  the package version (default: agent/__init__.py's __version__)
#
# The package holds the binary, the systemd unit (packaging/systemd, with
# /usr/bin paths), /etc/mycelium/mycelium.toml (a conffile: an operator's
# edits survive upgrades), the docs, and maintainer scripts that make the
# `mycelium` system user and the device identity, restart the service on
# upgrade, and uninstall cleanly (postinst, prerm, postrm here). A standalone
# folder rather than the packed binary: dpkg owns every file, nothing is
# unpacked per user into a cache, and the first start is as fast as the rest.
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
[ $# -ge 2 ] || { sed -n '2,/^set/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
ARCH=$1
SRC=$2
OUT=${3:-$REPO/dist}
case $ARCH in
  arm64|armhf|amd64) ;;
  *) echo "deb: ARCH must be arm64, armhf or amd64, not $ARCH" >&2; exit 2 ;;
esac
command -v dpkg-deb >/dev/null || { echo "deb: no dpkg-deb (apt-get install dpkg)" >&2; exit 2; }
[ -e "$SRC" ] || { echo "deb: no build at $SRC (see packaging/build.sh)" >&2; exit 2; }
VERSION=${VERSION:-$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' "$REPO/agent/__init__.py")}
[ -n "$VERSION" ] || { echo "deb: no version in agent/__init__.py" >&2; exit 2; }

t0=$(date +%s)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
P=$stage/pkg
install -d "$P/DEBIAN" "$P/usr/bin" "$P/usr/lib" "$P/lib/systemd/system" "$P/etc/mycelium" \
  "$P/usr/share/doc/mycelium"
if [ -d "$SRC" ]; then
  [ -x "$SRC/mycelium" ] || { echo "deb: $SRC has no mycelium executable" >&2; exit 2; }
  cp -a "$SRC" "$P/usr/lib/mycelium"
else
  install -d "$P/usr/lib/mycelium"
  install -m 0755 "$SRC" "$P/usr/lib/mycelium/mycelium"
fi
ln -s ../lib/mycelium/mycelium "$P/usr/bin/mycelium"
sed -e 's|/usr/local/bin/mycelium|/usr/bin/mycelium|g' \
    -e 's|file:///usr/local/share/doc/mycelium/|file:///usr/share/doc/mycelium/|' \
    -e 's|^# Install: .*|# Installed by the mycelium package; settings in /etc/mycelium/mycelium.toml.|' \
    "$REPO/packaging/systemd/mycelium.service" > "$P/lib/systemd/system/mycelium.service"
install -m 0644 "$HERE/mycelium.toml" "$P/etc/mycelium/mycelium.toml"
install -m 0644 "$REPO/README.md" "$REPO/docs/OPERATIONS.md" "$P/usr/share/doc/mycelium/"
for s in postinst prerm postrm; do install -m 0755 "$HERE/$s" "$P/DEBIAN/$s"; done
echo /etc/mycelium/mycelium.toml > "$P/DEBIAN/conffiles"
size_kb=$(du -sk --exclude=DEBIAN "$P" | cut -f1)
# Depends: the system libraries that the ELF files need and the folder does
# not carry (readelf reads any architecture's ELF)
deps="libc6 (>= 2.36)"
needed=$(find "$P/usr/lib/mycelium" -type f -exec sh -c \
  'for f; do readelf -d "$f" 2>/dev/null; done' sh {} + | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | sort -u)
for lib in $needed; do
  case $lib in
    libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|ld-linux*) ;;
    libgcc_s.so.1) deps="$deps, libgcc-s1" ;;
    libstdc++.so.6) deps="$deps, libstdc++6" ;;
    libz.so.1) deps="$deps, zlib1g" ;;
    *) [ -n "$(find "$P/usr/lib/mycelium" -name "$lib" -print -quit)" ] ||
         { echo "deb: the build needs $lib, which it does not carry: add its package here" >&2; exit 2; } ;;
  esac
done
cat > "$P/DEBIAN/control" <<CTL
Package: mycelium
Version: $VERSION
Architecture: $ARCH
Maintainer: Mycelium developers <mycelium@localhost>
Installed-Size: $size_kb
Depends: $deps, passwd, util-linux
Recommends: systemd
Section: net
Priority: optional
Description: local-first sync agent for small devices
 Mycelium keeps records whose fields are CRDTs in a compact store and syncs
 them directly between devices over TLS with pinned device ids. The package
 runs it as the systemd service mycelium.service, as the system user
 mycelium, with its data in /var/lib/mycelium.
CTL
mkdir -p "$OUT"
deb=$OUT/mycelium_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$P" "$deb" >/dev/null
echo "deb: $deb, $(stat -c %s "$deb") bytes ($size_kb KB installed), built in $(($(date +%s) - t0)) s" >&2
