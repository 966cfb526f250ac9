#!/bin/sh
# The power-cut test: a qemu-system VM runs qemu/guest/powercut.py against a
# data directory on its own virtio disk (raw ext4 image, cache=none: the
# guest's page cache and everything not yet written dies with the VM); the
# host kills qemu with SIGKILL at a random moment while the guest writes,
# then boots it again on the same data disk, CUTS times, and once more to
# check the last cut. Every ACK the host saw on the console in any earlier
# cycle is checked against the HAVE lines of every later boot: ack (c, i) is
# lost when a boot reports HAVE c n with n <= i. One line per figure at the
# end (also in $CROSS_CACHE/powercut/results.txt); exit 1 when an ack was
# lost, an open failed, a BAD line came, a boot hung or died, or TOTAL fell
# short of the acks seen.
#
#   sudo qemu/powercut.sh                      (make powercut)
#   sudo CUTS=5 SEED=1 qemu/powercut.sh
#
#   CUTS=100               cuts (SIGKILLs while the guest writes)
#   SEED=<time>            seed of the random delays (printed; reuse it to repeat a run)
#   DELAY_MIN=0.2 DELAY_MAX=3
#                          the delay after the host saw POWERCUT READY, uniform, seconds
#   BOOT_TIMEOUT=180       seconds from qemu's start to READY before a boot counts as hung
#                          (600 when the VM runs under TCG)
#   ARCH=amd64             amd64 (x86_64) or arm64 (the budget VM root of qemu/budget.sh;
#                          TCG on an x86 host; its first build takes about half an hour)
#   ACCEL=kvm|tcg          default: kvm when the guest's kernel prints its first line
#                          under it within 20 s, else tcg (under a nested kvm_pvm a stock
#                          kernel crawls: TCG boots to READY in about 30 s there)
#   MEM=1G SMP=2           the VM's memory and cpus
#   CACHE_MODE=none        the data disk's cache= (none or directsync: both O_DIRECT)
#   DATA_SIZE=256M         the data disk, made fresh (mke2fs) at the start of each run
#   MYCELIUM_CORE=         passed to the guest's agent (wasm, reference; unset: its default)
#   AGENT_REV=             test agent/ as of this commit instead of the work tree
#   MAX_FAILS=3            stop after this many failed boots in a row
#   DURABLE=0              negative control: the guest opens the agent non-durable, so acks
#                          come before fsync; the run must then find lost acks (and exit 1)
#
# The amd64 guest root is an mmdebstrap'ed bookworm with Debian's kernel, an
# initramfs that loads the virtio modules, and /opt/venv holding
# packaging/requirements-runtime.txt; it is kept in $CROSS_CACHE/powercut-root-amd64
# and made again only when that file or the package list below change. The
# agent's source (git ls-files agent, as qemu/budget.sh copies it), the guest
# program and its init go to /opt/mycelium at every run; the root disk image
# is made from the root with mke2fs -d and booted read-only with snapshot=on.
# Console logs, one per boot: $CROSS_CACHE/powercut/logs/boot-NNN.log (the
# last run's; the cut may leave a line half written, and such a line is not read).
# The host is never cut, only qemu: what the guest's virtio disk had completed
# survives, what sat in the guest's page cache or in flight does not.

PC_ARCH=${ARCH:-amd64}
case $PC_ARCH in
  amd64|x86_64) PC_ARCH=amd64 ;;
  arm64|aarch64) PC_ARCH=arm64 ;;
  *) echo "ARCH must be amd64 or arm64, not $PC_ARCH" >&2; exit 2 ;;
esac
# cross/common.sh knows only its cross arches: source it as arm64, then switch
ARCH=arm64
# shellcheck source=cross/common.sh
. "$(dirname "$0")/../cross/common.sh"
ARCH=$PC_ARCH

