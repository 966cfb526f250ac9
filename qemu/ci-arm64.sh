#!/bin/sh
# CI: build (or reuse the cached) arm64 Debian root, then run the qemu-user
# test subset (qemu/subset.txt) in it with the wasm core and with
# MYCELIUM_CORE=reference, then the Debian package test (qemu/test-deb.sh).
# Needs root (CI runs as root). The root lives in $CROSS_CACHE
# (default /var/cache/mycelium-cross) and is reused while
# cross/root-packages.txt and packaging/requirements-*.txt are unchanged.
# Measured on this 2-core machine: see docs/OPERATIONS.md ("CI").
set -eu
here=$(cd "$(dirname "$0")" && pwd)
t0=$(date +%s)
ARCH=arm64 sh "$here/../cross/mkroot.sh"
t1=$(date +%s)
rc=0
ARCH=arm64 sh "$here/test-user.sh" "$@" || rc=$?
t2=$(date +%s)
# the Debian package's install, upgrade and removal (a launcher of the source
# tree stands in for the cross-built binary, which CI does not build)
ARCH=arm64 sh "$here/test-deb.sh" || rc=$?
t3=$(date +%s)
echo "ci-arm64: root $((t1 - t0)) s, tests $((t2 - t1)) s, package $((t3 - t2)) s," \
  "total $((t3 - t0)) s, exit $rc" >&2
exit $rc
