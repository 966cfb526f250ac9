#!/bin/sh
# The Debian package under a booted systemd: an amd64 VM (qemu-system-x86_64)
# boots Debian bookworm with systemd as PID 1 and runs packaging/deb/
# checks-systemd.sh as a oneshot unit: install starts the service, upgrade
# restarts it, a disable survives an upgrade, remove stops it, purge leaves
# nothing. Needs root.
#
#   sudo [SRC=dist/standalone/mycelium.dist] [ACCEL=tcg|kvm] sh qemu/test-deb-vm.sh
#
# SRC: what the packages hold (default: the standalone build of `make deb`
# for amd64 if there is one, else a launcher of the source tree run by the
# guest's /opt/venv, as in CI). The guest root (systemd, the kernel, an
# initramfs with the virtio modules, /opt/venv with the runtime dependencies)
# is kept in $CROSS_CACHE/debvm-root-amd64 and made again when its package
# list or packaging/requirements-runtime.txt change; its disk image is made
# fresh each run with mke2fs -d. Exit 1 if a check failed or the VM gave no
# result. Timings go to stderr.
ARCH=arm64
# shellcheck source=cross/common.sh
. "$(dirname "$0")/../cross/common.sh"
need_root
ACCEL=${ACCEL:-tcg}
BOOT_TIMEOUT=${BOOT_TIMEOUT:-900}
PKGS="systemd systemd-sysv dbus procps python3 python3-venv ca-certificates mount linux-image-amd64 initramfs-tools"
VMROOT=$CROSS_CACHE/debvm-root-amd64
t0=$(date +%s)
command -v qemu-system-x86_64 >/dev/null || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 >/dev/null; }
command -v mmdebstrap >/dev/null || {
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap >/dev/null; }

stamp=$({ echo "$PKGS"; cat "$REPO/packaging/requirements-runtime.txt"; } | sha256sum | cut -c1-16)
if [ "$(cat "$VMROOT/.mycelium-debvm" 2>/dev/null)" != "$stamp" ]; then
  log "making the VM root $VMROOT (mmdebstrap amd64: $PKGS)"
  rm -rf "$VMROOT"
  mkdir -p "$CROSS_CACHE"
  mmdebstrap --quiet --arch=amd64 --variant=apt --include="$(echo "$PKGS" | tr ' ' ,)" \
    --aptopt='APT::Install-Recommends "false"' "$SUITE" "$VMROOT" "$MIRROR" >&2
  printf 'virtio_pci\nvirtio_blk\next4\n' >> "$VMROOT/etc/initramfs-tools/modules"
  sed -i 's/^MODULES=.*/MODULES=list/' "$VMROOT/etc/initramfs-tools/initramfs.conf"
  mkdir -p "$VMROOT/opt/req"
  cp "$REPO/packaging/requirements-runtime.txt" "$VMROOT/opt/req/"
  ROOT=$VMROOT in_root sh -euc '
    update-initramfs -u -k all >/dev/null
    python3 -m venv /opt/venv
    /opt/venv/bin/pip install -q -r /opt/req/requirements-runtime.txt'
  echo "$stamp" > "$VMROOT/.mycelium-debvm"
  log "VM root made in $(($(date +%s) - t0)) s ($(du -sm "$VMROOT" | cut -f1) MB)"
fi
t1=$(date +%s)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
SRC=${SRC:-$REPO/dist/standalone/mycelium.dist}
if [ ! -e "$SRC" ]; then
  log "no build at $SRC: the packages hold a launcher of the source tree"
  SRC=$work/launcher
  printf '#!/bin/sh\nPYTHONPATH=/opt/mycelium-src exec /opt/venv/bin/python -m agent "$@"\n' > "$SRC"
  chmod 0755 "$SRC"
fi
base=$(sed -n 's/^__version__ = "\([^"]*\)".*/\1/p' "$REPO/agent/__init__.py")
VERSION=$base~test1 sh "$REPO/packaging/deb/build.sh" amd64 "$SRC" "$work/debs"
VERSION=$base~test2 sh "$REPO/packaging/deb/build.sh" amd64 "$SRC" "$work/debs"

# what this run adds to the root, removed again at the end
G=$VMROOT/opt/debtest
rm -rf "$G" "$VMROOT/opt/mycelium-src"
mkdir -p "$G" "$VMROOT/opt/mycelium-src"
cp "$work"/debs/*.deb "$REPO/packaging/deb/checks-systemd.sh" "$REPO/packaging/deb/check-lib.sh" "$G/"
mkdir -p "$G/repo/packaging" "$G/repo/docs"
cp -a "$REPO/packaging/systemd" "$G/repo/packaging/"
cp "$REPO/docs/OPERATIONS.md" "$G/repo/docs/"
(cd "$REPO" && git ls-files -z -- agent | tar --null -T - -cf -) | tar -xf - -C "$VMROOT/opt/mycelium-src"
cat > "$VMROOT/etc/systemd/system/debtest.service" <<UNIT
[Unit]
Description=mycelium package checks
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'sh /opt/debtest/checks-systemd.sh /opt/debtest/mycelium_${base}~test1_amd64.deb /opt/debtest/mycelium_${base}~test2_amd64.deb /opt/debtest/repo > /var/log/debtest.out 2>&1; sync'
ExecStopPost=/bin/systemctl poweroff --no-block
[Install]
WantedBy=multi-user.target
UNIT
ln -sf /etc/systemd/system/debtest.service "$VMROOT/etc/systemd/system/multi-user.target.wants/debtest.service"
echo debvm > "$VMROOT/etc/hostname"
img=$work/root.ext4
mke2fs -q -t ext4 -d "$VMROOT" "$img" 3G
rm -rf "$G" "$VMROOT/opt/mycelium-src" "$VMROOT/etc/systemd/system/debtest.service" \
  "$VMROOT/etc/systemd/system/multi-user.target.wants/debtest.service"

kernel=$(ls "$VMROOT"/boot/vmlinuz-* | tail -1)
initrd=$(ls "$VMROOT"/boot/initrd.img-* | tail -1)
console=$CROSS_CACHE/debvm-console.log
log "booting the VM ($ACCEL; console in $console)"
t2=$(date +%s)
timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -accel "$ACCEL" -M q35 -m 1G -smp 2 \
  -nographic -no-reboot -nic none -kernel "$kernel" -initrd "$initrd" \
  -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.show_status=0 quiet" \
  -drive "if=virtio,format=raw,file=$img" > "$console" 2>&1 < /dev/null || true
t3=$(date +%s)
# the checks' output, read off the guest's disk
out=$CROSS_CACHE/debvm-checks.log
debugfs -R "cat /var/log/debtest.out" "$img" > "$out" 2>/dev/null || : > "$out"
cat "$out" >&2
fails=$(sed -n 's/^RESULT fails //p' "$out")
log "root $((t1 - t0)) s, VM $((t3 - t2)) s, fails ${fails:-none reported}"
[ "$fails" = 0 ]