CUTS=${CUTS:-100}
SEED=${SEED:-$(date +%s)}
DELAY_MIN=${DELAY_MIN:-0.2}
DELAY_MAX=${DELAY_MAX:-3}
MEM=${MEM:-1G}
SMP=${SMP:-2}
CACHE_MODE=${CACHE_MODE:-none}
DATA_SIZE=${DATA_SIZE:-256M}
MAX_FAILS=${MAX_FAILS:-3}
AGENT_REV=${AGENT_REV:-}
CORE=${MYCELIUM_CORE:-}
DURABLE=${DURABLE:-1}
OUT=$CROSS_CACHE/powercut
LOGS=$OUT/logs
RESULTS=$OUT/results.txt
# the amd64 guest root (Install-Recommends off; initramfs-tools pulls in udev and kmod)
PC_PACKAGES="python3 python3-venv ca-certificates mount linux-image-amd64 initramfs-tools"
# the initramfs holds only these (MODULES=list: small, fast to unpack under TCG)
PC_MODULES="virtio_pci virtio_blk ext4"

case $CUTS in ''|*[!0-9]*) echo "CUTS must be a number, not $CUTS" >&2; exit 2 ;; esac
case $SEED in ''|*[!0-9]*) echo "SEED must be a number, not $SEED" >&2; exit 2 ;; esac
case $CACHE_MODE in none|directsync) ;;
  *) echo "CACHE_MODE must be none or directsync (the cache must not outlive the VM)" >&2; exit 2 ;;
esac
awk -v a="$DELAY_MIN" -v b="$DELAY_MAX" 'BEGIN { exit !(a + 0 >= 0 && b + 0 >= a + 0) }' || {
  echo "need 0 <= DELAY_MIN <= DELAY_MAX" >&2; exit 2; }
need_root
T_START=$(date +%s)

QPID=   # the qemu this script runs, killed on exit
cleanup() {
  [ -n "$QPID" ] && kill -KILL "$QPID" 2>/dev/null
  QPID=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }

# ---- the guest root --------------------------------------------------------

root_amd64() {
  ROOT=$CROSS_CACHE/powercut-root-amd64
  stamp=$({ echo "$PC_PACKAGES"; echo "$PC_MODULES list"
            cat "$REPO/packaging/requirements-runtime.txt"; } | sha256sum | cut -c1-16)
  [ "$(cat "$ROOT/.mycelium-powercut" 2>/dev/null)" = "$stamp" ] && return 0
  command -v mmdebstrap >/dev/null || {
    apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }
  mkdir -p "$CROSS_CACHE"
  t0=$(date +%s)
  rm -rf "$ROOT"
  log "mmdebstrap $SUITE amd64 ($PC_PACKAGES)"
  mmdebstrap --quiet --arch=amd64 --variant=apt --include="$(echo "$PC_PACKAGES" | tr ' ' ,)" \
    --aptopt='APT::Install-Recommends "false"' \
    "$SUITE" "$ROOT" "$MIRROR" >&2
  log "debootstrapped in $(($(date +%s) - t0)) s"
  # modules the initramfs loads before it looks for root=/dev/vda (and ext4 for /dev/vdb)
  printf '%s\n' $PC_MODULES >> "$ROOT/etc/initramfs-tools/modules"
  sed -i 's/^MODULES=.*/MODULES=list/' "$ROOT/etc/initramfs-tools/initramfs.conf"
  mkdir -p "$ROOT/data" "$ROOT/opt/mycelium" "$ROOT/opt/req"
  cp "$REPO/packaging/requirements-runtime.txt" "$ROOT/opt/req/"
  in_root sh -euc '
    update-initramfs -u -k all >/dev/null
    python3 -m venv /opt/venv
    /opt/venv/bin/pip install -q -r /opt/req/requirements-runtime.txt'
  echo "$stamp" > "$ROOT/.mycelium-powercut"
  log "guest root made in $(($(date +%s) - t0)) s: $ROOT ($(du -sm "$ROOT" | cut -f1) MB)"
}

# arm64: the budget VM's root (qemu/budget.sh makes it the same way, same stamp)
root_arm64() {
  ensure_root
  vm_root_arm64
  ROOT=$VM
  mkdir -p "$ROOT/data"
  # the init mounts the data disk; the cross root's apt variant may lack util-linux's mount
  if [ ! -x "$ROOT/usr/bin/mount" ] && [ ! -x "$ROOT/bin/mount" ]; then
    log "installing mount into $ROOT"
    in_root sh -euc 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq --no-install-recommends mount >/dev/null'
  fi
}

