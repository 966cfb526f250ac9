#!/bin/sh
# Install, upgrade, removal, reinstall and purge of the mycelium package, run
# as root inside a throwaway Debian root (packaging/deb/test-root.sh makes
# one over the arm64 root of cross/). Every step checks what an operator
# relies on, and the script stops at the first check that fails.
#
#   sh checks.sh OLD.deb NEW.deb        two versions of one build
#
# The root has systemd's files but no running systemd: enablement (the
# symlinks deb-systemd-helper keeps) is real here; the start, restart and stop
# the scripts ask for are recorded by a deb-systemd-invoke put first on PATH,
# since only a booted systemd can carry them out.
set -eu
OLD=$1
NEW=$2
# shellcheck source=packaging/deb/check-lib.sh
. "$(dirname "$0")/check-lib.sh"
as_svc() { runuser -u mycelium -- env MYCELIUM_CACHE_DIR=/var/cache/mycelium mycelium "$@"; }
wants=/etc/systemd/system/multi-user.target.wants/mycelium.service

# what the maintainer scripts ask of systemd, recorded
mkdir -p /run/systemd/system /usr/local/bin
CALLS=/tmp/invoke.log
: > "$CALLS"
cat > /usr/local/bin/deb-systemd-invoke <<SH
#!/bin/sh
echo "\$*" >> $CALLS
SH
chmod 0755 /usr/local/bin/deb-systemd-invoke
called() { grep -qx "$1 mycelium.service" "$CALLS"; }

echo "== install $(basename "$OLD")"
t=$(now); dpkg -i "$OLD"; echo "time install $(took "$t") s"
check "the binary runs" mycelium --version
check "a system user mycelium" sh -c '[ "$(id -u mycelium)" -lt 1000 ]'
check "its shell is nologin" sh -c 'getent passwd mycelium | grep -q ":/usr/sbin/nologin$"'
check "/var/lib/mycelium belongs to it, 0750" \
  sh -c '[ "$(stat -c %U:%a /var/lib/mycelium)" = mycelium:750 ]'
check "the identity was made, as mycelium" \
  sh -c '[ "$(stat -c %U /var/lib/mycelium/identity.json)" = mycelium ]'
check "no file in the data directory belongs to root" \
  sh -c '[ -z "$(find /var/lib/mycelium ! -user mycelium)" ]'
id1=$(as_svc id)
check "the device has an id" test -n "$id1"
check "the unit is enabled" test -L "$wants"
check "the service was started" called start
check "the CLI finds the data directory through /etc/mycelium" \
  sh -c 'runuser -u nobody -- mycelium config show | grep -q "^data_dir *= \"/var/lib/mycelium\" *# /etc/mycelium/mycelium.toml"'
check "root may read the service's data (status names the device)" \
  sh -c "mycelium status | grep -q '^device *$id1'"
check "a user outside its group is told whose directory it is" sh -c \
  '! runuser -u nobody -- mycelium get k 2>/tmp/err && grep -q "belongs to user mycelium" /tmp/err'
check "root may not write it, and is told how" sh -c \
  '! mycelium put k x=1 2>/tmp/err && grep -q "sudo -u mycelium" /tmp/err'
check "a write as the service's user" as_svc put sensor/1 t:=21.5
check "systemd-analyze verify passes on the installed unit" \
  sh -c '! command -v systemd-analyze || systemd-analyze verify /lib/systemd/system/mycelium.service'

# the operator's edit to the conffile; an older packed binary's unpacked copies
echo 'durable = true' >> /etc/mycelium/mycelium.toml
mkdir -p /var/cache/mycelium/bin-0123456789abcdef0123456789abcdef
echo x > /var/cache/mycelium/crdt_core-wasmtime0-old.cwasm
: > "$CALLS"

echo "== upgrade to $(basename "$NEW")"
t=$(now); dpkg -i "$NEW"; echo "time upgrade $(took "$t") s"
v=$(dpkg-query -W -f '${Version}' mycelium)
check "the new version is installed ($v)" sh -c "dpkg-query -W -f '\${Status}' mycelium | grep -q 'install ok installed'"
check "the device keeps its id" test "$(as_svc id)" = "$id1"
check "the record written before is there" sh -c \
  'runuser -u mycelium -- mycelium --json get sensor/1 | grep -q "21.5"'
check "the operator's edit to mycelium.toml is kept" grep -qx 'durable = true' /etc/mycelium/mycelium.toml
check "config show reads it" sh -c 'mycelium config show | grep -q "^durable *= true"'
check "old unpacked copies are gone" sh -c '! ls -d /var/cache/mycelium/bin-* 2>/dev/null'
check "old compiled cores are gone" test ! -e /var/cache/mycelium/crdt_core-wasmtime0-old.cwasm
check "the service was restarted" called restart
check "and not stopped first" sh -c "! grep -q '^stop' $CALLS"
check "the unit stays enabled" test -L "$wants"
: > "$CALLS"

echo "== remove"
t=$(now); dpkg -r mycelium; echo "time remove $(took "$t") s"
check "the service was stopped" called stop
check "the binary is gone" sh -c '! command -v mycelium && [ ! -e /usr/lib/mycelium ]'
check "the unit is gone" test ! -e /lib/systemd/system/mycelium.service
check "the cache is gone" test ! -e /var/cache/mycelium
check "the unit is masked, not left enabled" sh -c \
  "[ ! -e $wants ] && [ \"\$(readlink /etc/systemd/system/mycelium.service)\" = /dev/null ]"
check "the data directory is kept" test -f /var/lib/mycelium/identity.json
check "the configuration is kept" test -f /etc/mycelium/mycelium.toml

echo "== reinstall"
dpkg -i "$NEW"
check "the device has its old id" test "$(as_svc id)" = "$id1"
check "and its records" sh -c 'runuser -u mycelium -- mycelium --json get sensor/1 | grep -q 21.5'
check "the unit is enabled again" test -L "$wants"
check "and unmasked" test ! -L /etc/systemd/system/mycelium.service

echo "== purge"
t=$(now); dpkg -P mycelium 2>/tmp/purge.err; echo "time purge $(took "$t") s"
cat /tmp/purge.err
check "purge says where the data stays" grep -q "kept /var/lib/mycelium" /tmp/purge.err
check "the package is gone from dpkg" sh -c '! dpkg-query -W mycelium 2>/dev/null | grep -q .'
check "/etc/mycelium is gone" test ! -e /etc/mycelium
check "no unit, link or mask of mycelium is left" sh -c \
  '[ -z "$(find /etc/systemd /lib/systemd -name "mycelium*" 2>/dev/null)" ]'
check "nothing else of the package is left" sh -c \
  '[ -z "$(find /usr /etc /var/cache /var/lib/systemd /var/lib/dpkg/info /lib -name "*mycelium*" 2>/dev/null)" ]'
check "the data directory is still there" test -f /var/lib/mycelium/identity.json

rm -f /usr/local/bin/deb-systemd-invoke
if [ "$fails" -ne 0 ]; then echo "$fails checks failed"; exit 1; fi
echo "all checks passed"
