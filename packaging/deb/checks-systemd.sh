#!/bin/sh
# The package under a booted systemd (qemu/test-deb-vm.sh runs it in a VM as
# a oneshot unit): install starts the service, an upgrade restarts it (a new
# MainPID, the records still there), an operator's disable survives an
# upgrade, removal stops it, purge leaves no unit behind, and journald holds
# one line per event. Lines for the host: "ok ...", "FAIL ...", "RESULT ...".
#
#   sh checks-systemd.sh OLD.deb NEW.deb [REPO]     REPO: also check packaging/systemd/install.sh
set -u
OLD=$1
NEW=$2
# shellcheck source=packaging/deb/check-lib.sh
. "$(dirname "$0")/check-lib.sh"
active() { [ "$(systemctl is-active mycelium.service)" = active ]; }
mainpid() { systemctl show -p MainPID --value mycelium.service; }
# until the service answers on its control socket (serve holds the store)
serving() {
  hash -r 2>/dev/null || true     # mycelium may have moved (/usr/bin, /usr/local/bin)
  i=0
  while [ $i -lt 120 ]; do
    if active && mycelium status 2>/dev/null | grep -q "^serve *running"; then return 0; fi
    sleep 0.5; i=$((i + 1))
  done
  systemctl status --no-pager mycelium.service
  journalctl -u mycelium.service -n 15 --no-pager -o cat
  mycelium status
  return 1
}

echo "== install (systemd $(systemctl --version | head -1 | cut -d' ' -f2))"
t=$(now); dpkg -i "$OLD" >/tmp/dpkg.out 2>&1 || cat /tmp/dpkg.out
echo "RESULT install_s $(took "$t")"
check "the service is enabled" sh -c '[ "$(systemctl is-enabled mycelium.service)" = enabled ]'
check "the service is running and serving" serving
pid1=$(mainpid)
check "as the mycelium user" sh -c "[ \"\$(ps -o user= -p $pid1)\" = mycelium ]"
check "a write through the running service" runuser -u mycelium -- mycelium put sensor/1 t:=21.5
check "journald has one 'listening on' line for the start" sh -c \
  '[ "$(journalctl -u mycelium.service -o cat | grep -c "listening on")" = 1 ]'

echo "== upgrade"
t=$(now); dpkg -i "$NEW" >/tmp/dpkg.out 2>&1 || cat /tmp/dpkg.out
echo "RESULT upgrade_s $(took "$t")"
check "the service runs again" serving
pid2=$(mainpid)
check "it was restarted (MainPID $pid1 -> $pid2)" sh -c "[ '$pid2' != '$pid1' ] && [ '$pid2' != 0 ]"
check "the record is there" sh -c 'mycelium --json get sensor/1 | grep -q 21.5'
check "the old process is gone" sh -c "! kill -0 $pid1 2>/dev/null"

echo "== an operator's disable, then an upgrade"
systemctl disable --now mycelium.service >/dev/null 2>&1
dpkg -i "$NEW" >/tmp/dpkg.out 2>&1 || cat /tmp/dpkg.out
check "it stays disabled" sh -c '[ "$(systemctl is-enabled mycelium.service)" = disabled ]'
systemctl enable --now mycelium.service >/dev/null 2>&1
check "enabled again by hand, it runs" serving

echo "== remove"
pid3=$(mainpid)
t=$(now); dpkg -r mycelium >/tmp/dpkg.out 2>&1 || cat /tmp/dpkg.out
echo "RESULT remove_s $(took "$t")"
check "the service is stopped" sh -c "! systemctl is-active --quiet mycelium.service && ! kill -0 $pid3 2>/dev/null"
check "the unit is masked" sh -c '[ "$(systemctl is-enabled mycelium.service)" = masked ]'
check "the data stays" test -f /var/lib/mycelium/identity.json

echo "== purge"
t=$(now); dpkg -P mycelium >/tmp/dpkg.out 2>&1 || cat /tmp/dpkg.out
echo "RESULT purge_s $(took "$t")"
check "systemd knows no mycelium unit" sh -c \
  '! systemctl list-unit-files mycelium.service | grep -q mycelium'
check "no file of the unit is left" sh -c \
  '[ -z "$(find /etc/systemd /lib/systemd /var/lib/systemd -name "mycelium*" 2>/dev/null)" ]'

# packaging/systemd/install.sh, the way without the package, on the same VM:
# a re-run (an upgrade) restarts the service and drops older unpacked copies.
# Its binary: a launcher of the source tree with a packed binary's trailer.
if [ -n "${3:-}" ]; then
  echo "== install.sh"
  fake() {  # fake ID: the launcher followed by a trailer naming build ID
    printf '#!/bin/sh\nPYTHONPATH=/opt/mycelium-src exec /opt/venv/bin/python -m agent "$@"\n' > "$1"
    printf '%016d%016d%32sMYCPACK1' 0 0 "$2" >> "$1"
  }
  fake /tmp/b1 aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
  fake /tmp/b2 bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
  sh "$3/packaging/systemd/install.sh" /tmp/b1 > /tmp/inst.out 2>&1 || cat /tmp/inst.out
  check "install.sh starts the service" serving
  p1=$(mainpid)
  id1=$(runuser -u mycelium -- env XDG_CACHE_HOME=/var/cache mycelium --data-dir /var/lib/mycelium id)
  mkdir -p /var/cache/mycelium/bin-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa \
           /var/cache/mycelium/bin-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
  sh "$3/packaging/systemd/install.sh" /tmp/b2 > /tmp/inst.out 2>&1 || cat /tmp/inst.out
  check "a re-run restarts it on the new binary" sh -c \
    "[ \"\$(systemctl show -p MainPID --value mycelium.service)\" != '$p1' ] && cmp -s /tmp/b2 /usr/local/bin/mycelium"
  check "which serves" serving
  check "the older unpacked copy is gone, the current one kept" sh -c \
    '[ ! -e /var/cache/mycelium/bin-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa ] && [ -d /var/cache/mycelium/bin-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb ]'
  check "the device keeps its id" test "$(runuser -u mycelium -- env XDG_CACHE_HOME=/var/cache \
    mycelium --data-dir /var/lib/mycelium id)" = "$id1"
fi

echo "RESULT fails $fails"