case $ARCH in
  amd64) QEMU=qemu-system-x86_64; QPKG=qemu-system-x86; CONSOLE=ttyS0; MACHINE=q35 ;;
  arm64) QEMU=qemu-system-aarch64; QPKG=qemu-system-arm; CONSOLE=ttyAMA0; MACHINE=virt ;;
esac
command -v "$QEMU" >/dev/null || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$QPKG" >/dev/null; }
t_root=$(date +%s)
case $ARCH in amd64) root_amd64 ;; arm64) root_arm64 ;; esac
T_ROOT=$(($(date +%s) - t_root))
# shellcheck disable=SC2012 # Debian's names, no odd characters
kernel=$(ls "$ROOT"/boot/vmlinuz-* | tail -1)
# shellcheck disable=SC2012
initrd=$(ls "$ROOT"/boot/initrd.img-* | tail -1)
[ -f "$kernel" ] && [ -f "$initrd" ] || { echo "no kernel or initrd in $ROOT/boot" >&2; exit 3; }

# ---- what the guest runs: this work tree's agent, the guest program, its init

rm -rf "$ROOT/opt/mycelium"
mkdir -p "$ROOT/opt/mycelium/src"
cp "$REPO/qemu/guest/powercut.py" "$REPO/qemu/guest/powercut-init.sh" "$ROOT/opt/mycelium/"
chmod 755 "$ROOT/opt/mycelium/powercut-init.sh"
if [ -n "$AGENT_REV" ]; then
  (cd "$REPO" && git archive "$AGENT_REV" agent) | tar -xf - -C "$ROOT/opt/mycelium/src"
  SRC_DESC="agent/ of $(cd "$REPO" && git rev-parse --short "$AGENT_REV")"
else
  (cd "$REPO" && git ls-files -z --cached --others --exclude-standard agent |
     tar --null -T - --ignore-failed-read -cf -) | tar -xf - -C "$ROOT/opt/mycelium/src"
  dirty=$(cd "$REPO" && git status --porcelain -- agent | wc -l)
  SRC_DESC="work tree agent/ ($(cd "$REPO" && git rev-parse --short HEAD) + $dirty changed files)"
fi
# what ran, by content (the work tree may change under a long run)
SRC_DESC="$SRC_DESC, sha256 $(cd "$ROOT/opt/mycelium/src" && find agent -type f | LC_ALL=C sort |
  xargs sha256sum | sha256sum | cut -c1-12)"
[ "$DURABLE" = 1 ] || SRC_DESC="$SRC_DESC, opened NON-DURABLE (the negative control)"
# the root is read-only in the VM: compile once here (a syntax error shows at the guest's import)
in_root python3 -m compileall -q /opt/mycelium/src >/dev/null 2>&1 ||
  log "compileall failed on the agent's source (the guest will say why)"

mkdir -p "$OUT"
rm -rf "$LOGS"
mkdir -p "$LOGS"
rootimg=$OUT/root-$ARCH.ext4
dataimg=$OUT/data.img
t0=$(date +%s)
size=$(( $(du -sm "$ROOT" | cut -f1) * 5 / 4 + 128 ))
rm -f "$rootimg" "$dataimg"
mke2fs -q -t ext4 -F -L pcroot -d "$ROOT" "$rootimg" "${size}M"
mke2fs -q -t ext4 -F -L pcdata -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 \
  "$dataimg" "$DATA_SIZE"
log "disk images made in $(($(date +%s) - t0)) s (root ${size} MB, snapshot=on; data $DATA_SIZE, cache=$CACHE_MODE)"

# ---- the VM ------------------------------------------------------------------

host_m=$(uname -m)
if [ -n "${ACCEL:-}" ]; then
  accel=$ACCEL
elif { [ "$ARCH" = amd64 ] && [ "$host_m" = x86_64 ]; } ||
     { [ "$ARCH" = arm64 ] && [ "$host_m" = aarch64 ]; }; then
  accel=tcg
  [ -w /dev/kvm ] && accel=kvm
