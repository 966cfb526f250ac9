#!/bin/sh
# PID 1 of the budget VM (kernel command line init=/opt/bench/init.sh):
# mount what the measurement needs, run it, print its lines on the console,
# power off. The host (qemu/budget.sh) reads the lines that start with RESULT.
PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
export PATH HOME=/root LANG=C.UTF-8
mountpoint -q /proc 2>/dev/null || mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs -o size=256m tmpfs /tmp
mount -o remount,rw / 2>/dev/null
echo "GUEST-START $(uname -m) $(nproc) cpus, $(awk '/MemTotal/ {print $2}' /proc/meminfo) kB"
python3 /opt/bench/measure.py 2>&1
echo "GUEST-END $?"
sync
echo o > /proc/sysrq-trigger
sleep 30
