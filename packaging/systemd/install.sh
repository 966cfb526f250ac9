#!/bin/sh
# Install the mycelium binary and its systemd service (Raspberry Pi OS,
# Debian, any systemd Linux). Run as root:
#   sudo sh packaging/systemd/install.sh [BINARY]     default dist/arm64/mycelium
#                                                     on aarch64, else dist/mycelium
#   sudo sh packaging/systemd/install.sh --check      only check the unit file
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
UNIT=$HERE/mycelium.service
if [ "${1:-}" = --check ]; then
  if command -v systemd-analyze >/dev/null; then
    # ExecStart must exist for verify: point it at /bin/true in a copy
    t=$(mktemp -d)
    sed 's|^ExecStart=.*|ExecStart=/bin/true|; s|^User=.*|User=root|; s|^Group=.*|Group=root|' \
      "$UNIT" > "$t/mycelium.service"
    systemd-analyze verify "$t/mycelium.service"
    rm -rf "$t"
  fi
  echo "unit ok"
  exit 0
fi
[ "$(id -u)" = 0 ] || { echo "run as root (sudo)" >&2; exit 2; }
case $(uname -m) in
  aarch64) def=$REPO/dist/arm64/mycelium ;;
  armv7l|armv6l) def=$REPO/dist/armhf/mycelium ;;
  *) def=$REPO/dist/mycelium ;;
esac
BIN=${1:-$def}
[ -f "$BIN" ] || { echo "no binary at $BIN" >&2; exit 2; }
install -m 0755 "$BIN" /usr/local/bin/mycelium
install -d /usr/local/share/doc/mycelium
install -m 0644 "$REPO/docs/OPERATIONS.md" /usr/local/share/doc/mycelium/ 2>/dev/null || true
getent group mycelium >/dev/null || groupadd --system mycelium
getent passwd mycelium >/dev/null ||
  useradd --system --gid mycelium --home-dir /var/lib/mycelium --shell /usr/sbin/nologin mycelium
install -d -o mycelium -g mycelium -m 0750 /var/lib/mycelium /var/cache/mycelium
if [ ! -f /var/lib/mycelium/identity.json ]; then
  runuser -u mycelium -- env XDG_CACHE_HOME=/var/cache MYCELIUM_CACHE_DIR=/var/cache/mycelium \
    /usr/local/bin/mycelium --data-dir /var/lib/mycelium init
fi
install -m 0644 "$UNIT" /etc/systemd/system/mycelium.service
systemctl daemon-reload
systemctl enable mycelium.service
# start it, or restart it on the new binary when this is an upgrade
systemctl restart mycelium.service
# a packed binary unpacks into /var/cache/mycelium/bin-ID (packaging/launcher):
# drop the copies of earlier builds; the new one's id is in the file's trailer
if [ "$(tail -c 8 /usr/local/bin/mycelium)" = "MYCPACK1" ]; then
  id=$(tail -c 40 /usr/local/bin/mycelium | head -c 32)
  for old in /var/cache/mycelium/bin-*; do
    [ -e "$old" ] || continue
    [ "$old" = "/var/cache/mycelium/bin-$id" ] || rm -rf "$old"
  done
fi
echo "installed; this device's id (give it to peers):"
runuser -u mycelium -- env XDG_CACHE_HOME=/var/cache /usr/local/bin/mycelium --data-dir /var/lib/mycelium id
