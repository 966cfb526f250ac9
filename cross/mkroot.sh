#!/bin/sh
# Make (or reuse) the Debian bookworm root for ARCH (arm64 default, armhf) in
# $CROSS_CACHE (default /var/cache/mycelium-cross). Measured cold: see
# docs/OPERATIONS.md. Usage: sudo ARCH=arm64 cross/mkroot.sh
# shellcheck source=cross/common.sh
. "$(dirname "$0")/common.sh"
ensure_root
log "root ready: $ROOT"