else
  accel=tcg
fi
# kvm_boots CPU: does the guest's kernel print its first line under KVM within 20 s?
# (A vCPU that starts is not enough: under a nested hypervisor such as kvm_pvm a
# stock kernel can crawl for minutes before its first line; TCG boots it in 15 s.)
kvm_boots() {
  f=$OUT/kvm-probe.log
  "$QEMU" -accel kvm -cpu "$1" -M "$MACHINE" -m 256M -nographic -no-reboot -nic none \
    -kernel "$kernel" -append "console=$CONSOLE panic=-1" > "$f" 2>&1 < /dev/null &
  QPID=$!
  end=$(($(date +%s) + 20))
  ok=1
  while [ "$(date +%s)" -lt "$end" ] && kill -0 "$QPID" 2>/dev/null; do
    if grep -q 'Linux version' "$f"; then ok=0; break; fi
    sleep 0.2
  done
  kill -KILL "$QPID" 2>/dev/null || true
  wait "$QPID" 2>/dev/null || true
  QPID=
  return "$ok"
}
cpu=
if [ "$accel" = kvm ] && [ -z "${ACCEL:-}" ]; then
  # -cpu host can abort at the first vCPU reset in a nested VM (an MSR the outer
  # hypervisor refuses): the first model that starts a vCPU, then a kernel
  for m in host host,-arch-capabilities max; do
    if (echo quit | "$QEMU" -accel kvm -cpu "$m" -M "$MACHINE" -m 64 -nodefaults \
          -display none -monitor stdio) >/dev/null 2>&1; then
      cpu=$m; break
    fi
  done
  if [ -z "$cpu" ]; then
    log "KVM does not start a vCPU here: TCG"; accel=tcg
  elif ! kvm_boots "$cpu"; then
    why=
    [ -d /sys/module/kvm_pvm ] && why=" (this KVM is kvm_pvm, a nested hypervisor)"
    log "KVM (-cpu $cpu) starts but the kernel printed nothing in 20 s$why: TCG"
    cpu=; accel=tcg
  fi
elif [ "$accel" = kvm ]; then
  cpu=${CPU:-host}
fi
if [ "$accel" = tcg ]; then
  case $ARCH in amd64) cpu=max ;; arm64) cpu=cortex-a72 ;; esac
fi
if [ "$accel" = tcg ]; then BOOT_TIMEOUT=${BOOT_TIMEOUT:-600}; else BOOT_TIMEOUT=${BOOT_TIMEOUT:-180}; fi
APPEND="root=/dev/vda rootfstype=ext4 ro console=$CONSOLE init=/opt/mycelium/powercut-init.sh"
APPEND="$APPEND quiet loglevel=3 panic=1 fsck.mode=skip powercut.data=/dev/vdb"
[ -n "$CORE" ] && APPEND="$APPEND powercut.core=$CORE"
[ "$DURABLE" = 1 ] || APPEND="$APPEND powercut.durable=0"

# boot CYCLE DELAY: boot once; DELAY seconds after the host saw READY, SIGKILL.
# Sets B_LOG, B_OUT (cut, hang, ended: qemu stopped by itself or the guest
# program ended) and B_READY (seconds from qemu's start to READY, or -).
boot() {
  B_LOG=$LOGS/boot-$(printf %03d "$1").log
  B_OUT=
  B_READY=-
  # shellcheck disable=SC2086 # $cpu_opt: nothing or two words
  "$QEMU" -accel "$accel" $cpu_opt -M "$MACHINE" -smp "$SMP" -m "$MEM" \
    -nographic -no-reboot -nic none \
    -kernel "$kernel" -initrd "$initrd" -append "$APPEND powercut.cycle=$1" \
    -drive "if=virtio,format=raw,file=$rootimg,snapshot=on" \
    -drive "if=virtio,format=raw,file=$dataimg,cache=$CACHE_MODE" \
    > "$B_LOG" 2>&1 < /dev/null &
  QPID=$!
  b0=$(now)
  deadline=$(($(date +%s) + BOOT_TIMEOUT))
  while :; do
    if grep -q '^POWERCUT READY' "$B_LOG"; then
      B_READY=$(secs "$b0" "$(now)")
      [ "$2" = 0 ] || sleep "$2"
      kill -KILL "$QPID" 2>/dev/null || true
      B_OUT='cut'
      break
    fi
    if ! kill -0 "$QPID" 2>/dev/null ||
       grep -q -e '^PCINIT EXIT' -e '^PCINIT MOUNT failed' -e '^PCINIT no powercut' "$B_LOG"; then
      B_OUT=ended
      break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      B_OUT=hang
      break
    fi
    sleep 0.02
  done
  kill -KILL "$QPID" 2>/dev/null || true
  wait "$QPID" 2>/dev/null || true
  QPID=
  # the guest program never stops by itself while it writes
  if [ "$B_OUT" = cut ] && grep -q '^PCINIT EXIT' "$B_LOG"; then B_OUT=ended; fi
}
cpu_opt=
[ -n "$cpu" ] && cpu_opt="-cpu $cpu"

