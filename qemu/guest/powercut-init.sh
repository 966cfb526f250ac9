#!/bin/sh
# PID 1 of the power-cut VM (kernel command line init=/opt/mycelium/powercut-init.sh),
# booted once per cut by qemu/powercut.sh. Mounts the data disk (no fsck: an
# unclean stop is followed by ext4's journal replay at mount, as on a real
# device), runs the guest program, which writes until the host kills the VM.
#
# Kernel command line:
#   powercut.cycle=N      this boot's cycle number (0 on the first boot)
#   powercut.data=DEV     the data disk (default /dev/vdb)
#   powercut.core=KIND    MYCELIUM_CORE for the agent (wasm or reference; unset: its default)
#   powercut.durable=0    the negative control: the agent opened non-durable
#
# Lines of this script start with PCINIT; the host reads only the guest
# program's POWERCUT lines (qemu/guest/powercut.py) and ignores these.
PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
HOME=/root
LANG=C.UTF-8
PYTHONDONTWRITEBYTECODE=1
MYCELIUM_SRC=/opt/mycelium/src
export PATH HOME LANG PYTHONDONTWRITEBYTECODE MYCELIUM_SRC

poweroff_now() {
  sync
  echo o > /proc/sysrq-trigger
  sleep 30
}

mountpoint -q /proc 2>/dev/null || mount -t proc proc /proc
mountpoint -q /sys 2>/dev/null || mount -t sysfs sysfs /sys
mountpoint -q /dev 2>/dev/null || mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=64m tmpfs /tmp 2>/dev/null

cycle=
dev=/dev/vdb
core=
durable=1
# shellcheck disable=SC2013 # words, not lines
for w in $(cat /proc/cmdline); do
  case $w in
    powercut.cycle=*) cycle=${w#*=} ;;
    powercut.data=*) dev=${w#*=} ;;
    powercut.core=*) core=${w#*=} ;;
    powercut.durable=*) durable=${w#*=} ;;
  esac
done
[ -n "$core" ] && { MYCELIUM_CORE=$core; export MYCELIUM_CORE; }
POWERCUT_DURABLE=$durable
export POWERCUT_DURABLE
up() { cut -d' ' -f1 /proc/uptime; }
echo "PCINIT start cycle=$cycle at $(up) s: $(uname -m) $(uname -r) $(nproc) cpus," \
  "$(awk '/MemTotal/ {print $2}' /proc/meminfo) kB, core=${core:-default}, durable=$durable"
case $cycle in
  ''|*[!0-9]*) echo "PCINIT no powercut.cycle=N on the kernel command line"; poweroff_now ;;
esac

mkdir -p /data 2>/dev/null
if ! mount -t ext4 -o rw "$dev" /data; then
  echo "PCINIT MOUNT failed $dev"
  poweroff_now
fi
name=${dev##*/}
echo "PCINIT mounted $dev at $(up) s, $(df -k /data | awk 'NR == 2 { print $3 }') kB used:" \
  "$(dmesg | grep "EXT4-fs ($name)" | sed 's/^\[[^]]*\] //' | tr '\n' ';')"

python3 /opt/mycelium/powercut.py /data/node "$cycle" 2>&1
echo "PCINIT EXIT $?"
umount /data 2>/dev/null
poweroff_now
