#!/bin/sh
# Make (or reuse) build/venv, the build venv of `make dist`: Debian's (or the
# given) python3 with packaging/requirements.txt. Rebuilt only when the
# requirement files change (their hash is kept in build/venv/.req).
set -eu
REPO=$(cd "$(dirname "$0")/.." && pwd)
V=$REPO/build/venv
BASE=${BASE_PYTHON:-/usr/bin/python3}
[ -x "$BASE" ] || BASE=python3
want=$(cat "$REPO/packaging/requirements.txt" "$REPO/packaging/requirements-runtime.txt" |
       sha256sum | cut -c1-16)
if [ -x "$V/bin/python" ] && [ "$(cat "$V/.req" 2>/dev/null)" = "$want" ]; then
  exit 0
fi
echo "making $V" >&2
rm -rf "$V"
"$BASE" -m venv "$V"
(cd "$REPO/packaging" && "$V/bin/pip" install -q -r requirements.txt)
echo "$want" > "$V/.req"