# ---- the run -------------------------------------------------------------------

ACKS=$OUT/acks.txt      # c i: every ACK the host saw, all cycles (not the check boot's)
HAVES=$OUT/haves.txt    # boot c n: every HAVE line of every boot
BOOTS=$OUT/boots.txt    # boot outcome ready_s delay acks open_s total checked lost
LOST=$OUT/lost.txt      # boot c i: an ack that boot did not have
CUR=$OUT/console.txt    # the current boot's console, \r dropped, complete lines only
: > "$ACKS"; : > "$HAVES"; : > "$BOOTS"; : > "$LOST"
awk -v seed="$SEED" -v n="$CUTS" -v lo="$DELAY_MIN" -v hi="$DELAY_MAX" \
  'BEGIN { srand(seed); for (k = 1; k <= n; k++) printf "%.3f\n", lo + rand() * (hi - lo) }' \
  > "$OUT/delays.txt"
log "$CUTS cuts on $ARCH ($accel${cpu:+, -cpu $cpu}, $SMP cpus, $MEM), seed $SEED," \
  "delay $DELAY_MIN..$DELAY_MAX s after READY, boot timeout $BOOT_TIMEOUT s;" \
  "testing $SRC_DESC, MYCELIUM_CORE=${CORE:-default}"

excerpt() {  # the end of a boot's console, for a failure's report
  echo "---- $B_LOG (last lines) ----" >&2
  tr -d '\r' < "$B_LOG" | grep -v '^POWERCUT ACK' | tail -n 25 >&2
  echo "----" >&2
}

