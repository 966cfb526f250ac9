#!/bin/sh
# Run the test suite (the subset in qemu/subset.txt, or SUBSET=all) inside the
# ARCH Debian root (cross/mkroot.sh) under qemu-user, once per engine:
#   arm64: the wasm core (checked to be the one loaded), then MYCELIUM_CORE=reference
#   armhf: the default (wasmtime has no build: the reference engine), then reference
# tests/packaging runs the built binary (dist/ARCH/mycelium) when there is one.
#
#   sudo [ARCH=arm64] [CORES="wasm reference"] [SUBSET=all] qemu/test-user.sh [PYTEST ARGS]
# Exit status: non-zero if any run failed. Timings go to stderr.
# shellcheck source=cross/common.sh
. "$(dirname "$0")/../cross/common.sh"
ensure_root
if [ "$ARCH" = arm64 ]; then CORES=${CORES:-wasm reference}; else CORES=${CORES:-default reference}; fi
if [ "${SUBSET:-}" = all ]; then
  args=tests
else
  args=$(grep -v '^#' "$REPO/qemu/subset.txt" | grep -v '^ *$' | tr '\n' ' ')
fi
sync_src
# the built binary of this ARCH, if any, for tests/packaging (it skips without)
binenv=
if [ -f "$REPO/dist/$ARCH/mycelium" ]; then
  mkdir -p "$ROOT/src/dist/$ARCH"
  cp "$REPO/dist/$ARCH/mycelium" "$ROOT/src/dist/$ARCH/mycelium"
  binenv="MYCELIUM_BINARY=/src/dist/$ARCH/mycelium"
fi
status=0
for core in $CORES; do
  t0=$(date +%s)
  env=
  [ "$core" = default ] || env="MYCELIUM_CORE=$core"
  if [ "$core" = wasm ]; then
    # fail loudly if the wasm core cannot load here, rather than test the fallback
    in_root sh -c "cd /src && MYCELIUM_CORE=wasm MYCELIUM_CACHE_DIR=/tmp/c python -c \
      'from agent.core import load_engine; e = load_engine(); assert e.name == \"wasm\", e.name; print(\"engine:\", e.name)'" \
      || { log "the wasm core does not load in the $ARCH root"; status=1; continue; }
  fi
  log "pytest ($core core): $args $*"
  if in_root sh -c "cd /src && $env $binenv PYTHONPATH=/src/qemu HYPOTHESIS_MAX_EXAMPLES=${HYPOTHESIS_MAX_EXAMPLES:-25} \
       python -m pytest -p pytest_emulated -p no:cacheprovider -q $args $*"; then
    log "pytest ($core core) passed in $(( $(date +%s) - t0 )) s"
  else
    status=1
    log "pytest ($core core) FAILED after $(( $(date +%s) - t0 )) s"
  fi
done
exit $status
