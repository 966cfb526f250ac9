#!/bin/sh
# The arm64 budgets, measured from inside a qemu-system-aarch64 VM (virt,
# cortex-a72, 4 cores, Debian's arm64 kernel) at 1 GB and at 2 GB of RAM:
#   peak RSS of the binary with 100K records on disk and the core loaded  <= 35 MB
#   the arm64 binary                                                       <= 15 MB
#   cold start to first read / core ready as a ratio of the guest's
#   `python3 -c pass` (information: emulation skews ratios)
# One line per figure beside its budget; exit 1 when one is missed.
#
#   sudo qemu/budget.sh                   uses dist/arm64/mycelium (make dist-arm64)
#   sudo BIN=path MEMS="1G 2G" N=100000 qemu/budget.sh
#
# The VM's root is a copy of the arm64 build root (cross/mkroot.sh) plus
# linux-image-arm64 and its initramfs, kept in $CROSS_CACHE/vm-arm64; the disk
# image is made from it with mke2fs -d (no loop mount) and booted with
# snapshot=on, so each run starts from the same disk.
ARCH=arm64
# shellcheck source=cross/common.sh
. "$(dirname "$0")/../cross/common.sh"
BIN=${BIN:-$REPO/dist/arm64/mycelium}
MEMS=${MEMS:-1G 2G}
N=${N:-100000}
RSS_BUDGET_MB=35
SIZE_BUDGET=$((15 * 1000 * 1000))
[ -f "$BIN" ] || { echo "no arm64 binary at $BIN: run make dist-arm64" >&2; exit 2; }
command -v qemu-system-aarch64 >/dev/null || {
  apt-get install -y -qq qemu-system-arm >/dev/null; }
ensure_root

vm_root_arm64
kernel=$(ls "$VM"/boot/vmlinuz-* | tail -1)
initrd=$(ls "$VM"/boot/initrd.img-* | tail -1)

# what the guest runs
rm -rf "$VM/opt/bench"
mkdir -p "$VM/opt/bench"
cp "$BIN" "$VM/opt/bench/mycelium"
cp "$REPO/qemu/guest/measure.py" "$REPO/qemu/guest/init.sh" "$VM/opt/bench/"
chmod +x "$VM/opt/bench/init.sh" "$VM/opt/bench/mycelium"
# the agent's source, run by the root's venv python as the in-guest peer (info)
mkdir -p "$VM/opt/bench/src"
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard agent |
   tar --null -T - --ignore-failed-read -cf -) | tar -xf - -C "$VM/opt/bench/src"
data=$CROSS_CACHE/data-$N
if [ ! -f "$data/identity.json" ]; then
  log "making $N records on the host (the on-disk format is little-endian on both)"
  rm -rf "$data"
  py=$REPO/build/venv/bin/python
  [ -x "$py" ] || { sh "$REPO/packaging/venv.sh"; }
  PYTHONPATH=$REPO "$py" -c "import sys; from bench.startup import make_data; make_data(sys.argv[1], int(sys.argv[2]))" \
    "$data" "$N"
fi
cp -a "$data" "$VM/opt/bench/data"
img=$CROSS_CACHE/vm-arm64.ext4
rm -f "$img"
mke2fs -q -t ext4 -L mycelium -d "$VM" "$img" 3G

status=0
out=$CROSS_CACHE/budget-results.txt
: > "$out"
size=$(stat -c %s "$BIN")
for mem in $MEMS; do
  log "booting the VM with $mem"
  t0=$(date +%s)
  logf=$CROSS_CACHE/vm-$mem.log
  timeout 3600 qemu-system-aarch64 -M virt -cpu cortex-a72 -smp 4 -m "$mem" \
    -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$initrd" \
    -append "root=/dev/vda rw console=ttyAMA0 init=/opt/bench/init.sh quiet loglevel=3" \
    -drive "if=virtio,format=raw,file=$img,snapshot=on" > "$logf" 2>&1 </dev/null || true
  log "VM ($mem) ran $(($(date +%s) - t0)) s; console in $logf"
  grep -q '^RESULT' "$logf" || { echo "no results from the VM ($mem): see $logf" >&2; status=1; continue; }
  tr -d '\r' < "$logf" | sed -n "s/^RESULT /$mem /p" >> "$out"
  tr -d '\r' < "$logf" | grep -E '^(FAILED|GUEST-START)' >&2 || true
done

get() { awk -v m="$1" -v k="$2" '$1 == m && $2 == k { print $3 }' "$out"; }
printf '\n%-52s %12s %14s  %s\n' "figure" "measured" "budget" "status"
row() {  # name value budget ok
  printf '%-52s %12s %14s  %s\n' "$1" "$2" "$3" "$4"
}
ok=pass; [ "$size" -le "$SIZE_BUDGET" ] || { ok=MISS; status=1; }
row "arm64 binary size (bytes)" "$size" "<= $SIZE_BUDGET" "$ok"
for mem in $MEMS; do
  v=$(get "$mem" peak_rss_core_mb)
  if [ -z "$v" ]; then row "[$mem] peak RSS, 100K records + core (MB)" "-" "<= $RSS_BUDGET_MB" "MISS"; status=1; continue; fi
  ok=pass; awk -v v="$v" -v b="$RSS_BUDGET_MB" 'BEGIN { exit !(v <= b) }' || { ok=MISS; status=1; }
  row "[$mem] peak RSS, 100K records + core (MB)" "$v" "<= $RSS_BUDGET_MB" "$ok"
  v=$(get "$mem" peak_rss_core_tree_mb)
  ok=pass; awk -v v="$v" -v b="$RSS_BUDGET_MB" 'BEGIN { exit !(v <= b) }' || { ok=MISS; status=1; }
  row "[$mem] same, whole process tree, sampled (MB)" "$v" "<= $RSS_BUDGET_MB" "$ok"
  row "[$mem] same, after dropping the page cache (MB)" "$(get "$mem" cold_peak_rss_core_mb)" "(info)" ""
  row "[$mem] peak RSS, first read (MB)" "$(get "$mem" peak_rss_read_mb)" "(info)" ""
  row "[$mem] same, after dropping the page cache (MB)" "$(get "$mem" cold_peak_rss_read_mb)" "(info)" ""
  row "[$mem] peak RSS, scan of all keys (MB)" "$(get "$mem" peak_rss_scan_mb)" "(info)" ""
  row "[$mem] python3 -c pass (s)" "$(get "$mem" pass_s)" "(info)" ""
  row "[$mem] cold start to first read, x python3 -c pass" "$(get "$mem" first_read_ratio)" "(info; x86: 3)" ""
  row "[$mem] cold start to core ready, x python3 -c pass" "$(get "$mem" core_ready_ratio)" "(info; x86: 6)" ""
  row "[$mem] first run after install (unpack) (s)" "$(get "$mem" first_run_s)" "(info)" ""
  row "[$mem] python -m agent: peak RSS, core (MB)" "$(get "$mem" peak_rss_py_core_mb)" "(info)" ""
  row "[$mem] python -m agent: same, page cache dropped (MB)" "$(get "$mem" cold_peak_rss_py_core_mb)" "(info)" ""
  row "[$mem] python -m agent: peak RSS, first read (MB)" "$(get "$mem" peak_rss_py_read_mb)" "(info)" ""
  row "[$mem] python -m agent: first read, x pass" "$(get "$mem" py_first_read_ratio)" "(info)" ""
  row "[$mem] python -m agent: core ready, x pass" "$(get "$mem" py_core_ready_ratio)" "(info)" ""
done
exit $status