T_LOOP=$(date +%s)
cuts=0; cycle=0; fails=0; stopped=
hangs=0; ended=0; opens_failed=0; bad=0; total_short=0; missing_have=0
while :; do
  if [ "$cuts" -ge "$CUTS" ]; then final=1; delay=0
  else final=; delay=$(sed -n "$((cuts + 1))p" "$OUT/delays.txt"); fi
  boot "$cycle" "$delay"
  tr -d '\r' < "$B_LOG" > "$CUR"
  # a line the kill cut short is not a line
  [ "$(tail -c 1 "$B_LOG" | wc -l)" -eq 1 ] || sed -i '$d' "$CUR"

  # every earlier ack against this boot's HAVE lines
  awk -v b="$cycle" '$1 == "POWERCUT" && $2 == "HAVE" && NF == 4 { print b, $3, $4 }' \
    "$CUR" >> "$HAVES"
  # shellcheck disable=SC2046 # three numbers
  set -- $(awk -v b="$cycle" -v lost="$LOST" '
    FILENAME == ARGV[1] { if ($1 == b) have[$2] = $3; next }
    !($1 in have) { unchecked++; next }
    { checked++ }
    $2 + 0 >= have[$1] + 0 { n++; print b, $1, $2 > lost }
    END { print checked + 0, n + 0, unchecked + 0 }' "$HAVES" "$ACKS")
  b_checked=$1; b_lost=$2; b_unchecked=$3
  seen=$(wc -l < "$ACKS")
  b_total=$(awk '$1 == "POWERCUT" && $2 == "TOTAL" { print $3; exit }' "$CUR")
  b_open=$(awk '$1 == "POWERCUT" && $2 == "OPEN" && $3 == "ok" { print $4; exit }' "$CUR")
  b_bad=$(grep -c '^POWERCUT BAD' "$CUR" || true)
  b_openf=$(grep -c '^POWERCUT OPEN failed' "$CUR" || true)
  b_ready=$(grep -c '^POWERCUT READY' "$CUR" || true)
  b_acks=0
  if [ -z "$final" ]; then
    awk '$1 == "POWERCUT" && $2 == "ACK" && NF == 4 && $3 ~ /^[0-9]+$/ && $4 ~ /^[0-9]+$/ {
      print $3, $4 }' "$CUR" > "$OUT/new-acks.txt"
    b_acks=$(wc -l < "$OUT/new-acks.txt")
    cat "$OUT/new-acks.txt" >> "$ACKS"
  fi
  bad=$((bad + b_bad)); opens_failed=$((opens_failed + b_openf))

  problem=
  [ "$b_lost" -gt 0 ] && problem="$problem, $b_lost ACKS LOST"
  [ "$b_bad" -gt 0 ] && problem="$problem, $b_bad BAD lines"
  [ "$b_openf" -gt 0 ] && problem="$problem, OPEN FAILED: $(grep -m1 '^POWERCUT OPEN failed' "$CUR" | cut -c22-)"
  case $b_total in
    '') ;;
    *[!0-9]*) total_short=$((total_short + 1)); problem="$problem, TOTAL not a number: $b_total" ;;
    *) if [ "$b_total" -lt "$seen" ]; then
         total_short=$((total_short + 1)); problem="$problem, TOTAL $b_total < $seen acks seen"
       fi ;;
  esac
  if [ "$b_ready" -gt 0 ] && [ "$b_unchecked" -gt 0 ]; then
    missing_have=$((missing_have + 1)); problem="$problem, $b_unchecked acks without a HAVE line"
  fi
  case $B_OUT in
    hang) hangs=$((hangs + 1)); problem="$problem, HANG: no READY in $BOOT_TIMEOUT s" ;;
    ended) [ "$b_openf" -gt 0 ] || { ended=$((ended + 1)); problem="$problem, the guest stopped by itself"; } ;;
  esac
  [ -z "$final" ] && [ "$B_OUT" = cut ] && cuts=$((cuts + 1))
  echo "$cycle $B_OUT $B_READY $delay $b_acks ${b_open:--} ${b_total:--} $b_checked $b_lost" >> "$BOOTS"

  if [ -n "$final" ]; then what="check boot $cycle"
  elif [ "$B_OUT" = cut ]; then what="cut $cuts/$CUTS (boot $cycle)"
  else what="boot $cycle"; fi
  if [ "$B_OUT" = cut ]; then
    how="READY after $B_READY s (open ${b_open:-?} s), killed ${delay} s later, $b_acks acks"
  elif [ "$B_READY" = - ]; then
    how="$B_OUT before READY"
  else
    how="$B_OUT after READY ($B_READY s)"
  fi
  log "$what: $how; $b_checked earlier acks checked, $b_lost lost; TOTAL ${b_total:-?} (>= $seen)${problem}"
  if [ -n "$problem" ]; then
    excerpt
    [ "$b_lost" -gt 0 ] && head -n 5 "$LOST" | sed 's/^/lost (boot c i): /' >&2
  fi
  cycle=$((cycle + 1))
  [ -n "$final" ] && break
  if [ "$B_OUT" = cut ] && [ "$b_openf" -eq 0 ]; then fails=0; else fails=$((fails + 1)); fi
  if [ "$fails" -ge "$MAX_FAILS" ]; then
    stopped=1; log "$fails failed boots in a row: stopping"; break
  fi
done
T_END=$(date +%s)

# ---- the figures ----------------------------------------------------------------

# distinct acks: checked when a later boot printed a HAVE line for their cycle,
# lost when any such line had n <= i
# shellcheck disable=SC2046 # three numbers
set -- $(awk 'FILENAME == ARGV[1] { if (!($2 in lo) || $3 + 0 < lo[$2]) lo[$2] = $3 + 0; next }
  { if ($1 in lo) { c++; if ($2 + 0 >= lo[$1]) l++ } else u++ }
  END { print c + 0, l + 0, u + 0 }' "$HAVES" "$ACKS")
acks_checked=$1; acks_lost=$2; acks_unchecked=$3
acks_seen=$(wc -l < "$ACKS")
checks=$(awk '{ s += $8 } END { print s + 0 }' "$BOOTS")
ready_mean=$(awk '$3 != "-" { s += $3; n++ } END { if (n) printf "%.2f", s / n; else print "-" }' "$BOOTS")
ready_max=$(awk '$3 != "-" && $3 + 0 > m { m = $3 + 0 } END { printf "%.2f", m }' "$BOOTS")
open_mean=$(awk '$6 != "-" { s += $6; n++ } END { if (n) printf "%.2f", s / n; else print "-" }' "$BOOTS")
engines=$(grep -h '^powercut: engine' "$LOGS"/*.log 2>/dev/null | tr -d '\r' |
  awk '{ n[$3]++ } END { for (e in n) printf "%s%s x%d", (s++ ? ", " : ""), e, n[e] }')
replays=$(grep -l 'recovery complete' "$LOGS"/*.log 2>/dev/null | wc -l)

{
  printf '%-34s %s\n' "cuts" "$cuts"
  printf '%-34s %s\n' "acks checked" "$acks_checked"
  printf '%-34s %s\n' "acks lost" "$acks_lost"
  printf '%-34s %s\n' "failed opens" "$opens_failed"
  printf '%-34s %s\n' "BAD lines" "$bad"
  printf '%-34s %s\n' "hangs" "$hangs"
  printf '%-34s %s\n' "boots the guest ended itself" "$ended"
  printf '%-34s %s\n' "boots with TOTAL < acks seen" "$total_short"
  printf '%-34s %s\n' "boots missing a HAVE line" "$missing_have"
  printf '%-34s %s\n' "acks never checked" "$acks_unchecked"
  printf '%-34s %s\n' "acks seen" "$acks_seen"
  printf '%-34s %s\n' "ack checks (all boots)" "$checks"
  printf '%-34s %s\n' "boots" "$cycle"
  printf '%-34s %s\n' "ext4 journal replays at mount" "$replays"
  printf '%-34s %s\n' "mean boot-to-READY (s)" "$ready_mean"
  printf '%-34s %s\n' "max boot-to-READY (s)" "$ready_max"
  printf '%-34s %s\n' "mean agent open (s)" "$open_mean"
  printf '%-34s %s\n' "wall time (s)" "$((T_END - T_START))"
  printf '%-34s %s\n' "of which boots and cuts (s)" "$((T_END - T_LOOP))"
  printf '%-34s %s\n' "of which guest root (s)" "$T_ROOT"
  printf '%-34s %s\n' "engine" "${engines:--}"
  printf '%-34s %s\n' "vm" "$ARCH $accel${cpu:+ -cpu $cpu} smp $SMP mem $MEM cache=$CACHE_MODE"
  printf '%-34s %s\n' "agent" "$SRC_DESC"
  printf '%-34s %s\n' "seed" "$SEED (delay $DELAY_MIN..$DELAY_MAX s)"
  [ -z "$stopped" ] || printf '%-34s %s\n' "stopped early" "after $MAX_FAILS failed boots in a row"
} > "$RESULTS"
echo
cat "$RESULTS"
log "results in $RESULTS, console logs in $LOGS"

if [ "$acks_lost" -gt 0 ] || [ "$opens_failed" -gt 0 ] || [ "$bad" -gt 0 ] ||
   [ "$hangs" -gt 0 ] || [ "$ended" -gt 0 ] || [ "$total_short" -gt 0 ] || [ "$missing_have" -gt 0 ] ||
   [ "$acks_unchecked" -gt 0 ] || [ -n "$stopped" ] || [ "$cuts" -lt "$CUTS" ]; then
  exit 1
fi
exit 0
